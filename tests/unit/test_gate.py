"""The promotion gate: floors, non-regression against the champion, forced promotion, serialisation."""

from __future__ import annotations

import json

import pytest

from core.common.constants import BLESSED, NOT_BLESSED
from core.config.run import GateConfig
from core.evaluation.gate import (
    CHECK_FLOOR,
    CHECK_NON_REGRESSION,
    CHECK_POLICY_SET,
    GateDecision,
    gate_decision,
)

POLICIES = ["hate", "spam"]
CONFIG = GateConfig(min_roc_auc={"default": 0.85}, min_pr_auc={"default": 0.5}, regression_tolerance=0.01)


def evaluation(**metrics: tuple[float | None, float | None]) -> dict:
    """An evaluate_scores-shaped dict with only what the gate reads: {policy: (roc_auc, pr_auc)}."""
    return {"policies": {p: {"roc_auc": roc, "pr_auc": pr} for p, (roc, pr) in metrics.items()}}


GOOD = evaluation(hate=(0.912, 0.8), spam=(0.95, 0.9))


def test_first_run_checks_floors_only():
    decision = gate_decision(GOOD, None, POLICIES, CONFIG)
    assert decision.decision == BLESSED and decision.blessed()
    assert not decision.compared_to_champion and decision.champion_version is None
    assert [(r.check, r.policy, r.metric) for r in decision.reasons] == [
        (CHECK_FLOOR, "hate", "roc_auc"),
        (CHECK_FLOOR, "hate", "pr_auc"),
        (CHECK_FLOOR, "spam", "roc_auc"),
        (CHECK_FLOOR, "spam", "pr_auc"),
    ]
    assert decision.reasons[0].message == "roc_auc[hate] 0.912 >= floor 0.850: pass"
    assert decision.reasons[0].threshold == 0.85 and decision.reasons[0].observed == 0.912
    assert decision.summary.startswith("BLESSED: all 4 checks passed.")
    assert "no champion: absolute floors only" in decision.summary
    assert not decision.forced and decision.force_reason is None


def test_floor_failure_is_named():
    decision = gate_decision(evaluation(hate=(0.8, 0.8), spam=(0.95, 0.4)), None, POLICIES, CONFIG)
    assert decision.decision == NOT_BLESSED and not decision.blessed()
    failed = decision.failed
    assert [(r.policy, r.metric) for r in failed] == [("hate", "roc_auc"), ("spam", "pr_auc")]
    assert failed[0].message == "roc_auc[hate] 0.800 < floor 0.850: fail"
    assert failed[1].message == "pr_auc[spam] 0.400 < floor 0.500: fail"
    assert decision.summary.startswith("NOT_BLESSED: 2 of 4 checks failed")
    assert "roc_auc[hate] 0.800 < floor 0.850" in decision.summary


def test_per_policy_floor_override():
    config = GateConfig(min_roc_auc={"default": 0.85, "hate": 0.95})
    decision = gate_decision(GOOD, None, POLICIES, config)
    assert decision.decision == NOT_BLESSED
    assert decision.failed[0].message == "roc_auc[hate] 0.912 < floor 0.950: fail"


def test_regression_against_champion_fails_with_both_values():
    champion = evaluation(hate=(0.95, 0.8), spam=(0.95, 0.9))
    decision = gate_decision(GOOD, champion, POLICIES, CONFIG, champion_version="7")
    assert decision.decision == NOT_BLESSED
    assert decision.compared_to_champion and decision.champion_version == "7"
    assert len(decision.reasons) == 6
    (failed,) = decision.failed
    assert failed.check == CHECK_NON_REGRESSION and failed.policy == "hate" and failed.metric == "roc_auc"
    assert failed.threshold == pytest.approx(0.94) and failed.observed == 0.912
    assert failed.message == "roc_auc[hate] 0.912 < champion 0.950 - tolerance 0.010 = 0.940: fail"
    assert "champion version 7" in decision.summary
    assert "no champion" not in decision.summary


@pytest.mark.parametrize(("observed", "passed"), [(0.90, True), (0.8999, False), (0.905, True)])
def test_tolerance_boundary(observed, passed):
    challenger = evaluation(hate=(observed, 0.8), spam=(0.95, 0.9))
    champion = evaluation(hate=(0.91, 0.8), spam=(0.95, 0.9))
    config = GateConfig(min_roc_auc={"default": 0.5}, regression_tolerance=0.01)
    decision = gate_decision(challenger, champion, POLICIES, config)
    reason = next(r for r in decision.reasons if r.check == CHECK_NON_REGRESSION and r.policy == "hate")
    assert reason.passed is passed
    assert decision.blessed() is passed


def test_better_challenger_passes_regression():
    champion = evaluation(hate=(0.88, 0.7), spam=(0.90, 0.8))
    decision = gate_decision(GOOD, champion, POLICIES, CONFIG, champion_version="3")
    assert decision.decision == BLESSED
    assert decision.summary.startswith("BLESSED: all 6 checks passed.")


def test_none_metric_fails_the_floor():
    decision = gate_decision(evaluation(hate=(None, None), spam=(0.95, 0.9)), None, POLICIES, CONFIG)
    assert decision.decision == NOT_BLESSED
    failed = decision.failed
    assert [(r.policy, r.metric, r.observed) for r in failed] == [
        ("hate", "roc_auc", None),
        ("hate", "pr_auc", None),
    ]
    assert "roc_auc[hate] undefined" in failed[0].message and "floor 0.850: fail" in failed[0].message


def test_policy_missing_from_challenger_fails():
    decision = gate_decision(evaluation(hate=(0.95, 0.9)), None, POLICIES, CONFIG)
    assert [(r.policy, r.passed) for r in decision.failed] == [("spam", False), ("spam", False)]


def test_policy_missing_from_champion_is_not_compared():
    champion = evaluation(hate=(0.9, 0.8))
    decision = gate_decision(GOOD, champion, POLICIES, CONFIG)
    reason = next(r for r in decision.reasons if r.check == CHECK_NON_REGRESSION and r.policy == "spam")
    assert reason.passed and "not compared" in reason.message
    assert decision.decision == BLESSED


def test_force_promote_needs_a_reason():
    failing = evaluation(hate=(0.6, 0.8), spam=(0.95, 0.9))
    with pytest.raises(ValueError, match="force_reason"):
        gate_decision(failing, None, POLICIES, CONFIG, force_promote=True)
    with pytest.raises(ValueError, match="force_reason"):
        gate_decision(failing, None, POLICIES, CONFIG, force_promote=True, force_reason="   ")


def test_force_promote_records_reason_and_keeps_failures():
    failing = evaluation(hate=(0.6, 0.8), spam=(0.95, 0.9))
    decision = gate_decision(
        failing, None, POLICIES, CONFIG, force_promote=True, force_reason="incident 42 hotfix"
    )
    assert decision.decision == BLESSED and decision.blessed()
    assert decision.forced and decision.force_reason == "incident 42 hotfix"
    assert [r.message for r in decision.failed] == ["roc_auc[hate] 0.600 < floor 0.850: fail"]
    assert decision.summary.startswith("BLESSED (forced): 1 of 4 checks failed")
    assert "forced" in decision.summary and "incident 42 hotfix" in decision.summary


def test_force_promote_on_a_passing_model_is_not_forced():
    decision = gate_decision(GOOD, None, POLICIES, CONFIG, force_promote=True, force_reason="just in case")
    assert decision.decision == BLESSED
    assert not decision.forced and decision.force_reason is None
    assert "not needed" in decision.summary


def test_decision_round_trips_through_json():
    champion = evaluation(hate=(0.95, 0.8), spam=(None, None))
    decision = gate_decision(
        evaluation(hate=(0.9, 0.8), spam=(None, None)),
        champion,
        POLICIES,
        CONFIG,
        champion_version="2",
        force_promote=True,
        force_reason="why not",
    )
    data = json.loads(json.dumps(decision.to_dict(), allow_nan=False))
    assert set(data) == {
        "decision",
        "reasons",
        "champion_version",
        "compared_to_champion",
        "forced",
        "force_reason",
        "summary",
    }
    assert set(data["reasons"][0]) == {
        "check",
        "policy",
        "metric",
        "threshold",
        "observed",
        "passed",
        "message",
    }
    assert GateDecision.from_dict(data) == decision
    with pytest.raises(ValueError):
        GateDecision.from_dict({**data, "decision": "MAYBE"})


def test_no_policies_is_an_error():
    with pytest.raises(ValueError):
        gate_decision(GOOD, None, [], CONFIG)


def test_a_changed_policy_set_is_a_decision_that_names_added_and_dropped_policies():
    champion = evaluation(hate=(0.9, 0.8), violence=(0.9, 0.8))
    decision = gate_decision(GOOD, champion, POLICIES, CONFIG, champion_policies=["hate", "violence"])
    assert decision.decision == NOT_BLESSED
    by_policy = {r.policy: r for r in decision.reasons if r.check == CHECK_POLICY_SET}
    assert by_policy["spam"].passed and "new" in by_policy["spam"].message  # added: its floors decide
    assert not by_policy["violence"].passed and "missing from this model" in by_policy["violence"].message
    assert [r.policy for r in decision.reasons if r.check == CHECK_NON_REGRESSION] == ["hate"]
    assert "added spam; dropped violence" in decision.summary

    forced = gate_decision(GOOD, champion, POLICIES, CONFIG, champion_policies=["hate", "violence"],
                    force_promote=True, force_reason="violence moves to its own model")  # fmt: skip
    assert forced.decision == BLESSED and forced.forced


def test_disjoint_policy_sets_compare_nothing_and_judge_by_floors():
    decision = gate_decision(GOOD, {"policies": {}}, POLICIES, CONFIG, champion_policies=["nudity"])
    assert not [r for r in decision.reasons if r.check == CHECK_NON_REGRESSION]
    assert decision.decision == NOT_BLESSED and "dropped nudity" in decision.summary


# Retraining datasets: the original slice of the test split ------------------------------------------------
def _scores(ids: list[str], labels: list[int], scores: list[float]):
    import pandas as pd

    return pd.DataFrame({"id": ids, **{f"label_{p}": labels for p in POLICIES},
                         **{f"score_{p}": scores for p in POLICIES}})  # fmt: skip


def _slices(challenger_original: list[float], challenger_new: list[float]) -> dict:
    import pandas as pd

    from core.evaluation.gate import origin_slices

    ids = [f"o{i}" for i in range(4)] + [f"n{i}" for i in range(4)]
    test = pd.DataFrame({"id": ids, "data_origin": ["original"] * 4 + ["new"] * 4})
    labels = [0, 0, 1, 1] * 2
    champion = _scores(ids, labels, [0.1, 0.2, 0.8, 0.9] + [0.9, 0.8, 0.2, 0.1])  # perfect, then inverted
    challenger = _scores(ids, labels, challenger_original + challenger_new)
    return origin_slices(test, challenger, champion, POLICIES)


def test_a_retraining_run_may_not_trade_the_original_slice_for_the_new_one():
    # Better overall and on the new data, worse on what the champion knew: not blessed.
    slices = _slices([0.1, 0.8, 0.2, 0.9], [0.1, 0.2, 0.8, 0.9])
    assert slices["original"]["rows"] == 4 and slices["new"]["champion"]["hate"] == 0.0
    decision = gate_decision(GOOD, GOOD, POLICIES, CONFIG, champion_version="3", slices=slices)
    assert decision.decision == NOT_BLESSED
    failed = decision.failed
    assert [(r.check, r.policy) for r in failed] == [
        ("non_regression_original", "hate"),
        ("non_regression_original", "spam"),
    ]
    assert failed[0].message == (
        "roc_auc[hate] on the original slice (4 test rows) 0.750 < champion 1.000 - tolerance 0.010 = 0.990: fail"
    )
    # Holding the original slice and winning the new one: blessed, with the new slice reported.
    slices = _slices([0.1, 0.2, 0.8, 0.9], [0.1, 0.2, 0.8, 0.9])
    decision = gate_decision(GOOD, GOOD, POLICIES, CONFIG, champion_version="3", slices=slices)
    assert decision.decision == BLESSED
    reported = [r for r in decision.reasons if r.check == "new_slice"]
    assert [r.message for r in reported][0] == (
        "roc_auc[hate] on the new slice (4 test rows): challenger 1.000 vs champion 0.000 (reported, not a rule)"
    )
    assert "4 rows of the original training data" in decision.summary


def test_a_test_split_without_new_rows_has_no_slices():
    import pandas as pd

    from core.evaluation.gate import origin_slices

    test = pd.DataFrame({"id": ["a"], "data_origin": ["original"]})
    assert origin_slices(test, _scores(["a"], [1], [0.5]), _scores(["a"], [1], [0.5]), POLICIES) is None
    assert origin_slices(test.drop(columns="data_origin"), None, None, POLICIES) is None
    only_new = pd.DataFrame({"id": ["a"], "data_origin": ["new"]})
    assert origin_slices(only_new, _scores(["a"], [1], [0.5]), _scores(["a"], [1], [0.5]), POLICIES) is None
