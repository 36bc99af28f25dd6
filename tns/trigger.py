"""`tns trigger`: apply the retrain rules to a drift summary, and submit retraining when they fire."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from core.common.constants import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from core.config.fields import ConfigError
from core.config.retrain_rules import RetrainRules
from monitoring.decision_ledger import DecisionLedger, LedgerLocationError
from monitoring.kfp_submitter import ENV_KFP_HOST, ENV_KFP_TOKEN, kfp_host
from monitoring.submitters import DEFAULT_EXPERIMENT, Submitter, make_submitter
from monitoring.trigger import TriggerError, evaluate_trigger, retraining_failed
from tns.common import UsageError, add_retrain_rules_argument, add_retry_arguments, fail, retrain_rules_file


def register(commands: argparse._SubParsersAction) -> None:
    """Adds `tns trigger`."""
    trigger = commands.add_parser(
        "trigger",
        help="Apply the retrain rules to a drift summary (and submit retraining when they fire).",
        description="Guardrails in order: insufficient data, no matching drift, same window already fired, a "
        "run in flight, cooldown, dry run; every decision is recorded in the decision ledger.",
    )
    add_trigger_arguments(trigger)
    trigger.set_defaults(handler=run_trigger)


def add_trigger_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the options of `tns trigger` to `parser`."""
    parser.add_argument(
        "--summary", type=Path, required=True, help="summary.json written by the drift check."
    )
    add_retrain_rules_argument(parser, help="Retrain rules YAML (default: the built-in default rules).")
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--kfp-host",
        default=None,
        help=f"Kubeflow Pipelines API endpoint to submit to (default ${ENV_KFP_HOST}); bearer token from ${ENV_KFP_TOKEN}.",
    )
    target.add_argument(
        "--local", action="store_true", help="Run the training pipeline here with the KFP local runner."
    )
    parser.add_argument("--dry-run", action="store_true", help="Decide and record, submit nothing.")
    add_retry_arguments(parser, defaults="the retrain rules' submit_retries / submit_backoff_s")
    parser.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help=f"KFP experiment of the runs (default {DEFAULT_EXPERIMENT}).",
    )
    parser.add_argument(
        "--ledger",
        type=Path,
        default=None,
        help="Decision ledger (default $TNS_LEDGER, else $TNS_HOME/monitoring/decisions.jsonl).",
    )
    parser.add_argument("--json", action="store_true", help="Print the decision record as JSON.")
    return parser


def run_trigger(args: argparse.Namespace) -> int:
    """Runs `tns trigger`: evaluates the retrain rules on an existing summary and prints the decision.

    Returns:
        0 when a decision was recorded (whatever it was); 1 when the submission failed or the local run failed;
        2 for a usage error (bad rules, unreadable summary, no target).
    """
    try:
        rules_file = retrain_rules_file(args)
        rules = RetrainRules.from_yaml(rules_file) if rules_file else RetrainRules()
        if args.dry_run:
            rules = replace(rules, dry_run=True)
        submitter: Submitter | None = None
        if args.local or kfp_host(args.kfp_host):
            submitter = make_submitter(
                args.kfp_host,
                local=args.local,
                experiment=args.experiment,
                retries=rules.submit_retries if args.retries is None else args.retries,
                backoff_s=rules.submit_backoff_s if args.backoff is None else args.backoff,
            )
        elif not rules.dry_run:
            raise ConfigError(f"give --kfp-host URL (or set {ENV_KFP_HOST}), --local, or --dry-run")
        decision = evaluate_trigger(args.summary, rules, DecisionLedger(args.ledger), submitter)
    except (ConfigError, TriggerError, ValueError, LedgerLocationError, UsageError) as error:
        return fail(error, EXIT_USAGE)
    print(json.dumps(decision.to_record(), indent=2, sort_keys=True) if args.json else decision.describe())
    if retraining_failed(decision.to_record()):
        return EXIT_FAILED
    return EXIT_OK
