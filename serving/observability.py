"""The serving dashboard (Grafana) and alert rules (Prometheus), built from the metric names the server exports.

`python -m serving.observability` writes `serving/observability/dashboard.json` and `alerts.yml`; a test
checks that the committed files are what this module builds, that the dashboard loads as a Grafana dashboard
model, that every query parses as PromQL and that every metric it names is one a real tritonserver exports.
What each alert means and what to do is in `docs/runbook.md` ("Serving alerts").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.common.constants import (
    METRIC_DECISIONS,
    METRIC_ITEMS_FLAGGED,
    METRIC_ITEMS_SCORED,
    METRIC_POLICY_SCORE,
    TRITON_ENSEMBLE,
)

FOLDER = Path(__file__).with_name("observability")
DASHBOARD_FILE, ALERTS_FILE = "dashboard.json", "alerts.yml"
DASHBOARD_UID = "tns-serving"
RUNBOOK = "docs/runbook.md"
ENSEMBLE = f'model="{TRITON_ENSEMBLE}"'
# Flag rate per policy over a short window, and its own trailing baseline over a day.
FLAG_RATE = (
    f"sum by (model_name, policy) (rate({METRIC_ITEMS_FLAGGED}[15m]))"
    f" / sum by (model_name, policy) (rate({METRIC_ITEMS_SCORED}[15m]))"
)
FLAG_BASELINE = (
    f"sum by (model_name, policy) (rate({METRIC_ITEMS_FLAGGED}[1d] offset 15m))"
    f" / sum by (model_name, policy) (rate({METRIC_ITEMS_SCORED}[1d] offset 15m))"
)
REQUESTS = f"sum(rate(nv_inference_request_success{{{ENSEMBLE}}}[5m]))"
FAILURES = f"sum(rate(nv_inference_request_failure{{{ENSEMBLE}}}[5m]))"
ERROR_RATE = f"{FAILURES} / ({REQUESTS} + {FAILURES})"
P99_US = f'max(nv_inference_request_summary_us{{{ENSEMBLE}, quantile="0.99"}})'
LATENCY_P99_MS = 250  # on a CPU host; a GPU deployment sets its own


def _panel(number: int, title: str, targets: list[tuple[str, str]], x: int, y: int, unit: str) -> dict:
    return {
        "id": number,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard() -> dict:
    """The Grafana dashboard model: traffic, errors, latency, queue vs compute, flag rates, model versions."""
    per_model = 'model=~"$triton_model"'
    panels = [
        (
            "Requests per second (ensemble)",
            [(REQUESTS, "succeeded"), (FAILURES, "failed")],
            "reqps",
        ),
        (
            "Error rate (ensemble)",
            [(ERROR_RATE, "errors / requests")],
            "percentunit",
        ),
        (
            "Request latency p50 / p99 per model",
            [
                (f'nv_inference_request_summary_us{{{per_model}, quantile="0.5"}} / 1000', "{{model}} p50"),
                (f'nv_inference_request_summary_us{{{per_model}, quantile="0.99"}} / 1000', "{{model}} p99"),
            ],
            "ms",
        ),
        (
            "Queue vs compute time per request",
            [
                (
                    f"rate(nv_inference_queue_duration_us{{{per_model}}}[5m])"
                    f" / rate(nv_inference_request_success{{{per_model}}}[5m]) / 1000",
                    "{{model}} queue",
                ),
                (
                    f"rate(nv_inference_compute_infer_duration_us{{{per_model}}}[5m])"
                    f" / rate(nv_inference_request_success{{{per_model}}}[5m]) / 1000",
                    "{{model}} compute",
                ),
            ],
            "ms",
        ),
        (
            "Flag rate per policy (15 min) against its trailing day",
            [(FLAG_RATE, "{{policy}}"), (FLAG_BASELINE, "{{policy}} baseline")],
            "percentunit",
        ),
        (
            "Decisions per second by action",
            [(f"sum by (action) (rate({METRIC_DECISIONS}[5m]))", "{{action}}")],
            "ops",
        ),
        (
            "Median score per policy",
            [
                (
                    f"histogram_quantile(0.5, sum by (policy, le) (rate({METRIC_POLICY_SCORE}_bucket[15m])))",
                    "{{policy}}",
                )
            ],
            "percentunit",
        ),
        (
            "Items scored per second by model version",
            [
                (
                    f"sum by (model_name, model_version) (rate({METRIC_ITEMS_SCORED}[5m]))",
                    "{{model_name}} v{{model_version}}",
                )
            ],
            "ops",
        ),
    ]
    return {
        "uid": DASHBOARD_UID,
        "title": "Content safety serving",
        "description": "tritonserver and the content-safety model's own metrics; alerts in serving/observability/"
        "alerts.yml, what to do in docs/runbook.md.",
        "tags": ["tns", "triton", "content-safety"],
        "timezone": "browser",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
                {
                    "name": "triton_model",
                    "type": "query",
                    "label": "Triton model",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": "label_values(nv_inference_request_success, model)",
                    "includeAll": True,
                    "multi": True,
                    "refresh": 2,
                },
            ]
        },
        "panels": [
            _panel(number, title, targets, 12 * (number % 2), 8 * (number // 2), unit)
            for number, (title, targets, unit) in enumerate(panels)
        ],
    }


def _rule(name: str, expr: str, wait: str, severity: str, summary: str) -> dict:
    return {
        "alert": name,
        "expr": expr,
        "for": wait,
        "labels": {"severity": severity, "service": "content-safety"},
        "annotations": {"summary": summary, "runbook_url": f"{RUNBOOK}#{name.lower()}"},
    }


def alert_rules() -> dict:
    """Prometheus alerting rules: flag-rate jump or drop per policy, silent traffic, errors, p99 latency, and a
    model version change."""
    busy = f"sum by (model_name, policy) (rate({METRIC_ITEMS_SCORED}[15m])) > 0.1"  # enough items to judge
    return {
        "groups": [
            {
                "name": "tns-serving",
                "rules": [
                    _rule(
                        "TnsFlagRateJump",
                        f"({FLAG_RATE}) > 2 * ({FLAG_BASELINE}) + 0.01 and on (model_name, policy) {busy}",
                        "15m",
                        "page",
                        "{{ $labels.policy }} flag rate doubled against the last day: an attack, a new "
                        "trend or a bad deploy",
                    ),
                    _rule(
                        "TnsFlagRateDrop",
                        f"({FLAG_RATE}) < 0.5 * ({FLAG_BASELINE}) and on (model_name, policy) {busy}",
                        "30m",
                        "page",
                        "{{ $labels.policy }} flag rate halved against the last day: evasion, a broken input "
                        "path or a bad deploy",
                    ),
                    _rule(
                        "TnsTrafficSilent",
                        f"{REQUESTS} == 0 or absent(nv_inference_request_success{{{ENSEMBLE}}})",
                        "10m",
                        "page",
                        "no request reached the content-safety ensemble for 10 minutes",
                    ),
                    _rule(
                        "TnsErrorRate",
                        f"{ERROR_RATE} > 0.01",
                        "10m",
                        "page",
                        "more than 1% of requests to the ensemble fail",
                    ),
                    _rule(
                        "TnsLatencyP99",
                        f"{P99_US} > {LATENCY_P99_MS * 1000}",
                        "10m",
                        "ticket",
                        f"p99 request latency of the ensemble above {LATENCY_P99_MS} ms",
                    ),
                    _rule(
                        "TnsModelVersionChanged",
                        f"count by (model_name) (count by (model_name, model_version) "
                        f"(rate({METRIC_ITEMS_SCORED}[10m]) > 0)) > 1",
                        "0m",
                        "info",
                        "{{ $labels.model_name }} answered with more than one model version in 10 minutes: a "
                        "deploy or a rollback; watch the flag rates",
                    ),
                ],
            }
        ]
    }


def render() -> dict[str, str]:
    """The files' contents, by file name."""
    import yaml

    return {
        DASHBOARD_FILE: json.dumps(dashboard(), indent=2) + "\n",
        ALERTS_FILE: "# Generated by `python -m serving.observability`; edit serving/observability.py.\n"
        + yaml.safe_dump(alert_rules(), sort_keys=False, width=120),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=FOLDER, help=f"Folder to write to (default {FOLDER}).")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
