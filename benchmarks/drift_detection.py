"""Detection study of the drift check: false alarms without drift and ranking with each injected scenario.

For each seed: a reference day of `none` traffic and a current day per scenario (the whole day drifted), both
simulated from the embedded generator and scored in process by the champion's exported repository (exactly as
served), then `run_drift_check`. Counts, per scenario, how often the verdict is right (exit 0 for `none`, 10
otherwise) and how often the top drifted signal belongs to the injected group.

    python -m benchmarks.drift_detection [--seeds 20] [--rows 400] [--repository DIR] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

EXPECTED_GROUP = {
    "none": None,
    "new_slang": "text",
    "image_style_shift": "image",
    "policy_surge": "prediction:spam",
    "modality_shift": "modality",
}
START = datetime(2026, 3, 1, tzinfo=UTC)


def study(repository: Path | None, seeds: int, rows: int, work: Path) -> dict:
    """Runs the study; returns per-scenario counts and every verdict."""
    from core.config.drift import DriftConfig
    from monitoring.check import DriftRequest, run_drift_check
    from monitoring.traffic import simulate_traffic
    from monitoring.traffic_scenarios import SimulationSpec
    from serving.in_process import RepositoryScorer, champion_scorer

    scorer = RepositoryScorer(repository) if repository else champion_scorer()
    config = DriftConfig(min_rows=min(200, rows))
    results: dict[str, list[dict]] = {name: [] for name in EXPECTED_GROUP}
    started = time.perf_counter()
    for seed in range(seeds):
        base = SimulationSpec(
            rows=rows, seed=1000 + seed, start=START, hours=24.0, scenario="none", label_rate=0.0
        )
        reference = simulate_traffic(base, work / f"s{seed}" / "reference", scorer=scorer).log_root
        for scenario, expected in EXPECTED_GROUP.items():
            spec = replace(
                base, seed=5000 + seed, start=START + timedelta(days=1), scenario=scenario, drift_start=0.0
            )
            current = simulate_traffic(spec, work / f"s{seed}" / scenario, scorer=scorer).log_root
            outcome = run_drift_check(
                DriftRequest(
                    reference,
                    current,
                    out_dir=work / f"s{seed}" / f"{scenario}-drift",
                    config=config,
                    save_snapshot=False,
                )  # fmt: skip
            )
            summary = outcome.summary
            verdict_ok = outcome.exit_code == (0 if expected is None else 10)
            ranked_ok = expected is None or summary["top_group"] == expected
            results[scenario].append(
                {
                    "seed": seed,
                    "exit_code": outcome.exit_code,
                    "top_signal": summary["top_signal"],
                    "top_group": summary["top_group"],
                    "drifted": summary["drifted_signals"],
                    "verdict_ok": verdict_ok,
                    "ranked_ok": ranked_ok,
                }
            )
            print(
                f"seed {seed:2d} {scenario:18s} exit {outcome.exit_code:2d} top {summary['top_signal']}",
                flush=True,
            )
    return {
        "seeds": seeds,
        "rows_per_window": rows,
        "model_version": scorer.model_version,
        "seconds": round(time.perf_counter() - started, 1),
        "scenarios": {
            scenario: {
                "verdict_ok": sum(r["verdict_ok"] for r in runs),
                "ranked_ok": sum(r["ranked_ok"] and r["verdict_ok"] for r in runs),
                "runs": runs,
            }
            for scenario, runs in results.items()
        },
    }


def markdown(result: dict) -> str:
    """The study as a Markdown table."""
    lines = [
        f"{result['seeds']} seeds, {result['rows_per_window']} rows per window, champion version "
        f"{result['model_version']}, {result['seconds']:.0f} s.",
        "",
        "| scenario | expected | right verdict | injected signal ranked first |",
        "|---|---|---|---|",
    ]
    for scenario, counts in result["scenarios"].items():
        expected = EXPECTED_GROUP[scenario] or "no drift (exit 0)"
        ranked = "-" if EXPECTED_GROUP[scenario] is None else f"{counts['ranked_ok']} / {result['seeds']}"
        lines.append(f"| {scenario} | {expected} | {counts['verdict_ok']} / {result['seeds']} | {ranked} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from core.common.env import apply_offline_environment

    apply_offline_environment()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument(
        "--repository", type=Path, default=None, help="Exported repository (default: champion)."
    )
    parser.add_argument("--out", type=Path, default=None, help="Write the full results as JSON here.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="drift-study-") as work:
        result = study(args.repository, args.seeds, args.rows, Path(work))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
