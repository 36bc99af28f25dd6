"""The dashboard and alert rules as code (`serving/observability.py`): the committed files are what the module
builds, the dashboard decodes as a Grafana dashboard model (the Grafana Foundation SDK's) without losing what we
wrote, every query parses as PromQL (promql-parser), and every metric a query names is one the real tritonserver
exports (checked against a scrape of the session server after it answered)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import promql_parser
import pytest
import yaml

from serving import observability
from serving.client import ContentSafetyClient
from serving.metrics import scrape
from tests.serving.helpers import url_of

REPO_ROOT = Path(__file__).resolve().parents[2]


def _queries() -> list[str]:
    panels = observability.dashboard()["panels"]
    rules = observability.alert_rules()["groups"][0]["rules"]
    return [t["expr"] for p in panels for t in p["targets"]] + [r["expr"] for r in rules]


def _metric_names(node) -> set[str]:
    """The metric names of every selector in a parsed PromQL expression."""
    names = set()
    if isinstance(node, promql_parser.VectorSelector) and node.name:
        names.add(node.name)
    for attribute in ("lhs", "rhs", "expr", "args", "vector_selector", "param"):
        child = getattr(node, attribute, None)
        for item in child if isinstance(child, list) else [child]:
            if isinstance(item, promql_parser.Expr):
                names |= _metric_names(item)
    return names


def test_the_committed_files_are_what_the_module_builds():
    for name, text in observability.render().items():
        committed = (observability.FOLDER / name).read_text(encoding="utf-8")
        assert committed == text, f"{name} is stale: run python -m serving.observability"


def test_the_dashboard_decodes_as_a_grafana_dashboard_model():
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models.dashboard import Dashboard

    register_default_plugins()
    written = json.loads((observability.FOLDER / observability.DASHBOARD_FILE).read_text(encoding="utf-8"))
    decoded = json.loads(json.dumps(Dashboard.from_json(written), cls=JSONEncoder))
    assert (decoded["uid"], decoded["title"], decoded["schemaVersion"]) == (
        written["uid"],
        written["title"],
        written["schemaVersion"],
    )
    assert [v["name"] for v in decoded["templating"]["list"]] == ["datasource", "triton_model"]

    def kept(panel: dict) -> tuple:  # what a misspelled or misplaced key would lose in the model
        return (
            panel["type"],
            panel["title"],
            panel["gridPos"],
            panel["fieldConfig"]["defaults"]["unit"],
            [(t["refId"], t["expr"], t["legendFormat"]) for t in panel["targets"]],
        )

    assert [kept(p) for p in decoded["panels"]] == [kept(p) for p in written["panels"]]
    cells = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in written["panels"]}
    assert len(cells) == len(written["panels"])  # no two panels on top of each other


def test_alert_rules_are_prometheus_rules_with_a_runbook_section():
    document = yaml.safe_load((observability.FOLDER / observability.ALERTS_FILE).read_text(encoding="utf-8"))
    rules = document["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == {
        "TnsFlagRateJump",
        "TnsFlagRateDrop",
        "TnsTrafficSilent",
        "TnsErrorRate",
        "TnsLatencyP99",
        "TnsModelVersionChanged",
    }
    runbook = (REPO_ROOT / "docs" / "runbook.md").read_text(encoding="utf-8")
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", runbook, re.M)
    }
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}
        assert re.fullmatch(r"\d+[smh]", rule["for"]) and rule["labels"]["severity"] in (
            "page",
            "ticket",
            "info",
        )
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in headings, f"docs/runbook.md has no section #{anchor}"


@pytest.mark.parametrize("query", _queries())
def test_every_query_parses_as_promql(query):
    assert _metric_names(promql_parser.parse(query))


def test_every_metric_a_query_names_is_exported_by_the_server(triton_server, exported_repository):
    golden = exported_repository.golden
    with ContentSafetyClient(url_of(triton_server, "http"), protocol="http", retries=0) as client:
        client.classify(golden.texts[:2], golden.images[:2])
    exported = {name for name, _ in scrape(triton_server.metrics_url)}
    named = set().union(*(_metric_names(promql_parser.parse(q)) for q in _queries()))
    assert named and not named - exported, f"not exported: {sorted(named - exported)}"
