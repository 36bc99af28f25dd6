"""Runs a real Triton Inference Server on this machine, CPU only, for tests, benchmarks and `tns serve`.

It holds the server process (`TritonServer`: starting it on free ports, waiting until it is ready, stopping it
and removing the shared memory it leaves behind) and the errors of a start that fails (`TritonStartError`).
Where the server comes from, and the backend directory and environment it gets, is in `serving.triton_install`.

Typical use::

    with TritonServer(repository) as server:
        client = tritonclient.http.InferenceServerClient(server.http_url)
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path

from core.common.constants import TRITON_CPU_CONFIG
from core.common.env import tns_home
from serving.triton_host import (
    LOCALHOST,
    SHM_DIR,
    _regions_in_use,
    _regions_of_tree,
    _shm_regions,
    free_port,
)
from serving.triton_install import TritonInstallation, prepare_backend_dir, server_environment

LOG_TAIL_LINES = 40
START_ATTEMPTS = 3  # a free port picked by us can be taken before the server binds it
STOP_GRACE_S = 30.0
# How long tritonserver drains after SIGINT; it also waits that long for idle keep-alive client connections.
SERVER_EXIT_TIMEOUT_S = 5
READY_POLL_S = 0.05
PORT_IN_USE = re.compile(r"'127\.0\.0\.1:(\d+)' already in use")  # as tritonserver reports it
ERROR_LINE = re.compile(r"^E\d{4} ")  # glog severity and date, e.g. `E1125 14:44:30.419315 ...`
CUDA_NOISE = ("CudaDriverHelper", "CUDA driver", "cuda driver", "CUDA runtime")


class TritonStartError(RuntimeError):
    """The server exited or did not become ready in time; the message holds the end of its log."""


def _log_tail(log_file: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _log_errors(log_file: Path, limit: int = 10, width: int = 600) -> str:
    """Returns the error lines of a tritonserver log (e.g. which model failed to load, and why), shortened.

    The CUDA complaints of a host without a GPU are left out: they are expected and not the reason.
    """
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [
        line.replace("\\n", " ")[:width]
        for line in lines
        if (ERROR_LINE.match(line) or line.startswith("error:")) and not any(n in line for n in CUDA_NOISE)
    ]
    return "\n".join(errors[-limit:])


def _start_failure(what: str, repository: Path, log_file: Path) -> str:
    """The message of a TritonStartError: what happened, the log's error lines, then the log's last lines."""
    errors = _log_errors(log_file)
    reasons = f"Errors in its log:\n{errors}\n" if errors else ""
    return (
        f"{what} (repository {repository}, log {log_file}).\n"
        f"{reasons}Last lines of its log:\n{_log_tail(log_file)}"
    )


def _terminate(process: subprocess.Popen, grace_s: float) -> int:
    """Stops a tritonserver process: SIGINT, then SIGKILL to its process group after `grace_s`."""
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def _stop_with_parent(parent_pid: int):
    """A `preexec_fn` that makes Linux send the server SIGINT when the process that started it dies.

    The server runs in its own session (so Ctrl-C in a terminal does not reach it directly), and a finalizer
    does not run when the parent is killed by a signal; without this a killed `tns serve` or test run would
    leave tritonserver and its stubs behind.
    """

    def stop_with_parent() -> None:
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
        except OSError:  # not Linux/glibc: the finalizer and stop() still apply
            return
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGINT)

    return stop_with_parent


class TritonServer:
    """A tritonserver process serving one model repository on 127.0.0.1, as a context manager.

    Ports 0 mean: pick free ports. Metrics are off. The server starts with `--disable-auto-complete-config`,
    so each model's config is used exactly as written, and, when `model_config_name` is given, with
    `--model-config-name` (`configs/<name>.pbtxt` in each model folder, the GPU `config.pbtxt` otherwise).

    Args:
        repository: the model repository folder.
        model_config_name: the alternative config to load; None for each model's `config.pbtxt`.
        http_port: HTTP port (0: a free one).
        grpc_port: gRPC port (0: a free one).
        metrics_port: Prometheus metrics port on 127.0.0.1 (0: a free one; None: no metrics endpoint). The
            server then exports its request, queue and compute durations (with summary quantiles) and the
            `postprocess` model's per-policy counters (`serving/models/postprocess.py`).
        log_file: where the server's output goes; default `<tns home>/triton/logs/tritonserver-<time>-<pid>.log`.
        extra_args: more tritonserver arguments, added last.

    Attributes:
        http_port: the HTTP port in use (set by start() when 0 was asked for).
        grpc_port: the gRPC port in use (likewise).
        metrics_port: the metrics port in use (likewise; None without metrics).
        log_file: the server log (set by start() when None was given).
        load_seconds: seconds from launch to ready, set by start().
    """

    def __init__(
        self,
        repository: Path,
        model_config_name: str | None = TRITON_CPU_CONFIG,
        http_port: int = 0,
        grpc_port: int = 0,
        log_file: Path | None = None,
        metrics_port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.repository = Path(repository).expanduser().resolve()
        self.model_config_name = model_config_name
        self.requested_http_port = http_port
        self.requested_grpc_port = grpc_port
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.requested_metrics_port = metrics_port
        self.metrics_port = metrics_port
        self.log_file = Path(log_file).expanduser().resolve() if log_file else None
        self.extra_args = tuple(extra_args)
        self.load_seconds: float | None = None
        self._process: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None
        self._started_at = 0.0
        self._regions_before: set[str] = set()
        self._own_regions: set[str] = set()

    @property
    def http_url(self) -> str:
        """`127.0.0.1:PORT`, the form `tritonclient.http.InferenceServerClient` takes."""
        return f"{LOCALHOST}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """`127.0.0.1:PORT`, the form `tritonclient.grpc.InferenceServerClient` takes."""
        return f"{LOCALHOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str | None:
        """`http://127.0.0.1:PORT/metrics` (Prometheus text format), or None without metrics."""
        return None if self.metrics_port is None else f"http://{LOCALHOST}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs, else None."""
        return self._process.pid if self.running else None

    @property
    def running(self) -> bool:
        """Tells whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def command(self, backend_dir: Path, installation: TritonInstallation) -> list[str]:
        """Returns the tritonserver command line for the current ports."""
        command = [
            str(installation.tritonserver),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_dir}",
            f"--http-address={LOCALHOST}",
            f"--http-port={self.http_port}",
            f"--grpc-address={LOCALHOST}",
            f"--grpc-port={self.grpc_port}",
            *self._metrics_arguments(),
            f"--exit-timeout-secs={SERVER_EXIT_TIMEOUT_S}",
            "--disable-auto-complete-config",
        ]
        if self.model_config_name:
            command.append(f"--model-config-name={self.model_config_name}")
        return command + list(self.extra_args)

    def _metrics_arguments(self) -> list[str]:
        if self.metrics_port is None:
            return ["--allow-metrics=false"]
        return [
            "--allow-metrics=true",
            f"--metrics-address={LOCALHOST}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=false",
            "--metrics-config=summary_latencies=true",  # p50/p90/p99 of request, queue and compute times
        ]

    def start(self, timeout_s: float = 120.0) -> TritonServer:
        """Starts the server and waits until `/v2/health/ready` answers 200 (every model loaded).

        Args:
            timeout_s: how long to wait for readiness.

        Returns:
            self.

        Raises:
            TritonNotAvailable: when there is no tritonserver to run.
            TritonStartError: when the server exits first or is not ready in time; the message names the exit
                code and holds the end of the server log (e.g. which model failed to load, and why).
        """
        if self.running:
            raise RuntimeError(f"tritonserver already running (pid {self.pid})")
        if not self.repository.is_dir():
            raise TritonStartError(f"Model repository {self.repository} is not a directory")
        installation = TritonInstallation.find()
        backend_dir = prepare_backend_dir(installation=installation)
        environment = server_environment(installation)
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._launch(installation, backend_dir, environment, timeout_s)
                return self
            except TritonStartError as error:
                # A port that we picked was taken before the server bound it: pick again.
                ports = (
                    (self.http_port, self.requested_http_port),
                    (self.grpc_port, self.requested_grpc_port),
                    (self.metrics_port, self.requested_metrics_port),
                )
                picked = {port for port, requested in ports if requested == 0}
                taken = {int(port) for port in PORT_IN_USE.findall(str(error))}
                if not (taken & picked and attempt < START_ATTEMPTS):
                    raise
        raise AssertionError("unreachable")

    def _launch(
        self,
        installation: TritonInstallation,
        backend_dir: Path,
        environment: dict[str, str],
        timeout_s: float,
    ) -> None:
        self.http_port = self.requested_http_port or free_port()
        self.grpc_port = self.requested_grpc_port or free_port()
        while self.grpc_port == self.http_port:
            self.grpc_port = free_port()
        if self.requested_metrics_port == 0:
            self.metrics_port = free_port()
            while self.metrics_port in (self.http_port, self.grpc_port):
                self.metrics_port = free_port()
        self.log_file = log_file = self.log_file or self._default_log_file()
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self._regions_before = set(_shm_regions())
        self._own_regions = set()
        self._started_at = time.time()
        started = time.monotonic()
        with log_file.open("wb") as log:
            self._process = subprocess.Popen(
                self.command(backend_dir, installation),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,  # Ctrl-C reaches us, not the server; stop() forwards it
                preexec_fn=_stop_with_parent(os.getpid()),
            )
        self._finalizer = weakref.finalize(self, _terminate, self._process, STOP_GRACE_S)
        try:
            self._wait_ready(log_file, started + timeout_s, timeout_s)
        except BaseException:
            self.stop()
            raise
        self.load_seconds = time.monotonic() - started
        self._own_regions = _regions_of_tree(self._process.pid)  # known now, in case the server crashes later

    def _wait_ready(self, log_file: Path, deadline: float, timeout_s: float) -> None:
        import urllib.error
        import urllib.request

        ready_url = f"http://{self.http_url}/v2/health/ready"
        no_proxy_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            exit_code = self._process.poll()
            if exit_code is not None:
                raise TritonStartError(
                    _start_failure(
                        f"tritonserver exited with code {exit_code} before it was ready",
                        self.repository,
                        log_file,
                    )
                )
            try:
                with no_proxy_opener.open(ready_url, timeout=1.0) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TritonStartError(
                    _start_failure(
                        f"tritonserver was not ready after {timeout_s:.0f} s and was stopped "
                        f"(exit code {self._process.returncode})",
                        self.repository,
                        log_file,
                    )
                )
            time.sleep(READY_POLL_S)

    def _default_log_file(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return tns_home() / "triton" / "logs" / f"tritonserver-{stamp}-{os.getpid()}-{id(self):x}.log"

    def stop(self, timeout_s: float = STOP_GRACE_S) -> int | None:
        """Stops the server (SIGINT, then SIGKILL after `timeout_s`) and removes its shared-memory files.

        Returns:
            The server's exit code, or None when it was never started.
        """
        if self._process is None:
            return None
        if self.running:
            self._own_regions |= _regions_of_tree(self._process.pid)
        exit_code = _terminate(self._process, timeout_s)
        self._cleanup_after_exit()
        return exit_code

    def _cleanup_after_exit(self) -> None:
        """Removes the python-backend shared-memory files this server left behind.

        Removed: regions that the server or its stubs mapped when it became ready or when stop() looked, and
        regions created since it started that no live process maps (only when that can be told). Others, maybe
        another server's, are left.
        """
        if self._finalizer is not None:
            self._finalizer.detach()
        leftovers = _shm_regions()
        stale = {name for name in self._own_regions if name in leftovers}
        created = {
            name
            for name, modified in leftovers.items()
            if name not in self._regions_before and modified >= self._started_at - 1.0
        }
        if created - stale:
            in_use = _regions_in_use()
            if in_use is not None:
                stale |= created - in_use
        for name in stale:
            (SHM_DIR / name).unlink(missing_ok=True)

    def wait(self) -> int:
        """Blocks until the server exits, or until Ctrl-C or SIGTERM, which stop it; returns its exit code.

        For foreground use (`tns serve`): start(), print the endpoints, then wait().
        """
        if self._process is None:
            raise RuntimeError("tritonserver was not started")

        def raise_interrupt(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        in_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, raise_interrupt) if in_main_thread else None
        try:
            self._process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if in_main_thread:
                signal.signal(signal.SIGTERM, previous)
        return self.stop() or 0

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
