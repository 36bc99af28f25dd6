"""Model card: the evaluation (and optionally the gate decision) rendered as Markdown or self-contained HTML.

Both renderers build the same sections (header, intended use, training, data, per-policy metrics, slices,
ablation, gate decision, limitations) and differ only in markup. The HTML has inline CSS and nothing else: no
scripts, fonts or images from elsewhere, so it opens offline and in KFP's HTML viewer. Every string that
comes from a run (names, ids, slice values, messages) is escaped.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from core.common.constants import BLESSED, DEFAULT_MODEL_NAME
from core.common.markup import escape_html, escape_markdown
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
class _Paragraph:
    text: str
    strong: bool = False


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class _Bullets:
    items: list[str]


@dataclass
class _Badge:
    decision: str
    forced: bool


@dataclass
class _Figure:
    """A PNG drawn by `core.evaluation.plots`, embedded in HTML; Markdown names it only."""

    caption: str
    png: bytes


@dataclass
class _Section:
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


def _sections(
    evaluation: dict[str, Any], card: ModelCardInfo, decision: dict[str, Any] | None
) -> list[_Section]:
    policies = _policies(evaluation, card)
    per_policy = evaluation.get("policies", {})
    sections: list[_Section] = []

    sections.append(
        _Section(
            "Model",
            [
                _Table(
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
        _Section(
            "Intended use",
            [
                _Paragraph(
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
            _Section(
                "Training",
                [
                    _Table(
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
    data_blocks: list[Any] = [_Table(["Field", "Value"], data_rows)]
    if card.preparation:
        data_blocks.append(_Paragraph(Preparation.from_dict(card.preparation).summary()))
    if card.label_counts:
        splits = list(next(iter(card.label_counts.values())))
        data_blocks.append(_Paragraph("Annotated rows and positives per policy and split", strong=True))
        data_blocks.append(
            _Table(
                ["Policy", *(f"{split}: positives/annotated" for split in splits)],
                [
                    [policy]
                    + [f"{counts[split]['positives']}/{counts[split]['annotated']}" for split in splits]
                    for policy, counts in card.label_counts.items()
                ],
            )
        )
        data_blocks.append(
            _Paragraph(
                "A row counts for a policy only where it was annotated for it: training, thresholds and every "
                "metric of a policy use those rows."
            )
        )
    sections.append(_Section("Data", data_blocks))

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
        _Section(
            "Test metrics per policy",
            [
                _Table(
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
                _Paragraph(
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
                _Figure(f"{policy}: ROC, precision-recall, reliability and score histograms by label", png)
            )
    if figures:
        sections.append(_Section("Plots", figures))

    slice_blocks: list[Any] = []
    for column, values in evaluation.get("slices", {}).items():
        slice_blocks.append(_Paragraph(f"By {column}", strong=True))
        if not values:
            slice_blocks.append(
                _Paragraph(
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
        slice_blocks.append(_Table(headers, rows))
    if slice_blocks:
        sections.append(_Section("Slices", slice_blocks))

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
            _Paragraph(
                f"ROC-AUC on the {_fmt(ablation.get('rows'))} test rows that have both text and image."
            ),
            _Table(["Policy", "Fusion", "Text removed (image only)", "Image removed (text only)"], rows),
            _Paragraph(interpret_ablation(ablation)),
        ]
        sections.append(_Section("Modality ablation", blocks))

    if decision is not None:
        blocks = [
            _Badge(str(decision.get("decision", "")), bool(decision.get("forced"))),
            _Paragraph(str(decision.get("summary", ""))),
        ]
        if decision.get("champion_version") is not None:
            blocks.append(_Paragraph(f"Champion version: {decision['champion_version']}"))
        if decision.get("forced"):
            blocks.append(_Paragraph(f"Force reason: {decision.get('force_reason') or ''}", strong=True))
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
                _Table(
                    ["Check", "Policy", "Metric", "Threshold", "Observed", "Result", "Message"], reason_rows
                )
            )
        sections.append(_Section("Gate decision", blocks))

    sections.append(_Section("Limitations", [_Bullets(list(card.limitations) or ["None recorded."])]))
    return sections


# Markdown -------------------------------------------------------------------------------------------------
_md = escape_markdown


def render_markdown(
    evaluation: dict[str, Any], card: ModelCardInfo, decision: dict[str, Any] | None = None
) -> str:
    """Renders the model card as Markdown.

    Args:
        evaluation: `evaluate_scores` output.
        card: Model, data and training facts.
        decision: `GateDecision.to_dict()` output; the gate section is left out when None.

    Returns:
        The Markdown text.
    """
    lines = [f"# Model card: {_md(card.model_name)}", ""]
    for section in _sections(evaluation, card, decision):
        lines += [f"## {_md(section.title)}", ""]
        for block in section.blocks:
            if isinstance(block, _Paragraph):
                lines += [f"**{_md(block.text)}**" if block.strong else _md(block.text), ""]
            elif isinstance(block, _Badge):
                forced = " (forced)" if block.forced else ""
                lines += [f"**Decision: {_md(block.decision)}{forced}**", ""]
            elif isinstance(block, _Bullets):
                lines += [f"- {_md(item)}" for item in block.items] + [""]
            elif isinstance(block, _Figure):
                lines += [f"_{_md(block.caption)}: in the HTML model card._", ""]
            elif isinstance(block, _Table):
                lines.append("| " + " | ".join(_md(h) for h in block.headers) + " |")
                lines.append("|" + "|".join("---" for _ in block.headers) + "|")
                lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in block.rows]
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# HTML -----------------------------------------------------------------------------------------------------
_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .92em; }
th, td { border: 1px solid #d0d7de; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
.badge { display: inline-block; padding: .3em .8em; border-radius: 4px; font-weight: bold; color: #fff; }
.blessed { background: #1a7f37; }
.not-blessed { background: #cf222e; }
.forced { background: #bc4c00; }
.fail { color: #cf222e; font-weight: bold; }
img.plot { max-width: 100%; height: auto; }
figure { margin: 1em 0; }
"""


_h = escape_html


def render_html(
    evaluation: dict[str, Any], card: ModelCardInfo, decision: dict[str, Any] | None = None
) -> str:
    """Renders the model card as one self-contained HTML page (inline CSS, no scripts, no external resources).

    Args:
        evaluation: `evaluate_scores` output.
        card: Model, data and training facts.
        decision: `GateDecision.to_dict()` output; the gate section is left out when None.

    Returns:
        The HTML document.
    """
    title = f"Model card: {card.model_name}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{_h(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_h(title)}</h1>",
    ]
    for section in _sections(evaluation, card, decision):
        out.append(f"<h2>{_h(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, _Paragraph):
                text = f"<strong>{_h(block.text)}</strong>" if block.strong else _h(block.text)
                out.append(f"<p>{text}</p>")
            elif isinstance(block, _Badge):
                css = (
                    "forced" if block.forced else ("blessed" if block.decision == BLESSED else "not-blessed")
                )
                label = block.decision + (" (forced)" if block.forced else "")
                out.append(f'<p><span class="badge {css}">{_h(label)}</span></p>')
            elif isinstance(block, _Bullets):
                out.append("<ul>" + "".join(f"<li>{_h(item)}</li>" for item in block.items) + "</ul>")
            elif isinstance(block, _Figure):
                data = base64.b64encode(block.png).decode("ascii")
                out.append(
                    f'<figure><img class="plot" alt="{_h(block.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{_h(block.caption)}</figcaption></figure>"
                )
            elif isinstance(block, _Table):
                head = "".join(f"<th>{_h(h)}</th>" for h in block.headers)
                body = "".join(
                    "<tr>"
                    + "".join(
                        f'<td class="fail">{_h(cell)}</td>' if cell == "FAIL" else f"<td>{_h(cell)}</td>"
                        for cell in row
                    )
                    + "</tr>"
                    for row in block.rows
                )
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"
