"""Hostile input at scale: text descriptors on adversarial text, `read_logs` in bounded memory at 200k and 2M
rows, and a drift window with a 30 MB line, every field wrong-typed once and markup in categorical fields.

Baselines, measured in the same run: the descriptors on ordinary text of the same length; `read_logs` with no
row budget (the exact pass, every row kept) on the same 2M rows, whose counts the budgeted read must equal.
Each `read_logs` case runs in a fresh process, so its peak RSS (`ru_maxrss`, the whole process with its
libraries) is its own.

    python -m benchmarks.run --only hostile --out docs/benchmarks.md
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SMALL_ROWS = 200_000
LARGE_ROWS = 2_000_000
HUGE_LINE_BYTES = 30_000_000
TEXT_CHARS = 100_000
TEXT_GOAL_S = 0.050
MEMORY_GOAL = 1.15
ADVERSARIAL = {"a-a-a-…": "a-", "a.a.a.…": "a.", "http://http://…": "http://", "-----…": "-", "😀😀😀…": "😀"}
ORDINARY = "the new neighbours moved in again today and brought a cake for everyone on the street "
MARKUP = "<img src=x onerror=alert(1)>"
GENERATOR_VERSION = 1


def _text_case(pattern: str, repeats: int = 5) -> float:
    from monitoring.schema import text_features

    text = (pattern * (TEXT_CHARS // len(pattern) + 1))[:TEXT_CHARS]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        text_features(text)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bench_text() -> dict[str, Any]:
    """Median seconds of `text_features` on 100,000 characters of each adversarial pattern and of prose."""
    return {
        "adversarial": {name: _text_case(pattern) for name, pattern in ADVERSARIAL.items()},
        "ordinary": _text_case(ORDINARY),
    }


def _write_part(root: str, rows: int, first: int, count: int, name: str) -> None:
    from benchmarks.drift import CURRENT_SPEC, CURRENT_START, log_lines

    seconds = 86400.0
    handles: dict[str, Any] = {}
    try:
        for start in range(first, first + count, 50_000):
            lines = log_lines(
                min(50_000, first + count - start), 13, CURRENT_START, seconds, CURRENT_SPEC, start, rows
            )
            for line in lines:
                day = line[line.index('"timestamp": "') + 14 :][:10]
                if day not in handles:
                    folder = Path(root) / f"date={day}"
                    folder.mkdir(parents=True, exist_ok=True)
                    handles[day] = (folder / f"{name}.jsonl").open("w", encoding="utf-8")
                handles[day].write(line)
    finally:
        for handle in handles.values():
            handle.close()


def cached_window(cache: Path, rows: int) -> tuple[Path, float, bool]:
    """A one-day current window of `rows` rows (the drift benchmark's generator), written once by two processes."""
    key = cache / f"rows{rows}-v{GENERATOR_VERSION}"
    done = key / "complete"
    if done.is_file():
        return key / "logs", float(json.loads(done.read_text())["seconds"]), True
    import shutil

    shutil.rmtree(key, ignore_errors=True)
    started = time.perf_counter()
    half = rows // 2
    with ProcessPoolExecutor(2) as pool:
        jobs = [
            pool.submit(_write_part, str(key / "logs"), rows, 0, half, "part-0"),
            pool.submit(_write_part, str(key / "logs"), rows, half, rows - half, "part-1"),
        ]
        for job in jobs:
            job.result()
    seconds = time.perf_counter() - started
    done.write_text(json.dumps({"rows": rows, "seconds": round(seconds, 1)}) + "\n")
    return key / "logs", seconds, False


def hostile_window(folder: Path) -> tuple[Path, int]:
    """A one-day window of 5,000 rows where every schema field is wrong-typed once, 40 rows carry markup in
    categorical fields and one line is a 30 MB text; returns the folder and the number of bad lines."""
    from benchmarks.drift import CURRENT_SPEC, CURRENT_START, log_lines
    from monitoring.log_records import FIELD_KINDS

    wrong = {"int": "7", "number": "fast", "bool": "yes", "str": 12, "version": [3], "timestamp": "noon"}
    rows = [json.loads(line) for line in log_lines(5000, 17, CURRENT_START, 86400.0, CURRENT_SPEC)]
    rows = [row for row in rows if not row["error"]]
    lines = [json.dumps(row) for row in rows]
    bad = 0
    for index, (name, kind) in enumerate(FIELD_KINDS.items()):
        lines[index] = json.dumps({**rows[index], name: wrong[kind.rstrip("?")]})
        bad += 1
    for index in range(100, 140):
        row = {
            **rows[index],
            "text_language": MARKUP,
            "image_format": f"{MARKUP}</td><script>alert(2)</script>",
        }
        lines[index] = json.dumps(row)
    lines[200] = json.dumps({**rows[200], "text": "a" * HUGE_LINE_BYTES})
    bad += 1
    partition = folder / f"date={CURRENT_START.date().isoformat()}"
    partition.mkdir(parents=True, exist_ok=True)
    (partition / "part.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder, bad


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_case(case: str, path: Path, work: Path) -> dict[str, Any]:
    """One case in this process (call in a fresh process: the RSS peak is lifelong)."""
    import monitoring.check  # noqa: F401 (imports before the clock and the memory baseline)
    from monitoring.log_reader import read_logs

    rss_after_import = peak_rss_bytes()
    started = time.perf_counter()
    if case in ("budget", "exact"):
        window = read_logs(path, row_budget=None if case == "exact" else 200_000)
        stats = window.stats.to_dict()
        result = {
            key: stats[key]
            for key in ("lines", "rows", "sampled_rows", "malformed_lines", "failed_requests", "labeled_rows")
        }
        result["flag_rates"] = stats["flag_rates"]
        result["frame_rows"] = len(window.frame)
    elif case == "hostile":
        from benchmarks.drift import REFERENCE_SPEC, REFERENCE_START, write_window
        from monitoring.check import DriftRequest, run_drift_check

        reference = write_window(work / "reference", 5000, 3, REFERENCE_START, 7, REFERENCE_SPEC)
        outcome = run_drift_check(
            DriftRequest(
                reference=reference,
                current=path,
                out_dir=work / "report",
                workspace=work / "workspace",
                save_snapshot=False,
                command="benchmarks.hostile",
            )
        )
        report = (outcome.out_dir / "report.html").read_text(encoding="utf-8")
        result = {
            "exit_code": outcome.exit_code,
            "status": outcome.summary["status"],
            "lines": outcome.summary["current"]["lines"],
            "malformed_lines": outcome.summary["current"]["malformed_lines"],
            "raw_markup": "<img src=x" in report or "<script>alert" in report,
            "escaped_markup": "&lt;img src=x onerror=alert(1)&gt;" in report,
        }
    else:
        raise ValueError(f"unknown case {case!r}")
    result.update(
        case=case,
        seconds=time.perf_counter() - started,
        peak_rss=peak_rss_bytes(),
        rss_after_import=rss_after_import,
    )
    return result


def measure(case: str, path: Path, work: Path) -> dict[str, Any]:
    """`run_case` in a fresh Python process."""
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TNS_HOME=str(work / "tns_home"))
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    command = [
        sys.executable,
        "-m",
        "benchmarks.hostile",
        "--case",
        case,
        "--path",
        str(path),
        "--work",
        str(work),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"hostile benchmark case {case} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass
class HostileBench:
    text: dict[str, Any]
    reads: dict[str, dict[str, Any]]  # "200k budget", "2M budget", "2M exact"
    hostile: dict[str, Any]
    generated_s: dict[str, float]
    file_bytes: dict[str, int]
    bad_lines: int
    seconds: float


def bench_hostile(folder: Path, cache: Path | None = None, log=None) -> HostileBench:
    from core.common.env import tns_home

    log = log or (lambda line: None)
    cache = cache or tns_home() / "bench" / "hostile"
    started = time.perf_counter()
    text = bench_text()
    log(f"hostile bench: text_features adversarial max {max(text['adversarial'].values()) * 1e3:.1f} ms")
    reads, generated, sizes = {}, {}, {}
    for rows, label in ((SMALL_ROWS, "200k"), (LARGE_ROWS, "2M")):
        path, seconds, reused = cached_window(cache, rows)
        generated[label] = -1.0 if reused else seconds
        sizes[label] = sum(p.stat().st_size for p in path.rglob("*.jsonl"))
        log(f"hostile bench: {label} rows {'cached' if reused else f'generated in {seconds:.0f} s'}")
        reads[f"{label} budget"] = measure("budget", path, folder / f"{label}-budget")
        log(f"hostile bench: {label} budget {reads[f'{label} budget']['peak_rss'] / 1e9:.2f} GB")
        if rows == LARGE_ROWS:
            reads[f"{label} exact"] = measure("exact", path, folder / f"{label}-exact")
    window, bad = hostile_window(folder / "hostile" / "logs")
    hostile = measure("hostile", window, folder / "hostile")
    return HostileBench(
        text=text,
        reads=reads,
        hostile=hostile,
        generated_s=generated,
        file_bytes=sizes,
        bad_lines=bad,
        seconds=time.perf_counter() - started,
    )


def hostile_section(bench: HostileBench) -> str:
    """The markdown section of this benchmark."""
    worst = max(bench.text["adversarial"].values())
    rows = "\n".join(
        f"| {name} | {seconds * 1e3:.1f} ms |" for name, seconds in bench.text["adversarial"].items()
    )
    small, large, exact = bench.reads["200k budget"], bench.reads["2M budget"], bench.reads["2M exact"]
    ratio = large["peak_rss"] / small["peak_rss"]
    same = all(
        large[k] == exact[k]
        for k in ("lines", "rows", "malformed_lines", "failed_requests", "labeled_rows", "flag_rates")
    )

    def read_row(name: str, case: dict[str, Any]) -> str:
        return (
            f"| {name} | {case['rows']:,} | {case['frame_rows']:,} | {case['seconds']:.1f} s | "
            f"{case['peak_rss'] / 1e9:.2f} GB | {case['rss_after_import'] / 1e9:.2f} GB |"
        )

    hostile = bench.hostile
    return f"""## Hostile input: adversarial text, bounded log reading, a hostile drift window

`benchmarks/hostile.py`. **`text_features` on {
        TEXT_CHARS:,} characters** (median of 5; the descriptors read the
first `MAX_TEXT_CHARS`, the length and hash the whole text):

| text | time |
|---|---|
{rows}
| ordinary prose (baseline) | {bench.text["ordinary"] * 1e3:.1f} ms |

**Goal: under {TEXT_GOAL_S * 1e3:.0f} ms: {"met" if worst < TEXT_GOAL_S else "NOT met"}** (worst
{worst * 1e3:.1f} ms, {
        worst / bench.text["ordinary"]:.2f}x prose). The URL pattern this replaced took 42.8 s on
100,000 characters of `a-a-a-…`.

**`read_logs` on one-day windows of the drift benchmark's generator** (four policies, 16-dimensional embeddings,
1% delayed labels; {bench.file_bytes["200k"] / 1e9:.2f} GB and {bench.file_bytes["2M"] / 1e9:.2f} GB of JSON
Lines), each in a fresh process; the row budget is the default 200,000 (`drift.max_sample_rows`):

| read | rows counted | rows kept | wall time | peak RSS | RSS after imports |
|---|---|---|---|---|---|
{read_row("200k rows, row budget 200k", small)}
{read_row("2M rows, row budget 200k", large)}
{read_row("2M rows, no budget (exact pass, baseline)", exact)}

**Goal: the 2M-row peak within 15% of the 200k-row peak: {"met" if ratio <= MEMORY_GOAL else "NOT met"}**
(ratio **{ratio:.3f}**; the exact pass needs {exact["peak_rss"] / small["peak_rss"]:.2f}x). Counts, malformed
lines, failed requests, labeled rows and flag rates of the budgeted read **{
        "equal" if same else "DIFFER FROM"
    }**
the exact pass's: {large["lines"]:,} lines, {large["rows"]:,} rows, {large["failed_requests"]:,} failed,
{large["labeled_rows"]:,} labeled, flag rates {json.dumps(large["flag_rates"])}.

**A hostile drift window** (5,000 rows against a 5,000-row reference: each of the {
        bench.bad_lines - 1
    } schema fields wrong-typed once, a 30 MB
line, markup in `text_language` and `image_format` on 40 rows) through `run_drift_check`: exit
**{hostile["exit_code"]}** ({hostile["status"]}), {hostile["malformed_lines"]} of {hostile["lines"]:,} lines
counted as malformed (expected {bench.bad_lines}), raw markup in the report: **{
        "yes" if hostile["raw_markup"] else "none"
    }** (escaped: {"yes" if hostile["escaped_markup"] else "no"}); {hostile["seconds"]:.1f} s, peak RSS
{hostile["peak_rss"] / 1e9:.2f} GB.

Generating the windows (two processes; kept under `$TNS_HOME/bench/hostile/`): {_generated(bench)}. The whole
benchmark took {bench.seconds:.0f} s.
"""


def _generated(bench: HostileBench) -> str:
    return ", ".join(
        f"{label} rows {'cached from an earlier run' if seconds < 0 else f'{seconds:.0f} s'}"
        for label, seconds in bench.generated_s.items()
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=("budget", "exact", "hostile"))
    parser.add_argument("--path", type=Path)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args(argv)
    from core.common.env import apply_offline_environment

    apply_offline_environment()
    if args.case:
        print(json.dumps(run_case(args.case, args.path, args.work)))
        return 0
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tns-bench-hostile-") as tmp:
        bench = bench_hostile(Path(tmp), log=lambda line: print(line, file=sys.stderr, flush=True))
    print(hostile_section(bench))
    return 0


if __name__ == "__main__":
    sys.exit(main())
