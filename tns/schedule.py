"""`tns schedule`: a recurring run of the monitoring pipeline on a Kubeflow Pipelines host."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from core.common.constants import EXIT_OK, EXIT_USAGE
from monitoring.kfp_submitter import ENV_KFP_HOST, ENV_KFP_TOKEN, kfp_token
from monitoring.schedule import (
    DEFAULT_JOB_NAME,
    DEFAULT_SCHEDULE_EXPERIMENT,
    MONITORING_PACKAGE,
    create_schedule,
    pipeline_parameters,
    resolve_parameter,
    typed_argument,
)
from monitoring.submitters import DEFAULT_BACKOFF_S, DEFAULT_RETRIES, SubmissionError
from tns.common import add_retry_arguments, fail


def register(commands: argparse._SubParsersAction) -> None:
    """Adds `tns schedule`."""
    schedule = commands.add_parser(
        "schedule", help="Create a recurring run of the monitoring pipeline on a Kubeflow Pipelines host."
    )
    add_schedule_arguments(schedule)
    schedule.set_defaults(handler=run_schedule)


def add_schedule_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the options of `tns schedule` to `parser`."""
    parser.add_argument(
        "--kfp-host",
        default=None,
        help=f"Kubeflow Pipelines API endpoint (default ${ENV_KFP_HOST}); bearer token from ${ENV_KFP_TOKEN}.",
    )
    parser.add_argument(
        "--cron",
        required=True,
        help="When to run, e.g. '0 * * * *' (hourly; 5 fields, or KFP's 6 fields with seconds first).",
    )
    parser.add_argument(
        "--reference", default=None, help="Reference window (the monitoring pipeline's reference*)."
    )
    parser.add_argument("--current", default=None, help="Current logs (the monitoring pipeline's current*).")
    parser.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="Another monitoring pipeline argument (repeatable).",
    )
    parser.add_argument(
        "--pipeline",
        type=Path,
        default=MONITORING_PACKAGE,
        help="Compiled pipeline YAML (default monitoring.yaml).",
    )
    parser.add_argument(
        "--experiment",
        default=DEFAULT_SCHEDULE_EXPERIMENT,
        help=f"KFP experiment (default {DEFAULT_SCHEDULE_EXPERIMENT}).",
    )
    add_retry_arguments(parser)
    parser.add_argument(
        "--name",
        default=DEFAULT_JOB_NAME,
        help=f"Recurring run name, one per experiment (default {DEFAULT_JOB_NAME}).",
    )
    return parser


def run_schedule(args: argparse.Namespace) -> int:
    """Runs `tns schedule`; prints the recurring run id.

    Returns:
        0 created (or already there), 1 the host did not answer or refused, 2 usage error.
    """
    host = args.kfp_host or os.environ.get(ENV_KFP_HOST)
    try:
        if not host:
            raise ValueError(f"give --kfp-host URL or set {ENV_KFP_HOST}")
        package = Path(args.pipeline)
        if not package.is_file():
            raise ValueError(f"compiled pipeline {package} is missing: run `tns compile`")
        params: dict[str, Any] = {}
        for item in args.params:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"--param expects NAME=VALUE, got {item!r}")
            params[name.strip()] = value
        known = pipeline_parameters(package)
        for role in ("reference", "current"):
            value = getattr(args, role)
            if value is not None:
                params[resolve_parameter(known, role)] = value
        params = {name: typed_argument(known, name, value) for name, value in params.items()}
        scheduled = create_schedule(
            host,
            args.cron,
            package,
            params,
            experiment=args.experiment,
            job_name=args.name,
            token=kfp_token(),
            retries=DEFAULT_RETRIES if args.retries is None else args.retries,
            backoff_s=DEFAULT_BACKOFF_S if args.backoff is None else args.backoff,
        )
    except ValueError as error:
        return fail(error, EXIT_USAGE)
    except SubmissionError as error:
        return fail(error)
    if scheduled.created:
        print(
            f"created recurring run {scheduled.recurring_run_id} '{scheduled.name}' (cron '{scheduled.cron}')"
        )
    else:
        print(
            f"recurring run '{scheduled.name}' already exists: {scheduled.recurring_run_id} (cron "
            f"'{scheduled.cron}'); delete it in the KFP UI or use --name to create another"
        )
    print(f"  {scheduled.url}")
    return EXIT_OK
