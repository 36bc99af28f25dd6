"""Hostile strings from data and logs reach every HTML and Markdown output as text, never as markup."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from core.common.markup import escape_html, escape_markdown, markdown_code


def outside_code(markdown: str) -> str:
    """Markdown without its code spans (their content is shown literally, markup included)."""
    import re

    return re.sub(r"(?<!\\)(`+)(?!`).*?(?<!`)\1(?!`)", "", markdown)


HOSTILE = "<img src=x onerror=alert(1)>\"'`|*_[click](javascript:alert(1))\n# heading"


def test_html_escaping_leaves_no_tag_or_attribute_break():
    out = escape_html(HOSTILE)
    assert "<" not in out and ">" not in out and '"' not in out and "'" not in out
    assert escape_html(None) == ""


def test_markdown_escaping_keeps_values_inline_and_unlinked():
    out = escape_markdown(HOSTILE)
    assert "<" not in out and "\n" not in out
    assert "[click](" not in out and "\\[click\\](javascript" in out
    assert "\\|" in out and "\\*" in out and "\\_" in out and "\\`" in out and "\\#" in out


@pytest.mark.parametrize("value", ["plain", "a`b", "``x`", "pipe|inside"])
def test_markdown_code_spans_hold_any_backticks(value):
    out = markdown_code(value)
    fence = out[: len(out) - len(out.lstrip("`"))]
    inner = out[len(fence) : len(out) - len(fence)]
    assert (
        out.endswith(fence) and fence not in inner
    )  # no run inside as long as the fence: nothing breaks out
    assert inner.strip().replace("\\|", "|") == value


def test_drift_report_escapes_category_keys_from_log_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Finding: category shares were rendered with escaped values but raw keys (fails before the fix)."""
    from monitoring.check import DriftRequest, run_drift_check
    from tests.monitoring.records import START, records, write

    current = records(300, 2, start=START + timedelta(days=1))
    for record in current[::2]:  # a string field, so the typed record check keeps the line
        record["text_language"] = "<img src=x onerror=alert(1)>"
    monkeypatch.setenv("TNS_HOME", str(tmp_path / "home"))
    outcome = run_drift_check(
        DriftRequest(
            reference=write(tmp_path / "reference", records(300, 1)),
            current=write(tmp_path / "current", current),
            out_dir=tmp_path / "out",
            workspace=tmp_path / "workspace",
            save_snapshot=False,
        )
    )
    report = (outcome.out_dir / "report.html").read_text(encoding="utf-8")
    assert "<img src=x" not in report
    assert "&lt;img src=x onerror=alert(1)&gt;" in report


def test_model_card_escapes_dataset_values(tmp_path: Path):
    import numpy as np

    from core.config.run import EvaluationConfig
    from core.evaluation.evaluate import evaluate_scores
    from core.evaluation.model_card import ModelCardInfo
    from core.evaluation.model_card_html import render_model_card_html
    from core.evaluation.model_card_markdown import render_model_card_markdown
    from tests.unit.test_evaluate import POLICIES, crafted

    test = crafted(0)
    test["target_group"] = np.where(np.arange(len(test)) % 2 == 0, HOSTILE, "ok")
    config = EvaluationConfig(bootstrap_samples=20)
    evaluation = evaluate_scores(test, crafted(1, ablations=False), POLICIES, config)
    card = ModelCardInfo(model_name="m<script>", run_id=HOSTILE, dataset_source=HOSTILE)
    html = render_model_card_html(evaluation, card)
    assert "<img src=x" not in html and "<script>" not in html and "&lt;img src=x" in html
    markdown = outside_code(render_model_card_markdown(evaluation, card))
    assert "<img" not in markdown and "[click](" not in markdown


def test_validation_gate_and_infra_markdown_escape_messages():
    from core.evaluation.gate import GateDecision, GateReason
    from core.validation.outcome import CheckResult, ValidationOutcome
    from core.validation.validation_report import markdown_summary, render_html
    from serving.infra_validation import Check, InfraValidationReport

    check = CheckResult(
        check=f"ids_unique`{HOSTILE}", expectation=HOSTILE, success=False, critical=True,
        unexpected_count=1, message=HOSTILE, examples=[HOSTILE], remedy=HOSTILE,
    )  # fmt: skip
    outcome = ValidationOutcome(rows=1, checks=[check])
    assert "<img src=x" not in render_html(outcome)
    markdown = outside_code(markdown_summary(outcome))
    assert "<img" not in markdown and "[click](" not in markdown and "onerror" in markdown
    reason = GateReason(check=HOSTILE, policy=HOSTILE, metric="roc_auc", threshold=0.5, observed=0.1,
                        passed=False, message=HOSTILE)  # fmt: skip
    decision = GateDecision(decision="NOT_BLESSED", reasons=[reason])
    assert "<img" not in outside_code(decision.to_markdown()) and "[click](" not in decision.to_markdown()
    report = InfraValidationReport(
        version=HOSTILE, tolerance=1e-4, model_config_name=HOSTILE, checks=[Check(HOSTILE, False, HOSTILE)]
    )
    markdown = outside_code(report.to_markdown())
    assert "<img" not in markdown and "[click](" not in markdown and "onerror" in markdown


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("cannot read https://alice:s3cr3t@mlflow.example.com/api", "s3cr3t"),
        ("tns drift --tracking-uri postgresql://svc:pa55@db:5432/mlflow --policy p.yaml", "pa55"),
        ("https://kfp.example.com/?token=abc123&x=1", "abc123"),
        ("KFP_TOKEN: eyJhbGciOi.sig --password hunter2", "hunter2"),
    ],
)
def test_credentials_are_redacted_from_messages(text, secret):
    """Finding: credentials inside a tracking URI were echoed into summaries and reports."""
    from core.common.markup import redact_credentials

    out = redact_credentials(text)
    assert secret not in out and "***" in out
    kept = "sqlite:///home/u/.tns/mlflow.db and http://127.0.0.1:5000 --group author tokens: 12"
    assert redact_credentials(kept) == kept
