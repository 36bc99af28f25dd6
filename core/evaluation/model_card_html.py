"""The model card as one self-contained HTML page, built from the sections of `core.evaluation.model_card`.

The HTML has inline CSS and nothing else: no scripts, fonts or images from elsewhere (plots are embedded as
PNG data), so it opens offline and in KFP's HTML viewer. Every string that comes from a run (names, ids,
slice values, messages) is escaped.
"""

from __future__ import annotations

import base64
from typing import Any

from core.common.constants import BLESSED
from core.common.markup import escape_html
from core.evaluation.model_card import (
    Badge,
    Bullets,
    Figure,
    ModelCardInfo,
    Paragraph,
    Table,
    card_sections,
)

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


def render_model_card_html(
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
    for section in card_sections(evaluation, card, decision):
        out.append(f"<h2>{_h(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Paragraph):
                text = f"<strong>{_h(block.text)}</strong>" if block.strong else _h(block.text)
                out.append(f"<p>{text}</p>")
            elif isinstance(block, Badge):
                css = (
                    "forced" if block.forced else ("blessed" if block.decision == BLESSED else "not-blessed")
                )
                label = block.decision + (" (forced)" if block.forced else "")
                out.append(f'<p><span class="badge {css}">{_h(label)}</span></p>')
            elif isinstance(block, Bullets):
                out.append("<ul>" + "".join(f"<li>{_h(item)}</li>" for item in block.items) + "</ul>")
            elif isinstance(block, Figure):
                data = base64.b64encode(block.png).decode("ascii")
                out.append(
                    f'<figure><img class="plot" alt="{_h(block.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{_h(block.caption)}</figcaption></figure>"
                )
            elif isinstance(block, Table):
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
