"""`tns review`: the review queue: sample a window's items for human review as a Label Studio batch, import the
labeled export back as delayed labels, and purge the content store past its retention."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.common.constants import EXIT_OK
from tns.common import command_group, fail, timestamp


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def register(commands: argparse._SubParsersAction) -> None:
    """Adds `tns review sample`, `tns review import` and `tns review purge`."""
    review = command_group(commands, "review", "Review queue: items for moderators to label (Label Studio).")
    sample = review.add_parser(
        "sample",
        help="Pick a window's items for human review and write a Label Studio batch.",
        description="Picks --budget items of a window of inference logs (items near each policy's served "
        "threshold, items of the segments a drift summary named, a uniform random share with sampling weights, "
        "and gold items of known label) and writes tasks.json, labeling_config.xml and batch.json to --out.",
    )
    sample.add_argument("--logs", required=True, type=Path, help="The window: a log root or log file.")
    sample.add_argument(
        "--budget", required=True, type=_positive_int, help="Tasks in the batch (gold included)."
    )
    sample.add_argument("--out", required=True, type=Path, help="Output folder (must not hold a batch).")
    sample.add_argument(
        "--rules", type=Path, default=None, help="Review rules YAML (configs/review_rules.yaml)."
    )
    sample.add_argument(
        "--drift-summary", type=Path, default=None, help="summary.json of `tns drift` on the window."
    )
    sample.add_argument("--content", default=None, help="Content store: a folder or file:// URI.")
    sample.add_argument(
        "--gold", type=Path, default=None, help="Labeled dataset of gold items (manifest folder)."
    )
    sample.add_argument("--since", type=timestamp, default=None, help="Window start (ISO 8601, UTC).")
    sample.add_argument("--until", type=timestamp, default=None, help="Window end, exclusive.")
    sample.add_argument("--seed", type=int, default=0, help="Seed of every random choice (default 0).")
    sample.set_defaults(handler=_sample)

    imported = review.add_parser(
        "import",
        help="Import a Label Studio JSON export of a batch as delayed labels.",
        description="Reads a Label Studio JSON export of a batch made by `tns review sample`, writes its labels "
        "to <logs>/labels/review-<batch id>.jsonl and reports the gold items' disagreement rate. Any bad task "
        "refuses the whole export and writes nothing.",
    )
    imported.add_argument("export", type=Path, metavar="FILE", help="Label Studio JSON export.")
    imported.add_argument("--batch", required=True, type=Path, help="The batch folder (batch.json).")
    imported.add_argument("--logs", required=True, type=Path, help="The window's log root.")
    imported.add_argument(
        "--labeler-field",
        default="completed_by",
        help="Dotted field of an annotation naming the labeler (default completed_by: a user id, or a user "
        "object's email); e.g. completed_by.email.",
    )
    imported.set_defaults(handler=_import)

    purge = review.add_parser("purge", help="Delete content-store items older than the retention.")
    purge.add_argument("--content", required=True, help="Content store: a folder or file:// URI.")
    purge.add_argument("--retention-days", type=float, default=30.0, help="Retention in days (default 30).")
    purge.set_defaults(handler=_purge)


def _sample(args: argparse.Namespace) -> int:
    from core.config.review import ReviewRules
    from monitoring.review import ReviewError, ReviewRequest, sample_review, write_batch

    rules = ReviewRules.from_yaml(args.rules) if args.rules else ReviewRules()
    request = ReviewRequest(
        logs=args.logs.expanduser(),
        budget=args.budget,
        out_dir=args.out,
        rules=rules,
        drift_summary=args.drift_summary,
        content=args.content,
        gold=args.gold,
        since=args.since,
        until=args.until,
        seed=args.seed,
    )
    try:
        batch = sample_review(request)
        paths = write_batch(batch, args.out)
    except (ReviewError, ValueError) as error:
        return fail(f"review sample: {error}")
    manifest = batch.manifest
    strata = ", ".join(f"{name} {info['items']}" for name, info in manifest["strata"].items())
    print(f"review batch {batch.batch_id}: {len(batch.tasks)} tasks ({strata})")
    print(f"  window {manifest['window']['rows']} rows, {manifest['window']['candidates']} without a label")
    for segment in manifest["drift"]["segments"]:
        print(f"  drifted segment: {segment['description']} ({segment['rows']} rows)")
    if manifest["content"]["missing"]:
        print(f"  warning: {manifest['content']['missing']} items have no content in the store")
    for name, path in paths.items():
        print(f"  {name:16s} {path}")
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    from monitoring.review import ReviewError
    from monitoring.review_import import import_review

    try:
        result = import_review(args.export, args.batch, args.logs, args.labeler_field)
    except ReviewError as error:
        return fail(f"review import: {error}")
    summary = result.summary
    gold = summary["gold"]
    print(
        f"review import {summary['batch_id']}: {summary['labels_written']} labels written, "
        f"{summary['unlabeled_or_skipped']} tasks without a usable annotation"
    )
    if gold["tasks"]:
        rates = ", ".join(f"{p} {v['disagreement_rate']:.1%}" for p, v in gold["per_policy"].items())
        print(f"  gold: {gold['tasks']} tasks, disagreement {gold['disagreement_rate']:.1%} ({rates})")
    if not summary["same_window_as_batch"]:
        print("  warning: --logs is not the window the batch was sampled from")
    print(f"  labels  {result.labels_file}\n  summary {result.summary_file}")
    return EXIT_OK


def _purge(args: argparse.Namespace) -> int:
    from serving.content_store import LocalContentStore, open_content_store

    try:
        store = open_content_store(args.content, args.retention_days)
    except ValueError as error:
        return fail(f"review purge: {error}")
    if not isinstance(store, LocalContentStore):  # pragma: no cover (only local stores are built in)
        return fail("review purge: only local content stores can be purged here")
    deleted = store.purge()
    print(
        json.dumps({"content": str(store.root), "retention_days": store.retention_days, "deleted": deleted})
    )
    return EXIT_OK
