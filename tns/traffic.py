"""`tns traffic simulate`: production traffic with an injected drift, scored by the champion or a server."""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from core.common.constants import DEFAULT_MODEL_NAME, DEFAULT_POLICIES, EXIT_OK, EXIT_USAGE
from monitoring.traffic import existing_output, simulate_traffic
from monitoring.traffic_scenarios import (
    DEFAULT_DRIFT_START,
    DEFAULT_HOURS,
    DEFAULT_LABEL_RATE,
    DEFAULT_ROWS,
    DEFAULT_SEED,
    DEFAULT_START,
    DEFAULT_SURGE_POLICY,
    SCENARIOS,
    SimulationSpec,
)
from tns.common import command_group, fail, timestamp


def register(commands: argparse._SubParsersAction) -> None:
    """Adds `tns traffic simulate`."""
    traffic = command_group(commands, "traffic", "Production traffic tools.")
    simulate = traffic.add_parser(
        "simulate",
        help="Simulate production traffic (with an injected drift), scored by the champion or a server.",
        description="Generates traffic from the embedded data generator, scores it in process with the "
        "champion (or --repository) or through a running server (--url), and writes day-partitioned "
        "inference logs, delayed moderator labels and a labeled dataset of the window.",
    )
    add_simulate_arguments(simulate)
    simulate.set_defaults(handler=run_simulate)


def _drift_start(value: str) -> float | datetime:
    try:
        fraction = float(value)
    except ValueError:
        return timestamp(value)
    if not 0.0 <= fraction <= 1.0:
        raise argparse.ArgumentTypeError(f"a drift-start fraction must be in [0, 1], got {value}")
    return fraction


def _number(value: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not {'an integer' if kind is int else 'a number'}: {value!r}"
        ) from None


def _positive_int(value: str) -> int:
    number = _number(value, int)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be positive, got {number}")
    return number


def _rate(value: str) -> float:
    rate = _number(value, float)
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return rate


def _positive_float(value: str) -> float:
    number = _number(value, float)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return number


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of `tns traffic simulate` to a (sub)parser."""
    parser.add_argument(
        "--out",
        required=True,
        type=Path,
        help="Folder to write logs, labels, dataset and simulation.json to.",
    )
    parser.add_argument(
        "--rows", type=_positive_int, default=DEFAULT_ROWS, help=f"Items (default {DEFAULT_ROWS})."
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"Random seed (default {DEFAULT_SEED})."
    )
    parser.add_argument(
        "--scenario",
        choices=list(SCENARIOS),
        default="none",
        help="Drift from the drift start on: "
        + "; ".join(f"{name}: {scenario.description}" for name, scenario in SCENARIOS.items())
        + " (default none).",
    )
    parser.add_argument(
        "--drift-start",
        type=_drift_start,
        default=DEFAULT_DRIFT_START,
        metavar="FRACTION_OR_ISO",
        help=f"Where the scenario starts: a fraction of the range or an ISO time (default {DEFAULT_DRIFT_START}).",
    )
    parser.add_argument(
        "--start",
        type=timestamp,
        default=DEFAULT_START,
        metavar="ISO",
        help=f"Start of the simulated range (default {DEFAULT_START.isoformat()}; naive times are UTC).",
    )
    parser.add_argument(
        "--hours",
        type=_positive_float,
        default=DEFAULT_HOURS,
        help=f"Length of the range in hours (default {DEFAULT_HOURS:g}).",
    )
    parser.add_argument(
        "--label-rate",
        type=_rate,
        default=DEFAULT_LABEL_RATE,
        help=f"Share of items with a delayed moderator label (default {DEFAULT_LABEL_RATE}).",
    )
    parser.add_argument(
        "--surge-policy",
        choices=list(DEFAULT_POLICIES),
        default=DEFAULT_SURGE_POLICY,
        help=f"The policy that surges in policy_surge (default {DEFAULT_SURGE_POLICY}).",
    )
    parser.add_argument(
        "--url",
        default=None,
        metavar="HOST:PORT",
        help="Score through a running Triton server (`tns serve`).",
    )
    parser.add_argument(
        "--protocol", choices=("http", "grpc"), default="grpc", help="Protocol with --url (default grpc)."
    )
    parser.add_argument(
        "--repository", type=Path, default=None, help="Score in process with this exported Triton repository."
    )
    parser.add_argument(
        "--model-name",
        default=DEFAULT_MODEL_NAME,
        help=f"Registered model whose champion scores by default (default {DEFAULT_MODEL_NAME}).",
    )
    parser.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: the local store).")
    parser.add_argument("--keep-text", action="store_true", help="Log raw texts in the records too.")


def run_simulate(args: argparse.Namespace) -> int:
    """Runs `tns traffic simulate`: prints a summary and returns the exit code (0 ok, 1 failed, 2 usage)."""
    from serving.client import ContentSafetyError
    from serving.in_process import RepositoryScorer, RepositoryScoringError, champion_scorer
    from serving.store import ServingStoreError

    if args.url and args.repository is not None:
        return fail("give --url or --repository, not both", EXIT_USAGE)
    try:
        spec = SimulationSpec(
            rows=args.rows,
            seed=args.seed,
            start=args.start,
            hours=args.hours,
            scenario=args.scenario,
            drift_start=args.drift_start,
            label_rate=args.label_rate,
            surge_policy=args.surge_policy,
        )
    except ValueError as error:
        return fail(error, EXIT_USAGE)
    problem = existing_output(args.out)
    if problem:
        return fail(f"--out: {problem}")
    try:
        scorer = None
        if args.url:
            where = f"the Triton server at {args.url} ({args.protocol})"
        elif args.repository is not None:
            scorer = RepositoryScorer(args.repository)
            where = f"{args.repository} in process"
        else:
            print(f"fetching the champion of '{args.model_name}' from MLflow ...", flush=True)
            scorer = champion_scorer(args.model_name, args.tracking_uri)
            where = f"the champion of '{args.model_name}' in process"
        print(
            f"simulating {spec.rows} items ({spec.scenario}), scoring them with {where} ...",
            flush=True,
        )
        result = simulate_traffic(
            spec, args.out, scorer=scorer, url=args.url, protocol=args.protocol, keep_text=args.keep_text
        )
    except (ServingStoreError, RepositoryScoringError) as error:
        return fail(error)
    except ContentSafetyError as error:
        return fail(f"scoring through {args.url} ({args.protocol}) failed: {error}")
    except OSError as error:
        return fail(error)
    partitions = ", ".join(f"{name} ({count})" for name, count in result.partitions.items())
    print(
        f"simulated {result.rows} items from {spec.start.isoformat()} to {spec.end.isoformat()}, scenario "
        f"'{spec.scenario}' from {spec.drift_start_time.isoformat()} ({result.drifted} drifted)\n"
        f"scored by '{result.model_name}' version {result.model_version} ({result.mode}) in "
        f"{result.scoring_seconds:.1f} s ({result.items_per_second:.0f} items/s)\n"
        f"  logs     {result.log_root} : {partitions}\n"
        f"  labels   {result.labels_file} ({result.labeled} items)\n"
        f"  dataset  {result.dataset_manifest} ({result.labeled} rows)\n"
        f"  truth    {result.truth_file} (every item's true labels, for simulated moderators)\n"
        f"  summary  {result.summary_file}",
        flush=True,
    )
    return EXIT_OK
