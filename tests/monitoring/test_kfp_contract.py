"""Contract tests: retraining submission and `tns schedule` against a loopback Kubeflow Pipelines API.

`kfp.Client` talks to `FakeKfpServer` (tests/monitoring/kfp_fake.py) on 127.0.0.1; every request is recorded
and its body checked against the `kfp_server_api` models. Nothing leaves this machine.
"""

import argparse
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from core.common.constants import TRIGGER_DECISION_FILE
from core.config.retrain_rules import RetrainRules
from monitoring.decision_ledger import DecisionLedger
from monitoring.kfp_submitter import TRAINING_PACKAGE, KfpSubmitter
from monitoring.schedule import MONITORING_PACKAGE, create_schedule, kfp_cron
from monitoring.submitters import RetrainRequest, SubmissionError
from monitoring.trigger import (
    DUPLICATE_WINDOW,
    FIRED,
    SUBMISSION_FAILED,
    SUPPRESSED_IN_FLIGHT,
    evaluate_trigger,
)
from tests.monitoring.kfp_fake import API, FakeKfpServer, split_pipeline_spec
from tests.monitoring.test_trigger import T0, drift_summary
from tns.schedule import add_schedule_arguments, run_schedule
from tns.trigger import run_trigger

TOKEN = "kfp-token-do-not-log"
MLFLOW_PASSWORD = "mlflow-password-do-not-log"
RUNS, EXPERIMENTS, RECURRING = f"{API}/runs", f"{API}/experiments", f"{API}/recurringruns"


@pytest.fixture
def fake() -> Iterator[FakeKfpServer]:
    with FakeKfpServer() as server:
        yield server
    assert server.violations == [], server.violations


@pytest.fixture
def ledger(tmp_path: Path) -> DecisionLedger:
    return DecisionLedger(tmp_path / "decisions.jsonl")


@pytest.fixture
def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def monitoring_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small compiled pipeline with the parameters a monitoring pipeline takes."""
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim", install_kfp_package=False)
    def check_drift(reference_uri: str, current_uri: str, min_rows: int) -> str:
        return f"{reference_uri} {current_uri} {min_rows}"

    @dsl.pipeline(name="tns-monitoring-contract", description="Drift check stand-in.")
    def monitoring(reference_uri: str = "", current_uri: str = "", min_rows: int = 500):
        check_drift(reference_uri=reference_uri, current_uri=current_uri, min_rows=min_rows)

    path = tmp_path_factory.mktemp("pipelines") / "monitoring.yaml"
    compiler.Compiler().compile(monitoring, str(path))
    return path


def _submitter(host: str, sleeps: list[float] | None = None, retries: int = 3) -> KfpSubmitter:
    recorder = sleeps if sleeps is not None else []
    return KfpSubmitter(
        host, token=TOKEN, retries=retries, backoff_s=0.01, timeout_s=5, sleep=recorder.append
    )


def _assert_no_secrets(fake: FakeKfpServer) -> None:
    for request in fake.requests:
        text = json.dumps(request.body)
        assert TOKEN not in text and MLFLOW_PASSWORD not in text, f"secret in {request.method} {request.path}"
        assert request.headers.get("authorization") == f"Bearer {TOKEN}"


def test_compiled_training_pipeline_takes_the_trigger_parameters():
    spec = next(yaml.safe_load_all(TRAINING_PACKAGE.read_text()))
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    for name in ("trigger_report", "data_window"):
        assert parameters[name]["defaultValue"] == "" and parameters[name]["description"]
    train = spec["root"]["dag"]["tasks"]["train-model"]["inputs"]["parameters"]
    assert train["trigger_report"] == {"componentInputParameter": "trigger_report"}
    assert train["data_window"] == {"componentInputParameter": "data_window"}


def test_a_fired_trigger_posts_a_valid_run_that_names_the_report(
    fake: FakeKfpServer, ledger: DecisionLedger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", MLFLOW_PASSWORD)
    summary = drift_summary(tmp_path, "kfp")
    decision = evaluate_trigger(summary, RetrainRules(), ledger, _submitter(fake.url), now=T0)

    assert decision.outcome == FIRED and decision.submitter == "kfp" and decision.attempts == 1
    (run_id,) = fake.runs
    assert decision.run_id == run_id and decision.run_url == f"{fake.url}/#/runs/details/{run_id}"
    assert [(r.method, r.path) for r in fake.requests] == [
        ("GET", f"{API}/healthz"),  # our probe (with a timeout)
        ("GET", f"{API}/healthz"),  # kfp.Client()
        ("GET", EXPERIMENTS),  # create_experiment: get by name ...
        ("POST", EXPERIMENTS),  # ... then create
        ("GET", RUNS),  # a run of this name already? (idempotent resubmission)
        ("POST", RUNS),
    ]
    (post,) = fake.calls("POST", RUNS)
    body = post.body
    assert body["display_name"] == decision.run_name == f"retrain-content-safety-{decision.window_id[:16]}"
    assert body["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "tns-training"
    assert "kubernetes" in body["pipeline_spec"]["platform_spec"]["platforms"]  # the MLflow secret reference
    parameters = body["runtime_config"]["parameters"]
    assert parameters["trigger_report"] == str(tmp_path / "report.html") == decision.report_path
    assert json.loads(parameters["data_window"]) == {
        "id": decision.window_id,
        "start": "2026-11-01T00:00:00+00:00",
        "end": "2026-11-02T00:00:00+00:00",
    }
    assert parameters["data_uri"] == ""
    (experiment,) = fake.experiments.values()
    assert (
        experiment["display_name"] == "tns-retraining"
        and body["experiment_id"] == experiment["experiment_id"]
    )
    _assert_no_secrets(fake)
    (record,) = ledger.records()
    assert record["run_id"] == run_id and record["report_path"] == str(tmp_path / "report.html")


def test_same_window_twice_submits_one_run(fake: FakeKfpServer, ledger: DecisionLedger, tmp_path: Path):
    summary = drift_summary(tmp_path, "twice")
    policy, submitter = RetrainRules(cooldown_hours=0), _submitter(fake.url)
    first = evaluate_trigger(summary, policy, ledger, submitter, now=T0)
    second = evaluate_trigger(summary, policy, ledger, submitter, now=T0 + timedelta(hours=1))
    assert (first.outcome, second.outcome) == (FIRED, DUPLICATE_WINDOW)
    assert len(fake.calls("POST", RUNS)) == 1 and len(fake.runs) == 1
    assert second.run_id == first.run_id


def test_a_lost_answer_is_not_a_second_run(fake: FakeKfpServer):
    request = RetrainRequest("content-safety", "l" * 64, "s", "e", "", "report.html")
    fake.fail("POST", RUNS, status=503, after_processing=True)  # the run is created; the answer is lost
    sleeps: list[float] = []
    run = _submitter(fake.url, sleeps).submit(request)
    assert run.reused and run.attempts == 2 and sleeps == [0.01]
    assert len(fake.runs) == 1 and run.run_id in fake.runs


def test_an_unanswered_create_is_not_retried_at_once_and_found_later(fake: FakeKfpServer):
    request = RetrainRequest("content-safety", "t" * 64, "s", "e", "", "report.html")
    fake.delay("POST", RUNS, seconds=1.0)  # the host creates the run after the client stopped waiting
    slow = KfpSubmitter(fake.url, retries=3, backoff_s=0.01, timeout_s=0.3, sleep=[].append)
    with pytest.raises(SubmissionError, match="whether it was created is unknown") as error:
        slow.submit(request)
    assert error.value.attempts == 1 and not error.value.transient
    deadline = time.monotonic() + 5
    while not fake.runs and time.monotonic() < deadline:
        time.sleep(0.05)
    run = _submitter(fake.url).submit(request)  # the next evaluation
    assert run.reused and len(fake.runs) == 1 and len(fake.calls("POST", RUNS)) == 1


def test_server_errors_are_retried_with_backoff(fake: FakeKfpServer):
    fake.fail("POST", RUNS, status=503, times=2)
    sleeps: list[float] = []
    run = _submitter(fake.url, sleeps).submit(
        RetrainRequest("content-safety", "r" * 64, "s", "e", "", "r.html")
    )
    assert run.attempts == 3 and sleeps == [0.01, 0.02] and not run.reused
    assert [r.status for r in fake.calls("POST", RUNS)] == [503, 503, 200] and len(fake.runs) == 1


def test_a_refusal_is_not_retried(fake: FakeKfpServer):
    fake.fail("POST", RUNS, status=400)
    sleeps: list[float] = []
    with pytest.raises(SubmissionError) as error:
        _submitter(fake.url, sleeps).submit(
            RetrainRequest("content-safety", "b" * 64, "s", "e", "", "r.html")
        )
    assert error.value.attempts == 1 and not error.value.transient and sleeps == []
    assert "HTTP 400" in str(error.value) and fake.runs == {}


def test_unreachable_host_is_a_recorded_failed_submission(
    closed_port: int, fake: FakeKfpServer, ledger: DecisionLedger, tmp_path: Path
):
    summary = drift_summary(tmp_path, "down")
    sleeps: list[float] = []
    submitter = _submitter(f"http://127.0.0.1:{closed_port}", sleeps, retries=3)
    decision = evaluate_trigger(summary, RetrainRules(), ledger, submitter, now=T0)

    assert decision.outcome == SUBMISSION_FAILED and decision.attempts == 4
    assert sleeps == [0.01, 0.02, 0.04]  # exponential backoff between the 4 attempts
    assert "after 4 attempts" in decision.error and "Connection refused" in decision.error
    (record,) = ledger.records()
    assert record["outcome"] == SUBMISSION_FAILED and record["error"] == decision.error
    assert record["run_id"] == "" and record["report_path"] == str(tmp_path / "report.html")
    # Never lost: the next evaluation of the window, with the host back, submits it.
    retried = evaluate_trigger(
        summary, RetrainRules(), ledger, _submitter(fake.url), now=T0 + timedelta(hours=1)
    )
    assert retried.outcome == FIRED and len(fake.runs) == 1


def test_the_hosts_run_state_guards_in_flight_runs(
    fake: FakeKfpServer, ledger: DecisionLedger, tmp_path: Path
):
    policy, submitter = RetrainRules(cooldown_hours=0), _submitter(fake.url)
    first = evaluate_trigger(drift_summary(tmp_path / "a", "a"), policy, ledger, submitter, now=T0)
    fake.set_run_state(first.run_id, "RUNNING")
    blocked = evaluate_trigger(drift_summary(tmp_path / "b", "b"), policy, ledger, submitter, now=T0)
    assert blocked.outcome == SUPPRESSED_IN_FLIGHT and "RUNNING" in blocked.reasons[0]
    assert fake.calls("GET", f"{RUNS}/{first.run_id}")
    fake.set_run_state(first.run_id, "SUCCEEDED")
    assert (
        evaluate_trigger(drift_summary(tmp_path / "c", "c"), policy, ledger, submitter, now=T0).outcome
        == FIRED
    )
    assert len(fake.runs) == 2


def test_trigger_cli_submits_to_the_host(fake: FakeKfpServer, tmp_path: Path, capsys: pytest.CaptureFixture):
    from tns.trigger import add_trigger_arguments

    summary = drift_summary(tmp_path, "cli")
    argv = ["--summary", str(summary), "--kfp-host", fake.url, "--ledger", str(tmp_path / "d.jsonl")]
    args = add_trigger_arguments(argparse.ArgumentParser()).parse_args(argv)
    assert run_trigger(args) == 0
    out = capsys.readouterr().out
    (run_id,) = fake.runs
    assert "trigger decision: fired" in out and run_id in out


def test_trigger_cli_exits_1_when_the_host_does_not_answer(
    closed_port: int, tmp_path: Path, capsys: pytest.CaptureFixture
):
    from tns.trigger import add_trigger_arguments

    summary = drift_summary(tmp_path, "cli-down")
    argv = ["--summary", str(summary), "--kfp-host", f"http://127.0.0.1:{closed_port}", "--retries", "1"]
    argv += ["--backoff", "0.01", "--ledger", str(tmp_path / "d.jsonl")]
    assert run_trigger(add_trigger_arguments(argparse.ArgumentParser()).parse_args(argv)) == 1
    assert "submission_failed" in capsys.readouterr().out


def test_the_pipeline_trigger_step_sends_the_token_and_fails_when_submission_fails(
    fake: FakeKfpServer, closed_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Finding: the monitoring pipeline's trigger step built its KFP client without $KFP_TOKEN, and a failed
    submission ended the step as a success. Now every submitter is built by `make_submitter`."""
    from components.monitoring.executor import RetrainingFailed, trigger_step

    monkeypatch.setenv("KFP_TOKEN", TOKEN)
    policy = json.dumps(
        {"submit_retries": 1, "submit_backoff_s": 0.01, "cooldown_hours": 0, "max_in_flight": 5}
    )
    ledger_file = tmp_path / "state" / "decisions.jsonl"
    drift_summary(tmp_path / "up", "step-up")
    record = trigger_step(str(tmp_path / "up"), policy, fake.url, str(ledger_file), str(tmp_path / "out-up"))
    assert record["outcome"] == FIRED and len(fake.runs) == 1
    assert {r.headers.get("authorization") for r in fake.requests} == {f"Bearer {TOKEN}"}

    drift_summary(tmp_path / "down", "step-down")
    with pytest.raises(RetrainingFailed, match="the submission failed: .*after 2 attempts"):
        trigger_step(
            str(tmp_path / "down"),
            policy,
            f"http://127.0.0.1:{closed_port}",
            str(ledger_file),
            str(tmp_path / "o"),
        )
    written = json.loads((tmp_path / "o" / TRIGGER_DECISION_FILE).read_text())
    assert written["outcome"] == SUBMISSION_FAILED and written["attempts"] == 2
    assert [r["outcome"] for r in DecisionLedger(ledger_file).records()] == [FIRED, SUBMISSION_FAILED]


def test_drift_exits_11_when_the_retraining_submission_fails(
    closed_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    """Finding: `tns drift --retrain-rules` exited 10 whatever the trigger did. 10 still means drift (and, with a
    policy, nothing failed); 11 is drift whose retraining could not be submitted."""
    from tests.monitoring.records import START, records, write
    from tns.main import main

    monkeypatch.setenv("TNS_HOME", str(tmp_path / "home"))
    reference = write(tmp_path / "reference", records(400, 1))
    current = write(tmp_path / "current", records(400, 2, start=START + timedelta(days=1), text_shift=1.5))
    policy = tmp_path / "policy.yaml"
    policy.write_text("min_rows: 100\ncooldown_hours: 0\nsubmit_retries: 0\n")
    argv = ["drift", "--reference", str(reference), "--current", str(current), "--no-snapshot"]
    argv += ["--set", "min_rows=100", "--retrain-rules", str(policy), "--ledger", str(tmp_path / "d.jsonl")]
    down = [*argv, "--out", str(tmp_path / "down"), "--kfp-host", f"http://127.0.0.1:{closed_port}"]
    assert main(down) == 11
    summary = json.loads((tmp_path / "down" / "summary.json").read_text())
    assert summary["exit_code"] == 11 and summary["trigger"]["outcome"] == SUBMISSION_FAILED
    assert main([*argv, "--out", str(tmp_path / "dry"), "--dry-run"]) == 10


# Scheduling ---------------------------------------------------------------------------------------------------
def test_schedule_creates_a_cron_recurring_run(fake: FakeKfpServer, monitoring_package: Path):
    scheduled = create_schedule(
        fake.url,
        "0 * * * *",
        monitoring_package,
        {"reference_uri": "gs://ref", "current_uri": "gs://logs"},
        token=TOKEN,
        backoff_s=0.01,
    )
    assert scheduled.created and scheduled.cron == "0 0 * * * *"
    (job_id,) = fake.recurring_runs
    assert scheduled.recurring_run_id == job_id
    assert [(r.method, r.path) for r in fake.requests][2:] == [
        ("GET", EXPERIMENTS),
        ("POST", EXPERIMENTS),
        ("GET", RECURRING),
        ("POST", RECURRING),
    ]
    (post,) = fake.calls("POST", RECURRING)
    body = post.body
    assert body["display_name"] == "tns-drift-monitoring" and body["mode"] == "ENABLE"
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 * * * *"}}
    assert int(body["max_concurrency"]) == 1 and body["no_catchup"] is True
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "tns-monitoring-contract"
    assert body["runtime_config"]["parameters"] == {"reference_uri": "gs://ref", "current_uri": "gs://logs"}
    (experiment,) = fake.experiments.values()
    assert (
        experiment["display_name"] == "tns-monitoring"
        and body["experiment_id"] == experiment["experiment_id"]
    )
    _assert_no_secrets(fake)


def test_scheduling_twice_keeps_one_recurring_run(fake: FakeKfpServer, monitoring_package: Path):
    first = create_schedule(fake.url, "0 * * * *", monitoring_package)
    second = create_schedule(fake.url, "30 2 * * *", monitoring_package)
    assert first.created and not second.created
    assert second.recurring_run_id == first.recurring_run_id and second.cron == "0 0 * * * *"
    assert len(fake.calls("POST", RECURRING)) == 1


def test_schedule_cli(fake: FakeKfpServer, monitoring_package: Path, capsys: pytest.CaptureFixture):
    argv = ["--kfp-host", fake.url, "--cron", "*/15 * * * *", "--pipeline", str(monitoring_package)]
    argv += ["--reference", "/ref", "--current", "/logs", "--param", "min_rows=200", "--name", "hourly"]
    args = add_schedule_arguments(argparse.ArgumentParser()).parse_args(argv)
    assert run_schedule(args) == 0
    (job_id,) = fake.recurring_runs
    assert f"created recurring run {job_id} 'hourly'" in capsys.readouterr().out
    parameters = fake.calls("POST", RECURRING)[0].body["runtime_config"]["parameters"]
    assert parameters == {"reference_uri": "/ref", "current_uri": "/logs", "min_rows": 200}


def test_schedule_cli_exits_1_when_the_host_does_not_answer(
    closed_port: int, monitoring_package: Path, capsys: pytest.CaptureFixture
):
    argv = ["--kfp-host", f"http://127.0.0.1:{closed_port}", "--cron", "0 * * * *"]
    argv += ["--pipeline", str(monitoring_package), "--retries", "2", "--backoff", "0.01"]
    assert run_schedule(add_schedule_arguments(argparse.ArgumentParser()).parse_args(argv)) == 1
    err = capsys.readouterr().err
    assert "after 3 attempts" in err and "Connection refused" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cron", "0 * *"], "5-field cron"),
        (["--cron", "0 * * * *", "--param", "nope=1"], "no parameter(s) ['nope']"),
        (["--cron", "0 * * * *", "--param", "min_rows=many"], "NUMBER_INTEGER"),
        (["--cron", "0 * * * *", "--kfp-host", "kfp.example"], "http://"),
    ],
)
def test_schedule_cli_usage_errors(
    fake: FakeKfpServer,
    monitoring_package: Path,
    capsys: pytest.CaptureFixture,
    argv: list[str],
    message: str,
):
    base = ["--kfp-host", fake.url, "--pipeline", str(monitoring_package)]
    args = add_schedule_arguments(argparse.ArgumentParser()).parse_args(base + argv)
    assert run_schedule(args) == 2
    assert message in capsys.readouterr().err
    assert fake.recurring_runs == {}


@pytest.mark.skipif(
    not MONITORING_PACKAGE.is_file(), reason="pipelines/compiled/monitoring.yaml not compiled yet"
)
def test_schedule_the_compiled_monitoring_pipeline(fake: FakeKfpServer, capsys: pytest.CaptureFixture):
    argv = [
        "--kfp-host",
        fake.url,
        "--cron",
        "0 * * * *",
        "--reference",
        "gs://ref",
        "--current",
        "gs://logs",
    ]
    assert run_schedule(add_schedule_arguments(argparse.ArgumentParser()).parse_args(argv)) == 0
    (post,) = fake.calls("POST", RECURRING)
    spec, _ = split_pipeline_spec(post.body["pipeline_spec"])
    committed = next(yaml.safe_load_all(MONITORING_PACKAGE.read_text()))
    assert spec["pipelineInfo"]["name"] == committed["pipelineInfo"]["name"]
    parameters = post.body["runtime_config"]["parameters"]
    assert parameters == {"reference_uri": "gs://ref", "current_uri": "gs://logs"}


def test_cron_expressions_become_kfps_six_fields():
    assert kfp_cron("0 * * * *") == "0 0 * * * *"
    assert kfp_cron("15 0 9 * * 1-5") == "15 0 9 * * 1-5"
    with pytest.raises(ValueError, match="5-field"):
        kfp_cron("@hourly")


# The fake itself rejects what the real API server rejects ----------------------------------------------------
def _post(fake: FakeKfpServer, path: str, body: dict) -> int:
    request = urllib.request.Request(
        fake.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_the_fake_checks_bodies_against_the_api_models(monitoring_package: Path):
    spec = next(yaml.safe_load_all(monitoring_package.read_text()))
    with FakeKfpServer() as fake:
        assert _post(fake, RUNS, {"display_name": "x", "pipeline_spec": spec, "bogus": 1}) == 400
        assert _post(fake, RUNS, {"display_name": "x"}) == 400  # no pipeline
        bad_parameter = {
            "display_name": "x",
            "pipeline_spec": spec,
            "runtime_config": {"parameters": {"zz": 1}},
        }
        assert _post(fake, RUNS, bad_parameter) == 400
        five_fields = {
            "display_name": "x",
            "mode": "ENABLE",
            "max_concurrency": 1,
            "pipeline_spec": spec,
            "trigger": {"cron_schedule": {"cron": "0 * * * *"}},
        }
        assert _post(fake, RECURRING, five_fields) == 400
        assert _post(fake, RECURRING, {**five_fields, "mode": "ON"}) == 400
        assert _post(fake, RUNS, {"display_name": "ok", "pipeline_spec": spec}) == 200
        assert len(fake.violations) == 5 and fake.recurring_runs == {}
    assert any("bogus: not a field of V2beta1Run" in v for v in fake.violations)
    assert any("zz: not a parameter" in v for v in fake.violations)
    assert any("KFP needs 6 fields" in v for v in fake.violations)
    assert any("'ON' is not one of" in v for v in fake.violations)
