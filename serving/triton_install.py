"""Finds the Triton install that `TritonServer` runs, and prepares what the server needs from it.

It holds the install (`TritonInstallation`: the tritonserver binary, its python backend and stub, library
folders), the serving env the python-backend models run in (`serving_env`), the backend directory given to the
server (`prepare_backend_dir`) and the server's process environment (`server_environment`).

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
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.common.constants import ENV_SERVING_ENV, ENV_TRITON_BACKENDS, ENV_TRITONSERVER
from core.common.env import REPO_ROOT, tns_home

DEFAULT_SERVING_ENV = REPO_ROOT / ".venv-serving"
ONNXRUNTIME_STAND_IN = Path(__file__).resolve().parent / "backends" / "onnxruntime_model.py"

PYTHON_BACKEND = "python"
ONNXRUNTIME_BACKEND = "onnxruntime"
PYTHON_BACKEND_LIBRARY = "libtriton_python.so"
ONNXRUNTIME_LIBRARY = "libtriton_onnxruntime.so"
PYTHON_BACKEND_UTILS = "triton_python_backend_utils.py"
PYTHON_BACKEND_STUB = "triton_python_backend_stub"
PYTHON_BACKEND_MODEL = "model.py"


class TritonNotAvailable(RuntimeError):
    """No tritonserver to run: the serving env is missing or incomplete, or `$TNS_TRITONSERVER` is wrong."""


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
