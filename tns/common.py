"""What every `tns` command shares: the usage error, argument types and the option groups used by
several commands."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from core.common.constants import EXIT_FAILED
from monitoring.submitters import DEFAULT_BACKOFF_S, DEFAULT_RETRIES


class UsageError(Exception):
    """A command-line mistake: printed and answered with exit code 2."""


def fail(message: object, exit_code: int = EXIT_FAILED) -> int:
    """Prints `tns: error: <message>` to stderr and returns `exit_code`, for `return fail(...)`."""
    print(f"tns: error: {message}", file=sys.stderr)
    return exit_code


def command_group(commands: argparse._SubParsersAction, name: str, help: str) -> argparse._SubParsersAction:
    """A command with subcommands (`tns <name> <subcommand>`), one of which is required."""
    return commands.add_parser(name, help=help).add_subparsers(dest=f"{name}_command", required=True)


def timestamp(value: str) -> datetime:
    """An ISO 8601 time (UTC when it names no zone), for argparse."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def port(value: str) -> int:
    """A TCP port number (0: any free port), for argparse."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in [0, 65535], got {number}")
    return number


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config`, `--policies` and `--set`: the run configuration, the same for `tns run training` and
    `tns data check` (read with `pipelines.local.load_config`)."""
    parser.add_argument("--config", type=Path, default=None, help="Run configuration YAML.")
    parser.add_argument(
        "--policies", default="", help="Comma-separated policy columns (overrides the config)."
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override one configuration value, e.g. --set train.epochs=5 or --set split.deduplicate=false "
        "(YAML value syntax).",
    )


def add_retry_arguments(parser: argparse.ArgumentParser, defaults: str = "") -> None:
    """`--retries` and `--backoff`: how hard to try a host that does not answer (None when not given, so that a
    retrain rules' `submit_retries` / `submit_backoff_s` apply; `defaults` says so in the help)."""
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        help=f"Retries when the host does not answer (default {defaults or DEFAULT_RETRIES}).",
    )
    parser.add_argument(
        "--backoff",
        type=float,
        default=None,
        help=f"Seconds before the first retry, doubled each time (default {defaults or DEFAULT_BACKOFF_S}).",
    )


def add_retrain_rules_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """`--retrain-rules FILE`, and `--policy FILE`, its old spelling ("policy" now means a content policy only),
    accepted with a deprecation message by `retrain_rules_file`."""
    parser.add_argument("--retrain-rules", type=Path, default=None, metavar="FILE", help=help)
    parser.add_argument(
        "--policy",
        dest="deprecated_policy",
        type=Path,
        default=None,
        metavar="FILE",
        help="Deprecated spelling of --retrain-rules.",
    )


def retrain_rules_file(args: argparse.Namespace) -> Path | None:
    """The retrain rules file given with `--retrain-rules` (or the deprecated `--policy`, with a message).

    Raises:
        UsageError: Both spellings given.
    """
    if args.deprecated_policy is None:
        return args.retrain_rules
    if args.retrain_rules is not None:
        raise UsageError("give --retrain-rules FILE only (--policy is its deprecated spelling)")
    print(
        "tns: warning: --policy FILE is deprecated and will be removed: use --retrain-rules FILE "
        "(the retraining rules; 'policy' means a content policy such as hate or spam)",
        file=sys.stderr,
    )
    return args.deprecated_policy
