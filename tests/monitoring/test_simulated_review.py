"""Simulated moderators: a batch answered from the truth, imported by `tns review import` as it is: the labels
equal the truth except the seeded flips, and the gold disagreement reported is the share of flipped gold answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.common.constants import DEFAULT_POLICIES
from monitoring.review import ReviewError, ReviewRequest, sample_review, write_batch
from monitoring.review_import import import_review
from monitoring.simulated_review import read_truth, simulate_review_export
from serving.content_store import LocalContentStore
from tests.monitoring.records import records, write, write_gold


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict:
    """A 200-row window without labels, its content, a truth file, a gold dataset and a 60-task batch."""
    root = tmp_path_factory.mktemp("simulated")
    rows = records(200, seed=4, label_rate=0.0)
    logs = write(root / "logs", rows)
    store = LocalContentStore(root / "content")
    for record in rows:
        store.put(record["request_id"], 0, f"text of {record['request_id']}", None)
    truth = root / "truth.jsonl"
    with truth.open("w") as handle:
        for n, record in enumerate(rows):
            labels = {p: int((n + i) % (3 + i) == 0) for i, p in enumerate(DEFAULT_POLICIES)}
            handle.write(json.dumps({"request_id": record["request_id"], "item": 0, "labels": labels}) + "\n")
    gold = write_gold(root / "gold")
    out = root / "batch"
    request = ReviewRequest(logs=logs, budget=60, out_dir=out, content=root / "content", gold=gold, seed=2)
    write_batch(sample_review(request), out)
    return {"root": root, "logs": logs, "truth": truth, "dir": out}


def test_the_export_imports_as_the_truth_except_the_flips(batch, tmp_path: Path):
    manifest = json.loads((batch["dir"] / "batch.json").read_text())
    export = tmp_path / "export.json"
    review = simulate_review_export(batch["dir"], batch["truth"], export, disagreement=0.1, seed=5)
    assert review.tasks == 60 and review.answers == 60 * len(DEFAULT_POLICIES)
    assert 0 < len(review.flipped) < review.answers  # 10% of 240: some, not all
    assert sum(review.labelers.values()) == 60 and len(review.labelers) == 3

    imported = import_review(export, batch["dir"], batch["logs"])
    truth = read_truth(batch["truth"])
    flipped = set(review.flipped)
    lines = [json.loads(line) for line in imported.labels_file.read_text().splitlines()]
    refs = {(v["request_id"], v["item"]): ref for ref, v in manifest["items"].items()}
    assert len(lines) == len(manifest["items"]) == 60 - len(manifest["gold"]) > 0
    for line in lines:
        ref = refs[(line["request_id"], line["item"])]
        expected = truth[(line["request_id"], line["item"])]
        for policy in DEFAULT_POLICIES:
            flip = (ref, policy) in flipped
            assert line["labels"][policy] == (1 - expected[policy] if flip else expected[policy])
        assert line["labeler"].startswith("moderator-") and line["labeler"].endswith("@simulated")
    gold = imported.summary["gold"]
    gold_flips = sum(ref in manifest["gold"] for ref, _ in review.flipped)
    assert gold["tasks"] == len(manifest["gold"]) > 0
    assert gold["compared"] == review.gold_answers == len(manifest["gold"]) * len(DEFAULT_POLICIES)
    assert gold["disagreements"] == review.gold_flipped == gold_flips
    assert gold["disagreement_rate"] == review.gold_disagreement


def test_without_disagreement_every_answer_is_the_truth_and_seeds_repeat(batch, tmp_path: Path):
    exact = simulate_review_export(batch["dir"], batch["truth"], tmp_path / "a.json", disagreement=0.0)
    assert exact.flipped == [] and exact.gold_disagreement == 0.0
    first = simulate_review_export(batch["dir"], batch["truth"], tmp_path / "b.json", seed=9)
    again = simulate_review_export(batch["dir"], batch["truth"], tmp_path / "c.json", seed=9)
    assert first.flipped == again.flipped and first.labelers == again.labelers


def test_a_truth_file_of_another_window_is_refused(batch, tmp_path: Path):
    other = tmp_path / "truth.jsonl"
    other.write_text(json.dumps({"request_id": "elsewhere", "item": 0, "labels": {"hate": 1}}) + "\n")
    with pytest.raises(ReviewError, match="has no truth for"):
        simulate_review_export(batch["dir"], other, tmp_path / "export.json")
    with pytest.raises(ReviewError, match="disagreement must be"):
        simulate_review_export(batch["dir"], batch["truth"], tmp_path / "export.json", disagreement=2)
