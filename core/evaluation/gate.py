"""Promotion gate: decides BLESSED or NOT_BLESSED from a challenger's evaluation and the champion's.

Checks, per policy:

- `floor` on `roc_auc` and `pr_auc`: the challenger's test metric must reach the configured absolute floor
  (`GateConfig.min_roc_auc`, `GateConfig.min_pr_auc`, per policy). An undefined metric fails.
- `non_regression` on `roc_auc`, only when a champion evaluation is given (the champion re-scored on the same
  test split): challenger >= champion - `regression_tolerance`.
- `non_regression_original` on `roc_auc`, when the test split holds rows of a retraining dataset's two origins
  (`data_origin`: the champion's own training data and the newly labeled data): the same rule on the original
  slice alone, so that what the model knew cannot be traded for the new data. The new slice is reported
  (`new_slice`, informational).

Every check becomes a `GateReason` whose message names the metric, the threshold and the observed value, so a
decision explains itself. A forced promotion keeps the failed reasons and records why in `force_reason`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.common.constants import (
    BLESSED,
    COL_DATA_ORIGIN,
    COL_ID,
    GATE_DECISION_FILE,
    NOT_BLESSED,
    ORIGIN_NEW,
    ORIGIN_ORIGINAL,
)
from core.common.markup import escape_markdown
from core.config.run import GateConfig, per_policy
from core.evaluation.evaluate import label_column, score_column
from core.evaluation.metrics import roc_auc

CHECK_FLOOR = "floor"
CHECK_NON_REGRESSION = "non_regression"
CHECK_POLICY_SET = "policy_set"
CHECK_ORIGINAL_SLICE = "non_regression_original"
CHECK_NEW_SLICE = "new_slice"
# Slack for float rounding in comparisons (e.g. 0.91 - 0.01 is not exactly 0.90).
_EPSILON = 1e-9


@dataclass
class GateReason:
    """The outcome of one gate check."""

    check: str
    policy: str | None
    metric: str
    threshold: float
    observed: float | None
    passed: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateReason:
        return cls(
            check=str(data["check"]),
            policy=data.get("policy"),
            metric=str(data["metric"]),
            threshold=float(data["threshold"]),
            observed=None if data.get("observed") is None else float(data["observed"]),
            passed=bool(data["passed"]),
            message=str(data["message"]),
        )


@dataclass
class GateDecision:
    """The gate's verdict with every check that led to it."""

    decision: str
    reasons: list[GateReason] = field(default_factory=list)
    champion_version: str | None = None
    compared_to_champion: bool = False
    forced: bool = False
    force_reason: str | None = None
    summary: str = ""

    def blessed(self) -> bool:
        """Whether the model may be promoted."""
        return self.decision == BLESSED

    @property
    def failed(self) -> list[GateReason]:
        """The checks that did not pass."""
        return [reason for reason in self.reasons if not reason.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (the `gate_decision.json` artifact)."""
        data = asdict(self)
        data["reasons"] = [reason.to_dict() for reason in self.reasons]
        return data

    def to_markdown(self) -> str:
        """The decision and every reason, as Markdown for a KFP `Markdown` artifact."""
        lines = [
            f"# Gate decision: {escape_markdown(self.decision)}",
            "",
            escape_markdown(self.summary),
            "",
            "| check | status | message |",
            "|---|---|---|",
        ]
        for reason in self.reasons:
            status = "pass" if reason.passed else "FAIL"
            lines.append(
                f"| {escape_markdown(reason.check)} | {status} | {escape_markdown(reason.message)} |"
            )
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateDecision:
        """Rebuilds a decision from `to_dict()` output."""
        decision = str(data["decision"])
        if decision not in (BLESSED, NOT_BLESSED):
            raise ValueError(f"decision must be {BLESSED} or {NOT_BLESSED}, got {decision!r}")
        return cls(
            decision=decision,
            reasons=[GateReason.from_dict(r) for r in data.get("reasons", [])],
            champion_version=None if data.get("champion_version") is None else str(data["champion_version"]),
            compared_to_champion=bool(data.get("compared_to_champion", False)),
            forced=bool(data.get("forced", False)),
            force_reason=data.get("force_reason"),
            summary=str(data.get("summary", "")),
        )


def _metric(evaluation: dict[str, Any] | None, policy: str, metric: str) -> float | None:
    if not evaluation:
        return None
    value = evaluation.get("policies", {}).get(policy, {}).get(metric)
    return None if value is None else float(value)


def _floor_reason(policy: str, metric: str, observed: float | None, floor: float) -> GateReason:
    name = f"{metric}[{policy}]"
    if observed is None:
        message = (
            f"{name} undefined (no evaluation, or a single class in the test labels) "
            f"vs floor {floor:.3f}: fail"
        )
        return GateReason(CHECK_FLOOR, policy, metric, floor, None, False, message)
    passed = observed >= floor - _EPSILON
    relation = ">=" if passed else "<"
    message = f"{name} {observed:.3f} {relation} floor {floor:.3f}: {'pass' if passed else 'fail'}"
    return GateReason(CHECK_FLOOR, policy, metric, floor, observed, passed, message)


def _regression_reason(
    policy: str,
    observed: float | None,
    champion: float | None,
    tolerance: float,
    check: str = CHECK_NON_REGRESSION,
    where: str = "",
) -> GateReason:
    metric = "roc_auc"
    name = f"{metric}[{policy}]{where}"
    if champion is None:
        # Nothing to regress from (a policy the champion lacks, or undefined for it): informational pass.
        message = f"{name}: champion has no value for this policy, not compared: pass"
        return GateReason(check, policy, metric, 0.0, observed, True, message)
    minimum = champion - tolerance
    if observed is None:
        message = (
            f"{name} undefined vs champion {champion:.3f} - tolerance {tolerance:.3f} = {minimum:.3f}: fail"
        )
        return GateReason(check, policy, metric, minimum, None, False, message)
    passed = observed >= minimum - _EPSILON
    relation = ">=" if passed else "<"
    message = (
        f"{name} {observed:.3f} {relation} champion {champion:.3f} - tolerance {tolerance:.3f} "
        f"= {minimum:.3f}: {'pass' if passed else 'fail'}"
    )
    return GateReason(check, policy, metric, minimum, observed, passed, message)


def _new_slice_reason(policy: str, observed: float | None, champion: float | None, rows: int) -> GateReason:
    def shown(value: float | None) -> str:
        return "undefined" if value is None else f"{value:.3f}"

    message = (
        f"roc_auc[{policy}] on the new slice ({rows} test rows): challenger {shown(observed)} vs champion "
        f"{shown(champion)} (reported, not a rule)"
    )
    return GateReason(CHECK_NEW_SLICE, policy, "roc_auc", 0.0, observed, True, message)


def _annotated_auc(rows: pd.DataFrame, policy: str) -> float | None:
    """ROC AUC over the rows annotated for `policy` (None without its columns or with one class only)."""
    if label_column(policy) not in rows.columns or score_column(policy) not in rows.columns:
        return None
    labels = pd.to_numeric(rows[label_column(policy)], errors="coerce").to_numpy(dtype=float)
    scores = pd.to_numeric(rows[score_column(policy)], errors="coerce").to_numpy(dtype=float)
    keep = ~np.isnan(labels) & np.isfinite(scores)
    return roc_auc(labels[keep], scores[keep])


def origin_slices(
    test: pd.DataFrame, challenger_scores: pd.DataFrame, champion_scores: pd.DataFrame, policies: list[str]
) -> dict[str, dict[str, Any]] | None:
    """ROC AUC per policy of both models on each origin of the test split (`data_origin`), or None unless the test
    split holds rows of both origins.

    Args:
        test: The test split's rows (id, `data_origin`).
        challenger_scores: The challenger's test score table (id, `label_*`, `score_*`).
        champion_scores: The champion's, on the same rows.
        policies: Policies both models score.

    Returns:
        `{origin: {"rows": n, "challenger": {policy: auc}, "champion": {policy: auc}}}` for `original` and `new`.
    """
    if COL_DATA_ORIGIN not in test.columns or not {ORIGIN_ORIGINAL, ORIGIN_NEW} <= set(test[COL_DATA_ORIGIN]):
        return None  # not a retraining dataset, or one side is missing: nothing to compare slice by slice
    slices: dict[str, dict[str, Any]] = {}
    for origin in (ORIGIN_ORIGINAL, ORIGIN_NEW):
        ids = set(test.loc[test[COL_DATA_ORIGIN] == origin, COL_ID].astype(str))
        entry: dict[str, Any] = {"rows": len(ids)}
        for name, table in (("challenger", challenger_scores), ("champion", champion_scores)):
            rows = table[table[COL_ID].astype(str).isin(ids)]
            entry[name] = {policy: _annotated_auc(rows, policy) for policy in policies}
        slices[origin] = entry
    return slices


def gate_decision(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None,
    policies: list[str],
    config: GateConfig,
    champion_version: str | None = None,
    force_promote: bool = False,
    force_reason: str = "",
    champion_policies: list[str] | None = None,
    slices: dict[str, dict[str, Any]] | None = None,
) -> GateDecision:
    """Runs every gate check and returns the decision.

    A change of the policy set is a decision, not an error: the champion is compared on the policies both
    models have; a policy the champion lacks is judged by its floors alone; a policy the champion enforces and
    the challenger drops fails the `policy_set` check (forcing with a reason accepts it).

    Args:
        challenger: `evaluate_scores` output of the newly trained model.
        champion: `evaluate_scores` output of the current champion re-scored on the same test split, or None
            on a first run (then only the absolute floors apply).
        policies: Policies to check.
        config: Floors per policy and the non-regression tolerance.
        champion_version: Registry version of the champion, for the record.
        force_promote: Bless the model even when checks fail (failed reasons are kept).
        force_reason: Why the promotion is forced; required with `force_promote`.
        champion_policies: The champion model's policies (default: `policies`); ignored without a champion.
        slices: `origin_slices` of a retraining dataset's test split: non-regression on the original slice is
            a rule, the new slice is reported. Ignored without a champion.

    Returns:
        The decision, its reasons and a one-paragraph summary.

    Raises:
        ValueError: When `force_promote` is set without a non-empty `force_reason`, or no policies are given.
    """
    if not policies:
        raise ValueError("policies must name at least one policy")
    reason_text = (force_reason or "").strip()
    if force_promote and not reason_text:
        raise ValueError("force_promote needs a non-empty force_reason, recorded with the decision")

    reasons: list[GateReason] = []
    for policy in policies:
        reasons.append(
            _floor_reason(
                policy,
                "roc_auc",
                _metric(challenger, policy, "roc_auc"),
                per_policy(config.min_roc_auc, policy),
            )
        )
        reasons.append(
            _floor_reason(
                policy, "pr_auc", _metric(challenger, policy, "pr_auc"), per_policy(config.min_pr_auc, policy)
            )
        )
    compared = champion is not None
    known = list(policies) if champion_policies is None else list(champion_policies)
    added = [p for p in policies if p not in known] if compared else []
    dropped = [p for p in known if p not in policies] if compared else []
    for policy in added:
        message = f"policy {policy} is new (the champion has none): judged by its floors alone: pass"
        reasons.append(GateReason(CHECK_POLICY_SET, policy, "policy", 0.0, None, True, message))
    for policy in dropped:
        message = (
            f"policy {policy} is enforced by the champion and missing from this model: fail "
            "(train it with the policy, or force the promotion with a reason to retire it)"
        )
        reasons.append(GateReason(CHECK_POLICY_SET, policy, "policy", 0.0, None, False, message))
    if compared:
        for policy in [p for p in policies if p in known]:
            reasons.append(
                _regression_reason(
                    policy,
                    _metric(challenger, policy, "roc_auc"),
                    _metric(champion, policy, "roc_auc"),
                    config.regression_tolerance,
                )
            )
    if compared and slices:
        original, new = slices[ORIGIN_ORIGINAL], slices[ORIGIN_NEW]
        for policy in [p for p in policies if p in known]:
            reasons.append(
                _regression_reason(
                    policy,
                    original["challenger"].get(policy),
                    original["champion"].get(policy),
                    config.regression_tolerance,
                    CHECK_ORIGINAL_SLICE,
                    f" on the original slice ({original['rows']} test rows)",
                )
            )
            reasons.append(
                _new_slice_reason(
                    policy, new["challenger"].get(policy), new["champion"].get(policy), new["rows"]
                )
            )

    failed = [r for r in reasons if not r.passed]
    passed_all = not failed
    forced = force_promote and not passed_all
    decision = BLESSED if passed_all or forced else NOT_BLESSED

    if passed_all:
        head = f"{BLESSED}: all {len(reasons)} checks passed."
    else:
        listed = "; ".join(r.message for r in failed)
        verdict = f"{BLESSED} (forced)" if forced else NOT_BLESSED
        head = f"{verdict}: {len(failed)} of {len(reasons)} checks failed: {listed}."
    if compared:
        version = f" version {champion_version}" if champion_version else ""
        context = (
            f"Compared to champion{version} on the same test split "
            f"(non-regression tolerance {config.regression_tolerance:.3f}) and absolute floors."
        )
        if slices:
            context += (
                f" Retraining data: the test split holds {slices[ORIGIN_ORIGINAL]['rows']} rows of the original "
                f"training data (non-regression checked on them alone) and {slices[ORIGIN_NEW]['rows']} new rows."
            )
        if added or dropped:
            context += f" Policy set changed: added {', '.join(added) or 'none'}; dropped {', '.join(dropped) or 'none'}."
    else:
        context = "First run, no champion: absolute floors only."
    parts = [head, context]
    if forced:
        parts.append(f"Promotion was forced despite failed checks: {reason_text}")
    elif force_promote:
        parts.append("Force-promote was requested but not needed.")

    return GateDecision(
        decision=decision,
        reasons=reasons,
        champion_version=champion_version,
        compared_to_champion=compared,
        forced=forced,
        force_reason=reason_text if forced else None,
        summary=" ".join(parts),
    )


def read_decision(decision_dir: str | Path) -> dict[str, Any]:
    """The decision record the gate step wrote (`gate_decision.json` in its output folder)."""
    return json.loads((Path(decision_dir) / GATE_DECISION_FILE).read_text(encoding="utf-8"))
