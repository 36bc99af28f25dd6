"""`tns serve`, `tns predict` and `tns verify`: run the served model, query it, check an exported repository."""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import sys
import threading
from pathlib import Path

from core.common.constants import DEFAULT_MODEL_NAME, EXIT_FAILED, EXIT_OK, TRITON_CPU_CONFIG, TRITON_ENSEMBLE
from tns.common import UsageError, fail, port

DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002


def register(commands: argparse._SubParsersAction) -> None:
    """Adds `tns serve`, `tns verify` and `tns predict`."""
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
        "--http-port", type=port, default=DEFAULT_HTTP_PORT, help="HTTP port (default 8000; 0: any free)."
    )
    serve.add_argument(
        "--grpc-port", type=port, default=DEFAULT_GRPC_PORT, help="gRPC port (default 8001; 0: any free)."
    )
    serve.add_argument(
        "--metrics-port",
        type=port,
        default=DEFAULT_METRICS_PORT,
        help="Prometheus metrics port on 127.0.0.1 (default 8002; 0: any free).",
    )
    serve.add_argument(
        "--config",
        choices=("cpu", "gpu"),
        default="cpu",
        help="Model configs: cpu (configs/cpu.pbtxt, default) or gpu (the production config.pbtxt).",
    )
    serve.set_defaults(handler=_serve)
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
    verify.set_defaults(handler=_verify)
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
    predict.set_defaults(handler=_predict)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    from serving.store import ServingStoreError, champion_repository, repository_metadata
    from serving.triton_install import TritonNotAvailable
    from serving.triton_server import TritonServer, TritonStartError

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
        return fail(error)

    server = TritonServer(
        repository,
        model_config_name=TRITON_CPU_CONFIG if args.config == "cpu" else None,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
    )
    # SIGTERM while starting or serving stops the server like Ctrl-C (TritonServer.wait handles it afterwards).
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main_thread else None
    try:
        try:
            server.start()
        except (TritonNotAvailable, TritonStartError) as error:
            return fail(error)
        example = ["tns", "predict", "--url", server.http_url, "--text", "buy followers now"]
        print(
            f"serving '{metadata.get('model_name')}' version {metadata.get('model_version')} as Triton model "
            f"'{TRITON_ENSEMBLE}' from {repository} ({args.config} config, ready in {server.load_seconds:.1f} s)\n"
            f"  HTTP  http://{server.http_url}\n"
            f"  gRPC  {server.grpc_url}\n"
            f"  metrics  {server.metrics_url}\n"
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
        return fail(f"tritonserver exited with code {exit_code} (log {server.log_file})")
    print("tritonserver stopped", flush=True)
    return EXIT_OK


def _predict(args: argparse.Namespace) -> int:

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
        return fail(
            f"no answer from a Triton server at {url} ({args.protocol}): {error}\n"
            "Is `tns serve` running there?"
        )
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
        return fail(f"cannot read the export manifest {manifest_path}: {error.strerror or error}")
    expected = args.manifest_sha256
    if args.model_version is not None:
        from mlflow.exceptions import MlflowException

        from core.registry.mlflow_registry import configure, version_tags

        try:
            configure(args.tracking_uri)
            expected = version_tags(args.model_name, args.model_version).get(TAG_REPOSITORY_MANIFEST)
        except MlflowException as error:
            return fail(f"cannot read '{args.model_name}' version {args.model_version}: {error}")
        if not expected:
            return fail(
                f"'{args.model_name}' version {args.model_version} has no {TAG_REPOSITORY_MANIFEST} tag"
            )
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
