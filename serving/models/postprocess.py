"""Triton python-backend model `postprocess`: probabilities to scores, per-policy flags and a JSON decision.

Export copies this file into `postprocess/<version>/model.py` with `serving_metadata.json`, which holds the
policy names, the per-policy thresholds chosen at evaluation and the registered model's name and version, so
they travel with the model version. Like `preprocess`, it imports the project's constants from the copy of
`components/` beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.common.constants import (
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


class TritonPythonModel:
    """Triton's python backend calls `initialize` once per instance and `execute` per batch of requests."""

    def initialize(self, args: dict) -> None:
        folder = Path(args["model_repository"]) / args["model_version"]
        self.metadata = json.loads((folder / SERVING_METADATA_FILE).read_text(encoding="utf-8"))

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        responses = []
        for request in requests:
            probabilities = pb_utils.get_input_tensor_by_name(request, TENSOR_PROBABILITIES).as_numpy()
            scores, flags, decisions = apply_thresholds(probabilities, self.metadata)
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
