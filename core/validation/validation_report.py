"""Human-readable views of a validation outcome: a self-contained HTML page and a Markdown summary.

GX's own renderers load their CSS from a CDN and look unstyled offline, so the page is written here: one
file, inline CSS, no scripts and no external resources.
"""

from __future__ import annotations

from pathlib import Path

from core.common.markup import escape_html, escape_markdown, markdown_code
from core.data.prepare import Preparation
from core.validation.outcome import CheckResult, ValidationOutcome

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem; color: #1f2328; }
h1 { font-size: 1.5rem; margin-bottom: 0.5rem; }
.banner { padding: 0.8rem 1rem; border-radius: 6px; font-weight: 600; margin: 1rem 0; }
.banner.pass { background: #dafbe1; color: #116329; border: 1px solid #4ac26b; }
.banner.fail { background: #ffebe9; color: #82071e; border: 1px solid #ff8182; }
.summary { color: #57606a; margin-bottom: 1rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { border: 1px solid #d0d7de; padding: 0.4rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status { font-weight: 600; white-space: nowrap; }
tr.pass .status { color: #116329; }
tr.fail .status { color: #82071e; }
tr.warn .status { color: #9a6700; }
tr.fail { background: #fff5f5; }
tr.warn { background: #fff8c5; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 0.85em; }
ul { margin: 0; padding-left: 1.1rem; }
"""


def _status(check: CheckResult) -> tuple[str, str]:
    if check.success:
        return "pass", "PASS"
    return ("fail", "FAIL") if check.critical else ("warn", "WARN")


def _row(check: CheckResult) -> str:
    css, label = _status(check)
    examples = "".join(f"<li><code>{escape_html(e)}</code></li>" for e in check.examples)
    return (
        f'<tr class="{css}">'
        f"<td><code>{escape_html(check.check)}</code><br><small>{escape_html(check.expectation)}</small></td>"
        f"<td>{'yes' if check.critical else 'no'}</td>"
        f'<td class="status">{label}</td>'
        f'<td class="num">{check.unexpected_count}</td>'
        f"<td>{f'<ul>{examples}</ul>' if examples else ''}</td>"
        f"<td>{escape_html(check.message)}</td>"
        f"<td>{escape_html(check.remedy)}</td>"
        "</tr>"
    )


def _label_table(outcome: ValidationOutcome) -> str:
    if not outcome.label_counts:
        return ""
    splits = list(next(iter(outcome.label_counts.values())))
    head = "".join(f"<th>{escape_html(split)}: positives / annotated</th>" for split in splits)
    rows = "".join(
        f"<tr><td><code>{escape_html(policy)}</code></td>"
        + "".join(f'<td class="num">{counts[s]["positives"]} / {counts[s]["annotated"]}</td>' for s in splits)
        + "</tr>"
        for policy, counts in outcome.label_counts.items()
    )
    return (
        "<h2>Labels per policy and split</h2>"
        '<p class="summary">A row counts for a policy only where it is annotated for it.</p>'
        f"<table><thead><tr><th>Policy</th>{head}</tr></thead><tbody>{rows}</tbody></table>"
    )


def _context(outcome: ValidationOutcome) -> str:
    """Paragraphs on what preparation changed and which severities the run configuration set."""
    parts = []
    if outcome.preparation:
        preparation = Preparation.from_dict(outcome.preparation)
        parts.append(f"Prepared (missing labels: {preparation.missing_labels}): {preparation.summary()}")
    if outcome.severity_overrides:
        changed = ", ".join(f"{name} is {severity}" for name, severity in outcome.severity_overrides.items())
        parts.append(f"Severity set by the run configuration (validation.severity): {changed}.")
    return "".join(f'<p class="summary">{escape_html(part)}</p>' for part in parts)


def render_html(outcome: ValidationOutcome, title: str = "Data validation") -> str:
    """Renders the outcome as one self-contained HTML page.

    Args:
        outcome: Result of `validate_dataset`.
        title: Page title and heading.

    Returns:
        The HTML document.
    """
    failures, warnings = outcome.failures(), outcome.warnings()
    verdict = "PASS" if outcome.success else "FAIL"
    banner = (
        f"{verdict}: all critical checks passed"
        if outcome.success
        else f"{verdict}: {len(failures)} critical check(s) failed"
    )
    summary = (
        f"{outcome.rows} rows &middot; {len(outcome.checks)} checks &middot; "
        f"{len(failures)} critical failure(s) &middot; {len(warnings)} warning(s)"
    )
    skipped = ""
    if outcome.skipped:
        names = ", ".join(f"<code>{escape_html(s)}</code>" for s in outcome.skipped)
        skipped = f'<p class="summary">Skipped (column absent): {names}</p>'
    rows = "\n".join(_row(c) for c in outcome.checks)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape_html(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{escape_html(title)}</h1>
<div class="banner {"pass" if outcome.success else "fail"}">{escape_html(banner)}</div>
<p class="summary">{summary}</p>
{_context(outcome)}
{skipped}
<table>
<thead><tr><th>Check</th><th>Critical</th><th>Status</th><th>Unexpected rows</th><th>Examples</th>
<th>Message</th><th>How to go on</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
{_label_table(outcome)}
</body>
</html>
"""


def write_html_report(outcome: ValidationOutcome, path: Path, title: str = "Data validation") -> None:
    """Writes the outcome as a self-contained HTML page (inline CSS, no external resources).

    Args:
        outcome: Result of `validate_dataset`.
        path: File to write; its folder is created.
        title: Page title and heading.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(outcome, title), encoding="utf-8")


def markdown_summary(outcome: ValidationOutcome) -> str:
    """Summarises the outcome as Markdown, e.g. for a KFP Markdown visualization.

    Args:
        outcome: Result of `validate_dataset`.

    Returns:
        A heading with the verdict, a counts line and a table of all checks.
    """
    failures, warnings = outcome.failures(), outcome.warnings()
    verdict = "PASS" if outcome.success else "FAIL"
    lines = [
        f"## Data validation: {verdict}",
        "",
        f"{outcome.rows} rows, {len(outcome.checks)} checks, {len(failures)} critical failure(s), "
        f"{len(warnings)} warning(s).",
        "",
        "| Check | Critical | Status | Unexpected | Message |",
        "|---|---|---|---:|---|",
    ]
    for check in outcome.checks:
        label = _status(check)[1]
        lines.append(
            f"| {markdown_code(check.check)} | {'yes' if check.critical else 'no'} | {label} | "
            f"{check.unexpected_count} | {escape_markdown(check.message)} |"
        )
    if outcome.skipped:
        lines += ["", "Skipped (column absent): " + ", ".join(markdown_code(s) for s in outcome.skipped)]
    if outcome.severity_overrides:
        changed = ", ".join(
            f"{markdown_code(k)} {escape_markdown(v)}" for k, v in outcome.severity_overrides.items()
        )
        lines += ["", f"Severity set by the run configuration: {changed}."]
    return "\n".join(lines) + "\n"
