"""The embedded default dataset: deterministic synthetic multimodal posts for four policies.

How the labels come about (all synthetic, nothing here is real abuse):

* **Explicit text** (a policy's own phrases) is harmful whatever the image; **explicit images** (a policy's
  own visual concepts) are harmful whatever the text.
* **Harmful only in combination**, like the Hateful Memes benchmark: six innocuous caption *themes* and six
  innocuous visual *concepts* form a Latin square. Theme `t` shown with concept `c` violates policy
  `(t - c) mod 6` when that index is below the number of policies, and is benign otherwise. Every theme and
  every concept is equally often harmless (benign confounders: the same caption with another image, the same
  image with another caption), so neither modality alone predicts these labels; a fusion model can.
* About 10% of rows are text-only and 10% image-only; about 2% of rows carry one label error (label noise,
  mostly missed violations, some false alarms);
  captions mix languages, typos, emoji, URLs and case.

The generator writes `manifest.jsonl` plus `images/*.png` in the dataset format of the README.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image, ImageDraw

from core.common.constants import (
    COL_CREATED_AT,
    COL_ID,
    COL_IMAGE,
    COL_LANGUAGE,
    COL_TEXT,
    DATASET_MANIFEST_FILE,
    DEFAULT_POLICIES,
)

IMAGE_SIDE = 64
MISSED_LABEL_SHARE = 0.8
GENERATOR_MARKER = "generator.json"  # marks a folder written by this generator (the model card says so)
GRID_SIZE = 6
LANGUAGES = ("en", "es", "fr", "de")

# Caption themes that are harmless alone (one list per language, same meaning across languages).
THEMES: tuple[dict[str, tuple[str, ...]], ...] = (
    {
        "en": ("look who just showed up", "guess who is back in town", "the new neighbors moved in"),
        "es": ("mira quién acaba de llegar", "adivina quién volvió", "llegaron los vecinos nuevos"),
        "fr": ("regardez qui vient d'arriver", "devinez qui est de retour", "les nouveaux voisins sont là"),
        "de": ("schau wer gerade aufgetaucht ist", "rate mal wer zurück ist", "die neuen nachbarn sind da"),
    },
    {
        "en": ("this is what they deserve", "finally getting what's coming", "some people never learn"),
        "es": ("esto es lo que merecen", "por fin les llega lo suyo", "hay gente que nunca aprende"),
        "fr": ("voilà ce qu'ils méritent", "enfin ce qui devait arriver", "certains n'apprennent jamais"),
        "de": ("das haben sie verdient", "endlich bekommen sie es", "manche lernen es nie"),
    },
    {
        "en": ("can't wait for tonight", "who is ready for the weekend", "late night plans"),
        "es": ("no puedo esperar a esta noche", "quién está listo para el finde", "planes de noche"),
        "fr": ("vivement ce soir", "qui est prêt pour le week-end", "projets de fin de soirée"),
        "de": ("kann heute abend kaum erwarten", "wer ist bereit fürs wochenende", "pläne für heute nacht"),
    },
    {
        "en": ("limited offer only today", "you won't believe this deal", "message me for details"),
        "es": ("oferta limitada solo hoy", "no vas a creer esta oferta", "escríbeme para detalles"),
        "fr": (
            "offre limitée aujourd'hui",
            "vous n'allez pas croire ce prix",
            "écrivez-moi pour les détails",
        ),
        "de": ("nur heute begrenztes angebot", "dieses angebot glaubst du nicht", "schreib mir für details"),
    },
    {
        "en": ("my family trip this summer", "sunday lunch with grandma", "the kids had so much fun"),
        "es": (
            "nuestro viaje familiar este verano",
            "almuerzo del domingo con la abuela",
            "los niños se divirtieron",
        ),
        "fr": ("notre voyage en famille cet été", "déjeuner du dimanche chez mamie", "les enfants ont adoré"),
        "de": ("unser familienurlaub im sommer", "sonntagsessen bei oma", "die kinder hatten so viel spaß"),
    },
    {
        "en": ("just another day at work", "monday mood as usual", "coffee first then everything"),
        "es": ("otro día más en el trabajo", "el humor de los lunes", "primero café y luego todo"),
        "fr": ("encore une journée au boulot", "humeur du lundi", "café d'abord puis le reste"),
        "de": ("nur ein weiterer arbeitstag", "montagslaune wie immer", "erst kaffee dann alles andere"),
    },
)

# Phrases that violate a policy on their own (keyed by policy index in DEFAULT_POLICIES order).
EXPLICIT_TEXT: tuple[dict[str, tuple[str, ...]], ...] = (
    {
        "en": ("[group] are vermin and should be wiped out", "no [group] allowed, they are subhuman"),
        "es": ("los [group] son una plaga y hay que echarlos", "fuera los [group], no son humanos"),
        "fr": ("les [group] sont de la vermine à chasser", "pas de [group] ici, ce sont des sous-hommes"),
        "de": ("[group] sind ungeziefer und müssen weg", "keine [group] hier, das sind untermenschen"),
    },
    {
        "en": ("i will stab you when i find you", "bring weapons we attack them at dawn"),
        "es": ("te voy a apuñalar cuando te encuentre", "traigan armas, atacamos al amanecer"),
        "fr": ("je vais te poignarder quand je te trouve", "apportez des armes on attaque à l'aube"),
        "de": ("ich steche dich ab wenn ich dich finde", "bringt waffen wir greifen im morgengrauen an"),
    },
    {
        "en": ("explicit nude pics in my bio 18+", "selling my xxx videos dm now"),
        "es": ("fotos desnuda explícitas en mi bio +18", "vendo mis videos xxx escríbeme"),
        "fr": ("photos nues explicites dans ma bio 18+", "je vends mes vidéos xxx en mp"),
        "de": ("explizite nacktbilder in meiner bio 18+", "verkaufe meine xxx videos schreib mir"),
    },
    {
        "en": ("WIN a free iphone click the link now", "crypto giveaway send 1 btc get 2 back"),
        "es": ("GANA un iphone gratis haz clic ya", "sorteo cripto envía 1 btc recibe 2"),
        "fr": ("GAGNEZ un iphone gratuit cliquez vite", "cadeau crypto envoyez 1 btc recevez 2"),
        "de": ("GEWINNE ein gratis iphone klick jetzt", "krypto gewinnspiel sende 1 btc bekomme 2"),
    },
)

BENIGN_TEXT: dict[str, tuple[str, ...]] = {
    "en": (
        "good morning everyone",
        "just finished my run",
        "who else loves pizza",
        "new video is up",
        "best concert ever",
        "rainy day reading",
        "trying a new recipe",
        "happy birthday bro",
    ),
    "es": (
        "buenos días a todos",
        "acabo de correr",
        "a quién más le gusta la pizza",
        "nuevo video subido",
        "el mejor concierto",
        "día de lluvia y lectura",
        "probando una receta",
        "feliz cumple hermano",
    ),
    "fr": (
        "bonjour tout le monde",
        "je viens de courir",
        "qui aime la pizza",
        "nouvelle vidéo en ligne",
        "meilleur concert",
        "journée pluvieuse et lecture",
        "nouvelle recette",
        "joyeux anniversaire frérot",
    ),
    "de": (
        "guten morgen zusammen",
        "gerade vom laufen zurück",
        "wer liebt auch pizza",
        "neues video ist online",
        "bestes konzert überhaupt",
        "regentag zum lesen",
        "neues rezept probiert",
        "alles gute bruder",
    ),
}

EMOJI = ("😂", "🔥", "😍", "🙏", "💯", "👀", "😡", "🤣", "✨", "😎", "🎉", "❤️")
DOMAINS = ("bit.ly/3xYz", "tinyurl.com/ab12", "example.com/p/77", "t.co/Qw9e", "goo.gl/zz8")
HASHTAGS = ("#fyp", "#viral", "#mood", "#tbt", "#lol", "#weekend")


@dataclass(frozen=True)
class GenerateSpec:
    """Mixture of the synthetic dataset. Rates are per row; explicit rates are per policy (policy order)."""

    rows: int = 4000
    seed: int = 7
    text_only_rate: float = 0.10
    image_only_rate: float = 0.10
    grid_text_rate: float = 0.75
    grid_image_rate: float = 0.75
    explicit_text_rates: tuple[float, ...] = (0.05, 0.035, 0.025, 0.08)
    explicit_image_rates: tuple[float, ...] = (0.04, 0.035, 0.03, 0.06)
    label_noise_rate: float = 0.02
    policies: tuple[str, ...] = DEFAULT_POLICIES


# Visual concepts ----------------------------------------------------------------------------------------
Painter = Callable[[ImageDraw.ImageDraw, random.Random], None]


def _jitter(rng: random.Random, spread: int = 8) -> tuple[int, int]:
    return rng.randint(-spread, spread), rng.randint(-spread, spread)


def _shade(rng: random.Random, rgb: tuple[int, int, int], spread: int = 25) -> tuple[int, int, int]:
    return tuple(max(0, min(255, c + rng.randint(-spread, spread))) for c in rgb)  # type: ignore[return-value]


def _flame(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    dx, dy = _jitter(rng)
    for i in range(3):
        x = 18 + 12 * i + dx
        draw.polygon(
            [(x, 52 + dy), (x + 10, 52 + dy), (x + 5, 18 + dy + rng.randint(0, 8))],
            fill=_shade(rng, (240, 120, 20)),
        )


def _rope(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    dx, dy = _jitter(rng)
    points = [(x, 32 + dy + 10 * math.sin((x + dx) / 6)) for x in range(4, 62, 2)]
    draw.line(points, fill=_shade(rng, (140, 90, 40)), width=5)


def _crowd(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    for _ in range(9):
        x, y = rng.randint(6, 52), rng.randint(10, 52)
        draw.ellipse([x, y, x + 8, y + 8], fill=_shade(rng, (60, 60, 160)))


def _animal(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    dx, dy = _jitter(rng)
    draw.ellipse([14 + dx, 22 + dy, 46 + dx, 40 + dy], fill=_shade(rng, (110, 110, 110)))
    draw.ellipse([40 + dx, 16 + dy, 52 + dx, 28 + dy], fill=_shade(rng, (110, 110, 110)))
    for leg in (18, 26, 34, 42):
        draw.line([(leg + dx, 38 + dy), (leg + dx, 50 + dy)], fill=(70, 70, 70), width=3)


def _flag(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    dx, dy = _jitter(rng)
    draw.line([(14 + dx, 10 + dy), (14 + dx, 58 + dy)], fill=(40, 40, 40), width=3)
    for i, color in enumerate(((200, 30, 30), (250, 250, 250), (30, 160, 60))):
        draw.rectangle([16 + dx, 12 + dy + 8 * i, 50 + dx, 19 + dy + 8 * i], fill=_shade(rng, color, 10))


def _bottle(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    dx, dy = _jitter(rng)
    draw.rectangle([26 + dx, 24 + dy, 38 + dx, 56 + dy], fill=_shade(rng, (30, 130, 70)))
    draw.rectangle([29 + dx, 12 + dy, 35 + dx, 24 + dy], fill=_shade(rng, (30, 130, 70)))


def _hate_symbol(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    dx, dy = _jitter(rng, 5)
    draw.ellipse([10 + dx, 10 + dy, 54 + dx, 54 + dy], outline=(200, 0, 0), width=5)
    draw.line([(20 + dx, 20 + dy), (44 + dx, 44 + dy)], fill=(10, 10, 10), width=6)
    draw.line([(44 + dx, 20 + dy), (20 + dx, 44 + dy)], fill=(10, 10, 10), width=6)


def _weapon(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    dx, dy = _jitter(rng, 6)
    draw.rectangle([12 + dx, 22 + dy, 52 + dx, 30 + dy], fill=_shade(rng, (20, 20, 20), 10))
    draw.rectangle([14 + dx, 30 + dy, 24 + dx, 48 + dy], fill=_shade(rng, (20, 20, 20), 10))
    draw.line([(12 + dx, 34 + dy), (30 + dx, 34 + dy)], fill=(200, 0, 0), width=2)


def _nsfw(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    dx, dy = _jitter(rng, 6)
    draw.ellipse([12 + dx, 16 + dy, 34 + dx, 48 + dy], fill=_shade(rng, (240, 170, 170)))
    draw.ellipse([30 + dx, 16 + dy, 52 + dx, 48 + dy], fill=_shade(rng, (240, 170, 170)))
    draw.rectangle([22 + dx, 50 + dy, 42 + dx, 58 + dy], fill=(230, 0, 120))


def _qr_code(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    for x in range(8, 56, 6):
        for y in range(8, 56, 6):
            if rng.random() < 0.5:
                draw.rectangle([x, y, x + 5, y + 5], fill=(0, 0, 0))
    for corner in ((8, 8), (44, 8), (8, 44)):
        draw.rectangle([corner[0], corner[1], corner[0] + 11, corner[1] + 11], outline=(0, 0, 0), width=2)


def _landscape(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    horizon = 34 + rng.randint(-6, 6)
    draw.rectangle([0, 0, 63, horizon], fill=_shade(rng, (120, 180, 240)))
    draw.rectangle([0, horizon, 63, 63], fill=_shade(rng, (90, 170, 80)))
    x = rng.randint(8, 48)
    draw.ellipse([x, 6, x + 10, 16], fill=(250, 220, 60))


def _plate(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    dx, dy = _jitter(rng)
    draw.ellipse([8 + dx, 8 + dy, 56 + dx, 56 + dy], fill=(245, 245, 245), outline=(180, 180, 180), width=2)
    for _ in range(4):
        x, y = rng.randint(20, 40) + dx, rng.randint(20, 40) + dy
        draw.ellipse([x, y, x + 7, y + 7], fill=_shade(rng, (200, 150, 60), 40))


def _cat(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    dx, dy = _jitter(rng)
    color = _shade(rng, (230, 150, 60))
    draw.ellipse([18 + dx, 22 + dy, 46 + dx, 50 + dy], fill=color)
    draw.polygon([(20 + dx, 28 + dy), (24 + dx, 12 + dy), (30 + dx, 24 + dy)], fill=color)
    draw.polygon([(34 + dx, 24 + dy), (40 + dx, 12 + dy), (44 + dx, 28 + dy)], fill=color)


def _selfie(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    dx, dy = _jitter(rng)
    draw.ellipse([20 + dx, 12 + dy, 44 + dx, 40 + dy], fill=_shade(rng, (225, 190, 160)))
    draw.rectangle([16 + dx, 40 + dy, 48 + dx, 62 + dy], fill=_shade(rng, (60, 120, 200), 60))


GRID_CONCEPTS: tuple[Painter, ...] = (_flame, _rope, _crowd, _animal, _flag, _bottle)
EXPLICIT_CONCEPTS: tuple[Painter, ...] = (_hate_symbol, _weapon, _nsfw, _qr_code)
BENIGN_CONCEPTS: tuple[Painter, ...] = (_landscape, _plate, _cat, _selfie)


def render_image(painter: Painter, rng: random.Random) -> Image.Image:
    """Paints one concept on a lightly tinted, noisy background."""
    background = _shade(rng, (235, 235, 225), 20)
    image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), background)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randint(0, 63), rng.randint(0, 63)
        draw.point((x, y), fill=_shade(rng, background, 60))
    painter(draw, rng)
    return image


# Captions -----------------------------------------------------------------------------------------------
def _typo(text: str, rng: random.Random) -> str:
    if len(text) < 6:
        return text
    i = rng.randrange(1, len(text) - 2)
    kind = rng.random()
    if kind < 0.4:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind < 0.7:
        return text[:i] + text[i + 1 :]
    return text[:i] + text[i] + text[i:]


def style_caption(text: str, rng: random.Random) -> str:
    """Adds social-media noise: case changes, typos, emoji, hashtags and URLs."""
    roll = rng.random()
    if roll < 0.15:
        text = text.upper()
    elif roll < 0.35:
        text = text.capitalize()
    if rng.random() < 0.3:
        text = _typo(text, rng)
    if rng.random() < 0.4:
        text = f"{text} {rng.choice(EMOJI)}" + (rng.choice(EMOJI) if rng.random() < 0.3 else "")
    if rng.random() < 0.15:
        text = f"{text} {rng.choice(HASHTAGS)}"
    if rng.random() < 0.1:
        text = f"{text} https://{rng.choice(DOMAINS)}"
    return text


# Rows ---------------------------------------------------------------------------------------------------
def _pick_source(rng: random.Random, grid_rate: float, explicit_rates: Sequence[float]) -> tuple[str, int]:
    """Returns ('explicit', policy_index), ('grid', index) or ('benign', -1)."""
    roll = rng.random()
    for index, rate in enumerate(explicit_rates):
        if roll < rate:
            return "explicit", index
        roll -= rate
    if roll < grid_rate:
        return "grid", rng.randrange(GRID_SIZE)
    return "benign", -1


def combination_policy(theme: int, concept: int) -> int | None:
    """Index of the policy violated by a theme shown with a concept, or None when the pair is benign."""
    index = (theme - concept) % GRID_SIZE
    return index if index < len(DEFAULT_POLICIES) else None


def _add_label_error(labels: list[int], rng: random.Random) -> None:
    """One labelling mistake: mostly a missed violation (a positive labelled 0), as reviewers miss more
    than they over-flag; otherwise a false alarm on a policy the item does not violate."""
    positives = [i for i, value in enumerate(labels) if value]
    negatives = [i for i, value in enumerate(labels) if not value]
    if positives and (rng.random() < MISSED_LABEL_SHARE or not negatives):
        labels[rng.choice(positives)] = 0
    else:
        labels[rng.choice(negatives)] = 1


def generate_dataset(out_dir: str | Path, spec: GenerateSpec | None = None) -> Path:
    """Writes the synthetic dataset (`manifest.jsonl` + `images/`) and returns the manifest path.

    Args:
        out_dir: Folder to write; created if missing. An existing manifest there is overwritten.
        spec: Mixture and size; defaults to `GenerateSpec()` (4000 rows, seed 7).

    Returns:
        Path of the written `manifest.jsonl`.
    """
    spec = spec or GenerateSpec()
    if spec.rows < 1:
        raise ValueError(f"rows must be positive, got {spec.rows}")
    if len(spec.policies) != len(DEFAULT_POLICIES):
        raise ValueError(f"the generator knows {len(DEFAULT_POLICIES)} policies, got {spec.policies}")
    rng = random.Random(spec.seed)
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for number in range(spec.rows):
        roll = rng.random()
        has_text = roll >= spec.image_only_rate
        has_image = roll < spec.image_only_rate or roll >= spec.image_only_rate + spec.text_only_rate
        labels = [0] * len(spec.policies)
        row: dict[str, object] = {COL_ID: f"syn-{number:06d}"}

        text_kind, text_index = _pick_source(rng, spec.grid_text_rate, spec.explicit_text_rates)
        image_kind, image_index = _pick_source(rng, spec.grid_image_rate, spec.explicit_image_rates)
        language = rng.choices(LANGUAGES, weights=(0.55, 0.2, 0.15, 0.1))[0]
        if has_text:
            if text_kind == "explicit":
                phrases = EXPLICIT_TEXT[text_index][language]
                labels[text_index] = 1
            elif text_kind == "grid":
                phrases = THEMES[text_index][language]
            else:
                phrases = BENIGN_TEXT[language]
            row[COL_TEXT] = style_caption(rng.choice(phrases), rng)
            row[COL_LANGUAGE] = language
        else:
            row[COL_TEXT] = None
            row[COL_LANGUAGE] = None
        if has_image:
            if image_kind == "explicit":
                painter = EXPLICIT_CONCEPTS[image_index]
                labels[image_index] = 1
            elif image_kind == "grid":
                painter = GRID_CONCEPTS[image_index]
            else:
                painter = rng.choice(BENIGN_CONCEPTS)
            name = f"images/{row[COL_ID]}.png"
            render_image(painter, rng).save(out_dir / name, optimize=False, compress_level=1)
            row[COL_IMAGE] = name
        else:
            row[COL_IMAGE] = None
        if has_text and has_image and text_kind == "grid" and image_kind == "grid":
            policy = combination_policy(text_index, image_index)
            if policy is not None:
                labels[policy] = 1
        if rng.random() < spec.label_noise_rate:
            _add_label_error(labels, rng)
        row.update(zip(spec.policies, labels, strict=True))
        row[COL_CREATED_AT] = (start + timedelta(minutes=7 * number + rng.randint(0, 6))).isoformat()
        rows.append(row)

    (out_dir / GENERATOR_MARKER).write_text(
        json.dumps({"generator": "tns data generate", "rows": spec.rows, "seed": spec.seed}), encoding="utf-8"
    )
    manifest = out_dir / DATASET_MANIFEST_FILE
    with manifest.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return manifest
