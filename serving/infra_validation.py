"""Infra validation: prove an exported repository loads in a real tritonserver and answers like PyTorch.

Like TFX's InfraValidator, but it also checks the answers: golden requests (text only, image only, both, a
batch) go through the `content_safety` ensemble over HTTP and gRPC and every score must equal the PyTorch
model's within the tolerance (for a CPU config that serves the int8 classifier: in-process onnxruntime's
answers on that same file). Load time and per-protocol latency are recorded. Nothing here promotes anything;
the caller does that only when `passed` is true.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from core.common.constants import METRIC_ITEMS_SCORED, MODALITIES, MODALITY_BOTH, TRITON_CPU_CONFIG
from core.common.markup import escape_markdown, markdown_code
from core.export.golden import GoldenSet, abs_difference


class InfraValidationError(RuntimeError):
    """The exported repository did not load, or did not answer like the PyTorch model."""


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class InfraValidationReport:
    """What infra validation measured; `passed` is true only when every check passed."""

    version: str
    tolerance: float
    model_config_name: str
    reference: str = "PyTorch"  # what the served scores were compared with
    load_seconds: float | None = None
    max_abs_diff: float | None = None
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def reason(self) -> str:
        failed = [f"{c.name}: {c.detail}" for c in self.checks if not c.passed]
        return "; ".join(failed) if failed else "all checks passed"

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed, "reason": self.reason}

    @classmethod
    def from_dict(cls, record: dict) -> InfraValidationReport:
        fields = {k: v for k, v in record.items() if k not in {"passed", "reason", "checks"}}
        return cls(**fields, checks=[Check(**c) for c in record.get("checks", [])])

    def to_markdown(self) -> str:
        lines = [
            f"## Infra validation: {'PASSED' if self.passed else 'FAILED'}",
            "",
            f"Version {escape_markdown(self.version)}, config "
            f"{markdown_code(self.model_config_name or 'config.pbtxt')}, tolerance "
            f"{self.tolerance:.0e}; load {_fmt(self.load_seconds, 's')}; max |Triton - "
            f"{escape_markdown(self.reference)}| "
            f"{_fmt(self.max_abs_diff, '')}.",
            "",
            "| check | result | detail |",
            "|---|---|---|",
        ]
        lines += [
            f"| {escape_markdown(c.name)} | {'pass' if c.passed else 'FAIL'} | {escape_markdown(c.detail)} |"
            for c in self.checks
        ]
        if self.latency_ms:
            lines += ["", "| protocol | p50 ms | p99 ms | requests |", "|---|---|---|---|"]
            for protocol, values in self.latency_ms.items():
                lines.append(
                    f"| {escape_markdown(protocol)} | {values['p50']:.2f} | {values['p99']:.2f} | {int(values['requests'])} |"
                )
        return "\n".join(lines) + "\n"


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f} {unit}".strip() if unit else f"{value:.2e}"


def startup_problem(message: str, limit: int = 2000) -> str:
    """The useful lines of a failed start: models that did not load and error lines, whitespace collapsed."""
    import re

    lines = [re.sub(r"\s+", " ", line).strip(" |") for line in message.splitlines()]
    useful = [
        line
        for line in lines
        if "UNAVAILABLE" in line or "failed to load" in line.lower() or line.lower().startswith("error")
    ]
    text = " / ".join(dict.fromkeys(useful)) or " ".join(lines)
    return text[:limit]


def default_model_config_name() -> str | None:
    """'cpu' (configs/cpu.pbtxt) unless an NVIDIA GPU is visible, then None (the production config.pbtxt)."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return TRITON_CPU_CONFIG
    try:
        found = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return TRITON_CPU_CONFIG
    return None if found.returncode == 0 and "GPU" in found.stdout else TRITON_CPU_CONFIG


def golden_requests(golden: GoldenSet, max_batch_size: int) -> dict[str, list[int]]:
    """Named requests as lists of golden-item positions: one item per modality, and a batch of all items."""
    requests = {}
    for modality in MODALITIES:
        rows = golden.indices(modality)
        if rows:
            requests[f"single {modality}"] = rows[:1]
    requests["batch"] = list(range(min(len(golden), max_batch_size)))
    return requests


def infra_validate(
    repository: str | Path,
    golden: GoldenSet,
    version: str,
    tolerance: float,
    model_config_name: str | None = TRITON_CPU_CONFIG,
    latency_requests: int = 50,
    max_batch_size: int = 64,
    log_file: str | Path | None = None,
) -> InfraValidationReport:
    """Starts tritonserver on `repository`, sends the golden requests over HTTP and gRPC and compares.

    Args:
        repository: The exported model repository.
        golden: Golden items with PyTorch reference probabilities.
        version: The version the ensemble must report (the registered-model version).
        tolerance: Largest allowed absolute difference between Triton's and PyTorch's scores.
        model_config_name: `cpu` on hosts without a GPU, None for the production `config.pbtxt`.
        latency_requests: Single-item requests per protocol for the latency figures.
        max_batch_size: Largest batch to send.
        log_file: Where the server log goes (kept for the report).

    Returns:
        The report; the server is stopped whatever happened.
    """
    from serving.client import ContentSafetyClient, ContentSafetyError, score_matrix
    from serving.triton_server import TritonServer, TritonStartError

    if golden.probabilities is None:
        raise ValueError("the golden set has no reference probabilities")
    expected, reference = reference_scorer(Path(repository), golden, version, model_config_name)
    report = InfraValidationReport(
        version=str(version),
        tolerance=tolerance,
        model_config_name=model_config_name or "",
        reference=reference,
    )
    server = TritonServer(
        Path(repository).resolve(),
        model_config_name=model_config_name,
        log_file=Path(log_file) if log_file else None,
        metrics_port=0,
    )
    try:
        server.start()
    except TritonStartError as error:
        report.checks.append(Check("server ready", False, startup_problem(str(error))))
        return report
    try:
        report.load_seconds = server.load_seconds
        report.checks.append(Check("server ready", True, f"ready in {server.load_seconds:.2f} s"))
        worst, answered = 0.0, 0
        for protocol, url in (("http", server.http_url), ("grpc", server.grpc_url)):
            with ContentSafetyClient(url, protocol=protocol, retries=0, timeout_s=60.0) as client:
                for name, rows in golden_requests(golden, max_batch_size).items():
                    check_name = f"{protocol} {name} ({len(rows)} items)"
                    try:
                        predictions = client.classify(
                            [golden.texts[i] for i in rows], [golden.images[i] for i in rows]
                        )
                    except ContentSafetyError as error:
                        report.checks.append(Check(check_name, False, f"request failed: {error}"))
                        continue
                    answered += len(predictions)
                    scores = score_matrix(predictions)
                    diff = float(abs_difference(scores, expected(rows)).max())
                    worst = max(worst, diff)
                    versions = sorted({p.model_version for p in predictions})
                    problems = []
                    if not np.isfinite(scores).all():
                        problems.append(
                            f"{int((~np.isfinite(scores)).sum())} non-finite score(s) (NaN or inf)"
                        )
                    elif diff > tolerance:
                        problems.append(f"max |Triton - {reference}| {diff:.2e} > {tolerance:.0e}")
                    if versions != [str(version)]:
                        problems.append(f"answered as version {versions}, expected {version}")
                    if any(list(p.scores) != golden.policies for p in predictions):
                        problems.append(f"policies differ from {golden.policies}")
                    report.checks.append(
                        Check(check_name, not problems, "; ".join(problems) or f"max diff {diff:.2e}")
                    )
                report.latency_ms[protocol] = _latency(client, golden, latency_requests)
                answered += latency_requests + 1  # and the warm-up
        report.max_abs_diff = worst
        report.checks.append(_metrics_check(server.metrics_url, golden.policies, answered))
    finally:
        server.stop()
    return report


def reference_scorer(
    repository: Path, golden: GoldenSet, version: str, model_config_name: str | None
) -> tuple[Callable[[list[int]], np.ndarray], str]:
    """What the served scores of a request (golden positions) must equal, and its name.

    PyTorch's probabilities when the config serves the fp32 classifier. In-process onnxruntime on the same file
    when it serves another (the int8 one, whose distance from fp32 the export measured and bounded), run on the
    request's items as one batch: dynamic quantization picks its activation scale per batch, so an item's int8
    score depends on the batch it was scored in.
    """
    from core.common.constants import ONNX_MODEL_FILE
    from serving.client import score_matrix
    from serving.in_process import RepositoryScorer
    from serving.repository import served_classifier_file

    served = served_classifier_file(repository, version, model_config_name)
    if served.name == ONNX_MODEL_FILE:
        return (lambda rows: golden.probabilities[rows]), "PyTorch"
    scorer = RepositoryScorer(repository, version, classifier_file=served.name)

    def expected(rows: list[int]) -> np.ndarray:
        texts, images = [golden.texts[i] for i in rows], [golden.images[i] for i in rows]
        return score_matrix(scorer.score(texts, images, batch_size=len(rows)))

    return expected, f"onnxruntime {served.name}"


def _metrics_check(url: str, policies: list[str], answered: int) -> Check:
    """The server's metrics endpoint answers, and the served model counted every item it answered, per policy."""
    from serving.metrics import scrape, series

    name = f"metrics ({METRIC_ITEMS_SCORED})"
    try:
        scored = series(scrape(url), METRIC_ITEMS_SCORED, "policy")
    except OSError as error:
        return Check(name, False, f"{url} did not answer: {error}")
    expected = {policy: float(answered) for policy in policies}
    if scored != expected:
        return Check(name, False, f"counted {scored}, answered {answered} item(s) for each of {policies}")
    return Check(name, True, f"{answered} item(s) counted for each policy at {url}")


def _latency(client, golden: GoldenSet, requests: int) -> dict[str, float]:
    """p50/p99 round-trip latency of single multimodal items, after a warm-up request."""
    row = (golden.indices(MODALITY_BOTH) or [0])[0]
    text, image = golden.texts[row], golden.images[row]
    client.classify_one(text, image)
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        client.classify_one(text, image)
        timings.append((time.perf_counter() - started) * 1000.0)
    return {
        "p50": float(np.percentile(timings, 50)),
        "p99": float(np.percentile(timings, 99)),
        "requests": float(requests),
    }
