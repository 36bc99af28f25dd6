"""Synthetic inference-log records for unit tests: fast, seeded, with knobs for each kind of drift."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from core.common.constants import DEFAULT_POLICIES, EMBEDDING_DIM
from monitoring.log_writer import LogWriter
from monitoring.schema import make_record

WORDS = ("look", "who", "is", "back", "the", "new", "neighbors", "moved", "in", "again", "today")
START = datetime(2026, 11, 20, tzinfo=UTC)


def png(width: int, height: int, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 30, 200)).save(buffer, format=fmt)
    return buffer.getvalue()


def records(
    rows: int,
    seed: int,
    start: datetime = START,
    text_shift: float = 0.0,
    image_size: tuple[int, int] = (64, 64),
    image_format: str = "PNG",
    spam_rate: float = 0.08,
    policies: tuple[str, ...] = DEFAULT_POLICIES,
    label_rate: float = 0.0,
    model_version: str = "3",
    image_only_rate: float = 0.1,
) -> list[dict]:
    """`rows` records, one minute apart. `text_shift` moves the text embeddings' mean; `spam_rate` is the share
    of items that are spam (high spam score, flagged); `image_only_rate` the share without text (their sexual
    scores run higher, so a new modality mix moves the score distributions by itself)."""
    rng = np.random.default_rng(seed)
    image = png(*image_size, image_format)
    out = []
    for row in range(rows):
        has_text, has_image = rng.random() > image_only_rate, rng.random() > 0.1
        if not has_text and not has_image:
            has_text = True
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))) if has_text else None
        spam = rng.random() < spam_rate
        scores = {p: float(rng.beta(1, 12)) for p in policies}
        if spam:
            scores["spam"] = float(rng.beta(12, 1))
        if not has_text and "sexual" in scores:
            scores["sexual"] = float(rng.beta(3, 6))
        flags = {p: scores[p] >= 0.5 for p in policies}
        text_embedding = rng.normal(text_shift, 1.0, EMBEDDING_DIM) if has_text else None
        image_embedding = rng.normal(0.0, 1.0, EMBEDDING_DIM) if has_image else None
        labels = None
        if rng.random() < label_rate:
            labels = {p: int(flags[p]) if rng.random() > 0.05 else 1 - int(flags[p]) for p in policies}
        out.append(
            make_record(
                request_id=f"r{seed}-{row}",
                item=0,
                timestamp=start + timedelta(minutes=row),
                model_name="content-safety",
                model_version=model_version,
                text=text,
                image=image if has_image else None,
                scores=scores,
                flags=flags,
                action="flag" if any(flags.values()) else "allow",
                text_embedding=text_embedding,
                image_embedding=image_embedding,
                latency_ms=12.5,
                labels=labels,
            )
        )
    return out


def write(root: Path, rows: list[dict], name: str = "part") -> Path:
    LogWriter(root, name).write(rows)
    return root


def write_gold(folder: Path, rows: int = 8) -> Path:
    """A labeled dataset of gold items for review batches: texts, every other one with an image, one policy
    positive per item in turn."""
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "g.png").write_bytes(png(5, 5))
    lines = [
        {"id": f"gold-{i}", "text": f"gold text {i}", "image": "images/g.png" if i % 2 else None}
        | {p: int(p == DEFAULT_POLICIES[i % 4]) for p in DEFAULT_POLICIES}
        for i in range(rows)
    ]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder
