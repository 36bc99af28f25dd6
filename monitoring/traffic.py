"""A production-traffic simulator: synthetic posts over a time range, with a drift scenario from a chosen time on.

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

`simulate_items` is pure and deterministic per seed. `simulate_traffic` scores the items (in process with a
`RepositoryScorer`, or through a running Triton server) and writes::

    OUT/logs/date=YYYY-MM-DD/traffic-<pid>.jsonl   inference-log records (monitoring.schema), by simulated day
    OUT/logs/labels/labels-<seed>.jsonl            delayed moderator labels of a `label_rate` share of the items
    OUT/dataset/manifest.jsonl, images/            the labeled items as a training-ready dataset
    OUT/simulation.json                            spec, scenario, drift start time, counts

`OUT/logs` is the log root to give `monitoring.logs.read_logs` (it joins the labels); the dataset stays outside
it because every `*.jsonl` under a log root is read as logs. Moderator labels are the items' true labels (no
label noise). Logged timestamps are the simulated times, not the wall-clock time of scoring.

`add_simulate_arguments` and `run_simulate` implement `tns traffic simulate`.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.common.constants import (
    COL_CREATED_AT,
    COL_ID,
    COL_IMAGE,
    COL_LANGUAGE,
    COL_TEXT,
    DEFAULT_MODEL_NAME,
    DEFAULT_POLICIES,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
)
from core.data.generate import (
    BENIGN_CONCEPTS,
    BENIGN_TEXT,
    EXPLICIT_CONCEPTS,
    EXPLICIT_TEXT,
    GRID_CONCEPTS,
    IMAGE_SIDE,
    LANGUAGES,
    THEMES,
    GenerateSpec,
    _pick_source,
    combination_policy,
    render_image,
    style_caption,
)
from monitoring.schema import LABELS_DIR

if TYPE_CHECKING:
    from PIL import Image

    from monitoring.scoring import RepositoryScorer

DEFAULT_START = datetime(2026, 2, 1, tzinfo=UTC)  # after the embedded training data (January 2026)
DEFAULT_ROWS = 2000
DEFAULT_SEED = 11
DEFAULT_HOURS = 24.0
DEFAULT_DRIFT_START = 0.5
DEFAULT_LABEL_RATE = 0.3
DEFAULT_SURGE_POLICY = "spam"
DEFAULT_BATCH_SIZE = 32
LANGUAGE_WEIGHTS = (0.55, 0.2, 0.15, 0.1)  # the generator's language mix, in LANGUAGES order
SLANG_LANGUAGE = "en"  # the invented slang is English-based internet speech
SIMULATION_FILE = "simulation.json"
LOGS_DIR = (
    "logs"  # the log root: day partitions and labels/ (a dataset manifest inside would be read as logs)
)
DATASET_DIR = "dataset"
DATASET_MANIFEST = "manifest.jsonl"
LOG_FILE_NAME = "traffic"
SERVER_READY_TIMEOUT_S = 10.0
MODE_IN_PROCESS = "in-process"
MODE_SERVER = "server"

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
    """

    name: str
    description: str
    slang_share: float = 0.0
    image_style: ImageStyle = TRAINING_IMAGE_STYLE
    surge_factor: float = 1.0
    image_only_rate: float | None = None
    text_only_rate: float | None = None

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
        policy = combination_policy(text_index, image_index)
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


# Scoring and writing -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimulationResult:
    """What `simulate_traffic` wrote.

    Attributes:
        out_dir: The output folder.
        log_root: The log root (`out_dir/logs`): give it to `monitoring.logs.read_logs`.
        spec: The simulated spec.
        mode: `in-process` or `server`.
        model_name: The model that scored the items.
        model_version: Its version.
        rows: Items scored and logged.
        drifted: Items the scenario applied to.
        labeled: Items with a delayed label (= dataset rows).
        partitions: Records per day partition (`date=YYYY-MM-DD`).
        labels_file: The delayed-label file.
        dataset_manifest: The labeled items' manifest.
        summary_file: `simulation.json`.
        scoring_seconds: Wall time of scoring and logging.
    """

    out_dir: Path
    log_root: Path
    spec: SimulationSpec
    mode: str
    model_name: str
    model_version: str
    rows: int
    drifted: int
    labeled: int
    partitions: dict[str, int]
    labels_file: Path
    dataset_manifest: Path
    summary_file: Path
    scoring_seconds: float

    @property
    def items_per_second(self) -> float:
        return self.rows / self.scoring_seconds if self.scoring_seconds > 0 else float("inf")


ItemKey = tuple[str, int]  # (request_id, item): a log record's key


def _score_in_process(
    items: Sequence[SimulatedItem],
    scorer: RepositoryScorer,
    write: Callable[[list[dict[str, Any]]], None],
    batch_size: int,
    keep_text: bool,
) -> tuple[list[ItemKey], str, str]:
    """Scores with the scorer; each item is its own request (`request_id` = item id, `item` 0)."""
    from monitoring.schema import make_record

    keys: list[ItemKey] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        scored = scorer.score([i.text for i in batch], [i.image for i in batch], batch_size=batch_size)
        records = []
        for item, answer in zip(batch, scored, strict=True):
            records.append(
                make_record(
                    request_id=item.id,
                    item=0,
                    timestamp=item.timestamp,
                    model_name=answer.model_name,
                    model_version=answer.model_version,
                    text=item.text,
                    image=item.image,
                    scores=answer.scores,
                    flags=answer.flags,
                    action=answer.action,
                    text_embedding=answer.text_embedding,
                    image_embedding=answer.image_embedding,
                    latency_ms=None,  # no request was made
                    keep_text=keep_text,
                )
            )
            keys.append((item.id, 0))
        write(records)
    return keys, scorer.model_name, scorer.model_version


def _score_through_server(
    items: Sequence[SimulatedItem],
    url: str,
    protocol: str,
    write: Callable[[list[dict[str, Any]]], None],
    batch_size: int,
    keep_text: bool,
) -> tuple[list[ItemKey], str, str]:
    """Sends the items in order, `batch_size` per request; the request ids come from the client's log hook."""
    from monitoring.schema import make_record
    from serving.client import ContentSafetyClient, ServerUnavailableError

    logged: list[dict[str, Any]] = []  # the client's records, one per item, in request order
    keys: list[ItemKey] = []
    model_name = model_version = ""
    with ContentSafetyClient(
        url, protocol=protocol, max_batch_size=batch_size, retries=2, inference_log=logged.extend
    ) as client:
        if not client.wait_until_ready(SERVER_READY_TIMEOUT_S):
            raise ServerUnavailableError(
                f"no ready Triton server with model '{client.model_name}' at {client.url} ({protocol}) within "
                f"{SERVER_READY_TIMEOUT_S:.0f} s; is `tns serve` running there?"
            )
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            before = len(logged)
            predictions = client.classify([i.text for i in batch], [i.image for i in batch])
            requests = logged[before:]
            if len(requests) != len(batch):
                raise RuntimeError(f"the client logged {len(requests)} records for {len(batch)} items")
            records = []
            for item, prediction, request in zip(batch, predictions, requests, strict=True):
                key = (str(request["request_id"]), int(request["item"]))
                records.append(
                    make_record(
                        request_id=key[0],
                        item=key[1],
                        timestamp=item.timestamp,  # the simulated time, not the wall clock
                        model_name=prediction.model_name,
                        model_version=prediction.model_version,
                        text=item.text,
                        image=item.image,
                        scores=prediction.scores,
                        flags=prediction.flags,
                        action=prediction.action,
                        text_embedding=getattr(prediction, "text_embedding", None),
                        image_embedding=getattr(prediction, "image_embedding", None),
                        latency_ms=request.get("latency_ms"),
                        keep_text=keep_text,
                    )
                )
                keys.append(key)
            model_name, model_version = predictions[-1].model_name, predictions[-1].model_version
            write(records)
    return keys, model_name, model_version


def _write_labels(items: Sequence[SimulatedItem], keys: Sequence[ItemKey], path: Path) -> int:
    """Writes the delayed moderator labels of the labeled items; returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"request_id": request_id, "item": position, "labels": item.labels})
        for item, (request_id, position) in zip(items, keys, strict=True)
        if item.labeled
    ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return len(lines)


def write_dataset(items: Sequence[SimulatedItem], folder: Path) -> Path:
    """Writes items as a dataset in the generator's format (`manifest.jsonl` + `images/`); returns the manifest.

    Columns: id, text, image (relative path), language, created_at, one 0/1 column per policy.
    """
    (folder / "images").mkdir(parents=True, exist_ok=True)
    manifest = folder / DATASET_MANIFEST
    with manifest.open("w", encoding="utf-8") as handle:
        for item in items:
            image_path = None
            if item.image is not None:
                extension = "jpg" if item.image_format == "JPEG" else str(item.image_format).lower()
                image_path = f"images/{item.id}.{extension}"
                (folder / image_path).write_bytes(item.image)
            row = {
                COL_ID: item.id,
                COL_TEXT: item.text,
                COL_IMAGE: image_path,
                COL_LANGUAGE: item.language,
                COL_CREATED_AT: item.timestamp.isoformat(),
                **item.labels,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return manifest


def _label_rates(items: Sequence[SimulatedItem]) -> dict[str, float]:
    if not items:
        return {}
    return {p: round(sum(i.labels[p] for i in items) / len(items), 4) for p in items[0].labels}


def existing_output(out_dir: Path) -> str | None:
    """Why `out_dir` cannot take a simulation (it holds one, or a failed one's logs), or None when it can."""
    if (out_dir / SIMULATION_FILE).exists():
        return f"{out_dir} already holds a simulation ({SIMULATION_FILE}); choose a new folder"
    log_root = out_dir / LOGS_DIR
    if log_root.is_dir() and any(log_root.iterdir()):
        return f"{log_root} already holds logs (records would be appended twice); choose a new folder"
    return None


def simulate_traffic(
    spec: SimulationSpec,
    out_dir: str | Path,
    scorer: RepositoryScorer | None = None,
    url: str | None = None,
    protocol: str = "grpc",
    batch_size: int = DEFAULT_BATCH_SIZE,
    keep_text: bool = False,
) -> SimulationResult:
    """Simulates traffic, scores it and writes logs, delayed labels, the labeled dataset and a summary.

    Written under `out_dir`: the log root `logs/` with `logs/date=YYYY-MM-DD/traffic-<pid>.jsonl` (schema
    records, by the simulated day) and `logs/labels/labels-<seed>.jsonl` (the delayed labels, where
    `monitoring.logs.read_logs` joins them); `dataset/manifest.jsonl` + `dataset/images/` (outside the log root,
    whose `*.jsonl` files are all read as logs); `simulation.json`.

    Args:
        spec: What to simulate.
        out_dir: The output folder; it must not hold a simulation or logs (records would be appended twice).
        scorer: Scores in process (default without `url`: the MLflow champion, `champion_scorer()`).
        url: `host:port` of a running Triton server to score through instead (`ContentSafetyClient`).
        protocol: `grpc` or `http`, with `url`.
        batch_size: Items per scoring batch (per request with `url`).
        keep_text: Log raw texts in the records (off by default, as in serving).

    Returns:
        What was written.

    Raises:
        FileExistsError: `out_dir` holds a simulation or logs already.
        ValueError: Both `scorer` and `url` given, or a bad `batch_size`.
        serving.client.ContentSafetyError: With `url`: the server is unreachable or fails.
        serving.store.ServingStoreError: Without `scorer` and `url`: no champion to score with.
    """
    from monitoring.logs import LogWriter

    if scorer is not None and url is not None:
        raise ValueError("give a scorer or a url, not both")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    out_dir = Path(out_dir)
    summary_file = out_dir / SIMULATION_FILE
    problem = existing_output(out_dir)
    if problem:
        raise FileExistsError(problem)
    if scorer is None and url is None:
        from monitoring.scoring import champion_scorer

        scorer = champion_scorer()
    items = simulate_items(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_root = out_dir / LOGS_DIR
    writer = LogWriter(log_root, LOG_FILE_NAME)
    partitions: Counter[str] = Counter()

    def write(records: list[dict[str, Any]]) -> None:
        writer.write(records)
        partitions.update(writer.path_for(record["timestamp"]).parent.name for record in records)

    started = time.perf_counter()
    if url is not None:
        keys, model_name, model_version = _score_through_server(
            items, url, protocol, write, batch_size, keep_text
        )
        mode = MODE_SERVER
    else:
        assert scorer is not None
        keys, model_name, model_version = _score_in_process(items, scorer, write, batch_size, keep_text)
        mode = MODE_IN_PROCESS
    scoring_seconds = time.perf_counter() - started

    labels_file = log_root / LABELS_DIR / f"labels-{spec.seed}.jsonl"
    labeled = _write_labels(items, keys, labels_file)
    manifest = write_dataset([item for item in items if item.labeled], out_dir / DATASET_DIR)
    drift_start = spec.drift_start_time
    before = [item for item in items if item.timestamp < drift_start]
    after = [item for item in items if item.timestamp >= drift_start]
    result = SimulationResult(
        out_dir=out_dir,
        log_root=log_root,
        spec=spec,
        mode=mode,
        model_name=model_name,
        model_version=model_version,
        rows=len(items),
        drifted=sum(item.drifted for item in items),
        labeled=labeled,
        partitions=dict(sorted(partitions.items())),
        labels_file=labels_file,
        dataset_manifest=manifest,
        summary_file=summary_file,
        scoring_seconds=scoring_seconds,
    )
    scenario = SCENARIOS[spec.scenario]
    modalities = Counter(
        "both" if item.text and item.image else "text" if item.text else "image" for item in items
    )
    summary = {
        "spec": spec.to_dict(),
        "scenario": {"name": scenario.name, "description": scenario.description},
        "start": spec.start.isoformat(),
        "end": spec.end.isoformat(),
        "drift_start": drift_start.isoformat(),
        "mode": mode,
        "url": url,
        "model": {"name": model_name, "version": model_version},
        "counts": {
            "rows": result.rows,
            "before_drift_start": len(before),
            "after_drift_start": len(after),
            "drifted": result.drifted,
            "labeled": labeled,
            "modalities": dict(sorted(modalities.items())),
            "partitions": result.partitions,
        },
        "label_rates": {"before_drift_start": _label_rates(before), "after_drift_start": _label_rates(after)},
        "files": {
            "log_root": log_root.relative_to(out_dir).as_posix(),
            "partitions": sorted(result.partitions),
            "labels": labels_file.relative_to(out_dir).as_posix(),
            "dataset": manifest.relative_to(out_dir).as_posix(),
        },
        "scoring_seconds": round(scoring_seconds, 3),
        "items_per_second": round(result.items_per_second, 1),
    }
    summary_file.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return result


# Command line: `tns traffic simulate` ----------------------------------------------------------------------
def _utc_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _drift_start(value: str) -> float | datetime:
    try:
        fraction = float(value)
    except ValueError:
        return _utc_time(value)
    if not 0.0 <= fraction <= 1.0:
        raise argparse.ArgumentTypeError(f"a drift-start fraction must be in [0, 1], got {value}")
    return fraction


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {number}")
    return number


def _rate(value: str) -> float:
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return rate


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return number


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of `tns traffic simulate` to a (sub)parser."""
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="Folder to write logs, labels, dataset and simulation.json to.",
    )
    parser.add_argument(
        "--rows", type=_positive_int, default=DEFAULT_ROWS, help=f"Items (default {DEFAULT_ROWS})."
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"Random seed (default {DEFAULT_SEED})."
    )
    parser.add_argument(
        "--scenario",
        choices=list(SCENARIOS),
        default="none",
        help="Drift from the drift start on: "
        + "; ".join(f"{name}: {scenario.description}" for name, scenario in SCENARIOS.items())
        + " (default none).",
    )
    parser.add_argument(
        "--drift-start",
        type=_drift_start,
        default=DEFAULT_DRIFT_START,
        metavar="FRACTION_OR_ISO",
        help=f"Where the scenario starts: a fraction of the range or an ISO time (default {DEFAULT_DRIFT_START}).",
    )
    parser.add_argument(
        "--start",
        type=_utc_time,
        default=DEFAULT_START,
        metavar="ISO",
        help=f"Start of the simulated range (default {DEFAULT_START.isoformat()}; naive times are UTC).",
    )
    parser.add_argument(
        "--hours",
        type=_positive_float,
        default=DEFAULT_HOURS,
        help=f"Length of the range in hours (default {DEFAULT_HOURS:g}).",
    )
    parser.add_argument(
        "--label-rate",
        type=_rate,
        default=DEFAULT_LABEL_RATE,
        help=f"Share of items with a delayed moderator label (default {DEFAULT_LABEL_RATE}).",
    )
    parser.add_argument(
        "--surge-policy",
        choices=list(DEFAULT_POLICIES),
        default=DEFAULT_SURGE_POLICY,
        help=f"The policy that surges in policy_surge (default {DEFAULT_SURGE_POLICY}).",
    )
    parser.add_argument(
        "--url",
        default=None,
        metavar="HOST:PORT",
        help="Score through a running Triton server (`tns serve`).",
    )
    parser.add_argument(
        "--protocol", choices=("http", "grpc"), default="grpc", help="Protocol with --url (default grpc)."
    )
    parser.add_argument(
        "--repository", type=Path, default=None, help="Score in process with this exported Triton repository."
    )
    parser.add_argument(
        "--model-name",
        default=DEFAULT_MODEL_NAME,
        help=f"Registered model whose champion scores by default (default {DEFAULT_MODEL_NAME}).",
    )
    parser.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: the local store).")
    parser.add_argument("--keep-text", action="store_true", help="Log raw texts in the records too.")


def run_simulate(args: argparse.Namespace) -> int:
    """Runs `tns traffic simulate`: prints a summary and returns the exit code (0 ok, 1 failed, 2 usage)."""
    from monitoring.scoring import RepositoryScorer, RepositoryScoringError, champion_scorer
    from serving.client import ContentSafetyError
    from serving.store import ServingStoreError

    if args.url and args.repository is not None:
        print("tns: error: give --url or --repository, not both", file=sys.stderr)
        return EXIT_USAGE
    try:
        spec = SimulationSpec(
            rows=args.rows,
            seed=args.seed,
            start=args.start,
            hours=args.hours,
            scenario=args.scenario,
            drift_start=args.drift_start,
            label_rate=args.label_rate,
            surge_policy=args.surge_policy,
        )
    except ValueError as error:
        print(f"tns: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    problem = existing_output(args.out)
    if problem:
        print(f"tns: error: --out: {problem}", file=sys.stderr)
        return EXIT_FAILED
    try:
        scorer = None
        if args.url:
            where = f"the Triton server at {args.url} ({args.protocol})"
        elif args.repository is not None:
            scorer = RepositoryScorer(args.repository)
            where = f"{args.repository} in process"
        else:
            print(f"fetching the champion of '{args.model_name}' from MLflow ...", flush=True)
            scorer = champion_scorer(args.model_name, args.tracking_uri)
            where = f"the champion of '{args.model_name}' in process"
        print(
            f"simulating {spec.rows} items ({spec.scenario}), scoring them with {where} ...",
            flush=True,
        )
        result = simulate_traffic(
            spec, args.out, scorer=scorer, url=args.url, protocol=args.protocol, keep_text=args.keep_text
        )
    except (ServingStoreError, RepositoryScoringError) as error:
        print(f"tns: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except ContentSafetyError as error:
        print(f"tns: error: scoring through {args.url} ({args.protocol}) failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as error:
        print(f"tns: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    partitions = ", ".join(f"{name} ({count})" for name, count in result.partitions.items())
    print(
        f"simulated {result.rows} items from {spec.start.isoformat()} to {spec.end.isoformat()}, scenario "
        f"'{spec.scenario}' from {spec.drift_start_time.isoformat()} ({result.drifted} drifted)\n"
        f"scored by '{result.model_name}' version {result.model_version} ({result.mode}) in "
        f"{result.scoring_seconds:.1f} s ({result.items_per_second:.0f} items/s)\n"
        f"  logs     {result.log_root} : {partitions}\n"
        f"  labels   {result.labels_file} ({result.labeled} items)\n"
        f"  dataset  {result.dataset_manifest} ({result.labeled} rows)\n"
        f"  summary  {result.summary_file}",
        flush=True,
    )
    return EXIT_OK
