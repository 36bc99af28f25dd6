"""A held-back sample of drifted traffic, labeled by the simulator's truth, to score models before and after a
retraining loop on the same items.

`held_back_items` simulates a fresh stream (its own seed, the scenario from its first item on, every item with
its true labels); none of it was served, reviewed or trained on. `score_held_back` scores the items in process
with an exported Triton repository (`serving.in_process.RepositoryScorer`, as the served ensemble scores) and
returns ROC AUC per policy and their macro mean (`held_back_figures` does the same from any model's answers,
e.g. a served model's through `serving.client.ContentSafetyClient`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitoring.traffic_scenarios import SimulatedItem, SimulationSpec, simulate_items

if TYPE_CHECKING:
    from serving.client import Prediction


def held_back_items(scenario: str, rows: int, seed: int, start: datetime) -> list[SimulatedItem]:
    """`rows` simulated items of `scenario` throughout (drift from the first item), all with true labels."""
    spec = SimulationSpec(
        rows=rows, seed=seed, start=start, scenario=scenario, drift_start=0.0, label_rate=1.0
    )
    return simulate_items(spec)


def items_digest(items: Sequence[SimulatedItem]) -> str:
    """A digest of the items' ids and labels: two scorings were on the same held-back items when it matches."""
    text = "\n".join(f"{item.id} {sorted(item.labels.items())}" for item in items)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def held_back_figures(items: Sequence[SimulatedItem], predictions: Sequence[Prediction]) -> dict[str, Any]:
    """ROC AUC per policy (over the items, by their true labels) and the macro mean, from one model's answers.

    Args:
        items: The held-back items.
        predictions: The model's answer for each item, in order (in process or through a server).

    Returns:
        `{"model_version", "rows", "items_digest", "roc_auc": {policy: auc or None}, "macro_roc_auc"}`; a policy
        with one class only among the items has None and is left out of the macro mean.
    """
    from core.evaluation.metrics import roc_auc

    if len(predictions) != len(items) or not items:
        raise ValueError(f"got {len(predictions)} answers for {len(items)} items")
    per_policy: dict[str, float | None] = {}
    for policy in predictions[0].scores:
        labels = [item.labels[policy] for item in items]
        scores = [float(prediction.scores[policy]) for prediction in predictions]
        value = roc_auc(labels, scores)
        per_policy[policy] = None if value is None else round(float(value), 4)
    known = [value for value in per_policy.values() if value is not None]
    return {
        "model_version": predictions[0].model_version,
        "rows": len(items),
        "items_digest": items_digest(items),
        "roc_auc": per_policy,
        "macro_roc_auc": round(sum(known) / len(known), 4) if known else None,
    }


def score_held_back(
    items: Sequence[SimulatedItem], repository: str | Path, threads: int = 0
) -> dict[str, Any]:
    """`held_back_figures` of an exported repository, scored in process as the served ensemble scores."""
    from serving.in_process import RepositoryScorer

    scorer = RepositoryScorer(repository, threads=threads)
    return held_back_figures(items, scorer.score([i.text for i in items], [i.image for i in items]))
