"""Runs a real Triton Inference Server on this machine, CPU only, for tests, benchmarks and `tns serve`.

Where the server comes from:
- By default, the serving env (`make setup` builds it as `.venv-serving`; `$TNS_SERVING_ENV` names another).
  It holds the `nvidia-pytriton` wheel, whose package carries a real tritonserver 2.51 with its python backend
  and python backend stubs, and the Python packages that the python-backend models import (numpy<2: the 2.51
  stub corrupts tensors with numpy>=2).
- `$TNS_TRITONSERVER` names the `tritonserver` binary of a real Triton install instead (e.g.
  `/opt/tritonserver/bin/tritonserver` in a Triton image), with its own `backends` folder beside `bin`.

The backend directory given to the server is generated (`prepare_backend_dir`): the python backend wired to the
stub for this Python, and `onnxruntime/model.py`, a python-based stand-in for the C++ onnxruntime backend
(`serving/backends/onnxruntime_model.py`), used where that backend is not installed. A full install that has
the real onnxruntime backend is used with its own backends; `$TNS_TRITON_BACKENDS` names a ready backend
directory instead of either.

Typical use::

    with TritonServer(repository) as server:
        client = tritonclient.http.InferenceServerClient(server.http_url)
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.common.constants import (
    ENV_SERVING_ENV,
    ENV_TRITON_BACKENDS,
    ENV_TRITONSERVER,
    TRITON_CPU_CONFIG,
)
from core.common.env import tns_home

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SERVING_ENV = REPO_ROOT / ".venv-serving"
ONNXRUNTIME_STAND_IN = Path(__file__).resolve().parent / "backends" / "onnxruntime_model.py"

LOCALHOST = "127.0.0.1"
PYTHON_BACKEND = "python"
ONNXRUNTIME_BACKEND = "onnxruntime"
PYTHON_BACKEND_LIBRARY = "libtriton_python.so"
ONNXRUNTIME_LIBRARY = "libtriton_onnxruntime.so"
PYTHON_BACKEND_UTILS = "triton_python_backend_utils.py"
PYTHON_BACKEND_STUB = "triton_python_backend_stub"
PYTHON_BACKEND_MODEL = "model.py"
# Shared memory of python-based backends: triton_python_backend_shm_region_*, and for the onnxruntime stand-in
# (a python-based backend named onnxruntime) triton_onnxruntime_backend_shm_region_*.
SHM_REGION_PATTERN = re.compile(r"^triton_\w+_backend_shm_region_[\w-]+$")
SHM_DIR = Path("/dev/shm")
LOG_TAIL_LINES = 40
START_ATTEMPTS = 3  # a free port picked by us can be taken before the server binds it
STOP_GRACE_S = 30.0
# How long tritonserver drains after SIGINT; it also waits that long for idle keep-alive client connections.
SERVER_EXIT_TIMEOUT_S = 5
READY_POLL_S = 0.05
PORT_IN_USE = re.compile(r"'127\.0\.0\.1:(\d+)' already in use")  # as tritonserver reports it
ERROR_LINE = re.compile(r"^E\d{4} ")  # glog severity and date, e.g. `E1125 14:44:30.419315 ...`
TRITON_PROCESS_NAMES = (b"tritonserver", b"_backend_stub")
CUDA_NOISE = ("CudaDriverHelper", "CUDA driver", "cuda driver", "CUDA runtime")


class TritonNotAvailable(RuntimeError):
    """No tritonserver to run: the serving env is missing or incomplete, or `$TNS_TRITONSERVER` is wrong."""


class TritonStartError(RuntimeError):
    """The server exited or did not become ready in time; the message holds the end of its log."""


def serving_env() -> Path:
    """Returns the serving env: `$TNS_SERVING_ENV`, else `<repo>/.venv-serving` when it exists.

    Raises:
        TritonNotAvailable: when neither exists.
    """
    configured = os.environ.get(ENV_SERVING_ENV)
    candidate = Path(configured).expanduser().resolve() if configured else DEFAULT_SERVING_ENV
    if (candidate / "bin" / "python3").exists():
        return candidate
    origin = f"${ENV_SERVING_ENV}={configured}" if configured else f"the default {DEFAULT_SERVING_ENV}"
    raise TritonNotAvailable(
        f"No serving env at {candidate} ({origin}): run `make setup` to build it "
        f"(or point ${ENV_SERVING_ENV} at an env built from serving/requirements.txt)."
    )


def _venv_settings(env: Path) -> dict[str, str]:
    """Returns the key = value lines of the env's pyvenv.cfg (empty when there is none)."""
    config = env / "pyvenv.cfg"
    if not config.is_file():
        return {}
    settings = {}
    for line in config.read_text().splitlines():
        key, separator, value = line.partition("=")
        if separator:
            settings[key.strip()] = value.strip()
    return settings


def _python_version(env: Path) -> str:
    """Returns the env's Python version as `3.X` (pyvenv.cfg `version`; this Python's when it is not there)."""
    version = _venv_settings(env).get("version") or _venv_settings(env).get("version_info", "")
    major_minor = ".".join(version.split(".")[:2])
    return major_minor or f"{sys.version_info.major}.{sys.version_info.minor}"


def _base_python_lib(env: Path) -> Path | None:
    """Returns `<home>/../lib` of the Python the env was created from (its pyvenv.cfg `home`), if it exists.

    The python backend stub links libpython3.X.so; without this folder on LD_LIBRARY_PATH it would load the
    system libpython (Debian's), whose extension modules (e.g. `_ssl`) do not match the env's Python.
    """
    home = _venv_settings(env).get("home")
    if not home:
        return None
    lib = (Path(home).parent / "lib").resolve()
    return lib if lib.is_dir() else None


@dataclass(frozen=True)
class TritonInstallation:
    """Where the tritonserver binary and what it needs live.

    Attributes:
        tritonserver: the `tritonserver` executable.
        python_backend: the folder holding `libtriton_python.so` and `triton_python_backend_utils.py`.
        python_stub: the `triton_python_backend_stub` for the serving env's Python version.
        library_dirs: folders that must be on LD_LIBRARY_PATH for the server and the stub.
        backends: the install's own backend directory when it is a full Triton install (None for the wheel).
        env: the Python env that the python-backend models run in (None: whatever `python3` is on PATH).
    """

    tritonserver: Path
    python_backend: Path
    python_stub: Path
    library_dirs: tuple[Path, ...]
    backends: Path | None = None
    env: Path | None = None

    @classmethod
    def find(cls) -> TritonInstallation:
        """Returns the install named by `$TNS_TRITONSERVER`, else the one in the serving env.

        Raises:
            TritonNotAvailable: when the install is missing or incomplete.
        """
        configured = os.environ.get(ENV_TRITONSERVER)
        if configured:
            return cls.from_tritonserver(Path(configured))
        return cls.from_serving_env(serving_env())

    @classmethod
    def from_serving_env(cls, env: Path) -> TritonInstallation:
        """Returns the tritonserver that the `nvidia-pytriton` wheel installed into `env`.

        Raises:
            TritonNotAvailable: when the wheel or one of its parts is missing.
        """
        python_version = _python_version(env)
        site_packages = env / "lib" / f"python{python_version}" / "site-packages"
        root = site_packages / "pytriton" / "tritonserver"
        installation = cls(
            tritonserver=root / "bin" / "tritonserver",
            python_backend=root / "backends" / PYTHON_BACKEND,
            python_stub=root / "python_backend_stubs" / python_version / PYTHON_BACKEND_STUB,
            library_dirs=tuple(
                path for path in (site_packages / "nvidia_pytriton.libs", _base_python_lib(env)) if path
            ),
            env=env,
        )
        installation._check(f"the serving env {env} (run `make setup`)")
        return installation

    @classmethod
    def from_tritonserver(cls, tritonserver: Path) -> TritonInstallation:
        """Returns a full Triton install from its binary, e.g. `/opt/tritonserver/bin/tritonserver`.

        Its backends are expected in `<install>/backends` and its libraries in `<install>/lib`. The python
        models run in the serving env when there is one, else in the `python3` on PATH (a Triton image's).

        Raises:
            TritonNotAvailable: when the binary or its python backend is missing.
        """
        tritonserver = Path(os.path.abspath(tritonserver.expanduser()))  # as named: symlinks not followed
        install = tritonserver.parent.parent
        backends = install / "backends"
        try:
            env: Path | None = serving_env()
        except TritonNotAvailable:
            env = None
        library_dirs = [install / "lib"] if (install / "lib").is_dir() else []
        if env is not None and (base_lib := _base_python_lib(env)) is not None:
            library_dirs.append(base_lib)
        installation = cls(
            tritonserver=tritonserver,
            python_backend=backends / PYTHON_BACKEND,
            python_stub=backends / PYTHON_BACKEND / PYTHON_BACKEND_STUB,
            library_dirs=tuple(library_dirs),
            backends=backends,
            env=env,
        )
        installation._check(f"${ENV_TRITONSERVER}={tritonserver}")
        return installation

    @property
    def has_onnxruntime_backend(self) -> bool:
        """Tells whether this is a full install with the real C++ onnxruntime backend."""
        return (
            self.backends is not None
            and (self.backends / ONNXRUNTIME_BACKEND / ONNXRUNTIME_LIBRARY).is_file()
        )

    def _check(self, origin: str) -> None:
        required = (
            self.tritonserver,
            self.python_backend / PYTHON_BACKEND_LIBRARY,
            self.python_backend / PYTHON_BACKEND_UTILS,
            self.python_stub,
        )
        missing = [str(path) for path in required if not path.exists()]
        if missing:
            raise TritonNotAvailable(f"Incomplete Triton install in {origin}; missing: {', '.join(missing)}")


def _copy_if_changed(source: Path, target: Path) -> None:
    """Copies `source` to `target` (with its mode and mtime) unless both already have the same size and mtime.

    The copy goes through a temporary file and a rename, so a server that has the old file open keeps it.
    """
    source_stat = source.stat()
    if target.exists():
        target_stat = target.stat()
        if (target_stat.st_size, target_stat.st_mtime_ns) == (source_stat.st_size, source_stat.st_mtime_ns):
            return
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
    shutil.copy2(source, partial)
    os.replace(partial, target)


def prepare_backend_dir(dest: Path | None = None, installation: TritonInstallation | None = None) -> Path:
    """Builds (idempotently) the backend directory given to tritonserver, and returns it.

    It holds `python/` (copies of the python backend library and utils, and of the stub for this Python as
    `triton_python_backend_stub`) and `onnxruntime/model.py` (the stand-in for the C++ onnxruntime backend).
    Files are re-copied when their source changes. Copies, not links: Triton refuses a backend library whose
    real path lies outside the backend directory.

    A full Triton install that has the real onnxruntime backend (`backends/onnxruntime/libtriton_onnxruntime.so`)
    needs nothing built: its own `backends` folder is returned. One without it gets the generated directory,
    which then offers only the python backend and the stand-in.

    Args:
        dest: the folder to build; default `$TNS_TRITON_BACKENDS` as it is (nothing is built there), else the
            install's own backends (see above), else `<tns home>/triton/backends`.
        installation: the Triton install; default `TritonInstallation.find()`.

    Returns:
        The backend directory, absolute.

    Raises:
        TritonNotAvailable: when no Triton install is found or `$TNS_TRITON_BACKENDS` does not exist.
    """
    if dest is None and (configured := os.environ.get(ENV_TRITON_BACKENDS)):
        backends = Path(configured).expanduser().resolve()
        if not backends.is_dir():
            raise TritonNotAvailable(f"${ENV_TRITON_BACKENDS}={configured} is not a directory")
        return backends
    installation = installation or TritonInstallation.find()
    if dest is None and installation.has_onnxruntime_backend:
        return installation.backends
    dest = (dest or tns_home() / "triton" / "backends").expanduser().resolve()
    python_dir = dest / PYTHON_BACKEND
    python_dir.mkdir(parents=True, exist_ok=True)
    _copy_if_changed(
        installation.python_backend / PYTHON_BACKEND_LIBRARY, python_dir / PYTHON_BACKEND_LIBRARY
    )
    _copy_if_changed(installation.python_backend / PYTHON_BACKEND_UTILS, python_dir / PYTHON_BACKEND_UTILS)
    _copy_if_changed(installation.python_stub, python_dir / PYTHON_BACKEND_STUB)
    onnxruntime_dir = dest / ONNXRUNTIME_BACKEND
    onnxruntime_dir.mkdir(exist_ok=True)
    _copy_if_changed(ONNXRUNTIME_STAND_IN, onnxruntime_dir / PYTHON_BACKEND_MODEL)
    return dest


def _prepend_paths(paths: Sequence[Path], existing: str | None) -> str:
    entries = [str(path) for path in paths]
    entries += [entry for entry in (existing or "").split(os.pathsep) if entry and entry not in entries]
    return os.pathsep.join(entries)


def server_environment(installation: TritonInstallation | None = None) -> dict[str, str]:
    """Returns the process environment for tritonserver: this process's, with the serving env wired in.

    PATH starts with the serving env's `bin` (the python backend stub runs Python in isolated mode and finds
    its prefix from `python3` on PATH); LD_LIBRARY_PATH starts with the install's library folders and the lib
    folder of the Python the serving env was created from.

    Args:
        installation: the Triton install; default `TritonInstallation.find()`.
    """
    installation = installation or TritonInstallation.find()
    environment = dict(os.environ)
    for name in ("PYTHONHOME", "PYTHONPATH"):
        environment.pop(name, None)
    if installation.env is not None:
        environment["PATH"] = _prepend_paths([installation.env / "bin"], environment.get("PATH"))
        environment["VIRTUAL_ENV"] = str(installation.env)
    else:
        environment.pop("VIRTUAL_ENV", None)
    environment["LD_LIBRARY_PATH"] = _prepend_paths(
        installation.library_dirs, environment.get("LD_LIBRARY_PATH")
    )
    return environment


def free_port() -> int:
    """Returns a TCP port on 127.0.0.1 that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCALHOST, 0))
        return probe.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Tells whether a server could listen on 127.0.0.1:`port` now: nothing listens there.

    Connections in TIME_WAIT from a stopped server do not count (servers bind with SO_REUSEADDR, as here).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOCALHOST, port))
        except OSError:
            return False
        return True


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


def _process_tree(root_pid: int) -> set[int]:
    """Returns `root_pid` and its live descendants (from /proc; just the root where /proc cannot be read)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may hold spaces: state, ppid, ...
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, pending = set(), [root_pid]
    while pending:
        pid = pending.pop()
        if pid not in tree:
            tree.add(pid)
            pending.extend(children.get(pid, ()))
    return tree


def _mapped_shm_regions(pid: int) -> set[str] | None:
    """Returns the backend shared-memory region files that process `pid` maps (None if unreadable)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    regions = set()
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith(f"{SHM_DIR}/"):
            name = Path(fields[5].removesuffix(" (deleted)")).name
            if SHM_REGION_PATTERN.match(name):
                regions.add(name)
    return regions


def _shm_regions() -> dict[str, float]:
    """Returns the backend shared-memory region files now in /dev/shm, with their modification times."""
    regions = {}
    for path in SHM_DIR.glob("triton_*_backend_shm_region_*"):
        if not SHM_REGION_PATTERN.match(path.name):
            continue
        try:
            regions[path.name] = path.stat().st_mtime
        except OSError:
            continue
    return regions


def _may_map_regions(pid: int) -> bool:
    """Tells whether a process whose maps cannot be read may be a Triton process (its command line says so)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return Path(f"/proc/{pid}").exists()  # unreadable and alive: cannot tell
    return any(name in command for name in TRITON_PROCESS_NAMES)


def _regions_in_use() -> set[str] | None:
    """Returns every region mapped by a live process, or None when that cannot be told.

    A process whose maps cannot be read (another user's, or init in a sandbox) counts only when its command
    line is that of a tritonserver or a backend stub, or cannot be read either; then the answer is None.
    """
    in_use: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        mapped = _mapped_shm_regions(int(entry.name))
        if mapped is None:
            if _may_map_regions(int(entry.name)):
                return None
            continue
        in_use |= mapped
    return in_use


def _regions_of_tree(root_pid: int) -> set[str]:
    """Returns the regions mapped by a process and its descendants (the server and its backend stubs)."""
    regions: set[str] = set()
    for pid in _process_tree(root_pid):
        regions |= _mapped_shm_regions(pid) or set()
    return regions


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
        log_file: where the server's output goes; default `<tns home>/triton/logs/tritonserver-<time>-<pid>.log`.
        extra_args: more tritonserver arguments, added last.

    Attributes:
        http_port: the HTTP port in use (set by start() when 0 was asked for).
        grpc_port: the gRPC port in use (likewise).
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
        extra_args: Sequence[str] = (),
    ) -> None:
        self.repository = Path(repository).expanduser().resolve()
        self.model_config_name = model_config_name
        self.requested_http_port = http_port
        self.requested_grpc_port = grpc_port
        self.http_port = http_port
        self.grpc_port = grpc_port
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
            "--allow-metrics=false",
            f"--exit-timeout-secs={SERVER_EXIT_TIMEOUT_S}",
            "--disable-auto-complete-config",
        ]
        if self.model_config_name:
            command.append(f"--model-config-name={self.model_config_name}")
        return command + list(self.extra_args)

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
