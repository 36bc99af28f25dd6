"""Creating a recurring run of the monitoring pipeline on a Kubeflow Pipelines host (for `tns schedule`).

The recurring run uses a cron trigger, `max_concurrency` 1 (a drift check never overlaps the previous one)
and no catch-up (a paused schedule does not backfill every missed interval). Creating it twice is harmless:
a recurring run of the same name in the experiment is reported, not duplicated. `kfp` is imported inside the
functions that talk to the host.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.common.env import compiled_pipeline
from monitoring.kfp_submitter import (
    check_host,
    connect,
    display_name_filter,
    quiet_stdout,
    with_retries,
)

MONITORING_PACKAGE = compiled_pipeline("monitoring")
DEFAULT_SCHEDULE_EXPERIMENT = "tns-monitoring"
DEFAULT_JOB_NAME = "tns-drift-monitoring"
MAX_CONCURRENCY = 1
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-LW#]+$")


@dataclass
class ScheduledRun:
    """A recurring run on the host: created now, or found already there under the same name."""

    recurring_run_id: str
    name: str
    cron: str
    experiment_id: str
    url: str
    created: bool


def kfp_cron(expression: str) -> str:
    """The cron expression in the 6-field form KFP's scheduler reads (seconds first).

    KFP parses cron with robfig/cron v1, whose first field is seconds: the standard 5-field `0 * * * *`
    would run every minute there. A 5-field expression gets `0` seconds prepended; 6 fields pass unchanged.

    Raises:
        ValueError: Not 5 or 6 fields, or a field with characters cron does not use.
    """
    fields = expression.split()
    if len(fields) not in (5, 6) or not all(_CRON_FIELD.match(f) for f in fields):
        raise ValueError(
            f"--cron must be a 5-field cron expression (minute hour day month weekday, e.g. '0 * * * *') or "
            f"KFP's 6-field form with seconds first, got {expression!r}"
        )
    return " ".join(["0", *fields] if len(fields) == 5 else fields)


def pipeline_parameters(package: Path) -> dict[str, dict[str, Any]]:
    """The compiled pipeline's input parameters (`root.inputDefinitions.parameters`) by name."""
    with package.open(encoding="utf-8") as handle:
        spec = next(yaml.safe_load_all(handle), None) or {}
    return dict(spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {}) or {})


def resolve_parameter(known: dict[str, Any], role: str) -> str:
    """The package's parameter for a role like `reference`: named `reference` or `reference_<something>`.

    Raises:
        ValueError: None or several parameters fit.
    """
    fits = sorted(name for name in known if name == role or name.startswith(f"{role}_"))
    if len(fits) != 1:
        raise ValueError(
            f"--{role}: the monitoring pipeline has {'no' if not fits else 'several'} '{role}*' parameter "
            f"({fits or sorted(known)}); use --param NAME=VALUE"
        )
    return fits[0]


def typed_argument(known: dict[str, dict[str, Any]], name: str, text: str) -> Any:
    """A command-line value as the type the pipeline parameter declares (YAML syntax for non-strings).

    Raises:
        ValueError: The value does not parse as that type.
    """
    kind = (known.get(name) or {}).get("parameterType", "STRING")
    if kind == "STRING":
        return text
    value = yaml.safe_load(text)
    expected = {
        "NUMBER_INTEGER": int,
        "NUMBER_DOUBLE": (int, float),
        "BOOLEAN": bool,
        "LIST": list,
        "STRUCT": dict,
    }.get(kind, object)
    if not isinstance(value, expected) or (kind != "BOOLEAN" and isinstance(value, bool)):
        raise ValueError(f"parameter {name} is {kind}, got {text!r}")
    return value


def create_schedule(
    host: str,
    cron: str,
    pipeline_package: str | Path = MONITORING_PACKAGE,
    params: dict[str, Any] | None = None,
    experiment: str = DEFAULT_SCHEDULE_EXPERIMENT,
    job_name: str = DEFAULT_JOB_NAME,
    description: str = "Drift check of the served content-safety model; may trigger retraining.",
    token: str | None = None,
    namespace: str = "",
    retries: int = 3,
    backoff_s: float = 1.0,
    timeout_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> ScheduledRun:
    """Creates (or finds) the recurring run of the monitoring pipeline via `kfp.Client.create_recurring_run`.

    Args:
        host: Kubeflow Pipelines API endpoint (http:// or https://).
        cron: Cron expression, 5 fields (standard) or 6 (KFP, seconds first).
        pipeline_package: Compiled pipeline YAML (default `pipelines/compiled/monitoring.yaml`).
        params: Pipeline arguments; every name must be a parameter of the package.
        experiment: Experiment of the recurring run (created when missing).
        job_name: Display name of the recurring run; one per experiment.
        description: Description shown in the KFP UI.
        token: Bearer token for an authenticated host (header only).
        namespace: Namespace of a multi-user deployment ('' for single-user).
        retries: Retries after the first attempt when the host does not answer.
        backoff_s: Wait before the first retry, doubled before each further one.
        timeout_s: Limit of each HTTP request.
        sleep: Waits between attempts; tests pass a recorder.

    Raises:
        ValueError: Bad host, cron expression, package or parameter names.
        SubmissionError: The host refused, or did not answer after the last retry.
    """
    host = check_host(host)
    cron6 = kfp_cron(cron)
    package = Path(pipeline_package)
    if not package.is_file():
        raise ValueError(f"compiled pipeline {package} is missing: run `tns compile`")
    params = dict(params or {})
    known = pipeline_parameters(package)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"{package.name} has no parameter(s) {unknown}; its parameters: {sorted(known)}")

    def attempt(number: int) -> ScheduledRun:
        client = connect(host, token, namespace, timeout_s)
        with quiet_stdout():
            found_experiment = client.create_experiment(name=experiment, namespace=namespace or None)
            experiment_id = found_experiment.experiment_id
            existing = client.list_recurring_runs(
                experiment_id=experiment_id, filter=display_name_filter(job_name)
            )
            if existing.recurring_runs:
                run = existing.recurring_runs[0]
                url = f"{host}/#/recurringrun/details/{run.recurring_run_id}"
                existing_cron = (
                    run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else ""
                )
                return ScheduledRun(run.recurring_run_id, job_name, existing_cron, experiment_id, url, False)
            run = client.create_recurring_run(
                experiment_id=experiment_id,
                job_name=job_name,
                description=description,
                cron_expression=cron6,
                max_concurrency=MAX_CONCURRENCY,
                no_catchup=True,
                params=params,
                pipeline_package_path=str(package),
                enabled=True,
            )
        url = f"{host}/#/recurringrun/details/{run.recurring_run_id}"
        return ScheduledRun(run.recurring_run_id, job_name, cron6, experiment_id, url, True)

    scheduled, _ = with_retries(attempt, f"scheduling {job_name} on {host}", retries, backoff_s, sleep)
    return scheduled
