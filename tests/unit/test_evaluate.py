"""evaluate_scores on crafted score tables, and the model card rendered from its output."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pandas as pd
import pytest

from core.common.constants import (
    COL_ID,
    COL_LANGUAGE,
    COL_MODALITY,
    MODALITY_BOTH,
    MODALITY_IMAGE,
    MODALITY_TEXT,
)
from core.config.run import EvaluationConfig, GateConfig
from core.evaluation import metrics
from core.evaluation.evaluate import (
    UNKNOWN_LANGUAGE,
    ablation_column,
    evaluate_scores,
    label_column,
    required_columns,
    score_column,
)
from core.evaluation.gate import gate_decision
from core.evaluation.model_card import SYNTHETIC_DATA_LIMITATION, ModelCardInfo, interpret_ablation
from core.evaluation.model_card_html import render_model_card_html
from core.evaluation.model_card_markdown import render_model_card_markdown

POLICIES = ["hate", "spam"]
CONFIG = EvaluationConfig(bootstrap_samples=50, min_slice_rows=20)


def crafted(seed: int = 0, n_both: int = 120, n_text: int = 40, n_image: int = 40, ablations: bool = True):
    """Fusion is perfect; the text-removed ablation is random; the image-removed ablation is perfect.

    Positives score in [0.6, 0.8], negatives in [0.2, 0.4].

    Languages: 10 rows "fr" (below min_slice_rows), 10 null, the rest "en". For "spam", every image-only row
    is negative (a single-class slice).
    """
    rng = np.random.default_rng(seed)
    n = n_both + n_text + n_image
    modality = np.array([MODALITY_BOTH] * n_both + [MODALITY_TEXT] * n_text + [MODALITY_IMAGE] * n_image)
    language = np.array(["en"] * n, dtype=object)
    language[rng.choice(n, 20, replace=False)] = "fr"
    language[np.flatnonzero(language == "fr")[10:]] = None
    frame = {COL_ID: [f"item-{i}" for i in range(n)], COL_MODALITY: modality, COL_LANGUAGE: language}
    both = modality == MODALITY_BOTH
    for k, policy in enumerate(POLICIES):
        y = (np.arange(n) + k) % 2
        if policy == "spam":
            y = np.where(modality == MODALITY_IMAGE, 0, y)
        fusion = 0.3 + 0.4 * y + rng.uniform(-0.1, 0.1, n)
        frame[label_column(policy)] = y
        frame[score_column(policy)] = fusion
        if ablations:
            frame[ablation_column(policy, "text")] = np.where(both, rng.random(n), np.nan)
            frame[ablation_column(policy, "image")] = np.where(both, fusion, np.nan)
    return pd.DataFrame(frame)


def test_column_helpers():
    assert label_column("hate") == "label_hate"
    assert score_column("hate") == "score_hate"
    assert ablation_column("hate", "image") == "score_no_image_hate"
    assert ablation_column("hate", "text") == "score_no_text_hate"
    with pytest.raises(ValueError):
        ablation_column("hate", "audio")
    assert "score_no_text_hate" not in required_columns(["hate"], ablations=False)


def test_policy_metrics_on_perfect_fusion():
    test, validation = crafted(0), crafted(1, ablations=False)
    # Target 1.0: the smallest threshold without a false positive on validation, which separates test too.
    config = EvaluationConfig(target_precision={"default": 1.0}, bootstrap_samples=50)
    result = evaluate_scores(test, validation, POLICIES, config)
    hate = result["policies"]["hate"]
    assert hate["roc_auc"] == 1.0 and hate["pr_auc"] == 1.0
    assert hate["roc_auc_ci"] == [1.0, 1.0]
    assert hate["rows"] == len(test) and hate["positives"] == int(test["label_hate"].sum())
    choice = metrics.threshold_for_precision(validation["label_hate"], validation["score_hate"], 1.0)
    assert hate["threshold"] == choice.threshold
    assert hate["threshold_reached_on_validation"] is True
    assert hate["target_precision"] == 1.0
    assert hate["threshold"] == validation.loc[validation["label_hate"] == 1, "score_hate"].min()
    assert hate["test_precision"] == 1.0 and hate["test_fpr"] == 0.0
    (tn, fp), (fn, tp) = hate["confusion_matrix"]
    assert tn + fp + fn + tp == len(test) and fp == 0
    assert set(hate["roc_curve"]) == {"fpr", "tpr", "thresholds"}
    assert 0.0 <= hate["ece"] <= 1.0
    assert result["macro"]["roc_auc"] == 1.0
    assert result["macro"]["ece"] == pytest.approx(np.mean([result["policies"][p]["ece"] for p in POLICIES]))
    json.dumps(result, allow_nan=False)


def test_target_precision_per_policy_override():
    config = EvaluationConfig(target_precision={"default": 0.9, "spam": 0.5}, bootstrap_samples=20)
    result = evaluate_scores(crafted(0), crafted(1, ablations=False), POLICIES, config)
    assert result["policies"]["hate"]["target_precision"] == 0.9
    assert result["policies"]["spam"]["target_precision"] == 0.5


def test_ablation_detects_random_text_removed_and_perfect_fusion():
    result = evaluate_scores(crafted(0), crafted(1, ablations=False), POLICIES, CONFIG)
    ablation = result["ablation"]
    assert ablation["rows"] == 120
    assert ablation["fusion_macro_roc_auc"] == 1.0
    assert ablation["image_removed_macro_roc_auc"] == 1.0
    assert 0.3 < ablation["text_removed_macro_roc_auc"] < 0.7
    for policy in POLICIES:
        assert ablation["policies"][policy]["fusion"] == 1.0
        assert ablation["policies"][policy]["image_removed"] == 1.0
        assert ablation["policies"][policy]["text_removed"] < 0.75
    assert ablation["note"] is None
    # Taking the text away hurts, taking the image away does not: the signal is in the text.
    assert "relies mainly on the text" in interpret_ablation(ablation)


def test_ablation_rows_without_scores_are_left_out_with_a_note():
    test = crafted(0)
    test.loc[0, ablation_column("hate", "text")] = np.nan
    ablation = evaluate_scores(test, crafted(1, ablations=False), POLICIES, CONFIG)["ablation"]
    assert ablation["rows"] == 119
    assert "1 text+image row(s) without ablation scores" in ablation["note"]


def test_ablation_below_min_rows_has_no_metrics():
    test = crafted(0, n_both=10)
    ablation = evaluate_scores(test, crafted(1, ablations=False), POLICIES, CONFIG)["ablation"]
    assert ablation["rows"] == 10
    assert ablation["fusion_macro_roc_auc"] is None
    assert ablation["policies"]["hate"] == {"fusion": None, "text_removed": None, "image_removed": None}
    assert "min_slice_rows" in ablation["note"]
    assert "inconclusive" in interpret_ablation(ablation)


def test_slices_small_single_class_and_unknown_language():
    test = crafted(0)
    result = evaluate_scores(test, crafted(1, ablations=False), POLICIES, CONFIG)
    modality = result["slices"]["modality"]
    assert list(modality) == [MODALITY_BOTH, MODALITY_TEXT, MODALITY_IMAGE]
    assert modality[MODALITY_BOTH]["rows"] == 120
    assert modality[MODALITY_BOTH]["macro_roc_auc"] == 1.0
    assert modality[MODALITY_BOTH]["note"] is None
    image = modality[MODALITY_IMAGE]
    assert image["policies"]["spam"] == {
        "roc_auc": None, "pr_auc": None, "fpr": 0.0, "recall": None, "positives": 0, "annotated": 40
    }  # fmt: skip
    assert image["policies"]["hate"]["roc_auc"] == 1.0
    assert image["macro_roc_auc"] == 1.0  # mean over defined values only
    assert "single class" in image["note"] and "spam" in image["note"]

    language = result["slices"]["language"]
    assert list(language) == ["en", "fr", UNKNOWN_LANGUAGE]
    assert language["en"]["rows"] == 180
    assert language["fr"]["rows"] == 10
    assert language["fr"]["macro_roc_auc"] is None
    assert all(language["fr"]["policies"][p]["roc_auc"] is None for p in POLICIES)
    assert "min_slice_rows 20" in language["fr"]["note"]
    assert language[UNKNOWN_LANGUAGE]["rows"] == 10


def test_group_slices_report_the_false_positive_rate_at_the_threshold():
    test, validation = crafted(0), crafted(1, ablations=False)
    test["target_group"] = np.where(np.arange(len(test)) % 4 < 2, "women", "muslims")
    negatives = (test["target_group"] == "muslims") & (test[label_column("hate")] == 0)
    test.loc[negatives[negatives].index[:10], score_column("hate")] = 0.95  # ten false positives in one group
    result = evaluate_scores(test, validation, POLICIES, CONFIG)
    threshold = result["policies"]["hate"]["threshold"]
    assert threshold < 0.95
    groups = result["slices"]["target_group"]
    assert set(groups) == {"women", "muslims"}
    for group in ("muslims", "women"):
        rows = (test["target_group"] == group) & (test[label_column("hate")] == 0)
        expected = float((test.loc[rows, score_column("hate")] >= threshold).mean())
        assert groups[group]["policies"]["hate"]["fpr"] == pytest.approx(expected)
    muslims, women = groups["muslims"]["policies"]["hate"], groups["women"]["policies"]["hate"]
    assert muslims["fpr"] >= women["fpr"] + 10 / (muslims["annotated"] - muslims["positives"]) - 1e-9
    assert women["recall"] == 1.0
    card = render_model_card_html(result, _card())
    assert "FPR hate at threshold" in card and f"{muslims['fpr']:.3f}" in card

    no_groups = evaluate_scores(crafted(0), validation, POLICIES, EvaluationConfig(bootstrap_samples=50))
    assert no_groups["slices"]["target_group"] == {}  # the default slice column, absent from this data
    assert "evaluation.slice\\_columns" in render_model_card_markdown(
        no_groups, _card()
    )  # `_` escaped for Markdown


def test_language_column_is_optional():
    test = crafted(0).drop(columns=[COL_LANGUAGE])
    result = evaluate_scores(test, crafted(1, ablations=False), POLICIES, CONFIG)
    assert result["slices"]["language"] == {}


def test_single_class_policy_gives_none_not_nan():
    test = crafted(0)
    test["label_spam"] = 0
    result = evaluate_scores(test, crafted(1, ablations=False), POLICIES, CONFIG)
    spam = result["policies"]["spam"]
    assert spam["roc_auc"] is None and spam["pr_auc"] is None and spam["roc_auc_ci"] is None
    assert spam["roc_curve"] == {"fpr": [], "tpr": [], "thresholds": []}
    assert result["macro"]["roc_auc"] == 1.0
    json.dumps(result, allow_nan=False)


def test_bad_tables_are_rejected_with_the_column_named():
    test, validation = crafted(0), crafted(1, ablations=False)
    with pytest.raises(ValueError, match="score_no_text_hate"):
        evaluate_scores(test.drop(columns=["score_no_text_hate"]), validation, POLICIES, CONFIG)
    with pytest.raises(ValueError, match="validation.*score_spam"):
        evaluate_scores(test, validation.drop(columns=["score_spam"]), POLICIES, CONFIG)
    broken = test.copy()
    broken.loc[3, "score_hate"] = np.nan
    with pytest.raises(ValueError, match="score_hate"):
        evaluate_scores(broken, validation, POLICIES, CONFIG)
    with pytest.raises(ValueError, match="no rows"):
        evaluate_scores(test.iloc[:0], validation, POLICIES, CONFIG)


def test_evaluation_is_fast():
    rng = np.random.default_rng(0)
    policies = ["hate", "violence", "sexual", "spam"]
    n = 1000
    modality = rng.choice([MODALITY_BOTH, MODALITY_TEXT, MODALITY_IMAGE], n)
    frame = {
        COL_ID: np.arange(n).astype(str),
        COL_MODALITY: modality,
        COL_LANGUAGE: rng.choice(["en", "de"], n),
    }
    for policy in policies:
        y = (rng.random(n) < 0.2).astype(int)
        frame[label_column(policy)] = y
        frame[score_column(policy)] = np.clip(rng.random(n) * 0.7 + 0.3 * y, 0, 1)
        for removed in ("text", "image"):
            frame[ablation_column(policy, removed)] = np.where(
                modality == MODALITY_BOTH, rng.random(n), np.nan
            )
    test = pd.DataFrame(frame)
    start = time.perf_counter()
    evaluate_scores(test, test, policies, EvaluationConfig(bootstrap_samples=200))
    assert time.perf_counter() - start < 2.0


# Model card ----------------------------------------------------------------------------------------------
def _card(**changes) -> ModelCardInfo:
    values = {
        "model_name": "content-safety",
        "run_id": "run-123",
        "dataset_fingerprint": "sha256:abc",
        "dataset_source": "embedded",
        "rows_per_split": {"train": 700, "validation": 150, "test": 200},
        "policies": POLICIES,
        "text_encoder": "minilm",
        "image_encoder": "cnn",
        "training_summary": {"epochs_run": 5, "best_epoch": 4, "steps": 60, "seconds": 12.5, "device": "cpu"},
        "git_commit": "deadbeef",
        "created_at": "2024-01-01T00:00:00+00:00",
    }
    values.update(changes)
    return ModelCardInfo(**values)


@pytest.fixture(scope="module")
def evaluation():
    return evaluate_scores(crafted(0), crafted(1, ablations=False), POLICIES, CONFIG)


def test_markdown_card_has_every_section(evaluation):
    decision = gate_decision(evaluation, None, POLICIES, _gate_config()).to_dict()
    text = render_model_card_markdown(evaluation, _card(), decision)
    for heading in (
        "# Model card: content-safety",
        "## Intended use",
        "## Training",
        "## Data",
        "## Test metrics per policy",
        "## Slices",
        "## Modality ablation",
        "## Gate decision",
        "## Limitations",
    ):
        assert heading in text
    assert "sha256:abc" in text and "| Rows (test) | 200 |" in text
    assert "| 5 | 4 | 60 | 12.5 | cpu |" in text
    assert "1.000 \\[1.000, 1.000\\]" in text  # brackets escaped: data never forms a Markdown link
    assert "**Decision: BLESSED**" in text
    assert "roc\\_auc\\[hate\\] 1.000 &gt;= floor 0.850: pass" in text
    assert "trained mostly on English" in text and "synthetic" not in text
    synthetic_card = _card()
    synthetic_card.limitations = [SYNTHETIC_DATA_LIMITATION, *synthetic_card.limitations]
    assert "synthetic embedded dataset" in render_model_card_markdown(evaluation, synthetic_card)
    assert "## Gate decision" not in render_model_card_markdown(evaluation, _card())


def test_html_card_is_self_contained_and_escaped(evaluation):
    card = _card(model_name="<script>alert(1)</script>", run_id='run"&<b>', limitations=["a < b & c"])
    decision = gate_decision(evaluation, None, POLICIES, _gate_config()).to_dict()
    page = render_model_card_html(evaluation, card, decision)
    assert page.startswith("<!DOCTYPE html>")
    assert "<style>" in page
    lowered = page.lower()
    for forbidden in ("<script", "http://", "https://", "<link", "@import"):
        assert forbidden not in lowered
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources, "the card embeds its plots"
    assert all(source.startswith("data:image/png;base64,") for source in sources)  # nothing fetched
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "run&quot;&amp;&lt;b&gt;" in page
    assert "<li>a &lt; b &amp; c</li>" in page
    assert 'class="badge blessed"' in page


def test_html_card_shows_not_blessed_and_forced(evaluation):
    challenger = json.loads(json.dumps(evaluation))
    challenger["policies"]["hate"]["roc_auc"] = 0.5
    blocked = gate_decision(challenger, None, POLICIES, _gate_config()).to_dict()
    assert 'class="badge not-blessed"' in render_model_card_html(challenger, _card(), blocked)
    forced = gate_decision(
        challenger, None, POLICIES, _gate_config(), force_promote=True, force_reason="hotfix"
    ).to_dict()
    page = render_model_card_html(challenger, _card(), forced)
    assert 'class="badge forced"' in page and "Force reason: hotfix" in page
    assert '<td class="fail">FAIL</td>' in page


def test_markdown_escapes_table_breakers(evaluation):
    text = render_model_card_markdown(evaluation, _card(dataset_source="a|b\nc"))
    assert "a\\|b c" in text


def test_card_info_round_trips():
    card = _card()
    assert ModelCardInfo.from_dict(json.loads(json.dumps(card.to_dict()))) == card
    assert ModelCardInfo().limitations  # defaults are never empty


def test_interpret_ablation_verdicts():
    base = {"rows": 50, "fusion_macro_roc_auc": 0.9}
    both = interpret_ablation(
        {**base, "text_removed_macro_roc_auc": 0.7, "image_removed_macro_roc_auc": 0.75}
    )
    assert "uses both modalities" in both
    text = interpret_ablation({**base, "text_removed_macro_roc_auc": 0.6, "image_removed_macro_roc_auc": 0.9})
    assert "mainly on the text" in text
    none = interpret_ablation(
        {**base, "text_removed_macro_roc_auc": 0.89, "image_removed_macro_roc_auc": 0.9}
    )
    assert "neither" in none


def _gate_config(**changes) -> GateConfig:
    values = {"min_roc_auc": {"default": 0.85}, "min_pr_auc": {"default": 0.0}}
    for key, value in changes.items():
        values[key] = {"default": value}
    return GateConfig(**values)


def test_per_policy_metrics_count_only_annotated_rows():
    test, validation = crafted(0), crafted(1, ablations=False)
    unannotated_test = np.arange(len(test)) % 3 == 0
    unannotated_validation = np.arange(len(validation)) % 4 == 0
    partial_test, partial_validation = test.copy(), validation.copy()
    partial_test.loc[unannotated_test, label_column("hate")] = np.nan
    partial_validation.loc[unannotated_validation, label_column("hate")] = np.nan
    partial = evaluate_scores(partial_test, partial_validation, POLICIES, CONFIG)
    # The same numbers as evaluating hate on its annotated rows alone.
    alone = evaluate_scores(test[~unannotated_test], validation[~unannotated_validation], ["hate"], CONFIG)[
        "policies"
    ]["hate"]
    got = partial["policies"]["hate"]
    assert got["rows"] == int((~unannotated_test).sum()) == alone["rows"]
    for key in ("roc_auc", "pr_auc", "positives", "threshold", "test_recall", "ece", "confusion_matrix"):
        assert got[key] == alone[key], key
    # spam keeps every row.
    assert partial["policies"]["spam"]["rows"] == len(test)
    slice_entry = partial["slices"]["modality"][MODALITY_BOTH]["policies"]["hate"]
    both = (test[COL_MODALITY] == MODALITY_BOTH).to_numpy()
    assert slice_entry["annotated"] == int((both & ~unannotated_test).sum())
    json.dumps(partial, allow_nan=False)


def test_a_label_that_is_not_0_1_or_missing_is_rejected():
    test, validation = crafted(0), crafted(1, ablations=False)
    test.loc[2, label_column("spam")] = 2
    with pytest.raises(ValueError, match="label_spam has 1 value"):
        evaluate_scores(test, validation, POLICIES, CONFIG)
