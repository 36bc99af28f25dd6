"""The held-back sample of the closed loop: drifted from the first item, labeled throughout, deterministic; and its
figures: ROC AUC per policy by the true labels, the macro mean over the policies with both classes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from monitoring.held_back import held_back_figures, held_back_items, items_digest
from serving.client import Prediction

START = datetime(2026, 11, 4, tzinfo=UTC)


def _answers(items, score) -> list[Prediction]:
    return [
        Prediction(
            scores={p: score(item, p) for p in item.labels},
            flags={p: False for p in item.labels},
            action="allow",
            model_name="content-safety",
            model_version="7",
            decision={},
        )
        for item in items
    ]


def test_items_are_drifted_labeled_and_deterministic():
    items = held_back_items("new_slang", 200, seed=9, start=START)
    assert len(items) == 200 and all(item.drifted for item in items)
    assert items == held_back_items("new_slang", 200, seed=9, start=START)
    assert items_digest(items) == items_digest(held_back_items("new_slang", 200, seed=9, start=START))
    assert items_digest(items) != items_digest(held_back_items("new_slang", 200, seed=10, start=START))


def test_figures_follow_the_true_labels():
    items = held_back_items("image_style_shift", 300, seed=9, start=START)
    perfect = held_back_figures(items, _answers(items, lambda item, p: float(item.labels[p])))
    assert perfect["roc_auc"] == dict.fromkeys(items[0].labels, 1.0) and perfect["macro_roc_auc"] == 1.0
    assert perfect["model_version"] == "7" and perfect["rows"] == 300
    # Wrong on hate only: hate 0, the others 1, the macro mean their average.
    mixed = held_back_figures(items, _answers(items, lambda item, p: float(item.labels[p] != (p == "hate"))))
    assert mixed["roc_auc"]["hate"] == 0.0 and mixed["macro_roc_auc"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="answers for"):
        held_back_figures(items, _answers(items[:-1], lambda item, p: 0.5))
