"""The on-call drift report: one self-contained HTML file (inline CSS, no scripts, nothing fetched).

Read top to bottom at 3 a.m.: the verdict and what was decided, how well the model is estimated to do now (and
whether the labels that arrived agree), the ranked signals, typical drifted examples,
data quality, and where to look next. Rendered from the JSON summary, so the two never disagree.
"""

from __future__ import annotations

from typing import Any

from core.common.markup import escape_html

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;color:#1d2330;
line-height:1.45;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.badge{display:inline-block;padding:3px 10px;border-radius:12px;font-weight:600;color:#fff;font-size:14px}
.drift{background:#c62828}.no_drift{background:#2e7d32}.insufficient_data{background:#8d6e00}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid #e5e8ee;padding:5px 6px;
text-align:left;vertical-align:top}th{background:#f4f6fa}tr.hit td{background:#fff4f4}
.bar{display:inline-block;height:10px;background:#c62828;border-radius:2px}.bar.ok{background:#90a4ae}
.meta td:first-child{color:#5b6475;width:210px}code{background:#f4f6fa;padding:1px 4px;border-radius:3px}
.muted{color:#5b6475}.decision{border-left:4px solid #1565c0;background:#f3f7fd;padding:8px 12px}
"""


_e = escape_html


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{_e(k)}: {_fmt(v)}" for k, v in value.items())
    return _e(value)


def _meta_table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{_e(k)}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="meta">{body}</table>'


def _signals_table(signals: list[dict[str, Any]]) -> str:
    if not signals:
        return '<p class="muted">No signal was computed (see the verdict above).</p>'
    head = (
        "<tr><th>#</th><th>signal</th><th>group</th><th>method</th><th>score</th><th>threshold</th>"
        "<th>severity</th><th>reference</th><th>current</th><th>rows (ref / cur)</th></tr>"
    )
    rows = []
    for rank, s in enumerate(signals, start=1):
        width = int(min(s.get("severity") or 0, 10) * 12)
        note = f'<br><span class="muted">{_e(s["note"])}</span>' if s.get("note") else ""
        bar = f'<span class="bar{"" if s["drifted"] else " ok"}" style="width:{max(width, 2)}px"></span>'
        rows.append(
            f'<tr class="{"hit" if s["drifted"] else ""}"><td>{rank}</td><td><b>{_e(s["name"])}</b>'
            f"{' &#9888;' if s['drifted'] else ''}</td><td>{_e(s['group'])}</td><td>{_e(s['method'])}{note}</td>"
            f"<td>{_fmt(s['score'])}</td><td>{_fmt(s['threshold'])}</td><td>{bar} {_fmt(s['severity'])}</td>"
            f"<td>{_fmt(s.get('reference_value'))}</td><td>{_fmt(s.get('current_value'))}</td>"
            f"<td>{_e(s.get('rows', {}).get('reference'))} / {_e(s.get('rows', {}).get('current'))}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _examples_section(examples: dict[str, list[dict[str, Any]]]) -> str:
    if not examples:
        return '<p class="muted">No drifted signal, so no examples.</p>'
    parts = []
    for signal, rows in examples.items():
        parts.append(f"<h3>{_e(signal)}</h3>")
        if not rows:
            parts.append('<p class="muted">No rows to show.</p>')
            continue
        head = "<tr><th>time</th><th>request</th><th>text</th><th>language</th><th>image</th><th>scores</th><th>action</th></tr>"
        body = []
        for row in rows:
            text = row.get("text")
            shown = (
                _e(text[:160])
                if text
                else f'<span class="muted">not logged; sha256 {_e((row.get("text_sha256") or "-")[:12])}…, {_e(row.get("text_length"))} chars</span>'
            )
            image = (
                f"{_e(row.get('image_format'))} {_e(row.get('image_width'))}×{_e(row.get('image_height'))}"
                if row.get("image_format")
                else '<span class="muted">none</span>'
            )
            body.append(
                f"<tr><td>{_e(row.get('timestamp'))}</td><td><code>{_e(row.get('request_id'))}:{_e(row.get('item'))}</code></td>"
                f"<td>{shown}</td><td>{_e(row.get('text_language'))}</td><td>{image}</td>"
                f"<td>{_fmt(row.get('scores'))}</td><td>{_e(row.get('action'))}</td></tr>"
            )
        parts.append(f"<table>{head}{''.join(body)}</table>")
    return "".join(parts)


def _sampling_rows(current: dict[str, Any], reference: dict[str, Any]) -> list[tuple[str, str]]:
    """A line saying that the windows were sampled, when they were (more rows than the row budget)."""
    sampled = [
        f"{_e(window.get('sampled_rows'))} of {_e(window.get('rows'))} {name} rows"
        for name, window in (("current", current), ("reference", reference))
        if window.get("sampled_rows") is not None and window["sampled_rows"] < (window.get("rows") or 0)
    ]
    if not sampled:
        return []
    budget = current.get("row_budget") or reference.get("row_budget")
    return [
        (
            "sampling",
            f"distribution tests, embeddings and examples on a seeded uniform sample of {', '.join(sampled)} "
            f"(row budget <code>drift.max_sample_rows</code> = {_e(budget)}); row counts, flag rates, "
            "malformed lines and labeled rows over every row",
        )
    ]


def _decision_section(summary: dict[str, Any]) -> str:
    verdict = "".join(f"<li>{_e(reason)}</li>" for reason in summary.get("reasons", []))
    trigger = summary.get("trigger")
    if not trigger:
        action = (
            "<p>No retrain rules were evaluated for this check (run <code>tns drift --retrain-rules FILE</code> or "
            "<code>tns trigger --summary summary.json</code>).</p>"
        )
    else:
        run_id, run_url = trigger.get("run_id"), trigger.get("run_url")
        reasons = "".join(f"<li>{_e(r)}</li>" for r in trigger.get("reasons", []))
        action = (
            f"<p><b>Retraining: {_e(trigger.get('outcome'))}</b>"
            + (f" &mdash; run <code>{_e(run_id)}</code>" if run_id else "")
            + (f' (<a href="{_e(run_url)}">{_e(run_url)}</a>)' if run_url else "")
            + (
                f"; finished with exit code {_e(trigger.get('run_exit_code'))}"
                if trigger.get("run_exit_code") is not None
                else ""
            )
            + (
                f"; training data <code>{_e(trigger.get('data_uri'))}</code>"
                if trigger.get("data_uri")
                else ""
            )
            + f"</p><ul>{reasons}</ul>"
            + (f"<p>Error: <code>{_e(trigger.get('error'))}</code></p>" if trigger.get("error") else "")
        )
    return f'<div class="decision"><p><b>Verdict:</b></p><ul>{verdict}</ul>{action}</div>'


def _pair(value: Any, half_width: Any) -> str:
    if value is None:
        return '<span class="muted">-</span>'
    return f"{_fmt(value)}" + (f" &plusmn; {_fmt(half_width)}" if half_width is not None else "")


def _estimate_rows(policies: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, entry in policies.items():
        estimated, interval, labeled = entry["estimated"], entry["interval"], entry.get("labeled")
        if labeled:
            on_labels = (
                f"{_e(labeled['rows'])} rows: precision {_fmt(labeled['realized']['precision'])} "
                f"(estimated {_fmt(labeled['estimated']['precision'])}), recall "
                f"{_fmt(labeled['realized']['recall'])} (estimated {_fmt(labeled['estimated']['recall'])})"
            )
        else:
            on_labels = '<span class="muted">no labels yet</span>'
        verdict = entry["reliability"]
        rows.append(
            f'<tr class="{"hit" if verdict == "unreliable" else ""}"><td><b>{_e(name)}</b></td>'
            f"<td>{_pair(estimated['precision'], interval.get('precision'))}</td>"
            f"<td>{_pair(estimated['recall'], interval.get('recall'))}</td>"
            f"<td>{_fmt(estimated['flag_rate'])}</td><td>{_fmt(estimated['positives'])} of {_e(estimated['rows'])}</td>"
            f"<td>{on_labels}</td><td><b>{_e(verdict)}</b><br>"
            f'<span class="muted">{_e(entry.get("reason"))}</span></td></tr>'
        )
    return "".join(rows)


def _estimate_section(estimate: dict[str, Any] | None) -> str:
    """Expected precision, recall and flag rate per policy without labels, and their check against labels."""
    if not estimate or not estimate.get("policies"):
        return '<p class="muted">No scored rows to estimate from.</p>'
    head = (
        "<tr><th>policy</th><th>precision (estimated)</th><th>recall (estimated)</th><th>flag rate</th>"
        "<th>expected positives</th><th>realized on the labeled rows</th><th>estimate</th></tr>"
    )
    unreliable = estimate.get("unreliable_policies") or []
    warning = (
        f"<p><b>The estimate is unreliable for {_e(', '.join(unreliable))}</b>: the labels that arrived disagree "
        "with it, which covariate shift alone does not explain (concept drift, or scores that are not calibrated "
        "here). Read performance from the labels for those policies.</p>"
        if unreliable
        else ""
    )
    reference = estimate.get("reference") or {}
    checked = [
        f"{_e(name)} {_e(entry['reliability'])}" for name, entry in reference.items() if entry.get("labeled")
    ]
    return (
        f"<p>{_e(estimate.get('method'))}; &plusmn; is a ~95% sampling interval.</p>{warning}"
        f"<table>{head}{_estimate_rows(estimate['policies'])}</table>"
        f'<p class="muted"><b>Assumptions.</b> {_e(estimate.get("assumptions"))}'
        + (f" On the reference's labeled rows: {', '.join(checked)}." if checked else "")
        + "</p>"
    )


def render_report(summary: dict[str, Any]) -> str:
    """The HTML report of a drift check summary (`monitoring.check` writes both)."""
    status = summary["status"]
    model = summary.get("model", {})
    reference, current = summary.get("reference", {}), summary.get("current", {})
    window = summary.get("window", {})
    drifted = [s["name"] for s in summary.get("signals", []) if s["drifted"]]
    headline = {
        "drift": f"Drift detected in {len(drifted)} signal(s): {', '.join(drifted[:4])}{' …' if len(drifted) > 4 else ''}",
        "no_drift": "No drift: every signal is within its threshold",
        "insufficient_data": "Insufficient data: no verdict on this window",
    }[status]
    model_line = (
        f"{_e(model.get('name'))} version <b>{_e(model.get('version'))}</b>"
        + (f" (alias <b>{_e(model.get('alias'))}</b>)" if model.get("alias") else " (alias unknown)")
        + (
            f"; reference scored by version {_e(reference.get('model_versions'))}"
            if reference.get("model_versions")
            else ""
        )
    )
    quality = _meta_table(
        [
            (
                "current rows",
                f"{_e(current.get('rows'))} (sampled {_e(summary.get('sampled', {}).get('current', '-'))})",
            ),
            (
                "reference rows",
                f"{_e(reference.get('rows'))} (sampled {_e(summary.get('sampled', {}).get('reference', '-'))})",
            ),
            (
                "malformed lines skipped",
                f"{_e(current.get('malformed_lines', 0))} current, {_e(reference.get('malformed_lines', 0))} reference",
            ),
            ("failed requests (not compared)", f"{_e(current.get('failed_requests', 0))} current"),
            (
                "labeled rows",
                f"{_e(current.get('labeled_rows', 0))} current, {_e(reference.get('labeled_rows', 0))} reference",
            ),
        ]
        + _sampling_rows(current, reference)
        + [("malformed example", f"<code>{_e(x)}</code>") for x in current.get("malformed_examples", [])[:3]]
    )
    where = _meta_table(
        [
            ("JSON summary", f"<code>{_e(summary.get('summary_json'))}</code>"),
            (
                "Evidently snapshot",
                f"<code>{_e(summary.get('evidently', {}).get('snapshot_id', 'not saved'))}</code> in project "
                f"<code>{_e(summary.get('evidently', {}).get('project', '-'))}</code> (<code>tns monitor ui</code>)",
            ),
            ("command", f"<code>{_e(summary.get('command'))}</code>"),
            ("runbook", "<code>docs/runbook.md</code>"),
        ]
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>tns drift report: {_e(status)} ({_e(model.get('name'))} v{_e(model.get('version'))})</title>"
        f"<style>{CSS}</style></head><body>"
        f'<h1>Drift report <span class="badge {_e(status)}">{_e(status.replace("_", " "))}</span></h1>'
        f"<p><b>{_e(headline)}</b></p>"
        + _meta_table(
            [
                ("model in use", model_line),
                (
                    "current window",
                    f'{_e(window.get("start"))} → {_e(window.get("end"))} <span class="muted">{_e(current.get("path"))}</span>',
                ),
                (
                    "reference",
                    f'{_e(reference.get("start"))} → {_e(reference.get("end"))} <span class="muted">{_e(reference.get("path"))}</span>',
                ),
                ("window id", f"<code>{_e(window.get('id'))}</code>"),
                ("checked at", _e(summary.get("checked_at"))),
            ]
        )
        + '<h2 id="decision">What was decided and why</h2>'
        + _decision_section(summary)
        + '<h2 id="estimate">Estimated performance before labels arrive</h2>'
        + _estimate_section(summary.get("performance_estimate"))
        + '<h2 id="signals">Signals, ranked by severity</h2>'
        + '<p class="muted">Severity = how many thresholds away a score is (capped at 50). Drifted signals first.</p>'
        + _signals_table(summary.get("signals", []))
        + '<h2 id="examples">Typical drifted examples</h2>'
        + _examples_section(summary.get("examples", {}))
        + '<h2 id="quality">Data quality</h2>'
        + quality
        + '<h2 id="next">Where to look next</h2>'
        + where
        + "</body></html>"
    )
