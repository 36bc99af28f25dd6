"""`tns run training` (the KFP local runner) and `tns compile` (the pipelines' YAML)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.common.constants import EXIT_FAILED, EXIT_OK
from tns.common import UsageError, add_config_arguments


def register(commands: argparse._SubParsersAction) -> None:
    """Adds `tns run training` and `tns compile`."""
    run = commands.add_parser("run", help="Run a pipeline with the KFP local runner.")
    runs = run.add_subparsers(dest="pipeline", required=True)
    training = runs.add_parser("training", help="Ingest, validate, split, train, evaluate, gate, register.")
    training.add_argument(
        "--data", type=Path, default=None, help="Dataset folder or manifest (default: embedded)."
    )
    add_config_arguments(training)
    training.add_argument("--force-promote", action="store_true", help="Promote even when NOT_BLESSED.")
    training.add_argument("--reason", default="", help="Why --force-promote is used (required with it).")
    training.add_argument(
        "--trigger-report",
        default="",
        help="The drift report that started this run (set by the retrain trigger; tagged on the MLflow run).",
    )
    training.add_argument(
        "--data-window",
        default="",
        help="The data window (JSON) of a triggered run (set by the retrain trigger; tagged on the MLflow run).",
    )
    training.add_argument(
        "--verbose",
        action="store_true",
        help="Stream the KFP local runner's full output instead of the step table and its run.log file.",
    )
    training.set_defaults(handler=_run_training)
    compile_ = commands.add_parser("compile", help="Compile every pipeline to pipelines/compiled/*.yaml.")
    compile_.add_argument("--check", action="store_true", help="Fail when a committed YAML is out of date.")
    compile_.add_argument(
        "--out", type=Path, default=None, help="Output folder (default pipelines/compiled)."
    )
    compile_.set_defaults(handler=_compile)


def _run_training(args: argparse.Namespace) -> int:
    from pipelines.local import TrainingRequest, run_training

    if args.force_promote and not args.reason.strip():
        raise UsageError("--force-promote needs --reason TEXT (it is recorded in MLflow)")
    if args.reason and not args.force_promote:
        raise UsageError("--reason is only used with --force-promote")
    request = TrainingRequest(
        data=args.data,
        config_file=args.config,
        policies=args.policies,
        overrides=list(args.overrides),
        force_promote=args.force_promote,
        force_reason=args.reason,
        trigger_report=args.trigger_report,
        data_window=args.data_window,
        verbose=args.verbose,
    )
    return run_training(request)


def _compile(args: argparse.Namespace) -> int:
    from core.common.env import COMPILED_PIPELINES_DIR
    from pipelines.compile import check_all, compile_all

    out = args.out or COMPILED_PIPELINES_DIR
    if args.check:
        problems = check_all(out)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return EXIT_FAILED
        print(f"compiled pipelines in {out} are up to date")
        return EXIT_OK
    for path in compile_all(out):
        print(f"wrote {path}")
    return EXIT_OK
