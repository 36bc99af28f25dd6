"""The `tns` command line: generate data, run pipelines locally, compile pipelines.

Heavy libraries (torch, kfp's local runner, MLflow) are imported inside the commands that need them, so
`tns --help` and `tns compile` stay fast and never import torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components.common.constants import EXIT_FAILED, EXIT_OK, EXIT_USAGE


class UsageError(Exception):
    """A command-line mistake: printed and answered with exit code 2."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tns", description="Trust & Safety ML pipelines (tns-pipelines).")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="Dataset tools.").add_subparsers(
        dest="data_command", required=True
    )
    generate = data.add_parser("generate", help="Write the embedded synthetic multimodal dataset.")
    generate.add_argument(
        "--out", required=True, type=Path, help="Folder to write manifest.jsonl and images/ to."
    )
    generate.add_argument("--rows", type=int, default=None, help="Number of rows (default 4000).")
    generate.add_argument("--seed", type=int, default=None, help="Random seed (default 7).")

    run = commands.add_parser("run", help="Run a pipeline with the KFP local runner.")
    runs = run.add_subparsers(dest="pipeline", required=True)
    training = runs.add_parser("training", help="Ingest, validate, split, train, evaluate, gate, register.")
    training.add_argument(
        "--data", type=Path, default=None, help="Dataset folder or manifest (default: embedded)."
    )
    training.add_argument("--config", type=Path, default=None, help="Run configuration YAML.")
    training.add_argument(
        "--policies", default="", help="Comma-separated policy columns (overrides the config)."
    )
    training.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override one configuration value, e.g. --set train.epochs=5 (YAML value syntax).",
    )
    training.add_argument("--force-promote", action="store_true", help="Promote even when NOT_BLESSED.")
    training.add_argument("--reason", default="", help="Why --force-promote is used (required with it).")

    compile_ = commands.add_parser("compile", help="Compile every pipeline to pipelines/compiled/*.yaml.")
    compile_.add_argument("--check", action="store_true", help="Fail when a committed YAML is out of date.")
    compile_.add_argument(
        "--out", type=Path, default=None, help="Output folder (default pipelines/compiled)."
    )
    return parser


def _generate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from components.data.generate import GenerateSpec, generate_dataset

    changes = {name: value for name, value in (("rows", args.rows), ("seed", args.seed)) if value is not None}
    if changes.get("rows", 1) < 1:
        raise UsageError("--rows must be positive")
    spec = replace(GenerateSpec(), **changes)
    manifest = generate_dataset(args.out, spec)
    print(f"wrote {manifest} ({spec.rows} rows, seed {spec.seed})")
    return EXIT_OK


def _compile(args: argparse.Namespace) -> int:
    from pipelines.compile import COMPILED_DIR, check_all, compile_all

    out = args.out or COMPILED_DIR
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
    )
    return run_training(request)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tns` command; returns the process exit code."""
    from components.common.config import ConfigError
    from components.common.env import apply_offline_environment

    apply_offline_environment()
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits 0 for --help and 2 for bad usage
        return EXIT_OK if not exit_.code else EXIT_USAGE
    handlers = {"data": _generate, "compile": _compile, "run": _run_training}
    try:
        return handlers[args.command](args)
    except (UsageError, ConfigError) as error:
        print(f"tns: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
