"""`tns data check PATH`: ingest and validation alone, in seconds, as a training run would do them.

What a user runs first on their own data: it prints every failed check with how to go on, the warnings, the
annotated rows and positives per policy and split, and the report path. Exit 0 when every critical check
passes, 1 otherwise (2 for usage and configuration errors, as every `tns` command).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from core.common.constants import EXIT_FAILED, EXIT_OK, SPLITS


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


def add_check_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `tns data check`."""
    parser.add_argument("path", type=Path, help="Dataset folder or manifest (jsonl, csv, parquet).")
    add_config_arguments(parser)
    parser.add_argument(
        "--out", type=Path, default=None, help="Report folder (default $TNS_HOME/checks/<dataset>-<time>)."
    )


def run_check(args: argparse.Namespace) -> int:
    """Runs the check and prints the findings; returns the exit code."""
    from components.validation.executor import check_data
    from core.common.env import tns_home
    from core.data.formats import DatasetFormatError
    from pipelines.local import TrainingRequest, load_config

    config = load_config(
        TrainingRequest(config_file=args.config, policies=args.policies, overrides=list(args.overrides))
    )
    source = args.path.expanduser().resolve()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = args.out or tns_home() / "checks" / f"{source.name}-{stamp}"
    started = time.perf_counter()
    try:
        result = check_data(str(source), config, out)
    except DatasetFormatError as error:
        print(f"tns data check: FAIL ({source})\n  cannot read the dataset: {error}", file=sys.stderr)
        return EXIT_FAILED
    outcome = result.outcome
    preparation = outcome.preparation or {}
    verdict = "PASS" if outcome.success else "FAIL"
    print(
        f"tns data check: {verdict} ({source}: {preparation.get('rows_read', outcome.rows)} rows read, "
        f"{outcome.rows} used; {len(config.policies)} policies; {time.perf_counter() - started:.1f} s)"
    )
    for label, checks in (("critical", outcome.failures()), ("warning", outcome.warnings())):
        for check in checks:
            print(f"  {label:<9} {check.message}")
            if check.remedy:
                print(f"  {'':<9}   how to go on: {check.remedy}")
    for name, severity in outcome.severity_overrides.items():
        print(f"  severity  {name} set to {severity} by the run configuration")
    if outcome.label_counts:
        heading = "positives/annotated"
        width = max(len(heading), *(len(p) for p in outcome.label_counts))
        print((f"  labels    {heading:<{width}}  " + "  ".join(f"{s:^13}" for s in SPLITS)).rstrip())
        for policy, counts in outcome.label_counts.items():
            cells = "  ".join(f"{counts[s]['positives']:>6}/{counts[s]['annotated']:<6}" for s in SPLITS)
            print(f"            {policy:<{width}}  {cells}".rstrip())
    print(f"  report    {result.report}")
    return EXIT_OK if outcome.success else EXIT_FAILED
