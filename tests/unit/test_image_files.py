"""One contained, bounded reader for every image path the project opens (ingestion, validation, training,
golden sets, reference data, `tns classify --image`), and only parsed dates in log partition names."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from core.common.constants import COL_IMAGE, COL_TEXT
from core.common.images import ImageFileError, read_image_file
from tests.monitoring.records import png


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "dataset"
    (root / "images").mkdir(parents=True)
    (root / "images" / "ok.png").write_bytes(png(16, 16))
    (tmp_path / "secret.png").write_bytes(png(16, 16))
    (root / "images" / "link.png").symlink_to(tmp_path / "secret.png")
    return root


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("../secret.png", "unsafe_path"),
        ("images/../../secret.png", "unsafe_path"),
        ("images/link.png", "unsafe_path"),  # a link out of the dataset
        ("images/absent.png", "missing_file"),
        ("images", "missing_file"),
    ],
)
def test_paths_outside_the_dataset_or_missing_are_refused(dataset: Path, relative: str, reason: str):
    with pytest.raises(ImageFileError) as caught:
        read_image_file(dataset, relative)
    assert caught.value.reason == reason and relative in str(caught.value)


def test_absolute_paths_and_oversized_files_are_refused(dataset: Path):
    with pytest.raises(ImageFileError, match="unsafe_path"):
        read_image_file(dataset, str(dataset / "images" / "ok.png"))
    size = (dataset / "images" / "ok.png").stat().st_size
    with pytest.raises(
        ImageFileError, match=f"too_many_bytes: images/ok.png has {size} bytes, more than {size - 1}"
    ):
        read_image_file(dataset, "images/ok.png", max_bytes=size - 1)
    assert read_image_file(dataset, "images/ok.png", max_bytes=size) == png(16, 16)


def test_training_refuses_an_image_path_out_of_the_dataset(dataset: Path):
    """Finding: `load_inputs` read `dataset_dir / path` for whatever path a (tampered) dataset named."""
    from core.training.encoding import load_inputs

    frame = pd.DataFrame({COL_TEXT: ["a", None], COL_IMAGE: ["images/ok.png", "../secret.png"]})
    with pytest.raises(ImageFileError, match="unsafe_path: ../secret.png"):
        load_inputs(dataset, frame)
    texts, images = load_inputs(dataset, frame.head(1))
    assert texts == ["a"] and images == [png(16, 16)]
    with pytest.raises(ImageFileError, match="too_many_bytes"):
        load_inputs(dataset, frame.head(1), max_image_bytes=10)


@dataclass
class _Scored:
    model_name: str = "content-safety"
    model_version: str = "1"
    scores: dict | None = None
    flags: dict | None = None
    action: str = "allow"
    text_embedding: None = None
    image_embedding: None = None


class _Scorer:
    """Scores every item 0.1 for one policy (the reference reader's contract, without a model)."""

    policies = ["spam"]
    model_version = "1"

    def score(self, texts, images):
        return [_Scored(scores={"spam": 0.1}, flags={"spam": False}) for _ in texts]


def _manifest(root: Path, rows: list[dict]) -> None:
    (root / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_a_reference_image_path_out_of_the_dataset_is_refused(dataset: Path, tmp_path: Path):
    """Finding: reference-dataset image paths were read without containment or size checks."""
    from monitoring.reference import ReferenceDatasetError, scored_reference

    _manifest(
        dataset,
        [{"id": "a", "text": "hi", "image": "images/ok.png", "spam": 0}] * 3
        + [{"id": "evil", "text": "hi", "image": "../secret.png", "spam": 0}],
    )
    with pytest.raises(
        ReferenceDatasetError, match=r"row 'evil': image unsafe_path: ../secret.png .* `tns validate`"
    ):
        scored_reference(dataset, scorer_factory=_Scorer, cache_root=tmp_path / "cache")


def test_created_at_never_becomes_a_path(dataset: Path, tmp_path: Path):
    """Finding: a reference row's `created_at` was used unsanitised in the log partition path."""
    from monitoring.reference import scored_reference
    from monitoring.schema import partition_name

    with pytest.raises(ValueError):
        partition_name("../../../x")
    assert partition_name("2026-11-20T23:30:00-05:00") == "date=2026-11-21"  # the UTC day
    _manifest(
        dataset,
        [
            {"id": "a", "text": "hi", "created_at": "../../../escaped/x", "spam": 0},
            {"id": "b", "text": "hi", "created_at": "2026-11-03T10:00:00", "spam": 1},
        ],
    )
    cache = tmp_path / "cache"
    window = scored_reference(dataset, scorer_factory=_Scorer, cache_root=cache)
    assert window.stats.rows == 2 and not (tmp_path / "escaped").exists()
    written = {p.relative_to(cache).parts[1] for p in cache.rglob("*.jsonl")}
    assert "date=2026-11-03" in written and all(name.startswith("date=20") for name in written)
