"""Reading a Prometheus metrics endpoint (tritonserver's `/metrics`): the samples of its text exposition.

Infra validation checks with it that the served model counted what it answered; the tests check the
counters against the responses, and the dashboard's and alert rules' metric names against a real scrape.
"""

from __future__ import annotations

import re
import urllib.request

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]  # (name, labels) -> value

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> Samples:
    """The samples of a Prometheus text exposition (comments and malformed lines skipped)."""
    samples: Samples = {}
    for line in text.splitlines():
        match = None if line.startswith("#") else _SAMPLE.match(line)
        if match:
            name, labels, value = match.groups()
            samples[(name, frozenset(_LABEL.findall(labels or "")))] = float(value)
    return samples


def scrape(url: str, timeout_s: float = 10.0) -> Samples:
    """The samples at a metrics URL (no proxy: the endpoint is local)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout_s) as response:
        return parse(response.read().decode("utf-8"))


def series(samples: Samples, name: str, key: str) -> dict[str, float]:
    """The values of metric `name` by its label `key` (e.g. items scored by policy)."""
    return {dict(labels)[key]: value for (sample, labels), value in samples.items() if sample == name}
