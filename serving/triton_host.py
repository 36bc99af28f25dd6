"""What a Triton server uses of this machine: free ports on 127.0.0.1, and its processes and shared memory.

It holds the port probes (`free_port`, `port_is_free`) and the /proc and /dev/shm readings that tell which
python-backend shared-memory regions exist, which processes map them, and which belong to a server's process
tree, so that `TritonServer` can remove the regions it leaves behind.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

LOCALHOST = "127.0.0.1"
# Shared memory of python-based backends: triton_python_backend_shm_region_*, and for the onnxruntime stand-in
# (a python-based backend named onnxruntime) triton_onnxruntime_backend_shm_region_*.
SHM_REGION_PATTERN = re.compile(r"^triton_\w+_backend_shm_region_[\w-]+$")
SHM_DIR = Path("/dev/shm")
TRITON_PROCESS_NAMES = (b"tritonserver", b"_backend_stub")


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
