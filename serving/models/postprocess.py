"""Triton python-backend model `postprocess`: probabilities to scores, per-policy flags and a JSON decision.

Export copies this file into `postprocess/<version>/model.py` with `serving_metadata.json`, which holds the
policy names, the per-policy thresholds chosen at evaluation and the registered model's name and version, so
they travel with the model version. Like `preprocess`, it imports the project's constants from the copy of
`components/` beside it. It also publishes per-policy counters and score histograms (`ServingMetrics`) on
tritonserver's metrics endpoint, when the server has one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.common.constants import (
    METRIC_DECISIONS,
    METRIC_ITEMS_FLAGGED,
    METRIC_ITEMS_SCORED,
    METRIC_POLICY_SCORE,
    METRIC_SCORE_BUCKETS,
    SERVING_METADATA_FILE,
    TENSOR_PROBABILITIES,
    TRITON_OUTPUT_DECISION,
    TRITON_OUTPUT_FLAGS,
    TRITON_OUTPUT_SCORES,
)

ACTION_FLAG = "flag"
ACTION_ALLOW = "allow"


def apply_thresholds(probabilities: np.ndarray, metadata: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Scores, flags (score >= the policy's threshold) and one JSON decision per item.

    Args:
        probabilities: (N, P) float32, columns in `metadata["policies"]` order.
        metadata: The contents of `serving_metadata.json`.

    Returns:
        Scores (N, P) float32, flags (N, P) bool, and N JSON strings.
    """
    policies = list(metadata["policies"])
    thresholds = np.asarray([metadata["thresholds"][p] for p in policies], dtype=np.float32)
    scores = np.asarray(probabilities, dtype=np.float32).reshape(-1, len(policies))
    flags = scores >= thresholds
    decisions = []
    for row in range(scores.shape[0]):
        flagged = [p for p, hit in zip(policies, flags[row], strict=True) if hit]
        decision = {
            "action": ACTION_FLAG if flagged else ACTION_ALLOW,
            "flagged_policies": flagged,
            "policies": {
                p: {
                    "score": float(scores[row, j]),
                    "threshold": float(thresholds[j]),
                    "flagged": bool(flags[row, j]),
                }
                for j, p in enumerate(policies)
            },
            "model_name": metadata["model_name"],
            "model_version": str(metadata["model_version"]),
        }
        decisions.append(json.dumps(decision))  # key order = the model's policy order, as in SCORES
    return scores, flags, decisions


class ServingMetrics:
    """What `postprocess` publishes on tritonserver's metrics endpoint (`pb_utils.MetricFamily`): items scored and
    flagged per policy, decisions per action, and a score histogram per policy, labelled with the model's name and
    version. Instances of the model share the families and series (tritonserver keeps one per name and labels)."""

    def __init__(self, pb_utils, metadata: dict) -> None:
        family = pb_utils.MetricFamily
        # not tritonserver's `model`/`version` labels (the Triton model, e.g. the ensemble): the registered model
        model = {"model_name": str(metadata["model_name"]), "model_version": str(metadata["model_version"])}
        self.policies = list(metadata["policies"])
        scored = family(METRIC_ITEMS_SCORED, "Items scored, per policy.", family.COUNTER)
        flagged = family(METRIC_ITEMS_FLAGGED, "Items at or above the policy's threshold.", family.COUNTER)
        decisions = family(METRIC_DECISIONS, "Decisions, per action.", family.COUNTER)
        scores = family(METRIC_POLICY_SCORE, "Calibrated scores, per policy.", family.HISTOGRAM)
        self.families = (scored, flagged, decisions, scores)  # a family must outlive its metrics
        self.scored = [scored.Metric(labels={**model, "policy": p}) for p in self.policies]
        self.flagged = [flagged.Metric(labels={**model, "policy": p}) for p in self.policies]
        self.decisions = {
            a: decisions.Metric(labels={**model, "action": a}) for a in (ACTION_FLAG, ACTION_ALLOW)
        }
        self.scores = [
            scores.Metric(labels={**model, "policy": p}, buckets=list(METRIC_SCORE_BUCKETS))
            for p in self.policies
        ]

    def record(self, scores: np.ndarray, flags: np.ndarray) -> None:
        """Counts a batch's items, flags and decisions, and observes its scores."""
        items = scores.shape[0]
        for j in range(len(self.policies)):
            self.scored[j].increment(items)
            self.flagged[j].increment(int(flags[:, j].sum()))
            for value in scores[:, j]:
                self.scores[j].observe(float(value))
        flagged = int(flags.any(axis=1).sum())
        self.decisions[ACTION_FLAG].increment(flagged)
        self.decisions[ACTION_ALLOW].increment(items - flagged)


class TritonPythonModel:
    """Triton's python backend calls `initialize` once per instance and `execute` per batch of requests."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        folder = Path(args["model_repository"]) / args["model_version"]
        self.metadata = json.loads((folder / SERVING_METADATA_FILE).read_text(encoding="utf-8"))
        try:
            self.metrics = ServingMetrics(pb_utils, self.metadata)
        except Exception as error:  # noqa: BLE001 - a server started with --allow-metrics=false refuses them
            self.metrics = None
            pb_utils.Logger.log_info(f"postprocess: serving without metrics ({error})")

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            probabilities = pb_utils.get_input_tensor_by_name(request, TENSOR_PROBABILITIES).as_numpy()
            scores, flags, decisions = apply_thresholds(probabilities, self.metadata)
            if self.metrics is not None:
                self.metrics.record(scores, flags)
            outputs = [
                pb_utils.Tensor(TRITON_OUTPUT_SCORES, scores),
                pb_utils.Tensor(TRITON_OUTPUT_FLAGS, flags),
                pb_utils.Tensor(
                    TRITON_OUTPUT_DECISION,
                    np.asarray([d.encode("utf-8") for d in decisions], dtype=object).reshape(-1, 1),
                ),
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
