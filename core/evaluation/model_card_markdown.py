"""The model card as Markdown: the sections of `core.evaluation.model_card`, every run string escaped.

Figures are not embedded: Markdown names each one and points to the HTML model card.
"""

from __future__ import annotations

from typing import Any

from core.common.markup import escape_markdown
from core.evaluation.model_card import (
    Badge,
    Bullets,
    Figure,
    ModelCardInfo,
    Paragraph,
    Table,
    card_sections,
)

_md = escape_markdown


def render_model_card_markdown(
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
    for section in card_sections(evaluation, card, decision):
        lines += [f"## {_md(section.title)}", ""]
        for block in section.blocks:
            if isinstance(block, Paragraph):
                lines += [f"**{_md(block.text)}**" if block.strong else _md(block.text), ""]
            elif isinstance(block, Badge):
                forced = " (forced)" if block.forced else ""
                lines += [f"**Decision: {_md(block.decision)}{forced}**", ""]
            elif isinstance(block, Bullets):
                lines += [f"- {_md(item)}" for item in block.items] + [""]
            elif isinstance(block, Figure):
                lines += [f"_{_md(block.caption)}: in the HTML model card._", ""]
            elif isinstance(block, Table):
                lines.append("| " + " | ".join(_md(h) for h in block.headers) + " |")
                lines.append("|" + "|".join("---" for _ in block.headers) + "|")
                lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in block.rows]
                lines.append("")
    return "\n".join(lines).rstrip() + "\n"
