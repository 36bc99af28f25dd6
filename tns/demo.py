"""`make demo-drift`: the monitoring loop closed end to end on this machine, with real parts.

1. A champion exists (otherwise the training pipeline makes one on the embedded default dataset).
2. tritonserver serves the champion's exported repository (as `tns serve` does).
3. Traffic is simulated through `ContentSafetyClient` with its inference log and content store: a reference day
   without drift, then a day with the scenario (`--scenario`, default `new_slang`) from the middle of the day on.
4. `tns drift` compares the drifted half-day with the reference day and finds drift.
5. `tns review sample` picks `--review-budget` items of that window (gold items included) for review; simulated
   moderators (`monitoring.simulated_review`: the simulator's truth, 3% of answers flipped) label them, and
   `tns review import` brings the labels back into the window's log root.
6. `tns trigger --local` applies retrain rules whose `retraining_data` names the day's content store (the default
   model-facing signals; `--retrain-on-any-drift`: every drifted signal): the trigger builds the champion's
   training data plus the window's trusted labels, runs the training pipeline locally, and the gate compares the
   new model with the champion (also on the original slice of the test split).
7. If the new model was promoted, tritonserver serves it; a held-back drifted sample (`monitoring.held_back`: a new
   seed, the scenario throughout, every item labeled by the simulator's truth) is scored by the old and the new
   champion, and the figures go to `loop.json`.

Everything goes under `$TNS_HOME/demo/drift-<time>/`: `reference/`, `current/` (simulations), `drift/` (report,
summary, trigger decision), `review/` (batch, simulated export), `retraining-data/`, `retrain_rules.yaml`,
`loop.json`. Exit 0 when the loop ran and the gate decided (blessed or not), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from core.common.constants import (
    DATASET_LINEAGE_FILE,
    DEFAULT_MODEL_NAME,
    DRIFT_SUMMARY_FILE,
    EXIT_DRIFT,
    EXIT_FAILED,
    EXIT_OK,
    GATE_DECISION_FILE,
    TRIGGER_DECISION_FILE,
)
from core.common.env import apply_offline_environment, tns_home

DEMO_SCENARIOS = ("new_slang", "image_style_shift")
DEMO_START = datetime(2026, 11, 2, tzinfo=UTC)
DEFAULT_REVIEW_BUDGET = 150
HELD_BACK_SEED = 9
LOOP_FILE = "loop.json"


def _tns(*args: str) -> list[str]:
    return [sys.executable, "-m", "tns", *args]


def _run(*args: str) -> int:
    return subprocess.run(_tns(*args), check=False).returncode


def _champion(model_name: str) -> Path | None:
    from serving.store import ChampionNotFoundError, ServingStoreError, champion_repository

    try:
        return champion_repository(model_name, "")
    except (ChampionNotFoundError, ServingStoreError):
        return None


def _simulate(out: Path, rows: int, scenario: str, repository: Path) -> None:
    """The reference day (`none`) and the current day (`scenario` from mid-day), served by tritonserver."""
    from monitoring.traffic import simulate_traffic
    from monitoring.traffic_scenarios import SimulationSpec
    from serving.triton_server import TritonServer

    print(f"== 2. serving the champion from {repository}", flush=True)
    server = TritonServer(repository, model_config_name="cpu", log_file=out / "tritonserver.log")
    server.start()
    try:
        for name, kind, start in (
            ("reference", "none", DEMO_START),
            ("current", scenario, DEMO_START + timedelta(days=1)),
        ):
            print(
                f"== 3. simulating {rows} requests ({kind}) through the client into {out / name}", flush=True
            )
            spec = SimulationSpec(rows=rows, seed=7 if name == "reference" else 8, start=start, scenario=kind,
                                  drift_start=0.5, label_rate=0.5)  # fmt: skip
            simulate_traffic(spec, out / name, url=server.grpc_url, protocol="grpc")
    finally:
        server.stop()


def _review(out: Path, since: str, budget: int) -> dict[str, Any]:
    """A review batch of the drifted window, answered by simulated moderators and imported; what happened."""
    from monitoring.review import BATCH_FILE
    from monitoring.review_import import IMPORT_SUMMARY_FILE
    from monitoring.simulated_review import simulate_review_export
    from monitoring.traffic import TRUTH_FILE

    current, batch = out / "current", out / "review" / "batch"
    print(f"== 5. review queue: {budget} items of the window into {batch}", flush=True)
    code = _run(
        "review", "sample", "--logs", str(current / "logs"), "--budget", str(budget), "--out", str(batch),
        "--drift-summary", str(out / "drift" / DRIFT_SUMMARY_FILE), "--content", str(current / "content"),
        "--gold", str(current / "dataset"), "--since", since,
    )  # fmt: skip
    if code != EXIT_OK:
        raise RuntimeError(f"tns review sample exited {code}")
    export = out / "review" / "export.json"
    answered = simulate_review_export(batch, current / TRUTH_FILE, export)
    print(
        f"   simulated moderators answered {answered.tasks} tasks ({len(answered.flipped)} of "
        f"{answered.answers} answers flipped, gold disagreement {answered.gold_disagreement})",
        flush=True,
    )
    code = _run("review", "import", str(export), "--batch", str(batch), "--logs", str(current / "logs"))
    if code != EXIT_OK:
        raise RuntimeError(f"tns review import exited {code}")
    manifest = json.loads((batch / BATCH_FILE).read_text(encoding="utf-8"))
    imported = json.loads((batch / IMPORT_SUMMARY_FILE).read_text(encoding="utf-8"))
    return {
        "batch": str(batch),
        "batch_id": manifest["batch_id"],
        "tasks": len(manifest["items"]) + len(manifest["gold"]),
        "gold_tasks": len(manifest["gold"]),
        "strata": {name: info["items"] for name, info in manifest["strata"].items()},
        "simulated": answered.to_dict(),
        "labels_written": imported["labels_written"],
        "labels_file": imported["labels_file"],
        "gold_disagreement": imported["gold"]["disagreement_rate"],
    }


def _write_rules(out: Path, model_name: str, overrides: list[str], any_drift: bool) -> Path:
    """Retrain rules whose retraining data is the champion's training data plus the window's trusted labels; the
    default (model-facing) signals, or with `any_drift` every drifted signal, descriptors included."""
    rules = out / "retrain_rules.yaml"
    data = {
        "content_store_uri": str((out / "current" / "content").resolve()),
        "output_dir": str((out / "retraining-data").resolve()),
    }
    signals = 'signals: ["*"]  # every drifted signal counts (--retrain-on-any-drift)\n' if any_drift else ""
    rules.write_text(
        f"model_name: {model_name}\nmin_rows: 100\n{signals}"
        "cooldown_hours: 0  # every demo run is its own window; keep the production rules' cooldown elsewhere\n"
        f"retraining_data: {json.dumps(data)}\nconfig_overrides: {json.dumps(overrides)}\n",
        encoding="utf-8",
    )
    return rules


def _gate(run_output: str) -> dict[str, Any]:
    """The gate decision of a local run: verdict, failed checks, original and new slice figures."""
    found = sorted(Path(run_output).rglob(GATE_DECISION_FILE)) if run_output else []
    if not found:
        return {}
    decision = json.loads(found[0].read_text(encoding="utf-8"))
    return {
        "file": str(found[0]),
        "decision": decision["decision"],
        "failed_checks": [r["message"] for r in decision["reasons"] if not r["passed"]],
        "origin_slices": decision.get("origin_slices"),
        "macro_roc_auc": {
            name: (decision.get(f"{name}_evaluation") or {}).get("macro", {}).get("roc_auc")
            for name in ("challenger", "champion")
        },
    }


def _served_figures(repository: Path, out: Path, items: list) -> dict[str, Any]:
    """The held-back figures of the new champion as tritonserver serves it."""
    from monitoring.held_back import held_back_figures
    from serving.client import ContentSafetyClient
    from serving.triton_server import TritonServer

    print(f"== 7. serving the new champion from {repository}", flush=True)
    server = TritonServer(repository, model_config_name="cpu", log_file=out / "tritonserver-new.log")
    server.start()
    try:
        with ContentSafetyClient(server.grpc_url, protocol="grpc", max_batch_size=32) as client:
            if not client.wait_until_ready(30):
                raise RuntimeError(f"the new champion is not ready at {server.grpc_url}")
            answers = client.classify([i.text for i in items], [i.image for i in items])
    finally:
        server.stop()
    return held_back_figures(items, answers)


def _held_back(out: Path, scenario: str, rows: int, before: Path, after: Path, promoted: bool) -> dict:
    """The old and the new champion on one held-back drifted sample."""
    from monitoring.held_back import held_back_items, score_held_back

    items = held_back_items(scenario, rows, HELD_BACK_SEED, DEMO_START + timedelta(days=2))
    result: dict[str, Any] = {"scenario": scenario, "seed": HELD_BACK_SEED, "rows": rows}
    result["before"] = score_held_back(items, before)
    result["after"] = score_held_back(items, after)
    if promoted:
        result["after_served"] = _served_figures(after, out, items)
    old, new = result["before"]["macro_roc_auc"], result["after"]["macro_roc_auc"]
    result["delta_macro_roc_auc"] = None if old is None or new is None else round(new - old, 4)
    return result


def _write_loop(loop: dict[str, Any]) -> None:
    Path(loop["loop_file"]).write_text(json.dumps(loop, indent=2) + "\n", encoding="utf-8")


def _print_loop(loop: dict[str, Any]) -> None:
    gate, held = loop["gate"], loop.get("held_back") or {}
    blessed = gate.get("decision") == "BLESSED"
    print(f"\ndemo: the retrained model was {'BLESSED' if blessed else 'NOT blessed'} by the gate"
          f" ({'promoted to champion' if loop['promoted'] else 'champion unchanged'})")  # fmt: skip
    data = loop.get("retraining_data") or {}
    print(
        f"  data      {data.get('original_rows')} original + {data.get('new_rows')} new rows ({loop['data_uri']})"
    )
    for message in gate.get("failed_checks", []):
        print(f"  failed    {message}")
    for origin, entry in (gate.get("origin_slices") or {}).items():
        figures = ", ".join(
            f"{p} {entry['challenger'][p]:.3f} vs {entry['champion'][p]:.3f}"
            for p in entry["challenger"]
            if entry["challenger"][p] is not None and entry["champion"][p] is not None
        )
        print(f"  {origin:<9} slice ({entry['rows']} test rows) new vs champion ROC AUC: {figures}")
    if held:
        before, after = held["before"], held["after"]
        print(f"  held-back {held['rows']} {held['scenario']} items: macro ROC AUC {before['macro_roc_auc']} "
              f"(v{before['model_version']}) -> {after['macro_roc_auc']} (v{after['model_version']}), "
              f"delta {held['delta_macro_roc_auc']}")  # fmt: skip
        for policy, value in before["roc_auc"].items():
            print(f"    {policy:<10} {value} -> {after['roc_auc'][policy]}")
    print(f"  loop      {loop['loop_file']}\n  report    {loop['drift']['report_html']}", flush=True)


def run_demo(
    rows: int,
    overrides: list[str],
    out: Path | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    scenario: str = DEMO_SCENARIOS[0],
    review_budget: int = DEFAULT_REVIEW_BUDGET,
    any_drift: bool = False,
) -> int:
    """Runs the loop; returns 0 when drift was found, the review labels came back and the retraining was gated.

    Args:
        rows: Simulated requests per day (reference day and drifted day; also the held-back sample's size).
        overrides: `--set KEY=VALUE` overrides for the training runs (the champion's, if one is trained, and the
            retraining run's).
        out: Output folder (default `$TNS_HOME/demo/drift-<time>`).
        model_name: Registered model name.
        scenario: The drift scenario of the current day and the held-back sample.
        review_budget: Tasks of the review batch (gold included).
        any_drift: Retrain rules that count every drifted signal (descriptors included), not only the default
            model-facing ones (embeddings, scores, flag rates, performance).
    """
    out = (out or tns_home() / "demo" / f"drift-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    sets = [arg for item in overrides for arg in ("--set", item)]
    if _champion(model_name) is None:
        print("== 1. no champion yet: training one on the embedded default dataset", flush=True)
        if _run("run", "training", *sets) != EXIT_OK:
            print("demo: the first training run did not produce a champion", file=sys.stderr)
            return EXIT_FAILED
    before = _champion(model_name)
    assert before is not None
    _simulate(out, rows, scenario, before)
    drifted_from = (DEMO_START + timedelta(days=1, hours=12)).isoformat()
    print(f"== 4. tns drift on the window from {drifted_from}", flush=True)
    code = _run(
        "drift", "--reference", str(out / "reference" / "logs"), "--current", str(out / "current" / "logs"),
        "--since", drifted_from, "--out", str(out / "drift"),
    )  # fmt: skip
    summary = json.loads((out / "drift" / DRIFT_SUMMARY_FILE).read_text(encoding="utf-8"))
    loop: dict[str, Any] = {
        "scenario": scenario,
        "rows": rows,
        "champion_before": str(before),
        "drift": {k: summary.get(k) for k in ("status", "top_signal", "top_group", "report_html")},
        "loop_file": str(out / LOOP_FILE),
    }
    loop["drift"]["exit_code"] = code
    if code != EXIT_DRIFT:
        _write_loop(loop)
        print(f"demo: the drift check exited {code} ({summary['status']}), not 10 (drift)", file=sys.stderr)
        return EXIT_FAILED
    try:
        loop["review"] = _review(out, drifted_from, review_budget)
    except RuntimeError as error:
        _write_loop(loop)
        print(f"demo: {error}", file=sys.stderr)
        return EXIT_FAILED
    rules = _write_rules(out, model_name, overrides, any_drift)
    loop["retrain_signals"] = "every drifted signal" if any_drift else "default (model-facing)"
    print(f"== 6. tns trigger --local with retrain rules {rules}", flush=True)
    summary_file = out / "drift" / DRIFT_SUMMARY_FILE
    _run("trigger", "--summary", str(summary_file), "--retrain-rules", str(rules), "--local")
    trigger = json.loads((out / "drift" / TRIGGER_DECISION_FILE).read_text(encoding="utf-8"))
    keys = ("outcome", "run_id", "run_exit_code", "run_output", "data_uri", "reasons", "error")
    loop["trigger"] = {key: trigger.get(key) for key in keys}
    loop["data_uri"] = trigger.get("data_uri", "")
    lineage = Path(loop["data_uri"]) / DATASET_LINEAGE_FILE if loop["data_uri"] else None
    loop["retraining_data"] = (
        json.loads(lineage.read_text(encoding="utf-8")) if lineage and lineage.is_file() else None
    )
    loop["gate"] = _gate(trigger.get("run_output", ""))
    after = _champion(model_name)
    loop["promoted"] = after is not None and after != before
    loop["champion_after"] = str(after)
    gated = (
        trigger.get("outcome") == "fired" and trigger.get("run_exit_code") in (0, 3) and bool(loop["gate"])
    )
    if gated and after is not None:
        loop["held_back"] = _held_back(out, scenario, rows, before, after, loop["promoted"])
    _write_loop(loop)
    if not gated:
        print(f"demo: retraining {trigger.get('outcome')} (exit {trigger.get('run_exit_code')}): "
              f"{trigger.get('error') or trigger.get('reasons')}", file=sys.stderr)  # fmt: skip
        if trigger.get("outcome") == "no_drift" and not any_drift:
            print("demo: no model-facing signal drifted, so the default retrain rules did not fire; "
                  "--retrain-on-any-drift counts the descriptor signals too", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    _print_loop(loop)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """`python -m tns.demo [--rows N] [--scenario S] [--review-budget N] [--retrain-on-any-drift] [--out DIR]
    [--set KEY=VALUE ...]`."""
    apply_offline_environment()
    parser = argparse.ArgumentParser(prog="python -m tns.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1200, help="Simulated requests per day (default 1200).")
    parser.add_argument("--scenario", choices=DEMO_SCENARIOS, default=DEMO_SCENARIOS[0],
                        help="Drift scenario of the current day and the held-back sample (default new_slang).")  # fmt: skip
    parser.add_argument("--review-budget", type=int, default=DEFAULT_REVIEW_BUDGET,
                        help=f"Tasks of the review batch, gold included (default {DEFAULT_REVIEW_BUDGET}).")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="Output folder.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Training configuration override for the training runs.")  # fmt: skip
    parser.add_argument("--retrain-on-any-drift", action="store_true",
                        help="Retrain rules that count every drifted signal, descriptors included (default: the "
                        "model-facing signals of configs/retrain_rules.yaml).")  # fmt: skip
    args = parser.parse_args(argv)
    return run_demo(
        args.rows,
        args.overrides,
        args.out,
        scenario=args.scenario,
        review_budget=args.review_budget,
        any_drift=args.retrain_on_any_drift,
    )


if __name__ == "__main__":
    sys.exit(main())
