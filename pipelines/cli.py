"""The `tns` command line: generate data, run pipelines locally, compile pipelines, serve and query models.

Heavy libraries (torch, kfp's local runner, MLflow, tritonclient) are imported inside the commands that need
them, so `tns --help` and `tns compile` stay fast and never import torch.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import threading
from pathlib import Path

from core.common.constants import (
    DEFAULT_MODEL_NAME,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    TRITON_CPU_CONFIG,
    TRITON_ENSEMBLE,
)

DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001


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
    from pipelines.data_check import add_check_arguments, add_config_arguments

    add_check_arguments(
        data.add_parser(
            "check",
            help="Ingest and validate a dataset as a training run would, without training (exit 0 pass, 1 fail).",
            description="Reads the dataset, collapses copies and resolves missing labels as configured, runs every "
            "validation check and prints the findings with how to go on, the annotated rows and positives per "
            "policy and split, and the report path.",
        )
    )

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

    compile_ = commands.add_parser("compile", help="Compile every pipeline to pipelines/compiled/*.yaml.")
    compile_.add_argument("--check", action="store_true", help="Fail when a committed YAML is out of date.")
    compile_.add_argument(
        "--out", type=Path, default=None, help="Output folder (default pipelines/compiled)."
    )

    serve = commands.add_parser(
        "serve",
        help="Serve the champion model (or an exported repository) with Triton until Ctrl-C.",
        description="Starts tritonserver on 127.0.0.1 with the champion's exported repository from MLflow "
        "(downloaded once into $TNS_HOME/serving/) or the folder given with --repository.",
    )
    serve.add_argument(
        "--repository", type=Path, default=None, help="Exported Triton repository (default: the champion's)."
    )
    serve.add_argument(
        "--model-name", default=DEFAULT_MODEL_NAME, help=f"Registered model (default {DEFAULT_MODEL_NAME})."
    )
    serve.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: the local store).")
    serve.add_argument(
        "--http-port", type=_port, default=DEFAULT_HTTP_PORT, help="HTTP port (default 8000; 0: any free)."
    )
    serve.add_argument(
        "--grpc-port", type=_port, default=DEFAULT_GRPC_PORT, help="gRPC port (default 8001; 0: any free)."
    )
    serve.add_argument(
        "--config",
        choices=("cpu", "gpu"),
        default="cpu",
        help="Model configs: cpu (configs/cpu.pbtxt, default) or gpu (the production config.pbtxt).",
    )

    verify = commands.add_parser(
        "verify",
        help="Check an exported Triton repository against its export manifest (exit 0 intact, 1 not).",
        description="Checks every file of a model repository against the SHA-256 manifest written at export, and "
        "the manifest against the hash recorded in the registry (tag tns.export.repository_manifest_sha256), "
        "before a server runs any of its code. The production Triton image runs it before tritonserver starts.",
    )
    verify.add_argument("--repository", required=True, type=Path, help="The model repository folder.")
    verify.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="The export manifest (default: repository_manifest.json beside the repository folder).",
    )
    expected = verify.add_mutually_exclusive_group(required=True)
    expected.add_argument(
        "--manifest-sha256", default=None, help="The manifest's hash, from the version's registry tag."
    )
    expected.add_argument(
        "--model-version",
        default=None,
        help="Read the hash from this registered version's tag (with --model-name, MLflow credentials).",
    )
    verify.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help=f"Default {DEFAULT_MODEL_NAME}.")
    verify.add_argument(
        "--remove-bytecode",
        action="store_true",
        help="Delete Python bytecode (__pycache__, *.pyc) first, as left by a server that ran the repository "
        "before; without it, bytecode is an unexpected file (Python would run it instead of model.py).",
    )
    verify.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: the local store).")

    predict = commands.add_parser(
        "predict",
        help="Score one text and/or image with a running server (`tns serve`).",
        description="Prints per-policy scores, thresholds and flags, and the decision of the served model.",
    )
    predict.add_argument("--text", default=None, help="The text to score.")
    predict.add_argument("--image", type=Path, default=None, help="An image file (PNG, JPEG, ...) to score.")
    predict.add_argument(
        "--url", default=None, help="Server host:port (default 127.0.0.1:8000 for http, :8001 for grpc)."
    )
    predict.add_argument("--protocol", choices=("http", "grpc"), default="http", help="Default http.")
    predict.add_argument("--timeout", type=float, default=10.0, help="Seconds per attempt (default 10).")
    predict.add_argument("--json", action="store_true", help="Print the prediction as JSON.")

    drift = commands.add_parser(
        "drift",
        help="Check a window of inference logs for drift against a reference (exit 0 none, 10 drift, 1 error).",
        description="Compares the current window of inference logs with a reference (logs, or a labeled dataset "
        "such as the champion's training data, scored in process by the served model) and writes report.html, "
        "summary.json and an Evidently snapshot. With --policy it also decides on retraining.",
    )
    drift.add_argument("--reference", required=True, type=Path, help="Reference logs or labeled dataset.")
    drift.add_argument("--current", required=True, type=Path, help="Current logs (a file or a log folder).")
    drift.add_argument(
        "--out", type=Path, default=None, help="Output folder (default under $TNS_HOME/monitoring)."
    )
    drift.add_argument("--since", type=_timestamp, default=None, help="Current window start (ISO 8601, UTC).")
    drift.add_argument("--until", type=_timestamp, default=None, help="Current window end, exclusive.")
    drift.add_argument("--reference-since", type=_timestamp, default=None, help="Reference window start.")
    drift.add_argument("--reference-until", type=_timestamp, default=None, help="Reference window end.")
    drift.add_argument(
        "--set",
        dest="drift_overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Override a drift threshold, e.g. --set embedding_auc_threshold=0.6 (see monitoring/drift.py).",
    )
    drift.add_argument(
        "--max-malformed-share",
        type=float,
        default=0.05,
        help="Fail when more than this share of log lines is malformed (default 0.05).",
    )
    drift.add_argument("--workspace", type=Path, default=None, help="Evidently workspace folder.")
    drift.add_argument("--no-snapshot", action="store_true", help="Do not add a snapshot to the workspace.")
    drift.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="Registered model name.")
    drift.add_argument("--tracking-uri", default="", help="MLflow tracking URI (default: the local store).")
    drift.add_argument(
        "--repository", type=Path, default=None, help="Exported repository to score a dataset reference with."
    )
    drift.add_argument(
        "--reference-rows",
        type=int,
        default=2000,
        help="Dataset rows scored for the reference (default 2000).",
    )
    drift.add_argument("--policy", type=Path, default=None, help="Retrain policy YAML: decide on retraining.")
    drift.add_argument(
        "--kfp-host",
        default=None,
        help="Submit retraining to this Kubeflow host (or KFP_HOST); default local.",
    )
    drift.add_argument("--dry-run", action="store_true", help="Decide on retraining but submit nothing.")
    from monitoring.submitters import add_retry_arguments

    add_retry_arguments(drift, defaults="the policy's submit_retries / submit_backoff_s")
    drift.add_argument(
        "--ledger",
        type=Path,
        default=None,
        help="Decision ledger (default $TNS_LEDGER, else $TNS_HOME/monitoring/decisions.jsonl).",
    )

    traffic = commands.add_parser("traffic", help="Production traffic tools.").add_subparsers(
        dest="traffic_command", required=True
    )
    from monitoring.traffic import add_simulate_arguments

    add_simulate_arguments(
        traffic.add_parser(
            "simulate",
            help="Simulate production traffic (with an injected drift), scored by the champion or a server.",
            description="Generates traffic from the embedded data generator, scores it in process with the "
            "champion (or --repository) or through a running server (--url), and writes day-partitioned "
            "inference logs, delayed moderator labels and a labeled dataset of the window.",
        )
    )

    from monitoring.schedule import add_schedule_arguments
    from monitoring.trigger import add_trigger_arguments

    add_trigger_arguments(
        commands.add_parser(
            "trigger",
            help="Apply the retrain policy to a drift summary (and submit retraining when it fires).",
            description="Guardrails in order: insufficient data, no matching drift, same window already fired, a "
            "run in flight, cooldown, dry run; every decision is recorded in the decision ledger.",
        )
    )
    add_schedule_arguments(
        commands.add_parser(
            "schedule",
            help="Create a recurring run of the monitoring pipeline on a Kubeflow Pipelines host.",
        )
    )

    monitor = commands.add_parser("monitor", help="Monitoring tools.").add_subparsers(
        dest="monitor_command", required=True
    )
    ui = monitor.add_parser("ui", help="Serve the Evidently workspace UI on 127.0.0.1 until Ctrl-C.")
    ui.add_argument(
        "--workspace", type=Path, default=None, help="Workspace (default $TNS_HOME/monitoring/workspace)."
    )
    ui.add_argument("--port", type=_port, default=8085, help="Port (default 8085).")
    return parser


def _timestamp(value: str):
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in [0, 65535], got {port}")
    return port


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "check":
        from pipelines.data_check import run_check

        return run_check(args)
    return _generate(args)


def _generate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from core.data.generate import GenerateSpec, generate_dataset

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
        trigger_report=args.trigger_report,
        data_window=args.data_window,
        verbose=args.verbose,
    )
    return run_training(request)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    from serving.store import ServingStoreError, champion_repository, repository_metadata
    from serving.triton import TritonNotAvailable, TritonServer, TritonStartError

    if args.http_port and args.http_port == args.grpc_port:
        raise UsageError(f"--http-port and --grpc-port are both {args.http_port}")
    try:
        if args.repository is not None:
            repository = args.repository.expanduser().resolve()
            if not repository.is_dir():
                raise UsageError(f"--repository {args.repository}: no such folder")
        else:
            print(f"fetching the champion of '{args.model_name}' from MLflow ...", flush=True)
            repository = champion_repository(args.model_name, args.tracking_uri)
        metadata = repository_metadata(repository)
    except ServingStoreError as error:
        print(f"tns: error: {error}", file=sys.stderr)
        return EXIT_FAILED

    server = TritonServer(
        repository,
        model_config_name=TRITON_CPU_CONFIG if args.config == "cpu" else None,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
    )
    # SIGTERM while starting or serving stops the server like Ctrl-C (TritonServer.wait handles it afterwards).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main_thread else None
    try:
        try:
            server.start()
        except (TritonNotAvailable, TritonStartError) as error:
            print(f"tns: error: {error}", file=sys.stderr)
            return EXIT_FAILED
        example = ["tns", "predict", "--url", server.http_url, "--text", "buy followers now"]
        print(
            f"serving '{metadata.get('model_name')}' version {metadata.get('model_version')} as Triton model "
            f"'{TRITON_ENSEMBLE}' from {repository} ({args.config} config, ready in {server.load_seconds:.1f} s)\n"
            f"  HTTP  http://{server.http_url}\n"
            f"  gRPC  {server.grpc_url}\n"
            f"  log   {server.log_file}\n"
            f"try:  {shlex.join(example)}\n"
            "Ctrl-C stops the server.",
            flush=True,
        )
        exit_code = server.wait()
    except KeyboardInterrupt:
        exit_code = server.stop() or 0
    finally:
        server.stop()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    if exit_code:
        print(
            f"tns: error: tritonserver exited with code {exit_code} (log {server.log_file})", file=sys.stderr
        )
        return EXIT_FAILED
    print("tritonserver stopped", flush=True)
    return EXIT_OK


def _predict(args: argparse.Namespace) -> int:
    import json

    from serving.client import (
        DEFAULT_PORTS,
        BadRequestError,
        ContentSafetyClient,
        ContentSafetyError,
        prediction_dict,
    )

    if args.text is None and args.image is None:
        raise UsageError("give --text TEXT, --image PATH or both")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    image = None
    if args.image is not None:
        from core.common.images import ImageFileError, read_image_file

        try:
            image = read_image_file(None, args.image.expanduser())
        except ImageFileError as error:
            raise UsageError(f"--image {args.image}: {error}") from None
    url = args.url or f"127.0.0.1:{DEFAULT_PORTS[args.protocol]}"
    try:
        with ContentSafetyClient(
            url, protocol=args.protocol, timeout_s=args.timeout, retries=2, backoff_s=0.2
        ) as client:
            prediction = client.classify_one(args.text, image)
    except BadRequestError as error:
        print(f"tns: bad request: {error}", file=sys.stderr)
        return EXIT_FAILED
    except ContentSafetyError as error:
        print(
            f"tns: error: no answer from a Triton server at {url} ({args.protocol}): {error}\n"
            "Is `tns serve` running there?",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if args.json:
        print(json.dumps(prediction_dict(prediction), indent=2))
        return EXIT_OK
    flagged = ", ".join(prediction.flagged_policies)
    print(
        f"decision: {prediction.action.upper()}{f' ({flagged})' if flagged else ''} - "
        f"model '{prediction.model_name}' version {prediction.model_version}"
    )
    width = max(len("policy"), *(len(p) for p in prediction.scores))
    print(f"{'policy':<{width}}  {'score':>6}  {'threshold':>9}  flagged")
    for policy, score in prediction.scores.items():
        threshold = prediction.decision["policies"][policy]["threshold"]
        mark = "yes" if prediction.flags[policy] else "no"
        print(f"{policy:<{width}}  {score:6.4f}  {threshold:9.4f}  {mark}")
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from core.common.constants import REPOSITORY_MANIFEST_FILE, TAG_REPOSITORY_MANIFEST
    from core.common.integrity import IntegrityError, remove_bytecode, verify_repository

    repository = args.repository.expanduser().resolve()
    manifest_path = (args.manifest or repository.parent / REPOSITORY_MANIFEST_FILE).expanduser()
    if not repository.is_dir():
        raise UsageError(f"--repository {repository} is not a folder")
    try:
        manifest = manifest_path.read_bytes()
    except OSError as error:
        print(
            f"tns: error: cannot read the export manifest {manifest_path}: {error.strerror or error}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    expected = args.manifest_sha256
    if args.model_version is not None:
        from mlflow.exceptions import MlflowException

        from core.registry.mlflow_registry import configure, version_tags

        try:
            configure(args.tracking_uri)
            expected = version_tags(args.model_name, args.model_version).get(TAG_REPOSITORY_MANIFEST)
        except MlflowException as error:
            print(
                f"tns: error: cannot read '{args.model_name}' version {args.model_version}: {error}",
                file=sys.stderr,
            )
            return EXIT_FAILED
        if not expected:
            print(
                f"tns: error: '{args.model_name}' version {args.model_version} has no {TAG_REPOSITORY_MANIFEST} tag",
                file=sys.stderr,
            )
            return EXIT_FAILED
    if args.remove_bytecode:
        with contextlib.suppress(OSError):  # a read-only mount: bytecode that stays is refused just below
            remove_bytecode(repository)
    try:
        verify_repository(repository, manifest, expected)
    except IntegrityError as error:
        print(f"tns: refusing {repository}: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{repository}: every file matches the export manifest (sha256 {expected[:16]}…)")
    return EXIT_OK


def _drift(args: argparse.Namespace) -> int:
    import dataclasses

    from core.common.config import parse_value
    from monitoring.check import DriftCheckError, DriftRequest, print_outcome, run_drift_check
    from monitoring.drift import DriftConfig

    changes = {}
    for item in args.drift_overrides:
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in {f.name for f in dataclasses.fields(DriftConfig)}:
            raise UsageError(f"--set expects KEY=VALUE with a DriftConfig field as KEY, got {item!r}")
        changes[key.strip()] = parse_value(value)
    try:
        config = DriftConfig(**changes)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    if not 0 <= args.max_malformed_share <= 1:
        raise UsageError("--max-malformed-share must be in [0, 1]")
    request = DriftRequest(
        reference=args.reference.expanduser(),
        current=args.current.expanduser(),
        out_dir=args.out,
        since=args.since,
        until=args.until,
        reference_since=args.reference_since,
        reference_until=args.reference_until,
        config=config,
        max_malformed_share=args.max_malformed_share,
        workspace=args.workspace,
        save_snapshot=not args.no_snapshot,
        model_name=args.model_name,
        tracking_uri=args.tracking_uri,
        repository=args.repository,
        reference_rows=args.reference_rows,
        command=shlex.join(["tns", *sys.argv[1:]])
        if sys.argv and sys.argv[0].endswith("tns")
        else "tns drift",
    )
    decide = _retrain_decider(args) if args.policy else None
    try:
        outcome = run_drift_check(request, decide=decide)
    except DriftCheckError as error:
        print(f"tns: error: drift check failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    print_outcome(outcome)
    return outcome.exit_code


def _retrain_decider(args: argparse.Namespace):
    """The retrain trigger, called with the drift summary before the report is written (so the report names the
    run and the run's parameters name the report)."""
    from dataclasses import replace

    from monitoring.policy import RetrainPolicy
    from monitoring.submitters import make_submitter
    from monitoring.trigger import DecisionLedger, LedgerLocationError, evaluate_trigger

    try:
        ledger = DecisionLedger(args.ledger)  # before the check runs: a ledger that would be lost is refused
    except LedgerLocationError as error:
        raise UsageError(f"{error} (or give --ledger FILE)") from None
    policy = RetrainPolicy.from_yaml(args.policy)
    if args.dry_run:
        policy = replace(policy, dry_run=True)
    submitter = make_submitter(
        args.kfp_host,
        retries=policy.submit_retries if args.retries is None else args.retries,
        backoff_s=policy.submit_backoff_s if args.backoff is None else args.backoff,
    )

    def decide(summary: dict) -> dict:
        return evaluate_trigger(summary, policy, ledger, submitter).to_record()

    return decide


def _trigger(args: argparse.Namespace) -> int:
    from monitoring.trigger import run_trigger

    return run_trigger(args)


def _schedule(args: argparse.Namespace) -> int:
    from monitoring.schedule import run_schedule

    return run_schedule(args)


def _simulate(args: argparse.Namespace) -> int:
    from monitoring.traffic import run_simulate

    return run_simulate(args)


def _monitor_ui(args: argparse.Namespace) -> int:
    import os
    import subprocess

    from core.common.env import tns_home

    workspace = (args.workspace or tns_home() / "monitoring" / "workspace").expanduser().resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    executable = Path(sys.executable).with_name("evidently")
    command = [
        str(executable),
        "ui",
        "--workspace",
        str(workspace),
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
    ]
    print(f"Evidently UI for {workspace} on http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    try:
        return subprocess.run(command, env=os.environ.copy(), check=False).returncode
    except KeyboardInterrupt:
        return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tns` command; returns the process exit code."""
    from core.common.config import ConfigError
    from core.common.env import apply_offline_environment

    apply_offline_environment()
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits 0 for --help and 2 for bad usage
        return EXIT_OK if not exit_.code else EXIT_USAGE
    args.command_line = shlex.join(["tns", *(sys.argv[1:] if argv is None else argv)])
    handlers = {
        "data": _data,
        "compile": _compile,
        "run": _run_training,
        "serve": _serve,
        "predict": _predict,
        "verify": _verify,
        "drift": _drift,
        "traffic": _simulate,
        "trigger": _trigger,
        "schedule": _schedule,
        "monitor": _monitor_ui,
    }
    try:
        return handlers[args.command](args)
    except (UsageError, ConfigError) as error:
        print(f"tns: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
