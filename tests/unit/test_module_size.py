"""Modules a person can hold in their head: at most `MAX_LINES` lines outside benchmarks/ and tests/.

A module that must stay over it for a while is listed with the size it may not exceed and the split it waits
for (a ratchet): a split removes its entry. The list is empty: every module is within the limit.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "serving", "monitoring", "components", "pipelines", "tns")
MAX_LINES = 500
TO_SPLIT: dict[str, tuple[int, str]] = {}  # every module is within the limit; a new entry needs a reason


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_no_module_grows_past_the_limit():
    sizes = {
        path.relative_to(ROOT).as_posix(): _lines(path)
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "compiled" not in path.parts
    }
    too_long = {
        name: lines
        for name, lines in sizes.items()
        if lines > MAX_LINES and lines > TO_SPLIT.get(name, (MAX_LINES, ""))[0]
    }
    assert not too_long, f"modules over {MAX_LINES} lines (or over their listed size): {too_long}"
    settled = sorted(name for name in TO_SPLIT if sizes.get(name, 0) <= MAX_LINES)
    assert not settled, f"{settled} are at most {MAX_LINES} lines now: remove them from TO_SPLIT"
