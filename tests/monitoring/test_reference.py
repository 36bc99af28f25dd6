"""A labeled dataset as the reference: scored once by the served model (the tiny exported repository), cached."""

from __future__ import annotations

import json
from pathlib import Path

from monitoring.reference import scored_reference
from monitoring.traffic import simulate_traffic
from monitoring.traffic_scenarios import SimulationSpec
from serving.in_process import RepositoryScorer
from tns.main import main


def test_dataset_reference_is_scored_labeled_and_cached(
    tmp_path: Path, tiny_raw_dataset: Path, exported_repository
):
    calls = []

    def factory():
        calls.append(1)
        return RepositoryScorer(exported_repository.path)

    window = scored_reference(tiny_raw_dataset, scorer_factory=factory, max_rows=60, cache_root=tmp_path)
    assert window.stats.rows == 60 and window.stats.malformed == 0
    assert window.stats.labeled_rows == 60  # every dataset row carries its labels
    assert set(window.frame["model_version"]) == {str(exported_repository.version)}
    assert window.policies == exported_repository.policies
    manifest = [json.loads(line) for line in (tiny_raw_dataset / "manifest.jsonl").read_text().splitlines()]
    by_id = {f"reference-{row['id']}": row for row in manifest}
    for _, row in window.frame.head(10).iterrows():
        source = by_id[row["request_id"]]
        assert row["label_spam"] == float(source["spam"])
        assert bool(row["text_present"]) == bool(source["text"])
    (cache,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    files = sorted(cache.rglob("*.jsonl"))
    again = scored_reference(tiny_raw_dataset, scorer_factory=factory, max_rows=60, cache_root=tmp_path)
    assert again.stats.rows == 60 and sorted(cache.rglob("*.jsonl")) == files  # not scored twice
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == [cache]


def test_drift_against_the_training_data_from_the_cli(
    tmp_path: Path, tiny_raw_dataset: Path, exported_repository, monkeypatch
):
    monkeypatch.setenv("TNS_HOME", str(tmp_path / "home"))
    scorer = RepositoryScorer(exported_repository.path)
    spec = SimulationSpec(rows=240, seed=5, scenario="image_style_shift", drift_start=0.0, label_rate=0.0)
    traffic = simulate_traffic(spec, tmp_path / "traffic", scorer=scorer)
    args = ["drift", "--reference", str(tiny_raw_dataset), "--current", str(traffic.log_root)]
    args += ["--repository", str(exported_repository.path), "--out", str(tmp_path / "out"), "--no-snapshot"]
    assert main([*args, "--set", "min_rows=100"]) == 10
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["top_group"] == "image"
    assert summary["reference"]["rows"] == 240 and summary["reference"]["labeled_rows"] == 240
