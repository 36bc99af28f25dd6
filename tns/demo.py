"""`make demo-drift`: the whole monitoring loop on this machine, end to end, with real parts.

1. A champion exists (otherwise the training pipeline makes one on the embedded default dataset).
2. tritonserver serves the champion's exported repository (as `tns serve` does).
3. Traffic is simulated through `ContentSafetyClient` with its inference log: a reference day without drift,
   then a day with `new_slang` injected from the middle of the day on.
4. `tns drift --retrain-rules` compares the drifted half-day with the reference day, finds drift, and the retrain rules
   fire: the training pipeline runs locally (KFP local runner) on the window's labeled dataset (the rules'
   `training_data_uri`), and the new model
   is evaluated and gated against the champion.

Everything goes under `$TNS_HOME/demo/drift-<time>/`; the drift report names the run, the run's MLflow tags name
the report.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.common.constants import DEFAULT_MODEL_NAME, DRIFT_SUMMARY_FILE, EXIT_FAILED, EXIT_OK
from core.common.env import apply_offline_environment, tns_home

DEMO_SCENARIO = "new_slang"
DEMO_START = datetime(2026, 11, 2, tzinfo=UTC)


def _tns(*args: str) -> list[str]:
    return [sys.executable, "-m", "tns", *args]


def _has_champion(model_name: str) -> bool:
    from serving.store import ChampionNotFoundError, ServingStoreError, champion_repository

    try:
        champion_repository(model_name, "")
    except (ChampionNotFoundError, ServingStoreError):
        return False
    return True


def run_demo(
    rows: int, overrides: list[str], out: Path | None = None, model_name: str = DEFAULT_MODEL_NAME
) -> int:
    """Runs the loop; returns 0 when drift was found and the retraining run was submitted and gated.

    Args:
        rows: Simulated requests per day (reference day and drifted day).
        overrides: `--set KEY=VALUE` overrides for the training runs (the champion's, if one is trained, and the
            retraining run's).
        out: Output folder (default `$TNS_HOME/demo/drift-<time>`).
        model_name: Registered model name.
    """
    import json

    from monitoring.traffic import simulate_traffic
    from monitoring.traffic_scenarios import SimulationSpec
    from serving.store import champion_repository
    from serving.triton_server import TritonServer

    home = tns_home()
    out = (out or home / "demo" / f"drift-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    sets = [arg for item in overrides for arg in ("--set", item)]
    if not _has_champion(model_name):
        print("== 1. no champion yet: training one on the embedded default dataset", flush=True)
        if subprocess.run(_tns("run", "training", *sets), check=False).returncode != EXIT_OK:
            print("demo: the first training run did not produce a champion", file=sys.stderr)
            return EXIT_FAILED
    repository = champion_repository(model_name, "")
    print(f"== 2. serving the champion from {repository}", flush=True)
    server = TritonServer(repository, model_config_name="cpu", log_file=out / "tritonserver.log")
    server.start()
    try:
        for name, scenario, start in (
            ("reference", "none", DEMO_START),
            ("current", DEMO_SCENARIO, DEMO_START + timedelta(days=1)),
        ):
            print(
                f"== 3. simulating {rows} requests ({scenario}) through the client into {out / name}",
                flush=True,
            )
            spec = SimulationSpec(rows=rows, seed=7 if name == "reference" else 8, start=start, scenario=scenario,
                                  drift_start=0.5, label_rate=0.5)  # fmt: skip
            simulate_traffic(spec, out / name, url=server.grpc_url, protocol="grpc")
    finally:
        server.stop()
    rules = out / "retrain_rules.yaml"
    rules.write_text(
        "model_name: "
        + model_name
        + "\nmin_rows: 100\ncooldown_hours: 24\n"
        + f"training_data_uri: {json.dumps(str((out / 'current' / 'dataset').resolve()))}\n"
        + "config_overrides: "
        + json.dumps(overrides)
        + "\n",
        encoding="utf-8",
    )
    drifted_from = (DEMO_START + timedelta(days=1, hours=12)).isoformat()
    print(f"== 4. tns drift on the window from {drifted_from}, retrain rules {rules}", flush=True)
    code = subprocess.run(
        _tns(
            "drift",
            "--reference", str(out / "reference" / "logs"),
            "--current", str(out / "current" / "logs"),
            "--since", drifted_from,
            "--out", str(out / "drift"),
            "--retrain-rules", str(rules),
        ),
        check=False,
    ).returncode  # fmt: skip
    summary = json.loads((out / "drift" / DRIFT_SUMMARY_FILE).read_text(encoding="utf-8"))
    trigger = summary.get("trigger") or {}
    print(
        f"\ndemo: drift check exit {code} ({summary['status']}, top signal {summary.get('top_signal')}); "
        f"retraining {trigger.get('outcome')} run {trigger.get('run_id')} -> exit {trigger.get('run_exit_code')} "
        f"(0 blessed and promoted, 3 not blessed: gated either way)\nreport: {summary['report_html']}",
        flush=True,
    )
    gated = trigger.get("outcome") == "fired" and trigger.get("run_exit_code") in (0, 3)
    return EXIT_OK if code == 10 and gated else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """`python -m tns.demo [--rows N] [--set KEY=VALUE ...]`."""
    apply_offline_environment()
    parser = argparse.ArgumentParser(prog="python -m tns.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1200, help="Simulated requests per day (default 1200).")
    parser.add_argument("--out", type=Path, default=None, help="Output folder.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Training configuration override for the training runs.")  # fmt: skip
    args = parser.parse_args(argv)
    return run_demo(args.rows, args.overrides, args.out)


if __name__ == "__main__":
    sys.exit(main())
