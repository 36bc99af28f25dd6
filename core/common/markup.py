"""Escaping of values that come from data, logs or servers into HTML and Markdown: the one place that does it.

Every report (model card, validation report, gate decision, infra validation, drift report, registry summaries)
passes dataset ids, category values, keys, messages and server output through these functions, so a log line
such as `{"image_present": "<img src=x onerror=alert(1)>"}` renders as text in the Kubeflow UI, never as markup.
"""

from __future__ import annotations

import html
import re
from typing import Any

# Characters that start inline Markdown: emphasis, code, links and images (no `[`, no link: `(` and `!` are then
# plain), table cells, strike-through, headings. HTML characters become entities.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~#])")
_BACKTICK_RUN = re.compile(r"`+")
# `scheme://user:secret@host` and secret-looking query or option values (`?token=...`, `--password ...`).
_URL_CREDENTIALS = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@:]+(?::[^/\s@]*)?@")
_SECRET_VALUES = re.compile(
    r"(?i)((?<![a-z])(?:token|password|passwd|secret|api[_-]?key|access[_-]?key|authorization)(?![a-z])"
    r"(?:=|\s+|:\s*))"
    r"(?!\*\*\*)[^\s&'\"]+"
)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def escape_html(value: Any) -> str:
    """Text for an HTML element or a quoted attribute (`&`, `<`, `>`, `"` and `'` escaped; None is empty)."""
    return html.escape(_text(value), quote=True)


def escape_markdown(value: Any) -> str:
    """Text for a Markdown paragraph or table cell: HTML characters as entities, inline-markup characters
    backslash-escaped, line breaks as spaces (a value never ends a table row or starts a block)."""
    text = _text(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"[\r\n]+", " ", text)


def markdown_code(value: Any) -> str:
    """A Markdown code span holding `value` literally: the fence is one backtick longer than any run inside,
    pipes are escaped for tables (GFM), line breaks become spaces."""
    text = re.sub(r"[\r\n]+", " ", _text(value)).replace("|", "\\|")
    longest = max((len(run) for run in _BACKTICK_RUN.findall(text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}" if longest else f"{fence}{text}{fence}"


def redact_credentials(text: Any) -> str:
    """`text` with the credentials of URLs (`https://user:secret@host` -> `https://***@host`) and the values
    of token, password, secret and key parameters replaced by `***`: for messages, summaries and reports that
    show a tracking URI, a KFP host or a command line."""
    return _SECRET_VALUES.sub(r"\1***", _URL_CREDENTIALS.sub(r"\1***@", _text(text)))
