"""What `tns run training` shows while the KFP local runner works: a step table instead of the runner's dumps.

The local runner logs every task's inputs and outputs as JSON (about 1,500 lines a run). During a run,
`runner_output` puts a `StepTable` in place of `sys.stdout` and `sys.stderr`: every byte still goes to the full log
file, and the table follows the runner's "Executing task" / "finished with status" lines and the trainer's
"epoch N: ..." lines. On a terminal the table is redrawn in place (the training step with an epoch bar and the
validation metric); in CI or into a file it prints plain lines, one per finished step.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TextIO

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STARTED = re.compile(r"Executing task '([^']+)'")
_FINISHED = re.compile(r"Task '([^']+)' finished with status (\w+)")
_EPOCH = re.compile(r"epoch (\d+): .*validation_macro_roc_auc=(\S+)")
TRAINING_TASK = "train-model"
BAR_WIDTH = 20


@dataclass
class Step:
    """One task of the run as the table shows it."""

    name: str
    started: float
    finished: float | None = None
    status: str = "running"
    runs: int = 1
    epoch: int = 0
    metric: float | None = None

    def elapsed(self, now: float) -> float:
        return (self.finished or now) - self.started


def is_interactive(stream: TextIO) -> bool:
    """A terminal that is not CI: the table may be redrawn in place."""
    return stream.isatty() and not os.environ.get("CI") and os.environ.get("TERM") != "dumb"


class StepTable(io.TextIOBase):
    """A text stream that copies everything to `log` and shows the run's steps on `screen`.

    Args:
        log: The full runner log.
        screen: Where the table goes (the terminal, or a plain stream).
        epochs: Most training epochs (the bar's length).
        interactive: Redraw in place (else one plain line per finished step).
        clock: Seconds, monotonic.
    """

    def __init__(
        self,
        log: TextIO,
        screen: TextIO,
        epochs: int,
        interactive: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.log, self.screen, self.epochs, self.interactive, self.clock = (
            log,
            screen,
            epochs,
            interactive,
            clock,
        )
        self.steps: dict[str, Step] = {}
        self._printed: set[str] = set()  # plain output: steps whose line is out
        self._pending = ""
        self._drawn = 0
        self._lock = threading.RLock()

    # Stream --------------------------------------------------------------------------------------------
    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self.log.write(text)
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            changed = False
            for line in lines:
                changed |= self.feed(line)
            if changed and self.interactive:
                self.draw()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self.log.flush()

    def close_line(self) -> None:
        """Ends a last line written without a newline, flushes the log and prints the steps left."""
        if self._pending:
            self.write("\n")
        self.flush()
        self.print_finished()

    # Parsing -------------------------------------------------------------------------------------------
    def feed(self, line: str) -> bool:
        """Updates the steps from one line of runner output; returns whether the table changed."""
        line = _ANSI.sub("", line)
        now = self.clock()
        if match := _FINISHED.search(line):
            step = self.steps.get(match[1]) or self.steps.setdefault(match[1], Step(match[1], now))
            step.finished, step.status = now, match[2].lower()
            return True
        if match := _STARTED.search(line):
            step = self.steps.get(match[1])
            if step is None:
                self.print_finished()  # a step of a loop may run again until another step starts
                self.steps[match[1]] = Step(match[1], now)
            else:  # a task of a loop (one per policy) runs again under the same name
                step.runs += 1
                step.finished, step.status = None, "running"
            return True
        if (match := _EPOCH.search(line)) and TRAINING_TASK in self.steps:
            step = self.steps[TRAINING_TASK]
            step.epoch = int(match[1])
            try:
                step.metric = float(match[2])
            except ValueError:
                step.metric = None
            return True
        return False

    # Rendering -----------------------------------------------------------------------------------------
    def header(self) -> str:
        return f"  {'step':<24} {'status':<9} {'elapsed':>8}"

    def row(self, step: Step, now: float) -> str:
        name = step.name + (f" x{step.runs}" if step.runs > 1 else "")
        text = f"  {name:<24} {step.status:<9} {step.elapsed(now):>6.1f} s"
        if step.epoch:
            parts = []
            if step.status == "running":
                done = min(BAR_WIDTH, round(BAR_WIDTH * step.epoch / max(self.epochs, 1)))
                parts.append(f"[{'#' * done}{'-' * (BAR_WIDTH - done)}]")
            metric = "n/a" if step.metric is None or step.metric != step.metric else f"{step.metric:.3f}"
            parts.append(f"epoch {step.epoch}/{self.epochs}, validation macro ROC-AUC {metric}")
            text += "  " + " ".join(parts)
        return text

    def draw(self) -> None:
        """Redraws the whole table in place (terminal only)."""
        with self._lock:
            now = self.clock()
            lines = [self.header(), *(self.row(step, now) for step in self.steps.values())]
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.screen.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self.screen.flush()
            self._drawn = len(lines)

    def print_finished(self) -> None:
        """Plain output: one line for every finished step not printed yet."""
        if self.interactive:
            return
        now = self.clock()
        for step in self.steps.values():
            if step.finished is not None and step.name not in self._printed:
                self.screen.write(self.row(step, now) + "\n")
                self._printed.add(step.name)
        self.screen.flush()

    def start(self) -> None:
        """Prints the header (plain output) or the empty table (terminal)."""
        if self.interactive:
            self.draw()
        else:
            self.screen.write(self.header() + "\n")
            self.screen.flush()


@contextlib.contextmanager
def runner_output(log: TextIO, epochs: int, screen: TextIO | None = None) -> Iterator[StepTable]:
    """Sends `sys.stdout` and `sys.stderr` to a `StepTable` for the duration of the block.

    On a terminal a ticker thread redraws the table every second, so elapsed times move between log lines.
    """
    screen = screen or sys.stdout
    table = StepTable(log, screen, epochs, is_interactive(screen))
    table.start()
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(1.0):
            table.draw()

    ticker = threading.Thread(target=tick, daemon=True) if table.interactive else None
    if ticker is not None:
        ticker.start()
    saved = sys.stdout, sys.stderr
    sys.stdout = sys.stderr = table
    try:
        yield table
    finally:
        sys.stdout, sys.stderr = saved
        stop.set()
        if ticker is not None:
            ticker.join()
            table.draw()
        table.close_line()
