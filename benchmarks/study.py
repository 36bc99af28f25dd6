"""What the studies outside `make bench` share: stamping a result with its command and machine, and publishing it
(the JSON of every seed, the Markdown section replacing its namesake in a report)."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path


def stamp(result: dict, module: str, argv: list[str] | None) -> dict:
    """`result` with when it was measured, the command line (`python -m <module> ...`) and the machine."""
    from benchmarks.run import _machine

    command = shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])
    return result | {
        "measured_at": f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
        "command": command,
        "machine": _machine(),
    }


def publish(
    result: dict, section: Callable[[dict, str, str], str], json_path: Path | None, out: Path | None
) -> str:
    """Writes the result's JSON to `json_path` and its section into the Markdown report `out` (either optional);
    returns the section."""
    from benchmarks.drift import merge_report

    if json_path:
        json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    text = section(result, result["command"], result["machine"])
    if out:
        existing = out.read_text(encoding="utf-8") if out.is_file() else "# Benchmarks\n"
        out.write_text(merge_report(existing, "\n" + text), encoding="utf-8")  # sections follow a newline
    return text
