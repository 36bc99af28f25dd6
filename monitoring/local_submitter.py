"""Running a retraining run on this machine: the KFP local runner in a subprocess.

`LocalSubmitter` runs the training pipeline with the KFP local runner (`pipelines.local.run_training`, through
`python -m tns run training`) in a subprocess, waits for it and keeps its exit code (0 blessed, 3 not blessed,
1 failed) and output folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.common.constants import ENV_HOME, EXIT_FAILED, EXIT_NOT_BLESSED, EXIT_OK
from core.common.env import REPO_ROOT, tns_home
from monitoring.submitters import (
    STATE_FAILED,
    STATE_RUNNING,
    STATE_SUCCEEDED,
    RetrainRequest,
    SubmissionError,
    SubmittedRun,
)

LOCAL_RUNS_DIR = "runs"  # under $TNS_HOME/monitoring
LOCAL_REQUEST_FILE = "request.json"
LOCAL_RESULT_FILE = "result.json"
LOCAL_LOG_FILE = "output.log"
LOCAL_PID_FILE = "pid"


# Running locally ------------------------------------------------------------------------------------------
Runner = Callable[[list[str], dict[str, str], Path, float | None], int]


def run_process(command: list[str], env: dict[str, str], log_path: Path, timeout_s: float | None) -> int:
    """Runs `command` from the repository root with stdout and stderr into `log_path`; returns its exit code.

    A run past `timeout_s` is killed and counts as failed.
    """
    with log_path.open("w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        (log_path.parent / LOCAL_PID_FILE).write_text(str(process.pid), encoding="utf-8")
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            log.write(f"\ntns: killed after {timeout_s:.0f} s (LocalSubmitter timeout)\n")
            return EXIT_FAILED


class LocalSubmitter:
    """Runs the training pipeline on this machine (KFP local runner) in a subprocess and waits for it.

    Each run gets `$TNS_HOME/monitoring/runs/<run id>/` with `request.json` (the `TrainingRequest`),
    `output.log`, `pid` and, once finished, `result.json` (exit code, state, output folder).

    Args:
        home: State folder (default `$TNS_HOME`); the run's pipeline outputs go to `<home>/kfp/`.
        runner: Runs the command and returns its exit code (default `run_process`); tests inject one.
        python: Interpreter of the subprocess.
        timeout_s: Longest a run may take before it is killed (None: no limit).
    """

    name = "local"

    def __init__(
        self,
        home: Path | None = None,
        runner: Runner | None = None,
        python: str = sys.executable,
        timeout_s: float | None = 6 * 3600.0,
    ) -> None:
        self.home = Path(home) if home else tns_home()
        self.runner = runner or run_process
        self.python = python
        self.timeout_s = timeout_s

    @property
    def runs_dir(self) -> Path:
        return self.home / "monitoring" / LOCAL_RUNS_DIR

    def training_request(self, request: RetrainRequest) -> dict[str, Any]:
        """The `pipelines.local.TrainingRequest` fields of the run, as JSON-ready values."""
        return {
            "data": request.data_uri or None,
            "overrides": request.overrides(),
            "trigger_report": request.trigger_report,
            "data_window": request.data_window,
        }

    def build_command(self, request: RetrainRequest) -> list[str]:
        """The subprocess command: `tns run training`, the entry point a user runs, with the request's data,
        overrides, trigger report and data window."""
        command = [self.python, "-m", "tns", "run", "training"]
        if request.data_uri:
            command += ["--data", request.data_uri]
        for override in request.overrides():
            command += ["--set", override]
        if request.trigger_report:
            command += ["--trigger-report", request.trigger_report]
        if request.data_window:
            command += ["--data-window", request.data_window]
        return command

    def new_run_id(self, request: RetrainRequest) -> str:
        key = hashlib.sha256(request.idempotency_key.encode("utf-8")).hexdigest()[:8]
        return f"local-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{key}"

    def submit(self, request: RetrainRequest) -> SubmittedRun:
        """Runs the training pipeline to its end; the returned run carries its exit code and state.

        Raises:
            SubmissionError: The subprocess could not be started.
        """
        run_id = self.new_run_id(request)
        run_dir = self.runs_dir / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        request_file = run_dir / LOCAL_REQUEST_FILE
        request_file.write_text(json.dumps(self.training_request(request), indent=2), encoding="utf-8")
        log_path = run_dir / LOCAL_LOG_FILE
        env = {**os.environ, ENV_HOME: str(self.home)}
        started = time.time()
        try:
            exit_code = self.runner(self.build_command(request), env, log_path, self.timeout_s)
        except OSError as error:
            raise SubmissionError(f"could not start the local training run: {error}") from error
        output_dir = _output_dir(log_path) or _newest_pipeline_dir(self.home / "kfp", started)
        state = STATE_SUCCEEDED if exit_code in (EXIT_OK, EXIT_NOT_BLESSED) else STATE_FAILED
        error = (
            ""
            if state == STATE_SUCCEEDED
            else f"local training run exited with code {exit_code}; log {log_path}"
        )
        result = {"exit_code": exit_code, "state": state, "output_dir": output_dir, "log": str(log_path)}
        (run_dir / LOCAL_RESULT_FILE).write_text(json.dumps(result, indent=2), encoding="utf-8")
        url = Path(output_dir or run_dir).resolve().as_uri()
        return SubmittedRun(run_id, url, self.name, 1, state, exit_code, output_dir, error=error)

    def run_state(self, run_id: str) -> str | None:
        """From the run folder: the recorded final state, `RUNNING` while its process lives, else None."""
        run_dir = self.runs_dir / run_id
        result = run_dir / LOCAL_RESULT_FILE
        if result.is_file():
            with contextlib.suppress(ValueError, OSError):
                return json.loads(result.read_text(encoding="utf-8")).get("state")
        pid_file = run_dir / LOCAL_PID_FILE
        if pid_file.is_file():
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text(encoding="utf-8")), 0)
                return STATE_RUNNING
        return None


def _output_dir(log_path: Path) -> str:
    """The pipeline output folder that `tns run training` prints at the end ('outputs in DIR')."""
    with contextlib.suppress(OSError):
        for line in reversed(log_path.read_text(encoding="utf-8", errors="replace").splitlines()):
            match = re.search(r"outputs in (\S.*)$", line)
            if match:
                return match.group(1).strip()
    return ""


def _newest_pipeline_dir(root: Path, after: float) -> str:
    runs = [p for p in root.glob("tns-training-*") if p.is_dir() and p.stat().st_mtime >= after - 1]
    return str(max(runs, key=lambda p: p.stat().st_mtime)) if runs else ""
