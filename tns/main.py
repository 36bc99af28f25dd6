"""The `tns` command line: generate data, run pipelines locally, compile pipelines, serve and query models,
check drift and decide on retraining, and sample items for human review.

Heavy libraries (torch, kfp's local runner, MLflow, tritonclient) are imported inside the commands that need
them, so `tns --help` and `tns compile` stay fast and never import torch.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from core.common.constants import EXIT_OK, EXIT_USAGE
from tns import data, drift, monitor, review, run, schedule, serve, traffic, trigger
from tns.common import UsageError, fail

COMMAND_GROUPS = (data, run, serve, drift, traffic, trigger, schedule, monitor, review)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each parsed command names its `handler`."""
    parser = argparse.ArgumentParser(prog="tns", description="Trust & Safety ML pipelines (tns-pipelines).")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tns` command; returns the process exit code."""
    from core.common.env import apply_offline_environment
    from core.config.fields import ConfigError

    apply_offline_environment()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits 0 for --help and 2 for bad usage
        return EXIT_OK if not exit_.code else EXIT_USAGE
    args.command_line = shlex.join(["tns", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.handler(args)
    except (UsageError, ConfigError) as error:
        return fail(error, EXIT_USAGE)


if __name__ == "__main__":
    sys.exit(main())
