"""Model card content: the evaluation (and optionally the gate decision) as sections of markup-free blocks.

`card_sections` builds the sections (header, intended use, training, data, per-policy metrics, slices,
ablation, gate decision, limitations) from an evaluation and a `ModelCardInfo`. The renderers,
`core.evaluation.model_card_markdown` and `core.evaluation.model_card_html`, differ only in markup; both
escape every string that comes from a run (names, ids, slice values, messages).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from core.common.constants import DEFAULT_MODEL_NAME
from core.data.prepare import Preparation
from core.evaluation.plots import policy_figure

SYNTHETIC_DATA_LIMITATION = (
    "The training data is the synthetic embedded dataset: these numbers show that the pipeline works end to "
    "end, not that the model is fit to moderate real content."
)
DEFAULT_LIMITATIONS: tuple[str, ...] = (
    "The text encoder (all-MiniLM-L6-v2 by default) was trained mostly on English; expect weaker results "
    "on other languages and compare the language slices before relying on them.",
    "Operating thresholds were chosen on the validation split to reach each policy's target precision; "
    "precision on live traffic moves with its positive rate and content.",
    "Slices with fewer rows than the configured minimum, or with a single class, have no metrics; small "
    "slices have wide uncertainty even when reported.",
    "Scores are per-policy sigmoid outputs; they are calibrated only as well as the ECE column shows.",
    "ROC-AUC intervals are percentile bootstraps over test rows; they ignore training randomness.",
)

# Smallest macro ROC-AUC drop that counts as "the model uses this modality" in the ablation interpretation.
ABLATION_MARGIN = 0.02


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass
class ModelCardInfo:
    """What the model card says about the model besides its evaluation."""

    model_name: str = DEFAULT_MODEL_NAME
    run_id: str = ""
    dataset_fingerprint: str = ""
    dataset_source: str = ""
    rows_per_split: dict[str, int] = field(default_factory=dict)
    # {policy: {split: {"annotated", "positives"}}}: a row may be annotated for only some policies.
    label_counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    preparation: dict[str, Any] = field(default_factory=dict)
    policies: list[str] = field(default_factory=list)
    text_encoder: str = ""
    image_encoder: str = ""
    training_summary: dict[str, Any] = field(default_factory=dict)
    git_commit: str = ""
    created_at: str = field(default_factory=_now)
    limitations: list[str] = field(default_factory=lambda: list(DEFAULT_LIMITATIONS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCardInfo:
        """Builds card info from a mapping, ignoring unknown keys."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# Document model ------------------------------------------------------------------------------------------
@dataclass
class Paragraph:
    """A paragraph of plain text, in bold when `strong`."""

    text: str
    strong: bool = False


@dataclass
class Table:
    """A table of plain-text cells."""

    headers: list[str]
    rows: list[list[str]]


@dataclass
class Bullets:
    """A bulleted list of plain-text items."""

    items: list[str]


@dataclass
class Badge:
    """The gate decision, shown prominently."""

    decision: str
    forced: bool


@dataclass
class Figure:
    """A PNG drawn by `core.evaluation.plots`, embedded in HTML; Markdown names it only."""

    caption: str
    png: bytes


@dataclass
class Section:
    """A titled section of the card: paragraphs, tables, bullets, badges and figures."""

    title: str
    blocks: list[Any]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ci(interval: Any) -> str:
    if not interval or len(interval) != 2 or None in interval:
        return ""
    return f" [{interval[0]:.3f}, {interval[1]:.3f}]"


def _policies(evaluation: dict[str, Any], card: ModelCardInfo) -> list[str]:
    return list(card.policies) or list(evaluation.get("policies", {}))


def interpret_ablation(ablation: dict[str, Any] | None) -> str:
    """One line on whether the model uses both modalities, from the ablation's macro ROC-AUCs.

    Args:
        ablation: The `ablation` entry of an evaluation.

    Returns:
        A sentence; removing a modality must lower macro ROC-AUC by more than `ABLATION_MARGIN` to count.
    """
    if not ablation:
        return "No ablation was computed."
    fusion = ablation.get("fusion_macro_roc_auc")
    without_text = ablation.get("text_removed_macro_roc_auc")
    without_image = ablation.get("image_removed_macro_roc_auc")
    if fusion is None or without_text is None or without_image is None:
        note = ablation.get("note") or "no text+image rows with both classes"
        return f"Ablation inconclusive: {note}."
    text_drop = fusion - without_text
    image_drop = fusion - without_image
    drops = (
        f"removing the text changes macro ROC-AUC by {without_text - fusion:+.3f}, "
        f"removing the image by {without_image - fusion:+.3f}"
    )
    uses_text = text_drop > ABLATION_MARGIN
    uses_image = image_drop > ABLATION_MARGIN
    if uses_text and uses_image:
        verdict = "the model uses both modalities"
    elif uses_text:
        verdict = "the model relies mainly on the text"
    elif uses_image:
        verdict = "the model relies mainly on the image"
    else:
        verdict = "neither modality alone matters: they are redundant on this data, or fusion adds little"
    return f"On {ablation.get('rows', 0)} text+image rows, {drops}: {verdict}."


def card_sections(
    evaluation: dict[str, Any], card: ModelCardInfo, decision: dict[str, Any] | None
) -> list[Section]:
    """Builds the model card's sections, in order; the renderers turn them into Markdown or HTML.

    Args:
        evaluation: `evaluate_scores` output.
        card: Model, data and training facts.
        decision: `GateDecision.to_dict()` output; the gate section is left out when None.

    Returns:
        The sections, each a title and its blocks (`Paragraph`, `Table`, `Bullets`, `Badge`, `Figure`).
    """
    policies = _policies(evaluation, card)
    per_policy = evaluation.get("policies", {})
    sections: list[Section] = []

    sections.append(
        Section(
            "Model",
            [
                Table(
                    ["Field", "Value"],
                    [
                        ["Model name", card.model_name],
                        ["Run id", card.run_id or "n/a"],
                        ["Created", card.created_at or "n/a"],
                        ["Git commit", card.git_commit or "n/a"],
                        ["Policies", ", ".join(policies) or "n/a"],
                        ["Text encoder", card.text_encoder or "n/a"],
                        ["Image encoder", card.image_encoder or "n/a"],
                    ],
                )
            ],
        )
    )
    sections.append(
        Section(
            "Intended use",
            [
                Paragraph(
                    "Scores user content (text, image, or text with image) with one independent "
                    f"probability per policy ({', '.join(policies) or 'none'}). Intended to rank and flag "
                    "items for human review at each policy's operating threshold below. Not intended for "
                    "fully automated enforcement, for languages or content types absent from the "
                    "evaluation, or for policies it was not trained on."
                )
            ],
        )
    )
    if card.training_summary:
        summary = card.training_summary
        sections.append(
            Section(
                "Training",
                [
                    Table(
                        ["Epochs run", "Best epoch", "Steps", "Seconds", "Device"],
                        [
                            [
                                _fmt(summary.get("epochs_run")),
                                _fmt(summary.get("best_epoch")),
                                _fmt(summary.get("steps")),
                                _fmt(summary.get("seconds"), 1),
                                _fmt(summary.get("device")),
                            ]
                        ],
                    )
                ],
            )
        )
    data_rows = [["Source", card.dataset_source or "n/a"], ["Fingerprint", card.dataset_fingerprint or "n/a"]]
    data_rows += [[f"Rows ({split})", _fmt(count)] for split, count in card.rows_per_split.items()]
    data_blocks: list[Any] = [Table(["Field", "Value"], data_rows)]
    if card.preparation:
        data_blocks.append(Paragraph(Preparation.from_dict(card.preparation).summary()))
    if card.label_counts:
        splits = list(next(iter(card.label_counts.values())))
        data_blocks.append(Paragraph("Annotated rows and positives per policy and split", strong=True))
        data_blocks.append(
            Table(
                ["Policy", *(f"{split}: positives/annotated" for split in splits)],
                [
                    [policy]
                    + [f"{counts[split]['positives']}/{counts[split]['annotated']}" for split in splits]
                    for policy, counts in card.label_counts.items()
                ],
            )
        )
        data_blocks.append(
            Paragraph(
                "A row counts for a policy only where it was annotated for it: training, thresholds and every "
                "metric of a policy use those rows."
            )
        )
    sections.append(Section("Data", data_blocks))

    metric_rows = []
    for policy in policies:
        entry = per_policy.get(policy, {})
        target = _fmt(entry.get("target_precision"), 2)
        if entry.get("threshold_reached_on_validation") is False:
            target += " (not reached on validation)"
        metric_rows.append(
            [
                policy,
                _fmt(entry.get("roc_auc")) + _ci(entry.get("roc_auc_ci")),
                _fmt(entry.get("pr_auc")),
                f"{_fmt(entry.get('positives'))}/{_fmt(entry.get('rows'))}",
                _fmt(entry.get("threshold"), 4),
                target,
                _fmt(entry.get("test_precision")),
                _fmt(entry.get("test_recall")),
                _fmt(entry.get("test_fpr")),
                _fmt(entry.get("ece")),
                _fmt(entry.get("ece_uncalibrated")),
            ]
        )
    macro = evaluation.get("macro", {})
    metric_rows.append(
        [
            "macro",
            _fmt(macro.get("roc_auc")),
            _fmt(macro.get("pr_auc")),
            "",
            "",
            "",
            "",
            "",
            "",
            _fmt(macro.get("ece")),
            "",
        ]
    )
    sections.append(
        Section(
            "Test metrics per policy",
            [
                Table(
                    [
                        "Policy",
                        "ROC-AUC [95% CI]",
                        "PR-AUC",
                        "Positives/annotated",
                        "Threshold",
                        "Target precision",
                        "Precision",
                        "Recall",
                        "FPR",
                        "ECE",
                        "ECE before calibration",
                    ],
                    metric_rows,
                ),
                Paragraph(
                    "Precision, recall and FPR are on the test split at the threshold chosen on validation "
                    "(predicted positive when score >= threshold). Scores are calibrated per policy (Platt "
                    "scaling fitted on validation rows that early stopping did not see); ECE is over "
                    "equal-width bins."
                ),
            ],
        )
    )
    figures: list[Any] = []
    for policy in policies:
        png = policy_figure(policy, per_policy.get(policy, {}))
        if png is not None:
            figures.append(
                Figure(f"{policy}: ROC, precision-recall, reliability and score histograms by label", png)
            )
    if figures:
        sections.append(Section("Plots", figures))

    slice_blocks: list[Any] = []
    for column, values in evaluation.get("slices", {}).items():
        slice_blocks.append(Paragraph(f"By {column}", strong=True))
        if not values:
            slice_blocks.append(
                Paragraph(
                    f"No {column} information in the test split (evaluation.slice_columns names the dataset "
                    "columns sliced beside modality and language)."
                )
            )
            continue
        rows = []
        for value, entry in values.items():
            policy_entries = entry.get("policies", {})
            rows.append(
                [str(value), _fmt(entry.get("rows")), _fmt(entry.get("macro_roc_auc"))]
                + [_fmt(policy_entries.get(p, {}).get("roc_auc")) for p in policies]
                + [_fmt(policy_entries.get(p, {}).get("fpr")) for p in policies]
                + [entry.get("note") or ""]
            )
        headers = (
            [column.capitalize(), "Rows", "Macro ROC-AUC"]
            + [f"ROC-AUC {p}" for p in policies]
            + [f"FPR {p} at threshold" for p in policies]
            + ["Note"]
        )
        slice_blocks.append(Table(headers, rows))
    if slice_blocks:
        sections.append(Section("Slices", slice_blocks))

    ablation = evaluation.get("ablation")
    if ablation is not None:
        rows = [
            [
                p,
                _fmt(ablation.get("policies", {}).get(p, {}).get("fusion")),
                _fmt(ablation.get("policies", {}).get(p, {}).get("text_removed")),
                _fmt(ablation.get("policies", {}).get(p, {}).get("image_removed")),
            ]
            for p in policies
        ]
        rows.append(
            [
                "macro",
                _fmt(ablation.get("fusion_macro_roc_auc")),
                _fmt(ablation.get("text_removed_macro_roc_auc")),
                _fmt(ablation.get("image_removed_macro_roc_auc")),
            ]
        )
        blocks: list[Any] = [
            Paragraph(
                f"ROC-AUC on the {_fmt(ablation.get('rows'))} test rows that have both text and image."
            ),
            Table(["Policy", "Fusion", "Text removed (image only)", "Image removed (text only)"], rows),
            Paragraph(interpret_ablation(ablation)),
        ]
        sections.append(Section("Modality ablation", blocks))

    if decision is not None:
        blocks = [
            Badge(str(decision.get("decision", "")), bool(decision.get("forced"))),
            Paragraph(str(decision.get("summary", ""))),
        ]
        if decision.get("champion_version") is not None:
            blocks.append(Paragraph(f"Champion version: {decision['champion_version']}"))
        if decision.get("forced"):
            blocks.append(Paragraph(f"Force reason: {decision.get('force_reason') or ''}", strong=True))
        reason_rows = [
            [
                str(r.get("check", "")),
                str(r.get("policy") or ""),
                str(r.get("metric", "")),
                _fmt(r.get("threshold")),
                _fmt(r.get("observed")),
                "pass" if r.get("passed") else "FAIL",
                str(r.get("message", "")),
            ]
            for r in decision.get("reasons", [])
        ]
        if reason_rows:
            blocks.append(
                Table(
                    ["Check", "Policy", "Metric", "Threshold", "Observed", "Result", "Message"], reason_rows
                )
            )
        sections.append(Section("Gate decision", blocks))

    sections.append(Section("Limitations", [Bullets(list(card.limitations) or ["None recorded."])]))
    return sections
