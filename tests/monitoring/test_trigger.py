"""The retraining trigger's guardrails, its ledger and the local submitter, with an in-memory submitter.

Acceptance tests of the issue: `test_cooldown_suppresses_a_second_trigger`,
`test_too_few_rows_never_triggers`, `test_same_window_twice_submits_once` (here and against the loopback KFP
host in test_kfp_contract.py) and `test_unreachable_host_is_a_recorded_failed_submission` (test_kfp_contract.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.common.constants import EXIT_FAILED, EXIT_NOT_BLESSED, EXIT_OK, EXIT_USAGE, TRIGGER_DECISION_FILE
from core.config.retrain_rules import RetrainRules, SignalRule
from monitoring.decision_ledger import DecisionLedger
from monitoring.local_submitter import LocalSubmitter
from monitoring.retraining_data import retraining_data_uri
from monitoring.submitters import RetrainRequest, SubmissionError, SubmittedRun
from monitoring.trigger import (
    DRY_RUN,
    DUPLICATE_WINDOW,
    FIRED,
    INSUFFICIENT_DATA,
    NO_DRIFT,
    OUTCOMES,
    SUBMISSION_FAILED,
    SUPPRESSED_COOLDOWN,
    SUPPRESSED_IN_FLIGHT,
    TriggerError,
    evaluate_trigger,
)
from tns.trigger import add_trigger_arguments, run_trigger

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
RECORD_KEYS = {
    "ledger_version",
    "decided_at",
    "model",
    "model_version",
    "window_id",
    "window_start",
    "window_end",
    "window_path",
    "idempotency_key",
    "outcome",
    "reasons",
    "matched_signals",
    "drift_status",
    "current_rows",
    "dry_run",
    "submitter",
    "run_name",
    "run_id",
    "run_url",
    "run_state",
    "run_exit_code",
    "run_output",
    "attempts",
    "data_uri",
    "error",
    "report_path",
    "summary_path",
}


def drift_summary(
    folder: Path,
    window: str = "w1",
    rows: int = 2000,
    status: str = "drift",
    signals: list[dict[str, Any]] | None = None,
    model: str = "content-safety",
) -> Path:
    """Writes a drift check's summary.json (and an empty report.html) of the documented shape; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    window_id = (window * 64)[:64] if len(window) < 64 else window
    if signals is None:
        signals = [
            {"name": "text_embedding", "group": "text", "kind": "embedding", "score": 0.42, "threshold": 0.1},
            {"name": "score_spam", "group": "prediction", "kind": "numeric", "score": 0.2, "threshold": 0.1},
            {"name": "text_length", "group": "text", "kind": "numeric", "score": 0.05, "threshold": 0.1},
        ]
    for signal in signals:
        signal.setdefault("severity", signal["score"] / signal["threshold"])
        signal.setdefault("drifted", signal["severity"] > 1)
        signal.setdefault("method", "test")
    report = folder / "report.html"
    report.write_text("<html></html>")
    summary = {
        "log_schema_version": 1,
        "status": status,
        "drift_detected": any(s["drifted"] for s in signals),
        "window": {
            "id": window_id,
            "start": "2026-11-01T00:00:00+00:00",
            "end": "2026-11-02T00:00:00+00:00",
            "path": str(folder / "logs"),
        },
        "current": {"rows": rows, "malformed_lines": 0},
        "reference": {"rows": 4000, "path": str(folder / "reference")},
        "model": {"name": model, "version": "3", "alias": "champion"},
        "signals": sorted(signals, key=lambda s: -s["severity"]),
        "report_html": str(report),
        "summary_json": str(folder / "summary.json"),
    }
    path = folder / "summary.json"
    path.write_text(json.dumps(summary))
    return path


class FakeSubmitter:
    """In-memory submitter: records requests; runs start RUNNING unless `state` says otherwise."""

    name = "fake"

    def __init__(
        self, state: str | None = "SUCCEEDED", fail: bool | Exception = False, delay_s: float = 0.0
    ) -> None:
        self.requests: list[RetrainRequest] = []
        self.states: dict[str, str | None] = {}
        self.state = state
        self.fail = fail
        self.delay_s = delay_s
        self._lock = threading.Lock()

    def submit(self, request: RetrainRequest) -> SubmittedRun:
        time.sleep(self.delay_s)
        if isinstance(self.fail, Exception):
            raise self.fail
        if self.fail:
            raise SubmissionError("host said no", attempts=4, transient=True)
        with self._lock:
            self.requests.append(request)
            run_id = f"run-{len(self.requests)}"
            self.states[run_id] = self.state
        return SubmittedRun(run_id, f"http://kfp/#/runs/details/{run_id}", self.name)

    def run_state(self, run_id: str) -> str | None:
        return self.states.get(run_id)


@pytest.fixture
def ledger(tmp_path: Path) -> DecisionLedger:
    return DecisionLedger(tmp_path / "ledger" / "decisions.jsonl")


def test_cooldown_suppresses_a_second_trigger(tmp_path: Path, ledger: DecisionLedger):
    policy, submitter = RetrainRules(cooldown_hours=24), FakeSubmitter()
    first = evaluate_trigger(drift_summary(tmp_path / "a", "a"), policy, ledger, submitter, now=T0)
    assert first.outcome == FIRED and first.run_id == "run-1"

    second = evaluate_trigger(
        drift_summary(tmp_path / "b", "b"), policy, ledger, submitter, now=T0 + timedelta(hours=5)
    )
    assert second.outcome == SUPPRESSED_COOLDOWN
    assert "run-1" in second.reasons[0] and "2026-11-03T12:00:00+00:00" in second.reasons[0]
    assert len(submitter.requests) == 1

    later = evaluate_trigger(
        drift_summary(tmp_path / "c", "c"), policy, ledger, submitter, now=T0 + timedelta(hours=25)
    )
    assert later.outcome == FIRED and len(submitter.requests) == 2
    assert [r["outcome"] for r in ledger.records()] == [FIRED, SUPPRESSED_COOLDOWN, FIRED]


@pytest.mark.parametrize(("rows", "status"), [(499, "drift"), (0, "drift"), (5000, "insufficient_data")])
def test_too_few_rows_never_triggers(tmp_path: Path, ledger: DecisionLedger, rows: int, status: str):
    strong = [{"name": f"score_{p}", "score": 5.0, "threshold": 0.1} for p in ("hate", "spam")]
    summary = drift_summary(tmp_path, "small", rows=rows, status=status, signals=strong)
    policy, submitter = RetrainRules(min_rows=500, cooldown_hours=0), FakeSubmitter()
    for hours in (0, 1, 100):  # however often it is evaluated, and whatever the cooldown
        decision = evaluate_trigger(summary, policy, ledger, submitter, now=T0 + timedelta(hours=hours))
        assert decision.outcome == INSUFFICIENT_DATA
    assert submitter.requests == []
    reasons = " ".join(decision.reasons)
    assert ("fewer than min_rows 500" in reasons) == (rows < 500)
    assert ("insufficient_data" in reasons) == (status == "insufficient_data")


@pytest.mark.parametrize("torn_ledger", [False, True], ids=["ledger", "torn_last_line"])
def test_same_window_twice_submits_once(tmp_path: Path, ledger: DecisionLedger, torn_ledger: bool):
    """With a torn last ledger line too (a crash mid-append): before the fix the next record joined the torn
    line, was unreadable, and the window fired again."""
    if torn_ledger:
        ledger.path.parent.mkdir(parents=True)
        ledger.path.write_text('{"model": "content-safety", "outco', encoding="utf-8")  # no newline: torn
    summary = drift_summary(tmp_path, "same")
    policy, submitter = RetrainRules(cooldown_hours=0), FakeSubmitter()
    first = evaluate_trigger(summary, policy, ledger, submitter, now=T0)
    second = evaluate_trigger(summary, policy, ledger, submitter, now=T0 + timedelta(days=3))
    assert (first.outcome, second.outcome) == (FIRED, DUPLICATE_WINDOW)
    assert len(submitter.requests) == 1
    # The duplicate decision still names the run of the window, and so does the file beside the report.
    assert (second.run_id, second.run_url) == (first.run_id, first.run_url)
    beside = json.loads((tmp_path / TRIGGER_DECISION_FILE).read_text())
    assert beside["run_id"] == first.run_id and beside["report_path"] == str(tmp_path / "report.html")


def test_concurrent_evaluations_of_one_window_submit_once(tmp_path: Path, ledger: DecisionLedger):
    summary = drift_summary(tmp_path, "race")
    policy, submitter = RetrainRules(cooldown_hours=0), FakeSubmitter(delay_s=0.2)
    outcomes: list[str] = []

    def evaluate() -> None:
        outcomes.append(evaluate_trigger(summary, policy, ledger, submitter).outcome)

    threads = [threading.Thread(target=evaluate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [DUPLICATE_WINDOW] * 3 + [FIRED]
    assert len(submitter.requests) == 1


def test_a_concurrent_evaluation_that_holds_the_lock_too_long_is_recorded(
    tmp_path: Path, ledger: DecisionLedger
):
    summary = drift_summary(tmp_path, "locked")
    with ledger.model_lock("content-safety"):
        decision = evaluate_trigger(summary, RetrainRules(), ledger, FakeSubmitter(), lock_timeout_s=0.1)
    assert decision.outcome == SUPPRESSED_IN_FLIGHT and "holds" in decision.reasons[0]
    assert ledger.records()[-1]["outcome"] == SUPPRESSED_IN_FLIGHT


def test_a_failed_submission_is_recorded_and_the_window_retried(tmp_path: Path, ledger: DecisionLedger):
    summary = drift_summary(tmp_path, "flaky")
    policy = RetrainRules()
    failed = evaluate_trigger(summary, policy, ledger, FakeSubmitter(fail=True), now=T0)
    assert failed.outcome == SUBMISSION_FAILED and failed.error == "host said no" and failed.attempts == 4
    # A failed submission is neither a duplicate nor a cooldown: the next evaluation submits.
    retried = evaluate_trigger(summary, policy, ledger, FakeSubmitter(), now=T0 + timedelta(minutes=10))
    assert retried.outcome == FIRED
    assert [r["outcome"] for r in ledger.records()] == [SUBMISSION_FAILED, FIRED]


def test_a_submitter_bug_is_still_a_recorded_decision(tmp_path: Path, ledger: DecisionLedger):
    submitter = FakeSubmitter(fail=KeyError("run_id"))
    decision = evaluate_trigger(drift_summary(tmp_path, "bug"), RetrainRules(), ledger, submitter, now=T0)
    assert decision.outcome == SUBMISSION_FAILED and decision.error == "unexpected KeyError: 'run_id'"
    assert ledger.records()[-1]["outcome"] == SUBMISSION_FAILED


def test_signals_that_do_not_match_the_rules_are_no_drift(tmp_path: Path, ledger: DecisionLedger):
    descriptors_only = [
        {"name": "text_length", "score": 0.9, "threshold": 0.1},
        {"name": "image_format", "score": 0.5, "threshold": 0.1},
        {"name": "score_spam", "score": 0.05, "threshold": 0.1},
    ]
    summary = drift_summary(tmp_path / "a", "a", signals=descriptors_only)
    decision = evaluate_trigger(summary, RetrainRules(), ledger, FakeSubmitter(), now=T0)
    assert decision.outcome == NO_DRIFT and decision.matched_signals == []
    assert "text_length" in decision.reasons[1]

    two_needed = RetrainRules(min_signals=2, signals=[SignalRule("score_*"), SignalRule("text_embedding")])
    one_match = drift_summary(
        tmp_path / "b", "b", signals=[{"name": "score_spam", "score": 0.3, "threshold": 0.1}]
    )
    decision = evaluate_trigger(one_match, two_needed, ledger, FakeSubmitter(), now=T0)
    assert decision.outcome == NO_DRIFT and [m["name"] for m in decision.matched_signals] == ["score_spam"]
    assert "min_signals 2" in decision.reasons[0]


def test_an_unfinished_run_suppresses_another_window(tmp_path: Path, ledger: DecisionLedger):
    policy, submitter = RetrainRules(cooldown_hours=0, max_run_hours=48), FakeSubmitter(state="RUNNING")
    assert (
        evaluate_trigger(drift_summary(tmp_path / "a", "a"), policy, ledger, submitter, now=T0).outcome
        == FIRED
    )
    second = evaluate_trigger(drift_summary(tmp_path / "b", "b"), policy, ledger, submitter, now=T0)
    assert (
        second.outcome == SUPPRESSED_IN_FLIGHT
        and "run-1" in second.reasons[0]
        and "RUNNING" in second.reasons[0]
    )

    submitter.states["run-1"] = "SUCCEEDED"
    third = evaluate_trigger(drift_summary(tmp_path / "c", "c"), policy, ledger, submitter, now=T0)
    assert third.outcome == FIRED and third.run_id == "run-2"

    # A run whose state cannot be read counts as in flight until it is older than max_run_hours.
    submitter.states["run-2"] = None
    at = T0 + timedelta(hours=47)
    assert evaluate_trigger(
        drift_summary(tmp_path / "d", "d"), policy, ledger, submitter, now=at
    ).outcome == (SUPPRESSED_IN_FLIGHT)
    at = T0 + timedelta(hours=49)
    assert (
        evaluate_trigger(drift_summary(tmp_path / "e", "e"), policy, ledger, submitter, now=at).outcome
        == FIRED
    )


def test_dry_run_records_what_would_be_submitted(tmp_path: Path, ledger: DecisionLedger):
    summary = drift_summary(tmp_path, "dry")
    submitter = FakeSubmitter()
    decision = evaluate_trigger(summary, RetrainRules(dry_run=True), ledger, submitter, now=T0)
    assert decision.outcome == DRY_RUN and decision.dry_run and submitter.requests == []
    assert decision.run_name.startswith("retrain-content-safety-") and "would submit" in decision.reasons[1]
    assert evaluate_trigger(summary, RetrainRules(dry_run=True), ledger, None, now=T0).outcome == DRY_RUN
    # A dry run submitted nothing, so it does not make the window a duplicate.
    assert evaluate_trigger(summary, RetrainRules(), ledger, submitter, now=T0).outcome == FIRED


def test_ledger_records_carry_the_documented_fields_and_links(tmp_path: Path, ledger: DecisionLedger):
    summary = drift_summary(tmp_path, "links")
    decision = evaluate_trigger(summary, RetrainRules(), ledger, FakeSubmitter(), now=T0)
    (record,) = ledger.records()
    assert set(record) == RECORD_KEYS and record["outcome"] in OUTCOMES
    assert record["decided_at"] == "2026-11-02T12:00:00+00:00"
    assert record["idempotency_key"] == f"content-safety:{record['window_id']}"
    assert (record["run_id"], record["run_url"]) == ("run-1", "http://kfp/#/runs/details/run-1")
    assert record["report_path"] == str(tmp_path / "report.html")
    assert record["summary_path"] == str(summary)
    assert {m["name"] for m in record["matched_signals"]} == {"text_embedding", "score_spam"}
    assert record["model_version"] == "3" and record["current_rows"] == 2000
    assert decision.to_record() == record


def test_the_request_names_the_report_and_the_window(tmp_path: Path, ledger: DecisionLedger):
    summary = drift_summary(tmp_path, "params")
    submitter = FakeSubmitter()
    evaluate_trigger(summary, RetrainRules(training_data_uri="/data/labeled"), ledger, submitter, now=T0)
    (request,) = submitter.requests
    arguments = request.pipeline_arguments()
    assert arguments["trigger_report"] == str(tmp_path / "report.html")
    assert arguments["data_uri"] == "/data/labeled"
    window = json.loads(arguments["data_window"])
    assert window == {
        "id": request.window_id,
        "start": "2026-11-01T00:00:00+00:00",
        "end": "2026-11-02T00:00:00+00:00",
    }
    assert "config_json" not in arguments  # defaults: the pipeline's own


def test_retraining_data_comes_only_from_the_policy(tmp_path: Path, ledger: DecisionLedger):
    """Finding: a `dataset/` folder beside the logs became the retraining data, so whoever could write the log
    store chose what the next model learned from. Only the policy's `training_data_uri` counts now."""
    summary = drift_summary(tmp_path, "labeled")
    for folder in (tmp_path / "logs" / "dataset", tmp_path / "dataset"):
        folder.mkdir(parents=True)
        (folder / "manifest.jsonl").write_text(
            '{"id": "planted", "text": "x", "spam": 0}\n', encoding="utf-8"
        )
    decision = evaluate_trigger(
        summary, RetrainRules(training_data_uri="/data/labeled"), ledger, FakeSubmitter()
    )
    assert decision.data_uri == "/data/labeled"
    data_uri, reason = retraining_data_uri(RetrainRules(), "w" * 64, str(tmp_path / "logs"), build=True)
    assert data_uri == "" and "the retrain rules name no training_data_uri" in reason


def test_the_ledger_defaults_to_persistent_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Finding: the ledger defaulted to a path inside the pod, so cooldown, in-flight and duplicate-window
    guards reset with every pod. $TNS_LEDGER or the mounted state volume win; a pod without either is refused."""
    from core.common.constants import MONITORING_STATE_MOUNT
    from monitoring import decision_ledger

    monkeypatch.setenv("TNS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TNS_LEDGER", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert DecisionLedger().path == tmp_path / "home" / "monitoring" / "decisions.jsonl"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    with pytest.raises(
        decision_ledger.LedgerLocationError, match="tns-monitoring-state.* at /var/lib/tns-monitoring"
    ):
        DecisionLedger()
    monkeypatch.setattr(decision_ledger.os.path, "ismount", lambda path: path == MONITORING_STATE_MOUNT)
    assert DecisionLedger().path == Path(MONITORING_STATE_MOUNT) / "decisions.jsonl"
    monkeypatch.setenv("TNS_LEDGER", str(tmp_path / "pvc" / "ledger.jsonl"))
    assert DecisionLedger().path == tmp_path / "pvc" / "ledger.jsonl"
    assert DecisionLedger(tmp_path / "given.jsonl").path == tmp_path / "given.jsonl"


def test_overrides_and_another_model_reach_the_run_configuration():
    request = RetrainRequest(
        "moderation-v2",
        "w" * 64,
        "s",
        "e",
        "",
        "report.html",
        config_overrides=("train.epochs=3", "policies=[spam]"),
    )
    arguments = request.pipeline_arguments()
    config = json.loads(arguments["config_json"])
    assert config["train"]["epochs"] == 3 and config["model_name"] == "moderation-v2"
    assert arguments["policies"] == ["spam"]
    assert request.run_name == "retrain-moderation-v2-wwwwwwwwwwwwwwww"


def test_unusable_summaries_are_refused(tmp_path: Path, ledger: DecisionLedger):
    with pytest.raises(TriggerError, match="cannot read"):
        evaluate_trigger(tmp_path / "missing.json", RetrainRules(), ledger, FakeSubmitter())
    summary = json.loads(drift_summary(tmp_path, "x").read_text())
    with pytest.raises(TriggerError, match="log_schema_version"):
        evaluate_trigger({**summary, "log_schema_version": 2}, RetrainRules(), ledger, FakeSubmitter())
    with pytest.raises(TriggerError, match="window.id"):
        evaluate_trigger({**summary, "window": {}}, RetrainRules(), ledger, FakeSubmitter())
    with pytest.raises(TriggerError, match="rules retrain 'content-safety'"):
        other = json.loads(drift_summary(tmp_path / "o", "o", model="other").read_text())
        evaluate_trigger(other, RetrainRules(), ledger, FakeSubmitter())
    with pytest.raises(ValueError, match="needs a submitter"):
        evaluate_trigger(summary, RetrainRules(), ledger, None)
    assert ledger.records() == []


def test_ledger_is_safe_for_concurrent_appenders(tmp_path: Path):
    path = tmp_path / "decisions.jsonl"
    code = (
        "import sys; from monitoring.decision_ledger import DecisionLedger; ledger = DecisionLedger(sys.argv[1]); "
        "[ledger.append({'writer': sys.argv[2], 'i': i, 'pad': 'x' * 3000}) for i in range(150)]"
    )
    writers = [subprocess.Popen([sys.executable, "-c", code, str(path), str(n)], cwd=REPO) for n in range(3)]
    assert all(w.wait(timeout=60) == 0 for w in writers)
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole
    assert len(records) == 450
    assert {(r["writer"], r["i"]) for r in records} == {(str(n), i) for n in range(3) for i in range(150)}
    path.write_text(path.read_text() + '{"torn": ')  # a torn last line is skipped, not fatal
    assert len(DecisionLedger(path).records()) == 450


def test_ledger_defaults_to_tns_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("TNS_HOME", str(tmp_path / "home"))
    ledger = DecisionLedger()
    assert ledger.path == tmp_path / "home" / "monitoring" / "decisions.jsonl"
    assert not ledger.path.parent.exists()  # nothing is created before the first decision


# The local submitter -----------------------------------------------------------------------------------------
class RecordingRunner:
    """Stands in for the training subprocess: records the command and environment, writes a log, exits."""

    def __init__(self, exit_code: int, output_dir: str = "/tmp/tns/kfp/tns-training-2026") -> None:
        self.exit_code = exit_code
        self.output_dir = output_dir
        self.calls: list[tuple[list[str], dict[str, str], Path]] = []

    def __call__(
        self, command: list[str], env: dict[str, str], log_path: Path, timeout_s: float | None
    ) -> int:
        self.calls.append((command, env, log_path))
        log_path.write_text(f"running ...\n  took 42 s; outputs in {self.output_dir}\n")
        return self.exit_code


@pytest.mark.parametrize(
    ("exit_code", "state"), [(EXIT_OK, "SUCCEEDED"), (EXIT_NOT_BLESSED, "SUCCEEDED"), (EXIT_FAILED, "FAILED")]
)
def test_local_submitter_runs_the_training_pipeline_in_a_subprocess(
    tmp_path: Path, ledger: DecisionLedger, exit_code: int, state: str
):
    runner = RecordingRunner(exit_code)
    submitter = LocalSubmitter(home=tmp_path / "home", runner=runner, python="/venv/bin/python")
    summary = drift_summary(tmp_path / "w", "local")
    policy = RetrainRules(training_data_uri="/data/labeled", config_overrides=["train.epochs=2"])
    decision = evaluate_trigger(summary, policy, ledger, submitter, now=T0)

    ((command, env, log_path),) = runner.calls
    # The entry point a user runs, `tns run training`, with the request's data, overrides, report and window.
    assert command[:5] == ["/venv/bin/python", "-m", "tns", "run", "training"]
    assert command[5:11] == ["--data", "/data/labeled", "--set", "train.epochs=2", "--trigger-report"] + [
        str(tmp_path / "w" / "report.html")
    ]
    assert command[11] == "--data-window" and json.loads(command[12])["id"] == decision.window_id
    assert env["TNS_HOME"] == str(tmp_path / "home")
    request = json.loads((submitter.runs_dir / decision.run_id / "request.json").read_text())
    assert request == {
        "data": "/data/labeled",
        "overrides": ["train.epochs=2"],
        "trigger_report": str(tmp_path / "w" / "report.html"),
        "data_window": json.dumps(
            {
                "end": "2026-11-02T00:00:00+00:00",
                "id": decision.window_id,
                "start": "2026-11-01T00:00:00+00:00",
            },
            separators=(",", ":"),
        ),
    }
    assert decision.outcome == FIRED and decision.submitter == "local"
    assert decision.run_id.startswith("local-") and decision.run_exit_code == exit_code
    assert decision.run_state == state and decision.run_output == runner.output_dir
    assert decision.run_url == Path(runner.output_dir).as_uri()
    assert bool(decision.error) == (state == "FAILED") and str(log_path) in (decision.error or str(log_path))
    assert submitter.run_state(decision.run_id) == state


def test_local_submitter_state_while_running_and_unknown(tmp_path: Path):
    submitter = LocalSubmitter(home=tmp_path)
    run_dir = submitter.runs_dir / "local-x"
    run_dir.mkdir(parents=True)
    assert submitter.run_state("local-x") is None
    (run_dir / "pid").write_text(str(__import__("os").getpid()))
    assert submitter.run_state("local-x") == "RUNNING"


def test_local_entry_point_hands_the_request_to_run_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The local submitter's command is `tns run training`, the entry point a user runs: through the CLI's own
    parser the request's data, overrides, trigger report and window reach `run_training` unchanged."""
    import pipelines.local
    from tns.main import main

    seen = []
    monkeypatch.setattr(
        pipelines.local, "run_training", lambda request: seen.append(request) or EXIT_NOT_BLESSED
    )
    request = RetrainRequest(
        "content-safety", "w" * 64, "s", "e", "/d", "r.html", config_overrides=("train.epochs=2",)
    )
    command = LocalSubmitter(home=tmp_path).build_command(request)
    assert command[1:5] == ["-m", "tns", "run", "training"]
    assert main(command[3:]) == EXIT_NOT_BLESSED
    (training,) = seen
    assert training.data == Path("/d") and training.overrides == ["train.epochs=2"]
    assert (training.trigger_report, training.data_window) == ("r.html", request.data_window)


# `tns trigger` ------------------------------------------------------------------------------------------------
def _trigger_args(*argv: str):
    import argparse

    return add_trigger_arguments(argparse.ArgumentParser()).parse_args(list(argv))


def test_trigger_cli_dry_run_prints_and_records(tmp_path: Path, capsys: pytest.CaptureFixture):
    summary, ledger_path = drift_summary(tmp_path, "cli"), tmp_path / "decisions.jsonl"
    assert (
        run_trigger(_trigger_args("--summary", str(summary), "--dry-run", "--ledger", str(ledger_path))) == 0
    )
    out = capsys.readouterr().out
    assert "trigger decision: dry_run" in out and "would submit" in out
    assert (
        run_trigger(
            _trigger_args("--summary", str(summary), "--dry-run", "--ledger", str(ledger_path), "--json")
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["outcome"] == DRY_RUN
    assert len(DecisionLedger(ledger_path).records()) == 2


def test_trigger_cli_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    monkeypatch.delenv("KFP_HOST", raising=False)
    summary = drift_summary(tmp_path, "usage")
    ledger = ["--ledger", str(tmp_path / "d.jsonl")]
    assert run_trigger(_trigger_args("--summary", str(summary), *ledger)) == EXIT_USAGE
    assert "--kfp-host" in capsys.readouterr().err
    bad_policy = tmp_path / "bad.yaml"
    bad_policy.write_text("min_rows: -3\n")
    assert run_trigger(
        _trigger_args("--summary", str(summary), "--retrain-rules", str(bad_policy), "--dry-run", *ledger)
    ) == (EXIT_USAGE)
    assert "min_rows" in capsys.readouterr().err
    assert (
        run_trigger(_trigger_args("--summary", str(tmp_path / "none.json"), "--dry-run", *ledger))
        == EXIT_USAGE
    )
    assert (
        run_trigger(_trigger_args("--summary", str(summary), "--kfp-host", "kfp.local", *ledger))
        == EXIT_USAGE
    )
    assert "http://" in capsys.readouterr().err


def test_the_old_policy_spelling_still_works_with_a_deprecation_message(
    tmp_path: Path, capsys: pytest.CaptureFixture
):
    summary, ledger = drift_summary(tmp_path, "old-spelling"), ["--ledger", str(tmp_path / "d.jsonl")]
    rules = tmp_path / "rules.yaml"
    rules.write_text("min_rows: 100000\n")
    assert (
        run_trigger(_trigger_args("--summary", str(summary), "--policy", str(rules), "--dry-run", *ledger))
        == 0
    )
    captured = capsys.readouterr()
    assert "--policy FILE is deprecated" in captured.err and "--retrain-rules FILE" in captured.err
    assert "fewer than min_rows 100000" in captured.out  # the file given with the old spelling was applied
    both = ["--policy", str(rules), "--retrain-rules", str(rules)]
    assert run_trigger(_trigger_args("--summary", str(summary), *both, "--dry-run", *ledger)) == EXIT_USAGE
    assert "--retrain-rules FILE only" in capsys.readouterr().err


def test_policy_replace_keeps_validation():
    with pytest.raises(ValueError):
        replace(RetrainRules(), min_rows=0)


# The training step records the trigger on its MLflow run -------------------------------------------------------
class _FakeMlflow:
    """What training_step calls on `mlflow`, recorded."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}

    def start_run(self, run_name: str):
        import contextlib
        from types import SimpleNamespace

        return contextlib.nullcontext(SimpleNamespace(info=SimpleNamespace(run_id="mlflow-run")))

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def log_params(self, params: dict) -> None: ...

    def log_dict(self, data: dict, path: str) -> None: ...

    def log_metrics(self, metrics: dict, step: int | None = None) -> None: ...


@pytest.mark.parametrize(("report", "window"), [("/r/report.html", '{"id":"w"}'), ("", "")])
def test_training_step_tags_the_trigger_report_and_window(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, report: str, window: str
):
    from types import ModuleType, SimpleNamespace

    import components.training.executor as executor
    import core.registry.mlflow_registry as registry
    from core.config.run import RunConfig

    fake_mlflow, trainer = _FakeMlflow(), ModuleType("core.training.trainer")
    result = SimpleNamespace(
        best_epoch=1, seconds=1.0, train_samples_per_second=1.0, steps=1, to_dict=lambda: {}
    )
    trainer.train_model = lambda *args, **kwargs: result
    monkeypatch.setitem(sys.modules, "mlflow", fake_mlflow)
    monkeypatch.setitem(sys.modules, "core.training.trainer", trainer)
    monkeypatch.setattr(registry, "configure", lambda uri: uri)
    monkeypatch.setattr(registry, "log_model_folder", lambda run_id, folder: None)
    monkeypatch.setattr(executor, "read_fingerprint", lambda d: {"fingerprint": "f" * 64, "source": "/d"})

    run_id, _ = executor.training_step(
        "/d", "/s", RunConfig(), tmp_path, "", "abc", trigger_report=report, data_window=window
    )
    assert run_id == "mlflow-run" and fake_mlflow.tags["tns.git_commit"] == "abc"
    expected = {"tns.trigger_report": report, "tns.data_window": window} if report else {}
    assert {
        k: v for k, v in fake_mlflow.tags.items() if k in ("tns.trigger_report", "tns.data_window")
    } == expected


def test_local_submitter_command_really_runs_the_training_entry_point(tmp_path: Path):
    """The real subprocess, stopped early by run_training itself: the dataset does not exist (exit 1)."""
    submitter = LocalSubmitter(home=tmp_path / "home", timeout_s=120)
    request = RetrainRequest("content-safety", "m" * 64, "s", "e", str(tmp_path / "missing"), "report.html")
    run = submitter.submit(request)
    assert (run.exit_code, run.state) == (EXIT_FAILED, "FAILED")
    log = (submitter.runs_dir / run.run_id / "output.log").read_text()
    assert f"dataset {tmp_path / 'missing'} does not exist" in log
    assert submitter.run_state(run.run_id) == "FAILED"
