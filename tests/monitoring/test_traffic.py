"""The traffic simulator: deterministic items, each scenario moving what it should from the drift start on, and
`simulate_traffic` / `tns traffic simulate` writing logs, delayed labels and a training-ready dataset."""

from __future__ import annotations

import argparse
import io
import json
import re
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.common.constants import DEFAULT_POLICIES
from core.config.run import RunConfig
from core.data.generate import BENIGN_TEXT, DOMAINS, EXPLICIT_TEXT, HASHTAGS, THEMES, combination_policy
from monitoring.schema import LOG_SCHEMA_VERSION, partition_name
from monitoring.traffic import SIMULATION_FILE, simulate_traffic
from monitoring.traffic_scenarios import (
    SCENARIOS,
    SLANG_EMOJI,
    SimulatedItem,
    SimulationSpec,
    simulate_items,
)
from tns.traffic import add_simulate_arguments, run_simulate

ROWS = 400
WORD = re.compile(r"\w+")


def _split(
    items: list[SimulatedItem], spec: SimulationSpec
) -> tuple[list[SimulatedItem], list[SimulatedItem]]:
    before = [item for item in items if item.timestamp < spec.drift_start_time]
    return before, [item for item in items if item.timestamp >= spec.drift_start_time]


def _generator_words() -> set[str]:
    phrases = [
        phrase
        for table in (*THEMES, *EXPLICIT_TEXT, BENIGN_TEXT)
        for language_phrases in table.values()
        for phrase in language_phrases
    ]
    return {word.lower() for text in (*phrases, *HASHTAGS, *DOMAINS, "https") for word in WORD.findall(text)}


def _unknown_word_share(items: list[SimulatedItem], vocabulary: set[str]) -> float:
    words = [word.lower() for item in items if item.text for word in WORD.findall(item.text)]
    return sum(word not in vocabulary for word in words) / len(words)


def _image_header(data: bytes) -> tuple[str, tuple[int, int]]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.format, image.size


def _rate(items: list[SimulatedItem], predicate) -> float:
    return sum(bool(predicate(item)) for item in items) / len(items)


# Items -----------------------------------------------------------------------------------------------------
def test_items_are_deterministic_per_seed_ordered_in_time_and_labelled_by_the_generator_rules():
    spec = SimulationSpec(rows=ROWS, seed=5, hours=30)
    items = simulate_items(spec)
    assert items == simulate_items(spec)
    assert items != simulate_items(replace(spec, seed=6))
    assert len(items) == ROWS and len({item.id for item in items}) == ROWS
    assert all(spec.start <= item.timestamp < spec.end for item in items)
    assert [item.timestamp for item in items] == sorted(item.timestamp for item in items)
    assert all(item.text or item.image for item in items)
    assert 0.2 < _rate(items, lambda item: item.labeled) < 0.4
    for item in items:
        expected = dict.fromkeys(DEFAULT_POLICIES, 0)
        for source in (item.text_source, item.image_source):
            if source and source.startswith("explicit:"):
                expected[source.removeprefix("explicit:")] = 1
        if (item.text_source or "").startswith("theme:") and (item.image_source or "").startswith("concept:"):
            policy = combination_policy(int(item.text_source[6:]), int(item.image_source[8:]))
            if policy is not None:
                expected[DEFAULT_POLICIES[policy]] = 1
        assert item.labels == expected, item
    assert not any(item.drifted for item in items)


@pytest.mark.parametrize("scenario", [name for name in SCENARIOS if name != "none"])
def test_a_scenario_changes_nothing_before_the_drift_start_and_applies_from_it_on(scenario):
    spec = SimulationSpec(rows=ROWS, seed=3, scenario=scenario, drift_start=0.4)
    items = simulate_items(spec)
    reference = simulate_items(replace(spec, scenario="none"))
    before, after = _split(items, spec)
    assert 0.3 * ROWS < len(before) < 0.5 * ROWS
    assert before == reference[: len(before)]
    assert all(item.drifted for item in after) and not any(item.drifted for item in before)
    assert after != reference[len(before) :]
    # the same items get labels whatever the scenario (moderation does not depend on the drift)
    assert [item.labeled for item in items] == [item.labeled for item in reference]


def test_new_slang_brings_vocabulary_the_generator_never_produced():
    spec = SimulationSpec(rows=ROWS, seed=4, scenario="new_slang")
    before, after = _split(simulate_items(spec), spec)
    vocabulary = _generator_words()
    assert not any(item.text_source.startswith("slang:") for item in before if item.text)
    assert not any(emoji in (item.text or "") for item in before for emoji in SLANG_EMOJI)
    assert 0.7 < _rate([i for i in after if i.text], lambda item: item.text_source.startswith("slang:")) < 0.9
    unknown_before, unknown_after = (
        _unknown_word_share(before, vocabulary),
        _unknown_word_share(after, vocabulary),
    )
    assert unknown_before < 0.1 and unknown_after > 0.5, (unknown_before, unknown_after)
    # slang keeps the meaning: a coded spam phrase is still spam
    coded_spam = [item for item in after if item.text_source == "slang:explicit:spam"]
    assert coded_spam and all(item.labels["spam"] == 1 for item in coded_spam)


def test_image_style_shift_changes_image_size_and_format_only_after_the_drift_start():
    spec = SimulationSpec(rows=ROWS, seed=2, scenario="image_style_shift")
    before, after = _split(simulate_items(spec), spec)
    headers_before = {_image_header(item.image) for item in before if item.image}
    headers_after = {_image_header(item.image) for item in after if item.image}
    assert headers_before == {("PNG", (64, 64))}
    assert headers_after == {("JPEG", (128, 96))}
    assert {item.image_format for item in after if item.image} == {"JPEG"}
    # texts and labels are those of the training mixture
    reference_after = _split(simulate_items(replace(spec, scenario="none")), spec)[1]
    assert [(i.text, i.labels) for i in after] == [(i.text, i.labels) for i in reference_after]


def test_policy_surge_multiplies_the_surging_policy():
    spec = SimulationSpec(rows=2 * ROWS, seed=8, scenario="policy_surge", surge_policy="spam")
    before, after = _split(simulate_items(spec), spec)
    explicit_before = _rate(before, lambda i: "explicit:spam" in (i.text_source, i.image_source))
    explicit_after = _rate(after, lambda i: "explicit:spam" in (i.text_source, i.image_source))
    assert explicit_after >= 3.5 * explicit_before, (explicit_before, explicit_after)
    spam_before, spam_after = (
        _rate(before, lambda i: i.labels["spam"]),
        _rate(after, lambda i: i.labels["spam"]),
    )
    assert spam_after >= 2.5 * spam_before, (spam_before, spam_after)
    assert _rate(after, lambda i: i.labels["hate"]) < _rate(before, lambda i: i.labels["hate"]) + 0.05


def test_modality_shift_makes_image_only_traffic_common():
    spec = SimulationSpec(rows=ROWS, seed=9, scenario="modality_shift")
    before, after = _split(simulate_items(spec), spec)
    assert _rate(before, lambda item: item.text is None) < 0.2
    assert _rate(after, lambda item: item.text is None) > 0.4


def test_drift_start_can_be_a_time_and_bad_specs_are_refused():
    start = datetime(2026, 3, 1, tzinfo=UTC)
    spec = SimulationSpec(
        rows=ROWS, start=start, hours=10, scenario="new_slang", drift_start=start + timedelta(hours=9)
    )
    items = simulate_items(spec)
    assert spec.drift_start_time == start + timedelta(hours=9)
    assert all(item.drifted == (item.timestamp >= spec.drift_start_time) for item in items)
    assert 0.05 * ROWS < sum(item.drifted for item in items) < 0.15 * ROWS
    naive = SimulationSpec(rows=1, start=datetime(2026, 3, 1))
    assert naive.start.tzinfo is not None
    for bad in (
        {"rows": 0},
        {"hours": 0},
        {"scenario": "meteor"},
        {"label_rate": 1.5},
        {"drift_start": 2.0},
        {"surge_policy": "fraud"},
    ):
        with pytest.raises(ValueError):
            SimulationSpec(**bad)


# Scoring and writing ---------------------------------------------------------------------------------------
def _records(out: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted((out / "logs").glob("date=*/*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_simulate_traffic_in_process_writes_partitioned_logs_labels_and_an_ingestible_dataset(
    tmp_path, exported_repository
):
    from core.data.ingest import IMAGE_ABSENT, IMAGE_OK, ingest_dataset, read_ingested
    from monitoring.log_reader import read_logs
    from serving.in_process import RepositoryScorer

    spec = SimulationSpec(
        rows=120,
        seed=1,
        start=datetime(2026, 2, 1, 6, tzinfo=UTC),
        hours=36,
        scenario="image_style_shift",
        label_rate=0.4,
    )
    out = tmp_path / "traffic"
    scorer = RepositoryScorer(exported_repository.path, threads=1)
    result = simulate_traffic(spec, out, scorer=scorer, batch_size=16)
    items = simulate_items(spec)
    labeled = [item for item in items if item.labeled]

    records = _records(out)
    assert len(records) == spec.rows == result.rows
    assert {record["schema_version"] for record in records} == {LOG_SCHEMA_VERSION}
    expected_partitions = Counter(partition_name(item.timestamp.isoformat()) for item in items)
    assert result.partitions == dict(expected_partitions) and len(expected_partitions) == 2
    assert result.log_root == out / "logs"
    for path in result.log_root.glob("date=*/*.jsonl"):
        assert {partition_name(json.loads(line)["timestamp"]) for line in path.read_text().splitlines()} == {
            path.parent.name
        }
    by_id = {record["request_id"]: record for record in records}
    assert set(by_id) == {item.id for item in items}
    for item in items:
        record = by_id[item.id]
        assert record["timestamp"] == item.timestamp.isoformat()
        assert (record["text_embedding"] is None) == (item.text is None)
        assert (record["image_embedding"] is None) == (item.image is None)
        assert record["image_format"] == item.image_format
        assert record["model_version"] == str(exported_repository.version)
        assert record["text"] is None  # raw text not logged by default
    assert {
        r["image_width"]
        for r in records
        if r["image_present"] and r["timestamp"] >= spec.drift_start_time.isoformat()
    } == {128}

    label_lines = [json.loads(line) for line in result.labels_file.read_text().splitlines()]
    assert result.labels_file == out / "logs" / "labels" / "labels-1.jsonl"
    assert [(line["request_id"], line["item"]) for line in label_lines] == [(item.id, 0) for item in labeled]
    assert [line["labels"] for line in label_lines] == [item.labels for item in labeled]
    assert {line["source"] for line in label_lines} == {"delayed"}
    assert {json.dumps(line["sampling"]) for line in label_lines} == {'{"stratum": "uniform", "weight": 2.5}'}
    window = read_logs(result.log_root)
    assert window.stats.rows == spec.rows and window.stats.labeled_rows == len(labeled) == result.labeled
    # The ground truth of every item (labeled or not) under its log key, outside the log root.
    assert result.truth_file == out / "truth.jsonl"
    truth = [json.loads(line) for line in result.truth_file.read_text().splitlines()]
    assert truth == [
        {"request_id": i.id, "item": 0, "id": i.id, "labels": i.labels, "drifted": i.drifted} for i in items
    ]
    assert sum(line["drifted"] for line in truth) == result.drifted > 0
    # Every item's content, under its log key, with the simulated time (for `tns review sample --content`).
    from serving.content_store import LocalContentStore

    assert result.content_root == out / "content"
    store = LocalContentStore(result.content_root)
    for item in items:
        stored = store.get(item.id, 0)
        assert (stored.text, stored.image) == (item.text, item.image)
        assert stored.stored_at == item.timestamp.isoformat()

    ingested = ingest_dataset(out / "dataset", tmp_path / "ingested", RunConfig())
    assert ingested.rows == len(labeled)
    frame = read_ingested(tmp_path / "ingested")
    assert set(frame["image_file_status"]) <= {IMAGE_OK, IMAGE_ABSENT}
    assert (
        frame["image"].dropna().str.endswith(".jpg").any()
        and frame["image"].dropna().str.endswith(".png").any()
    )
    assert frame[list(DEFAULT_POLICIES)].to_dict("records") == [item.labels for item in labeled]

    summary = json.loads((out / SIMULATION_FILE).read_text())
    assert summary["scenario"]["name"] == "image_style_shift"
    assert summary["drift_start"] == spec.drift_start_time.isoformat()
    assert summary["counts"]["rows"] == 120 and summary["counts"]["labeled"] == len(labeled)
    assert summary["mode"] == "in-process" and summary["files"]["content"] == "content"
    assert summary["files"]["truth"] == "truth.jsonl"
    with pytest.raises(FileExistsError, match="already holds a simulation"):
        simulate_traffic(spec, out, scorer=scorer)
    (out / SIMULATION_FILE).unlink()  # as after a failed run: logs but no summary
    with pytest.raises(FileExistsError, match="already holds logs"):
        simulate_traffic(spec, out, scorer=scorer)


def _cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tns traffic simulate")
    add_simulate_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_simulates_with_a_repository_and_reports_failures(
    tmp_path, exported_repository, capsys, monkeypatch
):
    import monitoring.traffic

    out = tmp_path / "cli"
    args = _cli_args(
        "--out",
        str(out),
        "--rows",
        "40",
        "--scenario",
        "new_slang",
        "--drift-start",
        "2026-02-01T06:00:00",
        "--repository",
        str(exported_repository.path),
        "--label-rate",
        "0.5",
    )
    assert args.drift_start == datetime(2026, 2, 1, 6, tzinfo=UTC)
    assert run_simulate(args) == 0
    printed = capsys.readouterr().out
    assert "simulated 40 items" in printed and "new_slang" in printed and "items/s" in printed
    assert len(_records(out)) == 40

    assert run_simulate(args) == 1  # the folder holds a simulation already
    assert "tns: error:" in capsys.readouterr().err

    missing = _cli_args("--out", str(tmp_path / "x"), "--repository", str(tmp_path / "nowhere"))
    assert run_simulate(missing) == 1
    assert "not an exported Triton repository" in capsys.readouterr().err

    monkeypatch.setattr(monitoring.traffic, "SERVER_READY_TIMEOUT_S", 0.2)
    unreachable = _cli_args(
        "--out", str(tmp_path / "y"), "--rows", "5", "--url", "127.0.0.1:9", "--protocol", "http"
    )
    assert run_simulate(unreachable) == 1
    err = capsys.readouterr().err
    assert err.startswith("tns: error:") and "127.0.0.1:9" in err and "tns serve" in err
    assert not (tmp_path / "y" / SIMULATION_FILE).exists()

    with pytest.raises(SystemExit):
        _cli_args("--out", "z", "--drift-start", "1.5")
    with pytest.raises(SystemExit):
        _cli_args("--out", "z", "--scenario", "meteor")


def test_cli_without_a_champion_fails_clearly(tmp_path, mlflow_isolation, capsys):
    args = _cli_args(
        "--out", str(tmp_path / "out"), "--rows", "5", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    assert run_simulate(args) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tns: error:")]
    assert len(errors) == 1 and "has no 'champion' version" in errors[0], errors
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_simulate_traffic_through_a_server_logs_what_the_served_model_answers(
    tmp_path, exported_repository, triton_server, protocol
):
    from monitoring.log_reader import read_logs
    from serving.in_process import RepositoryScorer
    from tests.serving.helpers import url_of

    spec = SimulationSpec(rows=50, seed=12, scenario="new_slang", label_rate=0.5)
    result = simulate_traffic(
        spec, tmp_path / "served", url=url_of(triton_server, protocol), protocol=protocol, batch_size=8
    )
    items = simulate_items(spec)
    records = _records(tmp_path / "served")
    assert result.mode == "server" and result.rows == len(records) == spec.rows
    assert len({record["request_id"] for record in records}) == 7  # ceil(50 / 8) requests
    assert [record["timestamp"] for record in records] == [item.timestamp.isoformat() for item in items]
    expected = RepositoryScorer(exported_repository.path, threads=1).score(
        [item.text for item in items], [item.image for item in items]
    )
    for record, answer in zip(records, expected, strict=True):
        assert record["scores"] == pytest.approx(answer.scores, abs=1e-5)
        assert record["action"] == answer.action
        for name in ("text_embedding", "image_embedding"):
            reference = getattr(answer, name)
            if reference is None:
                assert record[name] is None
            else:
                assert record[name] == pytest.approx(reference.tolist(), abs=1e-4)  # logged with 5 decimals
    from serving.content_store import LocalContentStore

    store = LocalContentStore(result.content_root)  # written through the client's content hook
    for record, item in zip(records, items, strict=True):
        stored = store.get(record["request_id"], record["item"])
        assert (stored.text, stored.image) == (item.text, item.image)
    window = read_logs(result.log_root)
    labeled = [item for item in items if item.labeled]
    assert window.stats.labeled_rows == len(labeled) == result.labeled
    truth = [json.loads(line) for line in result.truth_file.read_text().splitlines()]  # keys of the client
    assert [(t["request_id"], t["item"]) for t in truth] == [(r["request_id"], r["item"]) for r in records]
    assert [(t["id"], t["labels"]) for t in truth] == [(i.id, i.labels) for i in items]
    labels = window.frame[[f"label_{p}" for p in DEFAULT_POLICIES]].dropna().astype(int)
    assert labels.to_dict("records") == [
        {f"label_{p}": value for p, value in item.labels.items()} for item in labeled
    ]


def test_concept_drift_changes_the_spam_labels_of_pairs_and_nothing_else():
    spec = SimulationSpec(rows=ROWS, seed=6, scenario="concept_drift", drift_start=0.0)
    drifted, original = simulate_items(spec), simulate_items(replace(spec, scenario="none"))
    changed = set()
    for item, before in zip(drifted, original, strict=True):
        assert (item.text, item.image, item.text_source, item.image_source) == (
            before.text,
            before.image,
            before.text_source,
            before.image_source,
        )
        changed |= {
            (p, before.labels[p], item.labels[p]) for p in item.labels if item.labels[p] != before.labels[p]
        }
    # spam pairs are allowed now, and pairs that were allowed are spam; no other policy moves
    assert changed == {("spam", 1, 0), ("spam", 0, 1)}
