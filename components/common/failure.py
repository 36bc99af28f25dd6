"""Hands a step's failure message to whoever launched the run.

A pipeline step that fails raises, as usual; inside `reported(step)` it also writes the step name and message
to the JSON file named by `$TNS_FAILURE_FILE` (set by `tns run` for local runs), so the CLI can end with the
failing check and its counts rather than a stack trace. On a cluster the variable is unset and nothing is
written.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from core.common.constants import ENV_FAILURE_FILE


@contextlib.contextmanager
def reported(step: str) -> Iterator[None]:
    """Re-raises any exception after recording `{"step", "error", "type"}` to `$TNS_FAILURE_FILE`."""
    try:
        yield
    except Exception as error:
        target = os.environ.get(ENV_FAILURE_FILE)
        if target:
            record = {"step": step, "type": type(error).__name__, "error": str(error)}
            Path(target).write_text(json.dumps(record), encoding="utf-8")
        raise


def read_failure(path: str | Path) -> dict | None:
    """The failure recorded by `reported`, or None."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
