"""Traffic scenarios and simulated items: synthetic posts over a time range, with a drift from a chosen time on.

Items come from the embedded generator's vocabulary, painters and labelling rules (`core.data.generate`):
explicit text or an explicit image violates its policy, a caption theme shown with a visual concept violates
`combination_policy(theme, concept)`. Before the drift start every scenario produces exactly the traffic of
`none` (the training mixture; each item has its own random stream, so the items before the drift start are the
same for every scenario of a seed). From the drift start on, the scenario applies:

| scenario | what changes after the drift start | what a monitor should see move |
|---|---|---|
| `none` | nothing | nothing |
| `new_slang` | 80% of texts use coded vocabulary the generator never produced: invented slang and new emoji for each policy and for ordinary chat, leetspeak for the caption themes; the labels stay those of the original meaning | text descriptors (non-letter share, emoji, language `unknown`), text embedding, scores (harmful slang is missed) |
| `image_style_shift` | images are 128x96 JPEG with an inverted, noisy palette instead of 64x64 PNG | image width, height, format, bytes, image embedding |
| `policy_surge` | one policy (default `spam`) surges: its explicit text and image rates are multiplied by 5 | that policy's label rate, score distribution and flagged rate |
| `modality_shift` | half of the items are image-only (10% before), text-only items drop to 5% | text/image presence, per-modality score mix |
| `concept_drift` | the `spam` policy is redefined: caption/image pairs that were spam are allowed, the pairs one step along the grid (allowed before) are spam; the content does not change | nothing in the inputs or scores; only labels (spam performance), and the label-free estimate turns unreliable |

`simulate_items` is pure and deterministic per seed. Scoring the items and writing logs, labels and the dataset
is `monitoring.traffic.simulate_traffic`.
"""

from __future__ import annotations

import io
import random
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from core.common.constants import DEFAULT_POLICIES
from core.data.generate import (
    BENIGN_CONCEPTS,
    BENIGN_TEXT,
    EXPLICIT_CONCEPTS,
    EXPLICIT_TEXT,
    GRID_CONCEPTS,
    GRID_SIZE,
    IMAGE_SIDE,
    LANGUAGES,
    THEMES,
    GenerateSpec,
    _pick_source,
    combination_policy,
    render_image,
    style_caption,
)

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_START = datetime(2026, 2, 1, tzinfo=UTC)  # after the embedded training data (January 2026)
DEFAULT_ROWS = 2000
DEFAULT_SEED = 11
DEFAULT_HOURS = 24.0
DEFAULT_DRIFT_START = 0.5
DEFAULT_LABEL_RATE = 0.3
DEFAULT_SURGE_POLICY = "spam"
LANGUAGE_WEIGHTS = (0.55, 0.2, 0.15, 0.1)  # the generator's language mix, in LANGUAGES order
SLANG_LANGUAGE = "en"  # the invented slang is English-based internet speech

# New vocabulary (never produced by the generator) --------------------------------------------------------
# Coded phrases per policy (DEFAULT_POLICIES order), as they might appear after training: invented slang,
# leetspeak and emoji the training data never contained. Synthetic and deliberately mild.
SLANG_EXPLICIT_TEXT: tuple[tuple[str, ...], ...] = (
    (
        "the [group] r 🐀🐀 fr, clear em out 🧹",
        "no [group] in the chat, npc subhumanz 🚫🐀",
        "[group] = roachez, yeet em all 🪳",
    ),
    (
        "gonna unalive u w/ the 🔪 when i catch u no cap",
        "pull up w/ the strap at sunrise, we opp hunting 🔫",
        "ima catch u lackin and end u 🗡️",
    ),
    (
        "sp1cy c0ntent 🌶️🍑 on my l1nktree 18+",
        "n00dz 4 sale, dm for the 🍆💦 menu",
        "0nlyfanz drop tonite, link in b10 🔞",
    ),
    (
        "fr33 g1ft c4rd 💸 tap the l1nk b4 its gone",
        "2x ur c01ns in 10 min, dm the plug 🚀🪙",
        "w1n a fr33 ph0ne, cl1ck b10 💰",
    ),
)
SLANG_BENIGN_TEXT: tuple[str, ...] = (
    "no cap this slaps 🫠",
    "lowkey vibing rn 🫶",
    "its giving main character energy 💅",
    "bestie this is bussin 🧋",
    "touch grass era fr 🌱",
    "ate and left no crumbs 🫡",
    "delulu is the solulu 🫠",
    "rizz check at the function 🧃",
)
SLANG_TAGS: tuple[str, ...] = ("fr fr", "ngl", "💀", "iykyk", "🫠", "no cap")
# Neutral new emoji that decorate slang texts (the coded phrases carry their own).
SLANG_EMOJI: tuple[str, ...] = ("🫠", "🫶", "💅", "🧋", "🌱", "🫡", "🧃", "💀")
LEETSPEAK = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})


@dataclass(frozen=True)
class ImageStyle:
    """How simulated images are encoded.

    Attributes:
        width: Pixel width (the generator paints 64x64; other sizes are resized from that).
        height: Pixel height.
        image_format: `PNG` or `JPEG`.
        invert: Invert the palette.
        noise: Amplitude of uniform per-pixel noise (0: none).
        jpeg_quality: JPEG quality.
    """

    width: int = IMAGE_SIDE
    height: int = IMAGE_SIDE
    image_format: str = "PNG"
    invert: bool = False
    noise: int = 0
    jpeg_quality: int = 75

    @property
    def extension(self) -> str:
        """The file extension of this format (`png`, `jpg`)."""
        return "jpg" if self.image_format == "JPEG" else self.image_format.lower()


TRAINING_IMAGE_STYLE = ImageStyle()  # what the generator writes: 64x64 PNG


@dataclass(frozen=True)
class Scenario:
    """A drift scenario: how traffic differs from the training mixture after the drift start.

    Attributes:
        name: Registry key (`--scenario`).
        description: One line for summaries.
        slang_share: Share of texts rewritten with new vocabulary.
        image_style: How images are encoded.
        surge_factor: Multiplies the surge policy's explicit text and image rates.
        image_only_rate: Share of image-only items (None: the generator's).
        text_only_rate: Share of text-only items (None: the generator's).
        redefined_policy: A policy whose rule for caption/image pairs changes (None: the generator's rules).
    """

    name: str
    description: str
    slang_share: float = 0.0
    image_style: ImageStyle = TRAINING_IMAGE_STYLE
    surge_factor: float = 1.0
    image_only_rate: float | None = None
    text_only_rate: float | None = None
    redefined_policy: str | None = None

    def pair_policy(self, theme: int, concept: int) -> int | None:
        """The policy a caption theme shown with a visual concept violates under this scenario's rules: the
        generator's, or with `redefined_policy` its pairs allowed and the next pairs on the grid violating it."""
        policy = combination_policy(theme, concept)
        if self.redefined_policy is None:
            return policy
        target = list(DEFAULT_POLICIES).index(self.redefined_policy)
        if policy == target:
            return None
        if policy is None and combination_policy(theme, (concept + 1) % GRID_SIZE) == target:
            return target
        return policy

    def mixture(self, base: GenerateSpec, surge_policy: str) -> GenerateSpec:
        """The generator mixture under this scenario (`base` when it changes no rate)."""
        mixture = base
        if self.surge_factor != 1.0:
            index = list(base.policies).index(surge_policy)
            text_rates, image_rates = list(base.explicit_text_rates), list(base.explicit_image_rates)
            text_rates[index] *= self.surge_factor
            image_rates[index] *= self.surge_factor
            mixture = replace(
                mixture, explicit_text_rates=tuple(text_rates), explicit_image_rates=tuple(image_rates)
            )
        if self.image_only_rate is not None:
            mixture = replace(mixture, image_only_rate=self.image_only_rate)
        if self.text_only_rate is not None:
            mixture = replace(mixture, text_only_rate=self.text_only_rate)
        return mixture


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario("none", "no drift: the training mixture throughout"),
        Scenario(
            "new_slang",
            "80% of texts use new coded slang, leetspeak and emoji absent from the training data",
            slang_share=0.8,
        ),
        Scenario(
            "image_style_shift",
            "images become 128x96 JPEG with an inverted, noisy palette (training: 64x64 PNG)",
            image_style=ImageStyle(width=128, height=96, image_format="JPEG", invert=True, noise=40),
        ),
        Scenario(
            "policy_surge",
            "one policy surges: its explicit text and image rates are multiplied by 5",
            surge_factor=5.0,
        ),
        Scenario(
            "modality_shift",
            "half of the items become image-only (10% in training), text-only drops to 5%",
            image_only_rate=0.5,
            text_only_rate=0.05,
        ),
        Scenario(
            "concept_drift",
            "the spam policy is redefined: its caption/image pairs are allowed, the next pairs on the grid are "
            "spam; the content does not change",
            redefined_policy="spam",
        ),
    )
}


@dataclass(frozen=True)
class SimulationSpec:
    """What to simulate.

    Attributes:
        rows: Number of items.
        seed: Random seed; the same spec always gives the same items.
        start: Time of the range's start (timezone-aware; a naive time is taken as UTC).
        hours: Length of the range; item timestamps are spread uniformly over it, in order.
        scenario: A key of `SCENARIOS`.
        drift_start: Where the scenario starts: a fraction of the range in [0, 1] or a time.
        label_rate: Share of items that get a delayed moderator label (and go into the dataset).
        surge_policy: The policy that surges in `policy_surge`.
    """

    rows: int = DEFAULT_ROWS
    seed: int = DEFAULT_SEED
    start: datetime = DEFAULT_START
    hours: float = DEFAULT_HOURS
    scenario: str = "none"
    drift_start: float | datetime = DEFAULT_DRIFT_START
    label_rate: float = DEFAULT_LABEL_RATE
    surge_policy: str = DEFAULT_SURGE_POLICY

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValueError(f"rows must be positive, got {self.rows}")
        if not self.hours > 0:
            raise ValueError(f"hours must be positive, got {self.hours}")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; choose one of {', '.join(SCENARIOS)}")
        if not 0.0 <= self.label_rate <= 1.0:
            raise ValueError(f"label_rate must be in [0, 1], got {self.label_rate}")
        if self.surge_policy not in DEFAULT_POLICIES:
            raise ValueError(
                f"surge_policy must be one of {', '.join(DEFAULT_POLICIES)}, got {self.surge_policy!r}"
            )
        if self.start.tzinfo is None:
            object.__setattr__(self, "start", self.start.replace(tzinfo=UTC))
        if isinstance(self.drift_start, datetime):
            if self.drift_start.tzinfo is None:
                object.__setattr__(self, "drift_start", self.drift_start.replace(tzinfo=UTC))
        elif not 0.0 <= float(self.drift_start) <= 1.0:
            raise ValueError(f"drift_start must be a fraction in [0, 1] or a time, got {self.drift_start}")

    @property
    def end(self) -> datetime:
        """The end of the time range (exclusive)."""
        return self.start + timedelta(hours=self.hours)

    @property
    def drift_start_time(self) -> datetime:
        """The time from which the scenario applies."""
        if isinstance(self.drift_start, datetime):
            return self.drift_start
        return self.start + timedelta(hours=self.hours * float(self.drift_start))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (times as ISO 8601)."""
        data = asdict(self)
        data["start"] = self.start.isoformat()
        data["drift_start"] = (
            self.drift_start.isoformat() if isinstance(self.drift_start, datetime) else self.drift_start
        )
        return data


@dataclass(frozen=True)
class SimulatedItem:
    """One simulated post.

    Attributes:
        id: Stable item id (`sim-<seed>-<index>`).
        timestamp: When it was posted (simulated, increasing with the index).
        text: Its text, or None for an image-only item.
        image: Its encoded image, or None for a text-only item.
        image_format: `PNG` or `JPEG` (None without an image).
        language: The text's language (None without text).
        labels: True label per policy (0/1), by the generator's rules.
        drifted: Whether the scenario applied (timestamp at or after the drift start, scenario not `none`).
        labeled: Whether a moderator label arrives for it.
        text_source: Where the text came from (`explicit:<policy>`, `theme:<i>`, `benign`; `slang:` prefixed when
            rewritten with new vocabulary).
        image_source: Where the image came from (`explicit:<policy>`, `concept:<i>`, `benign`).
    """

    id: str
    timestamp: datetime
    text: str | None
    image: bytes | None = field(repr=False)
    image_format: str | None
    language: str | None
    labels: dict[str, int]
    drifted: bool
    labeled: bool
    text_source: str | None
    image_source: str | None


def _timestamps(spec: SimulationSpec) -> list[datetime]:
    """Sorted uniform times over the range (one random stream per seed, independent of the scenario)."""
    rng = random.Random(f"tns-traffic-time:{spec.seed}")
    seconds = spec.hours * 3600.0
    offsets = sorted(rng.random() * seconds for _ in range(spec.rows))
    return [spec.start + timedelta(seconds=offset) for offset in offsets]


def _labeled(spec: SimulationSpec) -> list[bool]:
    """Which items get a moderator label (independent of the scenario)."""
    rng = random.Random(f"tns-traffic-labels:{spec.seed}")
    return [rng.random() < spec.label_rate for _ in range(spec.rows)]


def _slang_text(kind: str, index: int, language: str, rng: random.Random) -> tuple[str, str]:
    """A text in new vocabulary with the meaning (and so the label) of the source it replaces."""
    if kind == "explicit":
        text, language = rng.choice(SLANG_EXPLICIT_TEXT[index]), SLANG_LANGUAGE
    elif kind == "grid":
        text = rng.choice(THEMES[index][language]).lower().translate(LEETSPEAK)
    else:
        text, language = rng.choice(SLANG_BENIGN_TEXT), SLANG_LANGUAGE
    if rng.random() < 0.6:
        text = f"{text} {rng.choice(SLANG_TAGS)}"
    if rng.random() < 0.4:
        text = f"{text} {rng.choice(SLANG_EMOJI)}"
    return text, language


def encode_image(image: Image.Image, style: ImageStyle, rng: random.Random) -> bytes:
    """Encodes a painted image in a style (the training style gives the generator's exact PNG bytes)."""
    from PIL import Image, ImageOps

    if image.size != (style.width, style.height):
        image = image.resize((style.width, style.height), Image.Resampling.BILINEAR)
    if style.invert:
        image = ImageOps.invert(image)
    if style.noise:
        import numpy as np

        noise = np.random.default_rng(rng.getrandbits(32)).integers(
            -style.noise, style.noise + 1, size=(style.height, style.width, 3)
        )
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    if style.image_format == "JPEG":
        image.save(buffer, format="JPEG", quality=style.jpeg_quality)
    else:
        image.save(buffer, format=style.image_format, optimize=False, compress_level=1)
    return buffer.getvalue()


def _simulate_item(
    spec: SimulationSpec, index: int, timestamp: datetime, drifted: bool, labeled: bool
) -> SimulatedItem:
    scenario = SCENARIOS[spec.scenario] if drifted else SCENARIOS["none"]
    mixture = scenario.mixture(GenerateSpec(), spec.surge_policy)
    policies = list(mixture.policies)
    rng = random.Random(f"tns-traffic:{spec.seed}:{index}")  # one stream per item: scenario-independent past

    roll = rng.random()
    has_text = roll >= mixture.image_only_rate
    has_image = roll < mixture.image_only_rate or roll >= mixture.image_only_rate + mixture.text_only_rate
    text_kind, text_index = _pick_source(rng, mixture.grid_text_rate, mixture.explicit_text_rates)
    image_kind, image_index = _pick_source(rng, mixture.grid_image_rate, mixture.explicit_image_rates)
    language: str | None = rng.choices(LANGUAGES, weights=LANGUAGE_WEIGHTS)[0]
    labels = [0] * len(policies)

    text = text_source = None
    if has_text:
        if text_kind == "explicit":
            labels[text_index] = 1
            text_source, phrases = f"explicit:{policies[text_index]}", EXPLICIT_TEXT[text_index][language]
        elif text_kind == "grid":
            text_source, phrases = f"theme:{text_index}", THEMES[text_index][language]
        else:
            text_source, phrases = "benign", BENIGN_TEXT[language]
        if scenario.slang_share and rng.random() < scenario.slang_share:
            text, language = _slang_text(text_kind, text_index, language, rng)
            text_source = f"slang:{text_source}"
        else:
            text = style_caption(rng.choice(phrases), rng)
    else:
        language = None

    image = image_format = image_source = None
    if has_image:
        if image_kind == "explicit":
            labels[image_index] = 1
            painter, image_source = EXPLICIT_CONCEPTS[image_index], f"explicit:{policies[image_index]}"
        elif image_kind == "grid":
            painter, image_source = GRID_CONCEPTS[image_index], f"concept:{image_index}"
        else:
            painter, image_source = rng.choice(BENIGN_CONCEPTS), "benign"
        image = encode_image(render_image(painter, rng), scenario.image_style, rng)
        image_format = scenario.image_style.image_format

    if has_text and has_image and text_kind == "grid" and image_kind == "grid":
        policy = scenario.pair_policy(text_index, image_index)
        if policy is not None:
            labels[policy] = 1
    return SimulatedItem(
        id=f"sim-{spec.seed}-{index:06d}",
        timestamp=timestamp,
        text=text,
        image=image,
        image_format=image_format,
        language=language,
        labels=dict(zip(policies, labels, strict=True)),
        drifted=drifted,
        labeled=labeled,
        text_source=text_source,
        image_source=image_source,
    )


def simulate_items(spec: SimulationSpec) -> list[SimulatedItem]:
    """The simulated posts of a spec, in time order. Pure and deterministic: the same spec gives the same items.

    Every item has text, an image or both (never neither).
    """
    drift_start = spec.drift_start_time
    applies = spec.scenario != "none"
    return [
        _simulate_item(spec, index, timestamp, applies and timestamp >= drift_start, labeled)
        for index, (timestamp, labeled) in enumerate(zip(_timestamps(spec), _labeled(spec), strict=True))
    ]
