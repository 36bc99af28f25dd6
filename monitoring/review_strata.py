"""The strata of the review queue: served thresholds, items near them, drifted segments, and the weights.

`monitoring.review.sample_review` draws a batch as a stratified sample of the window's candidates (served items
without a label yet), in this order, each stratum taken from what the earlier ones left:

1. **uncertainty**: per policy, the items whose score is nearest the served threshold, |score - threshold| in
   calibrated-probability units. The budget of this stratum is split between policies by
   `ReviewRules.policy_quotas` (equal by default), and the policies pick in order of their flagged count, fewest
   first, so the rarest policy gets its full share. Taken with certainty: weight 1.
2. **drift_segment**: a uniform random sample of the items in the segments the drift summary named (see
   `drift_segments`). Weight: segment size / items taken.
3. **uniform**: a uniform random sample of every other candidate. Weight: their number / items taken.

The strata partition the candidates, so the weights (inverse inclusion probabilities) make any weighted total
over the reviewed items an unbiased estimate for the window (Horvitz-Thompson): prevalence, precision, recall.
"Random" is a seeded hash of each item's key, so a batch does not depend on the order logs were read in.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.common.constants import STRATUM_UNIFORM
from core.config.review import UNCERTAINTY_LABEL, ReviewRules
from monitoring.schema import (
    FLAG_PREFIX,
    IMAGE_NUMERIC_COLUMNS,
    LABEL_PREFIX,
    SCORE_PREFIX,
    TEXT_NUMERIC_COLUMNS,
)

STRATUM_UNCERTAINTY = "uncertainty"
STRATUM_DRIFT = "drift_segment"
STRATUM_GOLD = "gold"
CATEGORICAL_SUBSETS = {"text_language": "text_present", "image_format": "image_present"}


@dataclass
class Segment:
    """Rows of the window that a drifted signal points at."""

    signal: str
    description: str
    mask: np.ndarray = field(repr=False)


def random_keys(request_ids, items, seed: int) -> np.ndarray:
    """A uniform [0, 1) key per item from a seeded hash of its (request id, item)."""
    keys = np.empty(len(request_ids), dtype=np.float64)
    for row, (request_id, item) in enumerate(zip(request_ids, items, strict=True)):
        digest = hashlib.sha256(f"{seed}\x1f{request_id}\x1f{int(item)}".encode("utf-8", "replace")).digest()
        keys[row] = int.from_bytes(digest[:8], "big") / 2.0**64
    return keys


def unlabeled(frame, policies: list[str]) -> np.ndarray:
    """Rows without a label for any policy (a delayed label arrived for the others)."""
    columns = [LABEL_PREFIX + p for p in policies if LABEL_PREFIX + p in frame.columns]
    if not columns:
        return np.ones(len(frame), dtype=bool)
    return np.isnan(frame[columns].to_numpy(dtype=float)).all(axis=1)


def served_thresholds(frame, policies: list[str]) -> dict[str, dict[str, float]]:
    """The threshold each model version served per policy, read from the logs: between the highest score that
    was not flagged and the lowest that was (their midpoint; one side only: that side's bound).

    The logs are what was served, version by version, so no registry or repository is needed; a threshold
    above every score of the window (nothing flagged) is bounded by the highest score, which then counts as
    the nearest."""
    thresholds: dict[str, dict[str, float]] = {}
    versions = frame["model_version"].astype(str).to_numpy()
    for version in sorted(set(versions)):
        rows = versions == version
        for policy in policies:
            scores = frame[SCORE_PREFIX + policy].to_numpy(dtype=float)[rows]
            flags = frame[FLAG_PREFIX + policy].to_numpy(dtype=float)[rows]
            known = ~np.isnan(scores) & ~np.isnan(flags)
            below, above = scores[known & (flags < 0.5)], scores[known & (flags >= 0.5)]
            if not len(below) and not len(above):
                continue
            if len(below) and len(above):
                value = (below.max() + above.min()) / 2.0
            else:
                value = below.max() if len(below) else above.min()
            thresholds.setdefault(version, {})[policy] = round(float(value), 6)
    return thresholds


def split_quota(total: int, weights: dict[str, float]) -> dict[str, int]:
    """`total` split in proportion to `weights` (largest remainders get the rounding)."""
    weight_sum = sum(weights.values())
    if total <= 0 or weight_sum <= 0:
        return dict.fromkeys(weights, 0)
    exact = {key: total * weight / weight_sum for key, weight in weights.items()}
    quota = {key: math.floor(value) for key, value in exact.items()}
    for key in sorted(exact, key=lambda k: quota[k] - exact[k])[: total - sum(quota.values())]:
        quota[key] += 1
    return quota


def uncertainty_picks(
    frame,
    available: np.ndarray,
    policies: list[str],
    thresholds: dict[str, dict[str, float]],
    quotas: dict[str, int],
    keys: np.ndarray,
    around_label: bool = False,
) -> list[tuple[int, str, str]]:
    """(row, policy, reason) of the items nearest each policy's threshold (with `around_label`: nearest a
    probability of 0.5); `available` is updated in place.

    Policies pick in order of their flagged count in the window (fewest first); a policy with fewer
    available items than its quota leaves the rest to the next."""
    versions = frame["model_version"].astype(str).to_numpy()
    flagged = {p: float(np.nansum(frame[FLAG_PREFIX + p].to_numpy(dtype=float))) for p in policies}
    picks: list[tuple[int, str, str]] = []
    carried = 0
    for policy in sorted(policies, key=lambda p: (flagged[p], policies.index(p))):
        want = quotas.get(policy, 0) + carried
        scores = frame[SCORE_PREFIX + policy].to_numpy(dtype=float)
        served = np.array([thresholds.get(v, {}).get(policy, np.nan) for v in versions])
        distance = np.abs(scores - (0.5 if around_label else served))
        rows = np.flatnonzero(available & ~np.isnan(distance))
        chosen = rows[np.lexsort((keys[rows], distance[rows]))][:want]
        available[chosen] = False
        carried = want - len(chosen)
        picks += [
            (int(row), policy, f"{policy}: score {scores[row]:.4f}, threshold {served[row]:.4f}")
            for row in chosen
        ]
    return picks


def _categories(values) -> np.ndarray:
    return values.astype(object).where(values.notna(), "missing").astype(str).to_numpy()


def _subset(frame, name: str) -> np.ndarray:
    """The rows a descriptor is defined on (the drift check compares text descriptors over text rows, ...)."""
    column = CATEGORICAL_SUBSETS.get(name)
    if column is None and name in TEXT_NUMERIC_COLUMNS:
        column = "text_present"
    if column is None and name in IMAGE_NUMERIC_COLUMNS:
        column = "image_present"
    if column is None:
        return np.ones(len(frame), dtype=bool)
    return frame[column].eq(True).to_numpy()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def segment_of(signal: dict[str, Any], frame) -> Segment | str:
    """The rows a drifted signal points at, or why it names no segment.

    * categorical (`text_language`, `image_format`, `text_present`, `image_present`): the rows of the
      categories whose share grew from the reference to the current window (the summary's top shares);
    * numeric descriptors and scores (`text_length`, `image_width`, `score_<policy>`, ...): the rows beyond the
      midpoint of the reference and current means, on the current side (more like the new traffic);
    * `flag_rate_<policy>` that rose: the rows flagged for that policy;
    * embeddings and performance signals name no rows (no per-row value in the summary): skipped.
    """
    name, kind = str(signal.get("name", "")), signal.get("kind")
    before, now = signal.get("reference_value"), signal.get("current_value")
    if kind == "categorical" and name in frame.columns and isinstance(before, dict) and isinstance(now, dict):
        grown = sorted(str(k) for k, v in now.items() if _number(v) is not None and v > (before.get(k) or 0))
        if not grown:
            return f"{name}: no category's share grew"
        mask = np.isin(_categories(frame[name]), grown) & _subset(frame, name)
        return Segment(name, f"{name} in {grown} (share grew)", mask)
    if kind in ("numeric", "prediction") and name in frame.columns:
        reference, current = _number(before), _number(now)
        if reference is None or current is None or reference == current:
            return f"{name}: no mean shift to follow"
        midpoint = (reference + current) / 2.0
        values = frame[name].astype(float).to_numpy()
        side = values > midpoint if current > reference else values < midpoint
        relation = ">" if current > reference else "<"
        description = f"{name} {relation} {midpoint:.4g} (mean {reference:.4g} -> {current:.4g})"
        return Segment(name, description, side & ~np.isnan(values) & _subset(frame, name))
    if kind == "flag_rate" and name.startswith("flag_rate_"):
        column = FLAG_PREFIX + name.removeprefix("flag_rate_")
        reference, current = _number(before), _number(now)
        if column not in frame.columns or reference is None or current is None or current <= reference:
            return f"{name}: the flagged share did not rise"
        mask = frame[column].to_numpy(dtype=float) >= 0.5
        return Segment(name, f"{column} (flagged share {reference:.3g} -> {current:.3g})", mask)
    return f"{name}: a {kind} signal names no rows of the window"


def drift_segments(summary: dict[str, Any], frame) -> tuple[list[Segment], list[str]]:
    """The segments of a drift summary's drifted signals, and why the other drifted signals gave none."""
    segments, skipped = [], []
    for signal in summary.get("signals") or []:
        if not isinstance(signal, dict) or not signal.get("drifted"):
            continue
        found = segment_of(signal, frame)
        if isinstance(found, str):
            skipped.append(found)
        elif found.mask.any():
            segments.append(found)
        else:
            skipped.append(f"{found.signal}: no row of this window is in {found.description}")
    return segments, skipped


def random_sample(rows: np.ndarray, count: int, keys: np.ndarray) -> tuple[np.ndarray, float]:
    """`count` of `rows` by smallest key (a uniform random sample), and the weight |rows| / taken."""
    chosen = rows[np.argsort(keys[rows], kind="stable")][: max(count, 0)]
    return chosen, (len(rows) / len(chosen) if len(chosen) else 0.0)


@dataclass
class Draw:
    """What `draw_strata` picked: per frame row its `stratum`, `weight` and `reasons`; per stratum its counts."""

    picks: dict[int, dict[str, Any]]
    strata: dict[str, dict[str, Any]]
    thresholds: dict[str, dict[str, float]]
    segments: list[Segment]
    skipped: list[str]


def draw_strata(
    frame,
    candidates: np.ndarray,
    policies: list[str],
    rules: ReviewRules,
    budget: int,
    window_budget: int,
    summary: dict[str, Any] | None,
    keys: np.ndarray,
    expansion: float = 1.0,
) -> Draw:
    """Draws `window_budget` of the candidate rows: uncertainty, then drifted segments, then uniform (the shares
    are of `budget`, gold included; what a stratum cannot fill goes to the uniform one, and what the rows
    outside the segments cannot fill goes to the segments). Every weight is
    multiplied by `expansion` (rows of the window per row of the frame)."""
    available = candidates.copy()
    thresholds = served_thresholds(frame, policies)
    quotas = split_quota(
        min(round(budget * rules.uncertainty_share), window_budget),
        {p: rules.quota_weight(p) for p in policies},
    )
    around_label = rules.uncertainty_around == UNCERTAINTY_LABEL
    picks: dict[int, dict[str, Any]] = {}
    for row, _policy, reason in uncertainty_picks(
        frame, available, policies, thresholds, quotas, keys, around_label
    ):
        picks[row] = {"stratum": STRATUM_UNCERTAINTY, "weight": expansion, "reasons": [reason]}
    strata: dict[str, dict[str, Any]] = {
        STRATUM_UNCERTAINTY: {"items": len(picks), "quotas": quotas, "weight": round(expansion, 6)}
    }
    segments, skipped = drift_segments(summary, frame) if summary else ([], [])
    drift_budget = min(round(budget * rules.drift_share), window_budget - len(picks))
    if segments and drift_budget > 0:
        in_segment = np.logical_or.reduce([s.mask for s in segments])
        rows = np.flatnonzero(available & in_segment)
        # what the rest of the window cannot fill of the uniform share goes to the segment
        outside = int((available & ~in_segment).sum())
        drift_budget = max(drift_budget, window_budget - len(picks) - outside)
        chosen, weight = random_sample(rows, drift_budget, keys)
        for row in chosen:
            reasons = [s.description for s in segments if s.mask[row]]
            picks[int(row)] = {"stratum": STRATUM_DRIFT, "weight": weight * expansion, "reasons": reasons}
        if len(chosen):  # the segment is a stratum of its own: the uniform stratum is the rest
            available &= ~in_segment
        strata[STRATUM_DRIFT] = {
            "items": len(chosen),
            "frame": len(rows),
            "weight": round(weight * expansion, 6),
        }
    rows = np.flatnonzero(available)
    chosen, weight = random_sample(rows, window_budget - len(picks), keys)
    for row in chosen:
        picks[int(row)] = {"stratum": STRATUM_UNIFORM, "weight": weight * expansion, "reasons": []}
    strata[STRATUM_UNIFORM] = {
        "items": len(chosen),
        "frame": len(rows),
        "weight": round(weight * expansion, 6),
    }
    return Draw(picks=picks, strata=strata, thresholds=thresholds, segments=segments, skipped=skipped)
