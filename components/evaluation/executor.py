"""Evaluation and gate steps: what the KFP components call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from core.common.constants import (
    COL_SPLIT,
    EVALUATION_FILE,
    GATE_DECISION_FILE,
    MODEL_CARD_FILE,
    MODEL_SPEC,
    SPLIT_TEST,
    SPLIT_VALIDATION,
    TEST_SCORES_FILE,
    TRAINING_SUMMARY_FILE,
)
from core.config.run import RunConfig
from core.data.ingest import read_fingerprint, read_preparation
from core.data.split import label_counts, read_split_frame
from core.evaluation.evaluate import evaluate_scores, score_column, thresholds_of
from core.evaluation.gate import GateDecision, gate_decision, origin_slices
from core.evaluation.model_card import DEFAULT_LIMITATIONS, SYNTHETIC_DATA_LIMITATION, ModelCardInfo
from core.evaluation.model_card_html import render_model_card_html
from core.evaluation.model_card_markdown import render_model_card_markdown
from core.evaluation.scoring import score_frame

# Per-policy evaluation keys and the flat metric names they are published under (suffixed by the policy).
METRIC_NAMES = {
    "roc_auc": "test_roc_auc",
    "pr_auc": "test_pr_auc",
    "test_precision": "test_precision",
    "test_recall": "test_recall",
    "test_fpr": "test_fpr",
    "ece": "test_ece",
    "threshold": "threshold",
}


def evaluate_model_dir(
    model_dir: str | Path,
    dataset_dir: str | Path,
    frame: pd.DataFrame,
    config: RunConfig,
    policies: list[str] | None = None,
    loader_workers: int | None = None,
):
    """Scores a model on the test split (with ablations) and the validation split, and evaluates it.

    Args:
        model_dir: Saved model folder.
        dataset_dir: Ingested dataset the rows come from.
        frame: Its rows with their split (`read_split_frame`).
        config: Effective run configuration.
        policies: Policies to evaluate (default `config.policies`); those the model does not score are left out.
        loader_workers: Read the rows from the dataset's shards with this many DataLoader workers (None: from
            the image files; see `core.evaluation.scoring.score_frame`).

    Returns:
        The evaluation dict and the test score table.

    Raises:
        ValueError: When the model scores none of the policies.
    """
    test = score_frame(
        model_dir,
        dataset_dir,
        frame[frame[COL_SPLIT] == SPLIT_TEST],
        slice_columns=config.evaluation.slice_columns,
        loader_workers=loader_workers,
    )
    validation = score_frame(
        model_dir,
        dataset_dir,
        frame[frame[COL_SPLIT] == SPLIT_VALIDATION],
        ablations=False,
        loader_workers=loader_workers,
    )
    policies = [
        p for p in (config.policies if policies is None else policies) if score_column(p) in test.columns
    ]
    return evaluate_scores(test, validation, policies, config.evaluation), test


def _loader_workers(splits_dir: str | Path, config: RunConfig) -> int | None:
    """DataLoader workers that read the scored rows from the shards when the run streams (as training did)."""
    from core.training.streaming import streams

    return config.train.loader_workers if streams(splits_dir, config) else None


def evaluation_step(
    model_dir: str | Path,
    dataset_dir: str | Path,
    splits_dir: str | Path,
    config: RunConfig,
    out_dir: str | Path,
    run_id: str = "",
    tracking_uri: str = "",
    git_commit: str = "",
) -> tuple[dict[str, Any], ModelCardInfo]:
    """Evaluates the trained model, writes `evaluation.json`, test scores and the model card inputs, and logs
    the metrics and thresholds to the training's MLflow run.

    Returns:
        The evaluation dict and the model card information.
    """
    frame = read_split_frame(dataset_dir, splits_dir)
    evaluation, scores = evaluate_model_dir(
        model_dir, dataset_dir, frame, config, loader_workers=_loader_workers(splits_dir, config)
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / EVALUATION_FILE).write_text(json.dumps(evaluation, indent=2), encoding="utf-8")
    scores.to_parquet(out_dir / TEST_SCORES_FILE, index=False)
    fingerprint = read_fingerprint(dataset_dir)
    preparation = read_preparation(dataset_dir)
    training_file = Path(model_dir) / TRAINING_SUMMARY_FILE
    card = ModelCardInfo(
        model_name=config.model_name,
        run_id=run_id,
        dataset_fingerprint=fingerprint["fingerprint"],
        dataset_source=fingerprint["source"],
        rows_per_split={k: int(v) for k, v in frame[COL_SPLIT].value_counts().items()},
        label_counts=label_counts(frame, config.policies),
        preparation=preparation.to_dict() if preparation else {},
        policies=list(config.policies),
        text_encoder=config.train.text_encoder,
        image_encoder=config.train.image_encoder,
        training_summary={
            k: v for k, v in json.loads(training_file.read_text(encoding="utf-8")).items() if k != "history"
        }
        if training_file.is_file()
        else {},
        git_commit=git_commit,
        limitations=([SYNTHETIC_DATA_LIMITATION] if fingerprint.get("synthetic") else [])
        + list(DEFAULT_LIMITATIONS),
    )
    (out_dir / MODEL_CARD_FILE).write_text(json.dumps(card.to_dict(), indent=2), encoding="utf-8")
    if run_id:
        _log_evaluation(run_id, tracking_uri, evaluation, card)
    return evaluation, card


def _log_evaluation(run_id: str, tracking_uri: str, evaluation: dict[str, Any], card: ModelCardInfo) -> None:
    from mlflow import MlflowClient

    from core.registry.mlflow_registry import configure

    configure(tracking_uri)
    client = MlflowClient()
    for name, value in evaluation_metrics(evaluation).items():
        client.log_metric(run_id, name, value)
    client.log_dict(run_id, evaluation, "evaluation/evaluation.json")
    client.log_dict(run_id, thresholds_of(evaluation), "model/thresholds.json")
    client.log_text(run_id, render_model_card_html(evaluation, card), "evaluation/model_card.html")


def evaluation_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    """Flat scalar metrics for KFP `Metrics` and MLflow: macro, per policy, ablation."""
    flat: dict[str, float] = {}
    for name, value in evaluation["macro"].items():
        if value is not None:
            flat[f"test_macro_{name}"] = float(value)
    for policy, values in evaluation["policies"].items():
        for key, name in METRIC_NAMES.items():
            if values.get(key) is not None:
                flat[f"{name}_{policy}"] = float(values[key])
    ablation = evaluation.get("ablation") or {}
    for name in ("fusion_macro_roc_auc", "text_removed_macro_roc_auc", "image_removed_macro_roc_auc"):
        if ablation.get(name) is not None:
            flat[f"ablation_{name}"] = float(ablation[name])
    return flat


def write_reports(
    evaluation: dict[str, Any],
    card: ModelCardInfo,
    html_path: str | Path,
    markdown_path: str | Path,
    decision: dict[str, Any] | None = None,
) -> None:
    """Writes the model card as HTML and Markdown."""
    Path(html_path).write_text(render_model_card_html(evaluation, card, decision), encoding="utf-8")
    Path(markdown_path).write_text(render_model_card_markdown(evaluation, card, decision), encoding="utf-8")


def gate_step(
    evaluation_dir: str | Path,
    dataset_dir: str | Path,
    splits_dir: str | Path,
    config: RunConfig,
    out_path: str | Path,
    tracking_uri: str = "",
    force_promote: bool = False,
    force_reason: str = "",
) -> GateDecision:
    """Decides BLESSED or NOT_BLESSED: absolute floors, plus non-regression against the registry's champion
    re-scored on the same test split (and on its original slice alone when the test split holds a retraining
    dataset's new rows). Writes `gate_decision.json` (with the champion's evaluation) to `out_path`."""
    from core.registry.mlflow_registry import configure, download_model, get_alias

    challenger = json.loads((Path(evaluation_dir) / EVALUATION_FILE).read_text(encoding="utf-8"))
    configure(tracking_uri)
    champion_info = get_alias(config.model_name)
    champion, champion_policies, slices = None, None, None
    if champion_info is not None:
        champion_dir = download_model(champion_info)
        spec = json.loads((Path(champion_dir) / MODEL_SPEC).read_text(encoding="utf-8"))
        champion_policies = list(spec["policies"])
        shared = [p for p in config.policies if p in champion_policies]
        # Disjoint policy sets: a champion that is compared on nothing (the decision names both sets).
        champion = {"policies": {}, "macro": {"roc_auc": None, "pr_auc": None, "ece": None}}
        if shared:
            frame = read_split_frame(dataset_dir, splits_dir)
            champion, champion_scores = evaluate_model_dir(
                champion_dir,
                dataset_dir,
                frame,
                config,
                policies=shared,
                loader_workers=_loader_workers(splits_dir, config),
            )
            slices = origin_slices(
                frame[frame[COL_SPLIT] == SPLIT_TEST],
                pd.read_parquet(Path(evaluation_dir) / TEST_SCORES_FILE),
                champion_scores,
                shared,
            )
    decision = gate_decision(
        challenger,
        champion,
        list(config.policies),
        config.gate,
        champion_version=champion_info.version if champion_info else None,
        force_promote=force_promote,
        force_reason=force_reason,
        champion_policies=champion_policies,
        slices=slices,
    )
    record = {
        **decision.to_dict(),
        "champion_evaluation": _summary(champion),
        "challenger_evaluation": _summary(challenger),
        "origin_slices": slices,
    }
    out_path = Path(out_path)
    out_path.mkdir(parents=True, exist_ok=True)
    (out_path / GATE_DECISION_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return decision


def _summary(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    if evaluation is None:
        return None
    return {
        "macro": evaluation["macro"],
        "policies": {
            p: {k: v.get(k) for k in ("roc_auc", "pr_auc", "threshold")}
            for p, v in evaluation["policies"].items()
        },
        "ablation": {k: v for k, v in (evaluation.get("ablation") or {}).items() if k != "policies"},
    }
