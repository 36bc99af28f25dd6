"""What the studies outside `make bench` share: their output options, running one in a temporary folder or
re-rendering a saved run, stamping a result with its command and machine, and publishing it (the JSON of every
seed, the Markdown section replacing its namesake in a report)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path


def add_output_arguments(parser: argparse.ArgumentParser, saved: str) -> None:
    """--out (a Markdown report whose section is replaced), --json (`saved`, as JSON) and --from-json."""
    parser.add_argument("--out", type=Path, default=None, help="Replace this section of a Markdown report.")
    parser.add_argument("--json", type=Path, default=None, help=f"Write {saved} as JSON here.")
    parser.add_argument(
        "--from-json", type=Path, default=None, help="Render the section of an earlier run's --json file."
    )


def run_or_load(
    args: argparse.Namespace, module: str, argv: list[str] | None, run: Callable[[Path], dict]
) -> dict:
    """An earlier run's result (--from-json), or `run(work folder)` in a temporary folder, stamped."""
    if args.from_json:
        return json.loads(args.from_json.read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory(prefix=module.rsplit(".", 1)[-1] + "-") as work:
        return stamp(run(Path(work)), module, argv)


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
