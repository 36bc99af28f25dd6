"""Score calibration: the validation split cut into early-stopping and calibration rows, and per-policy Platt
scaling fitted on the calibration rows and stored in the model's calibration buffers (what serving applies).
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd
import torch
from torch import nn

from core.common.constants import COL_ID
from core.training.model import FusionClassifier


def held_for_calibration(ids, share: float) -> np.ndarray:
    """Which validation rows fit the calibration (a stable hash of the item id: the same cut on every run)."""
    buckets = np.asarray([zlib.crc32(str(i).encode("utf-8")) % 1000 for i in ids], dtype=np.int64)
    return buckets < int(round(share * 1000))


def split_for_calibration(rows: pd.DataFrame, share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cuts validation rows into (early-stopping rows, calibration rows) by `held_for_calibration`."""
    held = held_for_calibration(rows[COL_ID], share)
    if held.all() or not held.any():
        raise ValueError(
            f"the validation split of {len(rows)} rows cannot be cut into early-stopping and calibration rows "
            f"(train.calibration_share={share}); raise split.validation_fraction"
        )
    return rows[~held].reset_index(drop=True), rows[held].reset_index(drop=True)


def platt_scaling(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(scale, bias) maximising the likelihood of `labels` under `sigmoid(scale * logits + bias)`."""
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")
    z, y = logits.double(), labels.double()

    def closure():
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(params[0] * z + params[1], y)
        loss.backward()
        return loss

    optimizer.step(closure)
    scale, bias = (float(v) for v in params.detach())
    return scale, bias


def fit_calibration(
    model: FusionClassifier,
    logits: torch.Tensor,
    labels: torch.Tensor,
    label_mask: torch.Tensor,
    policies: list[str],
    min_per_class: int = 5,
) -> dict[str, dict]:
    """Fits Platt scaling per policy (`sigmoid(scale * logit + bias)`, by maximum likelihood) on the
    calibration rows annotated for it (their uncalibrated `logits`, `labels` and `label_mask`), and stores it in
    the model's calibration buffers.

    A policy with fewer than `min_per_class` positives or negatives there keeps the identity (noted in the
    returned record, which the model card shows).
    """
    mask = label_mask.bool()
    record: dict[str, dict] = {}
    scale = torch.ones(len(policies))
    bias = torch.zeros(len(policies))
    for j, policy in enumerate(policies):
        z, y = logits[mask[:, j], j].double(), labels[mask[:, j], j].double()
        positives = int(y.sum().item())
        entry = {"rows": int(len(y)), "positives": positives, "fitted": False, "scale": 1.0, "bias": 0.0}
        if min(positives, len(y) - positives) >= min_per_class:
            a, b = platt_scaling(z, y)
            if (
                math.isfinite(a) and math.isfinite(b) and a > 0
            ):  # a non-positive slope would invert the ranking
                scale[j], bias[j] = a, b
                entry.update(fitted=True, scale=a, bias=b)
        record[policy] = entry
    model.calibration_scale.copy_(scale.to(model.calibration_scale.device))
    model.calibration_bias.copy_(bias.to(model.calibration_bias.device))
    return record
