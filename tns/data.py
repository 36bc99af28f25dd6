"""`tns data`: write the embedded dataset (`generate`), check a dataset as a training run would (`check`) and
delete items from an ingested dataset artifact (`delete`)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from core.common.constants import EXIT_FAILED, EXIT_OK, SPLITS
from tns.common import UsageError, add_config_arguments, command_group


def register(commands: argparse._SubParsersAction) -> None:
    """Adds `tns data generate`, `tns data check` and `tns data delete`."""
    data = command_group(commands, "data", "Dataset tools.")
    generate = data.add_parser("generate", help="Write the embedded synthetic multimodal dataset.")
    generate.add_argument(
        "--out", required=True, type=Path, help="Folder to write manifest.jsonl and images/ to."
    )
    generate.add_argument("--rows", type=int, default=None, help="Number of rows (default 4000).")
    generate.add_argument("--seed", type=int, default=None, help="Random seed (default 7).")
    generate.set_defaults(handler=_generate)
    check = data.add_parser(
        "check",
        help="Ingest and validate a dataset as a training run would, without training (exit 0 pass, 1 fail).",
        description="Reads the dataset, collapses copies and resolves missing labels as configured, runs every "
        "validation check and prints the findings with how to go on, the annotated rows and positives per "
        "policy and split, and the report path.",
    )
    add_check_arguments(check)
    check.set_defaults(handler=run_check)
    delete = data.add_parser(
        "delete",
        help="Delete items (a takedown, a privacy request) from an ingested dataset artifact.",
        description="Removes the items from the shards that hold them (no other shard is rewritten), the table "
        "and the image files no other item uses, and records the new content fingerprint.",
    )
    delete.add_argument("dataset", type=Path, help="Ingested dataset artifact folder (holds shards/).")
    delete.add_argument(
        "--ids", required=True, type=Path, help="File with one item id per line (blank lines ignored)."
    )
    delete.set_defaults(handler=_delete)


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


def _generate(args: argparse.Namespace) -> int:
    from core.data.generate import GenerateSpec, generate_dataset

    changes = {name: value for name, value in (("rows", args.rows), ("seed", args.seed)) if value is not None}
    if changes.get("rows", 1) < 1:
        raise UsageError("--rows must be positive")
    spec = replace(GenerateSpec(), **changes)
    manifest = generate_dataset(args.out, spec)
    print(f"wrote {manifest} ({spec.rows} rows, seed {spec.seed})")
    return EXIT_OK


def _delete(args: argparse.Namespace) -> int:
    from core.data.deletion import delete_items
    from core.data.shards import ShardError

    try:
        ids = [line.strip() for line in args.ids.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read --ids {args.ids}: {error}") from None
    if not ids:
        raise UsageError(f"--ids {args.ids} names no item id")
    try:
        result = delete_items(args.dataset.expanduser(), ids)
    except (ShardError, FileNotFoundError) as error:
        print(f"tns data delete: FAIL ({args.dataset}): {error}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"deleted {result.rows_removed} of {result.requested} item(s) ({result.not_found} not in the dataset); "
        f"rewrote {len(result.shards_rewritten)} shard(s), left {result.shards_kept}; removed "
        f"{result.images_removed} image file(s); fingerprint {result.fingerprint_before[:12]} -> "
        f"{result.fingerprint_after[:12]}"
    )
    return EXIT_OK
