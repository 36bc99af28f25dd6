"""The int8-vs-fp32 comparison that decides whether the export keeps a quantized CPU classifier."""

from __future__ import annotations

import numpy as np
import pytest

from core.config.fields import ConfigError
from core.config.run import ExportConfig, ServingConfig
from core.export.quantize import compare_int8, decision_agreement, language_rows_needed

POLICIES = ["hate", "spam"]
THRESHOLDS = {"hate": 0.5, "spam": 0.3}


def _scores(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    fp32 = rng.uniform(0, 1, size=(rows, len(POLICIES))).astype(np.float32)
    labels = (rng.uniform(0, 1, size=fp32.shape) < fp32).astype(np.float64)
    return fp32, labels


def _compare(fp32, int8, labels, languages, **tolerances):
    settings = {
        "min_agreement": 0.995,
        "min_language_agreement": 0.98,
        "max_roc_auc_drop": 0.003,
        "min_language_rows": 20,
        **tolerances,
    }
    return compare_int8(fp32, int8, labels, languages, POLICIES, THRESHOLDS, **settings)


def test_decision_agreement_counts_rows_on_the_same_side_of_each_threshold():
    fp32 = np.array([[0.49, 0.31], [0.51, 0.29], [0.9, 0.9]], dtype=np.float32)
    int8 = np.array([[0.51, 0.31], [0.51, 0.31], [0.9, 0.9]], dtype=np.float32)
    assert decision_agreement(fp32, int8, [0.5, 0.3]).tolist() == pytest.approx([2 / 3, 2 / 3])


def test_identical_scores_pass_with_full_agreement_and_no_auc_change():
    fp32, labels = _scores(400)
    report = _compare(fp32, fp32.copy(), labels, ["en"] * 400)
    assert report.passed, report.failures
    assert report.agreement == {"hate": 1.0, "spam": 1.0}
    assert report.roc_auc_drop() == {"hate": 0.0, "spam": 0.0}
    assert report.language_agreement["en"]["gated"] is True


def test_flipped_decisions_past_the_tolerance_are_refused_per_policy_and_named():
    fp32, labels = _scores(400)
    int8 = fp32.copy()
    near = np.argsort(np.abs(fp32[:, 1] - THRESHOLDS["spam"]))[:4]  # 4 of 400 spam decisions flip: 99.0%
    int8[near, 1] = np.where(fp32[near, 1] >= THRESHOLDS["spam"], 0.0, 1.0)
    report = _compare(fp32, int8, labels, [None] * 400)
    assert report.agreement["hate"] == 1.0
    assert report.agreement["spam"] == pytest.approx(0.99)
    assert not report.passed
    assert any(f.startswith("spam: decisions agree on 0.9900") for f in report.failures)
    assert "export.cpu_quantization" in report.describe()
    assert report.language_agreement == {}


def test_a_language_below_the_tolerance_fails_only_when_it_has_enough_rows():
    fp32, labels = _scores(400)
    int8 = fp32.copy()
    languages = ["en"] * 370 + ["de"] * 25 + ["fi"] * 5
    for rows in (slice(370, 372), slice(395, 397)):  # 2 of 25 German, 2 of 5 Finnish hate decisions flip
        int8[rows, 0] = np.where(fp32[rows, 0] >= 0.5, 0.0, 1.0)
    report = _compare(
        fp32, int8, labels, languages, min_agreement=0.98, min_language_agreement=0.95, max_roc_auc_drop=1.0
    )
    assert report.agreement["hate"] == pytest.approx(0.99)  # overall: within 0.98
    assert report.language_agreement["de"] == {"rows": 25, "policy": "hate", "agreement": 0.92, "gated": True}
    assert report.language_agreement["en"]["agreement"] == 1.0
    assert report.language_agreement["fi"]["gated"] is False
    assert [f.split(":")[0] for f in report.failures] == ["language de"]


def test_an_auc_loss_past_the_tolerance_is_refused_and_unannotated_rows_are_left_out():
    fp32, labels = _scores(400)
    labels[:50, 0] = np.nan  # not annotated for hate
    rng = np.random.default_rng(1)
    int8 = fp32 + rng.normal(0, 0.2, size=fp32.shape).astype(np.float32) * (fp32 > 0.9)  # reorders the top
    report = _compare(fp32, int8, labels, [None] * 400, min_agreement=0.5, max_roc_auc_drop=0.0001)
    drops = report.roc_auc_drop()
    assert all(drop > 0.0001 for drop in drops.values()), drops
    assert {f.split(":")[0] for f in report.failures} == set(POLICIES)
    assert report.to_dict()["passed"] is False


def test_quantization_settings_are_checked():
    assert ExportConfig(cpu_quantization="int8").cpu_quantization == "int8"
    with pytest.raises(ConfigError, match="cpu_quantization"):
        ExportConfig(cpu_quantization="int4")
    with pytest.raises(ConfigError, match="int8_min_agreement"):
        ExportConfig(int8_min_agreement=1.5)
    with pytest.raises(ConfigError, match="cpu_threads"):
        ServingConfig(cpu_threads=-1)
    assert ServingConfig(cpu_threads=3).cpu_intra_op_threads() == 3
    assert ServingConfig(cpu_instances=64).cpu_intra_op_threads() == 1


def test_a_language_is_gated_once_one_changed_decision_cannot_fail_it_alone():
    assert language_rows_needed(0.995, 20) == 200
    assert language_rows_needed(0.9, 20) == 20
    assert language_rows_needed(0.98, 20) == 50
    assert language_rows_needed(1.0, 20) == 20


def test_non_finite_int8_scores_are_refused():
    fp32, labels = _scores(400)
    int8 = fp32.copy()
    int8[7, 1] = np.nan
    report = _compare(fp32, int8, labels, [None] * 400, max_roc_auc_drop=1.0)
    assert report.failures[0] == "1 item(s) got a non-finite int8 score (NaN or inf)"
