"""Drift-check benchmark: `monitoring.check.run_drift_check` end to end on N reference vs N current log rows,
against a plain scipy two-sample test of the same columns, each case in a fresh process (so its peak RSS is its
own), for N = 100k and 1M.

    python -m benchmarks.run --only drift --out docs/benchmarks.md   (this section only, merged into the file)
    python -m benchmarks.drift --rows 100000                          (print the measurements as JSON)

Log files are synthetic records of the log schema (`monitoring.schema`), written straight to JSON lines with
numpy (one `%`-format per row, no `make_record`), partitioned by day as `LogWriter` writes them, and cached
under `$TNS_HOME/bench/drift/` (keyed by rows, seed and generator version). The current window drifts mildly:
text embeddings shift by 0.1 standard deviation per dimension, texts get a little longer, a bit more Spanish,
a little more spam.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

GENERATOR_VERSION = 2
SIZES: tuple[int, ...] = (100_000, 1_000_000)
GOAL_SECONDS = 30.0  # 100k rows
GOAL_SECONDS_ROWS = 100_000
GOAL_BYTES = 4e9  # 1M rows
GOAL_BYTES_ROWS = 1_000_000
POLICIES: tuple[str, ...] = ("hate", "violence", "sexual", "spam")
LANGUAGES: tuple[str, ...] = ("en", "es", "fr", "de", "unknown")
IMAGE_SIDES: tuple[int, ...] = (64, 128, 256, 512)
IMAGE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP")
REFERENCE_START = datetime(2026, 11, 1, tzinfo=UTC)
REFERENCE_DAYS = 7
CURRENT_START = datetime(2026, 11, 8, tzinfo=UTC)
CURRENT_DAYS = 1
CHUNK_ROWS = 50_000
CASES: tuple[str, ...] = ("check", "baseline", "baseline_pandas")
# The plain pandas reader holds every record as Python objects: above this many rows per window it is not run.
PANDAS_MAX_ROWS = 100_000


@dataclass(frozen=True)
class WindowSpec:
    """How one synthetic window's rows are distributed (the current window moves a few knobs)."""

    text_shift: float = 0.0
    extra_words: int = 0
    language_p: tuple[float, ...] = (0.55, 0.15, 0.12, 0.12, 0.06)
    spam_rate: float = 0.08
    error_rate: float = 0.001
    label_rate: float = 0.01


REFERENCE_SPEC = WindowSpec()
CURRENT_SPEC = WindowSpec(
    text_shift=0.1, extra_words=1, language_p=(0.50, 0.20, 0.12, 0.12, 0.06), spam_rate=0.10
)


# Synthetic logs ---------------------------------------------------------------------------------------------
def _hex_digests(rng: np.random.Generator, n: int) -> list[str]:
    """`n` random 64-character hex strings (stand-ins for SHA-256 digests)."""
    raw = rng.integers(0, 256, size=(n, 32), dtype=np.uint8).tobytes().hex()
    return [raw[i : i + 64] for i in range(0, 64 * n, 64)]


def _vector_strings(matrix: np.ndarray) -> list[str]:
    """One JSON array per row, floats as `json.dumps` writes them (repr)."""
    template = "[" + ", ".join(["%r"] * matrix.shape[1]) + "]"
    return [template % tuple(row) for row in np.round(matrix, 5).tolist()]


def log_lines(
    rows: int,
    seed: int,
    start: datetime,
    seconds: float,
    spec: WindowSpec,
    first: int = 0,
    window_rows: int | None = None,
) -> list[str]:
    """`rows` JSON lines in the log schema: rows `first .. first+rows` of a window of `window_rows` rows whose
    timestamps are evenly spread over `seconds` from `start`.

    Args:
        rows: How many lines.
        seed: Random seed (the same seed and arguments give the same lines).
        start: Timestamp of the window's first row.
        seconds: The window's length.
        spec: How the values are distributed.
        first: Position of the first line in the window (request ids, timestamps and the chunk's seed).
        window_rows: Rows of the whole window (default `first + rows`).
    """
    from core.common.constants import EMBEDDING_DIM

    rng = np.random.default_rng([seed, first])
    n = rows
    window_rows = window_rows or first + n
    has_text = rng.random(n) > 0.1
    has_image = rng.random(n) > 0.1
    has_text |= ~has_image
    words_array = rng.integers(3, 14, n) + spec.extra_words
    length = (words_array * rng.integers(4, 7, n) + rng.integers(0, 12, n)).tolist()
    words = words_array.tolist()
    non_letter = np.round(rng.beta(2, 20, n), 4).tolist()
    upper = np.round(rng.beta(1, 15, n), 4).tolist()
    urls = rng.poisson(0.1, n).tolist()
    emoji = rng.poisson(0.3, n).tolist()
    language = [LANGUAGES[k] for k in rng.choice(len(LANGUAGES), n, p=spec.language_p).tolist()]
    text_hash = _hex_digests(rng, n)
    side_p = (0.2, 0.4, 0.3, 0.1)
    width = np.asarray(IMAGE_SIDES)[rng.choice(len(IMAGE_SIDES), n, p=side_p)]
    height = np.asarray(IMAGE_SIDES)[rng.choice(len(IMAGE_SIDES), n, p=side_p)]
    image_format = [IMAGE_FORMATS[k] for k in rng.choice(len(IMAGE_FORMATS), n, p=(0.6, 0.35, 0.05)).tolist()]
    image_bytes = (width * height * rng.uniform(0.3, 1.2, n)).astype(np.int64).tolist()
    width, height = width.tolist(), height.tolist()
    image_hash = _hex_digests(rng, n)
    text_vectors = _vector_strings(rng.normal(spec.text_shift, 1.0, (n, EMBEDDING_DIM)))
    image_vectors = _vector_strings(rng.normal(0.0, 1.0, (n, EMBEDDING_DIM)))
    scores = rng.beta(1, 12, (n, len(POLICIES)))
    spam = rng.random(n) < spec.spam_rate
    scores[spam, POLICIES.index("spam")] = rng.beta(12, 1, int(spam.sum()))
    scores = np.round(scores, 6)
    flag_array = scores >= 0.5
    failed_array = rng.random(n) < spec.error_rate
    labeled = ((rng.random(n) < spec.label_rate) & ~failed_array).tolist()
    labels = (rng.random((n, len(POLICIES))) < scores).astype(int).tolist()  # calibrated scores
    actions = np.where(
        scores.max(axis=1) >= 0.9, "block", np.where(flag_array.any(axis=1), "review", "allow")
    ).tolist()
    score_rows = scores.tolist()
    flags = flag_array.tolist()
    failed = failed_array.tolist()
    has_text, has_image = has_text.tolist(), has_image.tolist()
    latency = np.round(rng.gamma(4.0, 6.0, n), 3).tolist()
    offsets = (np.arange(first, first + n) * (seconds / window_rows)).astype(np.int64)
    stamps = np.datetime_as_string(
        np.datetime64(start.replace(tzinfo=None), "s") + offsets.astype("timedelta64[s]"), unit="s"
    ).tolist()

    score_template = "{" + ", ".join(f'"{p}": %r' for p in POLICIES) + "}"
    flag_names = [f'"{p}": ' for p in POLICIES]
    lines = []
    for i in range(n):
        head = (
            f'{{"schema_version": 1, "request_id": "bench-{seed}-{first + i}", "item": 0, '
            f'"timestamp": "{stamps[i]}+00:00", "model_name": "content-safety", "model_version": "3", '
        )
        if has_text[i]:
            text = (
                f'"text_present": true, "text_length": {length[i]}, "text_words": {words[i]}, '
                f'"text_non_letter_share": {non_letter[i]!r}, "text_upper_share": {upper[i]!r}, '
                f'"text_url_count": {urls[i]}, "text_emoji_count": {emoji[i]}, '
                f'"text_language": "{language[i]}", "text_sha256": "{text_hash[i]}", "text": null, '
            )
        else:
            text = (
                '"text_present": false, "text_length": 0, "text_words": 0, "text_non_letter_share": 0.0, '
                '"text_upper_share": 0.0, "text_url_count": 0, "text_emoji_count": 0, "text_language": null, '
                '"text_sha256": null, "text": null, '
            )
        if has_image[i]:
            image = (
                f'"image_present": true, "image_width": {width[i]}, "image_height": {height[i]}, '
                f'"image_format": "{image_format[i]}", "image_bytes": {image_bytes[i]}, '
                f'"image_sha256": "{image_hash[i]}", '
            )
        else:
            image = (
                '"image_present": false, "image_width": null, "image_height": null, "image_format": null, '
                '"image_bytes": 0, "image_sha256": null, '
            )
        if failed[i]:
            outcome = (
                '"text_embedding": null, "image_embedding": null, "scores": null, "flags": null, '
                f'"action": null, "latency_ms": {latency[i]!r}, "error": "timeout", "labels": null}}\n'
            )
        else:
            label_text = (
                "{" + ", ".join(f'"{p}": {v}' for p, v in zip(POLICIES, labels[i], strict=True)) + "}"
                if labeled[i]
                else "null"
            )
            outcome = (
                f'"text_embedding": {text_vectors[i] if has_text[i] else "null"}, '
                f'"image_embedding": {image_vectors[i] if has_image[i] else "null"}, '
                f'"scores": {score_template % tuple(score_rows[i])}, '
                '"flags": {'
                + ", ".join(
                    name + ("true" if value else "false")
                    for name, value in zip(flag_names, flags[i], strict=True)
                )
                + "}, "
                f'"action": "{actions[i]}", "latency_ms": {latency[i]!r}, "error": null, "labels": {label_text}}}\n'
            )
        lines.append(head + text + image + outcome)
    return lines


def write_window(root: Path, rows: int, seed: int, start: datetime, days: int, spec: WindowSpec) -> Path:
    """Writes a window of `rows` log lines under `root` in day partitions (`date=YYYY-MM-DD/part.jsonl`)."""
    root.mkdir(parents=True, exist_ok=True)
    handles: dict[str, Any] = {}
    try:
        for first in range(0, rows, CHUNK_ROWS):
            count = min(CHUNK_ROWS, rows - first)
            lines = log_lines(count, seed, start, days * 86400.0, spec, first=first, window_rows=rows)
            by_day: dict[str, list[str]] = {}
            for line in lines:
                day = line[line.index('"timestamp": "') + 14 :][:10]
                by_day.setdefault(day, []).append(line)
            for day, day_lines in by_day.items():
                if day not in handles:
                    folder = root / f"date={day}"
                    folder.mkdir(parents=True, exist_ok=True)
                    handles[day] = (folder / "part.jsonl").open("w", encoding="utf-8")
                handles[day].write("".join(day_lines))
    finally:
        for handle in handles.values():
            handle.close()
    return root


def cached_windows(cache: Path, rows: int, seed: int = 7) -> tuple[Path, Path, float, bool]:
    """The (reference, current) log folders of `rows` rows each, generated once into `cache`.

    Returns:
        The two folders, the seconds generating them took (now, or when they were first generated) and whether
        they were already there.
    """
    key = cache / f"rows{rows}-seed{seed}-v{GENERATOR_VERSION}"
    done = key / "complete"
    reference, current = key / "reference", key / "current"
    if done.is_file():
        try:
            seconds = float(json.loads(done.read_text())["seconds"])
        except (ValueError, KeyError, TypeError):
            seconds = 0.0
        return reference, current, seconds, True
    import shutil

    shutil.rmtree(key, ignore_errors=True)
    started = time.perf_counter()
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:  # one process per window
        jobs = [
            pool.submit(write_window, reference, rows, seed, REFERENCE_START, REFERENCE_DAYS, REFERENCE_SPEC),
            pool.submit(write_window, current, rows, seed + 1, CURRENT_START, CURRENT_DAYS, CURRENT_SPEC),
        ]
        for job in jobs:
            job.result()
    seconds = time.perf_counter() - started
    done.write_text(json.dumps({"rows": rows, "seed": seed, "seconds": round(seconds, 3)}) + "\n")
    return reference, current, seconds, False


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.jsonl"))


# Measured cases (each in a fresh process) ---------------------------------------------------------------------
def _numeric_specs(policies: list[str]) -> list[tuple[str, str]]:
    """(column, subset) of every numeric column the drift check compares, embeddings one column per dimension."""
    from monitoring.schema import (
        IMAGE_EMBEDDING_PREFIX,
        IMAGE_NUMERIC_COLUMNS,
        SCORE_PREFIX,
        TEXT_EMBEDDING_PREFIX,
        TEXT_NUMERIC_COLUMNS,
        embedding_columns,
    )

    return (
        [(c, "text") for c in TEXT_NUMERIC_COLUMNS]
        + [(c, "image") for c in IMAGE_NUMERIC_COLUMNS]
        + [(SCORE_PREFIX + p, "all") for p in policies]
        + [(c, "present") for c in embedding_columns(TEXT_EMBEDDING_PREFIX)]
        + [(c, "present") for c in embedding_columns(IMAGE_EMBEDDING_PREFIX)]
    )


def _categorical_specs(policies: list[str]) -> list[tuple[str, str]]:
    from monitoring.schema import FLAG_PREFIX

    return [
        ("text_language", "text"),
        ("image_format", "image"),
        ("text_present", "all"),
        ("image_present", "all"),
    ] + [(FLAG_PREFIX + p, "all") for p in policies]


def _values(frame, column: str, subset: str):
    if subset == "text":
        frame = frame.loc[frame["text_present"].astype(bool)]
    elif subset == "image":
        frame = frame.loc[frame["image_present"].astype(bool)]
    values = frame[column]
    return values.dropna() if subset == "present" else values


def plain_tests(reference, current, policies: list[str], alpha: float = 0.05) -> dict[str, Any]:
    """The baseline: scipy's two-sample Kolmogorov-Smirnov test (asymptotic p-value, what scipy picks anyway above
    10,000 rows) on every numeric column the drift check compares
    (descriptors over the rows with that modality, scores, each embedding dimension over the rows that have the
    embedding) and a chi-square test of independence on every categorical one (language, image format, modality
    presence, flags), on all rows of both windows.

    Returns:
        `tests` (how many), `drifted` (columns with p < alpha) and `p_values` by column.
    """
    import pandas as pd
    from scipy.stats import chi2_contingency, ks_2samp

    p_values: dict[str, float] = {}
    for column, subset in _numeric_specs(policies):
        if column not in reference.columns or column not in current.columns:
            continue
        ref = pd.to_numeric(_values(reference, column, subset), errors="coerce").dropna().to_numpy(float)
        cur = pd.to_numeric(_values(current, column, subset), errors="coerce").dropna().to_numpy(float)
        if len(ref) and len(cur):
            p_values[column] = float(ks_2samp(ref, cur, method="asymp").pvalue)
    for column, subset in _categorical_specs(policies):
        if column not in reference.columns or column not in current.columns:
            continue
        ref = _values(reference, column, subset).astype(object).where(lambda v: v.notna(), "missing")
        cur = _values(current, column, subset).astype(object).where(lambda v: v.notna(), "missing")
        table = pd.concat(
            [ref.astype(str).value_counts().rename("r"), cur.astype(str).value_counts().rename("c")], axis=1
        ).fillna(0)
        if len(table) > 1:
            p_values[column] = float(chi2_contingency(table.to_numpy()).pvalue)
    drifted = sorted(name for name, p in p_values.items() if p < alpha)
    return {"tests": len(p_values), "drifted": drifted, "p_values": p_values}


def read_plain(path: Path):
    """The baseline's own reader: `pandas.read_json(lines=True)` per file, nested fields flattened with pandas,
    failed requests dropped. No schema checks, no malformed-line handling, no delayed labels."""
    import pandas as pd

    from core.common.constants import EMBEDDING_DIM
    from monitoring.schema import FLAG_PREFIX, SCORE_PREFIX, embedding_columns

    frames = [pd.read_json(file, lines=True, dtype=False) for file in sorted(path.rglob("*.jsonl"))]
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.loc[frame["error"].isna()].reset_index(drop=True)
    parts = [frame.drop(columns=["scores", "flags", "labels", "text_embedding", "image_embedding"])]
    for name, prefix in (("scores", SCORE_PREFIX), ("flags", FLAG_PREFIX)):
        parts.append(pd.DataFrame(frame[name].tolist()).add_prefix(prefix).astype(float))
    for name in ("text_embedding", "image_embedding"):
        empty = [np.nan] * EMBEDDING_DIM
        matrix = np.asarray([v if isinstance(v, list) else empty for v in frame[name]], dtype=np.float32)
        parts.append(pd.DataFrame(matrix, columns=embedding_columns(f"{name}_")))
    return pd.concat(parts, axis=1)


def _preload(case: str) -> None:
    """Imports what the case uses, so that its timing is its own work and not the import of the libraries (the
    import still counts in its peak RSS: a scipy-only process does not load Evidently)."""
    import pandas  # noqa: F401
    import pyarrow.json  # noqa: F401
    import scipy.stats  # noqa: F401

    if case == "check":
        import evidently  # noqa: F401
        import evidently.metrics  # noqa: F401
        import evidently.metrics.embeddings  # noqa: F401
        import evidently.ui.workspace  # noqa: F401
        import sklearn.ensemble  # noqa: F401
        import sklearn.metrics  # noqa: F401

        import monitoring.check  # noqa: F401
    else:
        import monitoring.log_reader  # noqa: F401


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far (Linux `ru_maxrss` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_case(case: str, reference: Path, current: Path, work: Path) -> dict[str, Any]:
    """Runs one case in this process and measures it (call this in a fresh process: the RSS peak is lifelong).

    Cases: `check` (`run_drift_check`, summary + report + Evidently snapshot in a workspace), `baseline`
    (`read_logs` + `plain_tests`), `baseline_pandas` (`read_plain` + `plain_tests`).
    """
    started = time.perf_counter()
    _preload(case)
    import_s = time.perf_counter() - started
    rss_after_import = peak_rss_bytes()
    result: dict[str, Any] = {"case": case}
    started = time.perf_counter()
    if case == "check":
        from monitoring.check import DriftRequest, run_drift_check

        outcome = run_drift_check(
            DriftRequest(
                reference=reference,
                current=current,
                out_dir=work / "report",
                workspace=work / "workspace",
                save_snapshot=True,
                command="benchmarks.drift",
            )
        )
        summary = outcome.summary
        result.update(
            status=summary["status"],
            exit_code=outcome.exit_code,
            drifted=summary["drifted_signals"],
            signals=len(summary["signals"]),
            rows={"reference": summary["reference"]["rows"], "current": summary["current"]["rows"]},
            sampled=summary["sampled"],
            snapshot=bool(summary.get("evidently", {}).get("snapshot_id")),
        )
    elif case in ("baseline", "baseline_pandas"):
        if case == "baseline":
            from monitoring.log_reader import read_logs

            # Every row, as the baseline's tests are described (the check reads a 200k-row sample above it).
            ref_window, cur_window = (
                read_logs(reference, row_budget=None),
                read_logs(current, row_budget=None),
            )
            ref, cur, policies = ref_window.frame, cur_window.frame, cur_window.policies
        else:
            ref, cur = read_plain(reference), read_plain(current)
            policies = list(POLICIES)
        read_s = time.perf_counter() - started
        tests = plain_tests(ref, cur, policies)
        result.update(
            read_s=read_s,
            tests=tests["tests"],
            drifted=tests["drifted"],
            rows={"reference": len(ref), "current": len(cur)},
        )
    else:
        raise ValueError(f"unknown case {case!r}; one of {CASES}")
    result.update(
        seconds=time.perf_counter() - started,
        import_s=import_s,
        peak_rss=peak_rss_bytes(),
        rss_after_import=rss_after_import,
    )
    return result


def measure(case: str, reference: Path, current: Path, work: Path, timeout_s: float = 1800) -> dict[str, Any]:
    """Runs `run_case` in a fresh Python process and returns its measurements (plus the process's wall time)."""
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # The check looks up the model's registry alias in $TNS_HOME's MLflow store: an empty home skips it.
    env["TNS_HOME"] = str(work / "tns_home")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), *filter(None, [env.get("PYTHONPATH")])]
    )
    command = [
        sys.executable,
        "-m",
        "benchmarks.drift",
        "--case",
        case,
        "--reference",
        str(reference),
        "--current",
        str(current),
        "--work",
        str(work),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(
            f"drift benchmark case {case} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


@dataclass
class DriftBench:
    """Measurements of every size: `cases[rows][case]` as `run_case` returns them."""

    sizes: list[int]
    cases: dict[int, dict[str, dict[str, Any]]]
    files: dict[int, dict[str, Any]]
    generated_s: dict[int, float]
    seconds: float
    cached: list[int] = field(default_factory=list)
    load_average: tuple[float, float] = (0.0, 0.0)

    def ratio(self, rows: int, key: str = "seconds", baseline: str = "baseline") -> float | None:
        cases = self.cases.get(rows, {})
        if "check" not in cases or baseline not in cases or not cases[baseline][key]:
            return None
        return cases["check"][key] / cases[baseline][key]

    def goals(self) -> dict[str, Any]:
        """Whether 100k rows took under 30 s and 1M rows stayed under 4 GB (None when that size was not run)."""
        time_case = self.cases.get(GOAL_SECONDS_ROWS, {}).get("check")
        memory_case = self.cases.get(GOAL_BYTES_ROWS, {}).get("check")
        return {
            "seconds": None if time_case is None else time_case["seconds"] < GOAL_SECONDS,
            "memory": None if memory_case is None else memory_case["peak_rss"] < GOAL_BYTES,
        }


def bench_drift(
    folder: Path,
    sizes: tuple[int, ...] | list[int] = SIZES,
    cache: Path | None = None,
    pandas_max_rows: int = PANDAS_MAX_ROWS,
    log=None,
) -> DriftBench:
    """Generates (or reuses) the log windows and measures every case at every size."""
    from core.common.env import tns_home

    log = log or (lambda line: None)
    cache = cache or tns_home() / "bench" / "drift"
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    cases: dict[int, dict[str, dict[str, Any]]] = {}
    files: dict[int, dict[str, Any]] = {}
    generated: dict[int, float] = {}
    cached: list[int] = []
    for rows in sizes:
        reference, current, seconds, reused = cached_windows(cache, rows)
        generated[rows] = seconds
        if reused:
            cached.append(rows)
        files[rows] = {
            "reference_bytes": folder_bytes(reference),
            "current_bytes": folder_bytes(current),
            "reference_files": len(list(reference.rglob("*.jsonl"))),
            "current_files": len(list(current.rglob("*.jsonl"))),
        }
        log(
            f"drift bench: {rows} rows per window ({'cached' if reused else f'generated in {seconds:.0f} s'})"
        )
        cases[rows] = {}
        for case in CASES:
            if case == "baseline_pandas" and rows > pandas_max_rows:
                continue
            cases[rows][case] = measure(case, reference, current, folder / f"{rows}-{case}")
            log(
                f"drift bench: {rows} rows {case}: {cases[rows][case]['seconds']:.1f} s, "
                f"peak RSS {cases[rows][case]['peak_rss'] / 1e9:.2f} GB"
            )
    return DriftBench(
        sizes=list(sizes),
        cases=cases,
        files=files,
        generated_s=generated,
        seconds=time.perf_counter() - started,
        cached=cached,
        load_average=(load_before, os.getloadavg()[0]),
    )


# Report --------------------------------------------------------------------------------------------------------
def _gb(value: float) -> str:
    return f"{value / 1e9:.2f} GB"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _rows(value: int) -> str:
    return f"{value // 1_000_000}M" if value % 1_000_000 == 0 else f"{value // 1000}k"


def drift_section(bench: DriftBench) -> str:
    """The markdown section of the drift benchmark."""
    table = [
        "| rows per window | case | wall time | process wall time (start-up and imports included) | "
        "rows/s (both windows) | peak RSS | **check / baseline** wall time | check / baseline peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    labels = {
        "check": "`run_drift_check` (read, check, summary, report, Evidently snapshot)",
        "baseline": "`read_logs` + scipy KS / chi-square",
        "baseline_pandas": "`pandas.read_json(lines=True)` + scipy KS / chi-square",
    }
    for rows in bench.sizes:
        for case, measured in bench.cases[rows].items():
            total = measured["rows"]["reference"] + measured["rows"]["current"]
            if case == "check":
                time_ratio = bench.ratio(rows)
                rss_ratio = bench.ratio(rows, "peak_rss")
                ratios = f"**{time_ratio:.2f}** | {rss_ratio:.2f}" if time_ratio and rss_ratio else "- | -"
            else:
                ratios = " | "
            table.append(
                f"| {_rows(rows)} | {labels[case]} | {measured['seconds']:.1f} s | {measured['process_s']:.1f} s | "
                f"{total / measured['seconds']:,.0f} | {_gb(measured['peak_rss'])} | {ratios} |"
            )
    goals = bench.goals()
    verdicts = []
    if goals["seconds"] is not None:
        case = bench.cases[GOAL_SECONDS_ROWS]["check"]
        verdicts.append(
            f"**Goal: {_rows(GOAL_SECONDS_ROWS)} rows in under {GOAL_SECONDS:.0f} s: "
            f"{'met' if goals['seconds'] else 'not met'}** ({case['seconds']:.1f} s; the whole process with "
            f"start-up and imports {case['process_s']:.1f} s)."
        )
    if goals["memory"] is not None:
        measured = bench.cases[GOAL_BYTES_ROWS]["check"]["peak_rss"]
        verdicts.append(
            f"**Goal: {_rows(GOAL_BYTES_ROWS)} rows under {GOAL_BYTES / 1e9:.0f} GB of memory: "
            f"{'met' if goals['memory'] else 'not met'}** (peak RSS {_gb(measured)})."
        )
    details = []
    for rows in bench.sizes:
        check = bench.cases[rows].get("check", {})
        base = bench.cases[rows].get("baseline", {})
        sizes = bench.files[rows]
        plain = bench.ratio(rows, baseline="baseline_pandas")
        plain_text = (
            f" Against the pandas-reader baseline the check takes {plain:.2f}x the time and "
            f"{bench.ratio(rows, 'peak_rss', 'baseline_pandas'):.2f}x the memory."
            if plain
            else ""
        )
        details.append(
            f"- {_rows(rows)}: log files {_gb(sizes['reference_bytes'])} reference ({sizes['reference_files']} day "
            f"partitions) + {_gb(sizes['current_bytes'])} current ({sizes['current_files']}); the check compared "
            f"{_count(check.get('rows', {}).get('reference'))} vs {_count(check.get('rows', {}).get('current'))} "
            f"rows (distribution tests on a seeded sample of {_count(check.get('sampled', {}).get('reference'))} "
            f"per window), said **{check.get('status', '-')}** (exit {check.get('exit_code', '-')}) with "
            f"{len(check.get('drifted', []))} of {check.get('signals', '-')} signals drifted "
            f"({', '.join(check.get('drifted', [])[:6]) or 'none'}); the baseline ran {base.get('tests', '-')} tests, "
            f"{len(base.get('drifted', []))} with p < 0.05; of its {base.get('seconds', 0):.1f} s, reading took "
            f"{base.get('read_s', 0):.1f} s. Library imports before the clock: {check.get('import_s', 0):.1f} s and "
            f"{_gb(check.get('rss_after_import', 0))} RSS for the check (pandas, pyarrow, scipy, Evidently, "
            f"scikit-learn), {base.get('import_s', 0):.1f} s and {_gb(base.get('rss_after_import', 0))} for the "
            f"baseline (pandas, pyarrow, scipy).{plain_text}"
        )
    skipped = [
        _rows(rows)
        for rows in bench.sizes
        if "baseline_pandas" not in bench.cases[rows] and rows > PANDAS_MAX_ROWS
    ]
    generated = ", ".join(
        f"{_rows(r)} rows per window {s:.0f} s"
        + (" (cached from an earlier run)" if r in bench.cached else "")
        for r, s in bench.generated_s.items()
    )
    return f"""## Drift check: `run_drift_check` vs a plain scipy two-sample test

Synthetic inference logs in the log schema (`benchmarks/drift.py`): a reference window of N rows over
{REFERENCE_DAYS} days and a current window of N rows over {CURRENT_DAYS} day, four policies, 16-dimensional text
and image embeddings, about 10% text-only and 10% image-only rows, 0.1% failed requests, 1% rows with delayed
labels. The current window drifts mildly: text embeddings shifted by 0.1 standard deviation per dimension, one
more word per text, 5 points more Spanish, spam 8% -> 10%. Each case runs in a fresh process, so its peak RSS
(`ru_maxrss`: the whole process, its imported libraries included) is its own; the wall time starts after the
imports (the process wall time includes them). The machine's 1-minute load average was {bench.load_average[0]:.1f}
before and {bench.load_average[1]:.1f} after, on {os.cpu_count()} cores: other work moves the times, the ratios
less; the peak RSS hardly.

{chr(10).join(table)}

{" ".join(verdicts)}

What each case does:

- **`run_drift_check`**: reads both windows with `read_logs` (streamed in chunks through pyarrow's JSON reader,
  schema checks, delayed labels, a seeded sample of `max_sample_rows` rows kept, counts over every row), then `compare_windows` with the default `DriftConfig` (Evidently `ValueDrift` per descriptor and score
  per row subset, the model-based embedding drift of Evidently's `ModelDriftMethod` for each embedding, flag-rate
  z-tests and performance on labeled rows; distribution tests on a seeded sample of at most
  `max_sample_rows` rows per window, rates on every row), then writes `summary.json`, `report.html`,
  `evidently.html` and adds the Evidently snapshot to a fresh workspace. The registry alias lookup is skipped
  (no MLflow store in the benchmark's `TNS_HOME`).
- **`read_logs` + scipy** (the ratio's baseline): the same reader and the same columns, then
  `scipy.stats.ks_2samp` on every numeric column (six text descriptors over text rows, three image descriptors
  over image rows, four scores, each of the 2 x 16 embedding dimensions) and `chi2_contingency` on language, image
  format, modality presence and the four flags, on **all** rows (no sampling). No report, no snapshot.
- **`pandas.read_json(lines=True)` + scipy**: the same tests behind the plainest reader (nested fields flattened
  with pandas); run only up to {_rows(PANDAS_MAX_ROWS)} rows per window, since it holds every record as Python
  objects{" (skipped at " + ", ".join(skipped) + ")" if skipped else ""}.

{chr(10).join(details)}

Generating the log files (both windows, one process each; kept under `$TNS_HOME/bench/drift/` for later runs):
{generated}. The whole drift benchmark took {bench.seconds:.0f} s.
"""


def merge_report(existing: str, new: str, note: str = "") -> str:
    """How `--only` updates a report file: `existing` with each `## ` section of `new` put in place of the
    same-titled one (or appended at the end). The header of `existing` (what measured the other sections) stays;
    `note` (e.g. when and by what command the new sections were measured) goes under each new section's title."""

    def split(text: str) -> tuple[str, list[str]]:
        pieces = text.split("\n## ")
        return pieces[0], ["## " + piece for piece in pieces[1:]]

    def title(section: str) -> str:  # up to the first ':' or '(': titles may hold this run's parameters
        return re.split(r"[:(]", section.splitlines()[0], maxsplit=1)[0].strip()

    def first_line(section: str) -> str:
        return section.splitlines()[0]

    header, old_sections = split(existing)
    _, new_sections = split(new)
    if note:
        new_sections = [f"{first_line(s)}\n\n{note}{s[len(first_line(s)) :]}" for s in new_sections]
    replaced = {title(s): s for s in new_sections}
    merged = [replaced.pop(title(s), s) for s in old_sections]
    merged += [s for s in new_sections if title(s) in replaced]
    return "\n".join([header.rstrip("\n") + "\n", *[s.rstrip("\n") + "\n" for s in merged]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", choices=CASES, help="Run one case in this process and print it as JSON.")
    parser.add_argument("--reference", type=Path)
    parser.add_argument("--current", type=Path)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--rows", type=int, action="append", help="Rows per window (repeatable).")
    args = parser.parse_args(argv)
    from core.common.env import apply_offline_environment

    apply_offline_environment()
    if args.case:
        print(json.dumps(run_case(args.case, args.reference, args.current, args.work)))
        return 0
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tns-bench-drift-") as tmp:
        bench = bench_drift(
            Path(tmp), args.rows or SIZES, log=lambda line: print(line, file=sys.stderr, flush=True)
        )
    print(json.dumps({"cases": bench.cases, "files": bench.files, "goals": bench.goals()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
