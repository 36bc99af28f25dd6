"""Acceptance: the served model's Prometheus metrics, scraped from the real tritonserver's `/metrics` endpoint.

The `postprocess` model counts the items it scored and flagged per policy and its decisions per action; the
counts must grow by exactly what the responses said, be labelled with the model's name and version and never
with an item, and the score histograms must have counted every score. tritonserver's own request, queue and
compute metrics, with summary quantiles, are exported beside them.
"""

from __future__ import annotations

import pytest

from core.common.constants import (
    METRIC_DECISIONS,
    METRIC_ITEMS_FLAGGED,
    METRIC_ITEMS_SCORED,
    METRIC_POLICY_SCORE,
    METRIC_SCORE_BUCKETS,
    TRITON_ENSEMBLE,
)
from serving.client import ContentSafetyClient
from serving.metrics import scrape, series
from tests.serving.helpers import MODEL_NAME, url_of


def test_policy_counters_equal_what_the_responses_said(triton_server, exported_repository):
    assert triton_server.metrics_url.startswith("http://127.0.0.1:")
    golden = exported_repository.golden
    policies = golden.policies
    before = scrape(triton_server.metrics_url)
    with ContentSafetyClient(url_of(triton_server, "http"), protocol="http", retries=0) as client:
        predictions = [
            *client.classify(golden.texts, golden.images),
            *client.classify(golden.texts[:3], golden.images[:3]),
        ]
    after = scrape(triton_server.metrics_url)

    def grown(name: str, key: str) -> dict[str, float]:
        old = series(before, name, key)
        return {label: value - old.get(label, 0.0) for label, value in series(after, name, key).items()}

    items = len(predictions)
    assert grown(METRIC_ITEMS_SCORED, "policy") == {p: items for p in policies}
    flagged = {p: sum(prediction.flags[p] for prediction in predictions) for p in policies}
    assert grown(METRIC_ITEMS_FLAGGED, "policy") == flagged
    assert 0 < sum(flagged.values()) < items * len(policies)  # the thresholds split the items
    actions = {"flag": sum(p.action == "flag" for p in predictions)}
    actions["allow"] = items - actions["flag"]
    assert grown(METRIC_DECISIONS, "action") == actions
    assert grown(f"{METRIC_POLICY_SCORE}_count", "policy") == {p: items for p in policies}

    # the histogram's bucket at 0.5 counted the scores at or below 0.5
    def at_half(samples: dict) -> dict[str, float]:
        return {
            dict(labels)["policy"]: value
            for (name, labels), value in samples.items()
            if name == f"{METRIC_POLICY_SCORE}_bucket" and float(dict(labels)["le"]) == 0.5
        }

    assert 0.5 in METRIC_SCORE_BUCKETS
    below = {p: sum(prediction.scores[p] <= 0.5 for prediction in predictions) for p in policies}
    assert {p: at_half(after)[p] - at_half(before).get(p, 0.0) for p in policies} == below

    for (name, labels), _ in after.items():
        if name.startswith("tns_"):
            names = dict(labels)
            assert names["model_name"] == MODEL_NAME
            assert names["model_version"] == str(exported_repository.version)
            assert set(names) <= {"model_name", "model_version", "policy", "action", "le"}  # no item, no user


@pytest.mark.parametrize("metric", ["nv_inference_request_success", "nv_inference_compute_infer_duration_us"])
def test_tritonserver_exports_its_request_metrics(triton_server, metric):
    samples = scrape(triton_server.metrics_url)
    models = {dict(labels).get("model") for (name, labels) in samples if name == metric}
    assert TRITON_ENSEMBLE in models
    summaries = {name for name, _ in samples if name.startswith("nv_inference_request_summary_us")}
    assert summaries  # quantiles of the request duration (--metrics-config summary_latencies=true)
