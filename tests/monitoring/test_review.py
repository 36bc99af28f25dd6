"""The review queue: strata, weights and determinism of `tns review sample`, gold items hidden from the tasks,
Label Studio's own validation of the config and tasks, and the export imported back as delayed labels."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from core.common.constants import DEFAULT_POLICIES, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from core.config.fields import ConfigError
from core.config.review import ReviewRules
from monitoring.label_studio import control_names, labeling_config
from monitoring.log_reader import read_logs
from monitoring.review import ReviewError, ReviewRequest, sample_review, write_batch
from monitoring.review_import import import_review
from monitoring.review_strata import drift_segments, served_thresholds, split_quota
from serving.content_store import LocalContentStore
from tests.monitoring.records import START, png, records, write, write_gold
from tns.main import main

ROOT = Path(__file__).resolve().parents[2]
JPEG_FROM = 240  # rows from here on are JPEG images: the drifted segment of DRIFT_SUMMARY
DRIFT_SUMMARY = {
    "summary_version": 1,
    "signals": [
        {
            "name": "image_format",
            "kind": "categorical",
            "drifted": True,
            "reference_value": {"PNG": 1.0},
            "current_value": {"PNG": 0.6, "JPEG": 0.4},
        },
        {"name": "text_embedding", "kind": "embedding", "drifted": True},
        {
            "name": "text_length",
            "kind": "numeric",
            "drifted": False,
            "reference_value": 5,
            "current_value": 9,
        },
    ],
}


@pytest.fixture(scope="module")
def window(tmp_path_factory) -> dict:
    """A 300-row window (every 10th row labeled inline, one more by a label file), its content, a drift summary
    and a gold dataset."""
    root = tmp_path_factory.mktemp("review")
    logs = root / "logs"
    rows = records(JPEG_FROM, seed=1, label_rate=0.1) + records(
        60, seed=2, start=START + timedelta(days=1), image_format="JPEG"
    )
    write(logs, rows)
    (logs / "labels").mkdir()
    unlabeled = [r for r in rows if r["labels"] is None]
    late = {"request_id": unlabeled[0]["request_id"], "item": 0, "labels": dict.fromkeys(DEFAULT_POLICIES, 0)}
    (logs / "labels" / "late.jsonl").write_text(json.dumps(late) + "\n")
    store = LocalContentStore(root / "content")
    image = png(8, 8)
    for record in rows:
        store.put(
            record["request_id"],
            0,
            f"text of {record['request_id']}",
            image if record["image_present"] else None,
        )
    summary = root / "summary.json"
    summary.write_text(json.dumps(DRIFT_SUMMARY))
    gold = write_gold(root / "gold")
    labeled = {r["request_id"] for r in rows if r["labels"]} | {late["request_id"]}
    return {
        "root": root,
        "logs": logs,
        "content": root / "content",
        "summary": summary,
        "gold": gold,
        "rows": rows,
        "labeled": labeled,
    }


def _request(window: dict, out: Path, **changes) -> ReviewRequest:
    options = {
        "logs": window["logs"],
        "budget": 40,
        "out_dir": out,
        "drift_summary": window["summary"],
        "content": window["content"],
        "gold": window["gold"],
        "seed": 3,
    }
    return ReviewRequest(**(options | changes))


def test_strata_shares_weights_and_reasons(window, tmp_path: Path):
    batch = sample_review(_request(window, tmp_path / "b"))
    manifest = batch.manifest
    strata = manifest["strata"]
    assert {name: info["items"] for name, info in strata.items()} == {
        "uncertainty": 18,
        "drift_segment": 8,
        "uniform": 12,
        "gold": 2,
    }
    assert strata["uncertainty"]["quotas"] == {"hate": 5, "violence": 5, "sexual": 4, "spam": 4}
    assert len(batch.tasks) == 40 and len(manifest["items"]) == 38 and len(manifest["gold"]) == 2
    frame = read_logs(window["logs"]).frame
    by_id = frame.set_index("request_id")
    candidates = len(frame) - len(window["labeled"])
    assert manifest["window"] == manifest["window"] | {"rows": 300, "candidates": candidates}
    items = list(manifest["items"].values())
    assert not {i["request_id"] for i in items} & window["labeled"]  # labeled items are never picked again
    # The drifted segment is the JPEG rows; embeddings name no rows and are reported as skipped.
    assert manifest["drift"]["segments"][0]["description"] == "image_format in ['JPEG'] (share grew)"
    assert any("text_embedding" in reason for reason in manifest["drift"]["skipped"])
    drifted = [i for i in items if i["stratum"] == "drift_segment"]
    assert all(by_id.loc[i["request_id"], "image_format"] == "JPEG" for i in drifted)
    # Weights are inverse inclusion probabilities of a partition: they add up to the candidates.
    assert {i["weight"] for i in items if i["stratum"] == "uncertainty"} == {1.0}
    assert sum(i["weight"] for i in items) == pytest.approx(candidates, abs=1e-3)
    uniform = [i for i in items if i["stratum"] == "uniform"]
    assert uniform[0]["weight"] == pytest.approx(strata["uniform"]["frame"] / 12, abs=1e-6)
    assert all(by_id.loc[i["request_id"], "image_format"] != "JPEG" for i in uniform)
    # The uncertainty items are nearer their policy's served threshold than any candidate left unpicked.
    thresholds = manifest["thresholds"]["3"]
    picked = {i["request_id"] for i in items}
    left = frame.loc[~frame["request_id"].isin(picked | window["labeled"])]
    for item in (i for i in items if i["stratum"] == "uncertainty"):
        policy = item["reasons"][0].split(":")[0]
        distance = abs(by_id.loc[item["request_id"], f"score_{policy}"] - thresholds[policy])
        assert distance <= (left[f"score_{policy}"] - thresholds[policy]).abs().min()


def test_when_the_rest_of_the_window_runs_out_the_segment_takes_its_share(window, tmp_path: Path):
    # A segment holding most of the window (PNG rows, 240 of 300): the rows outside it cannot fill the uniform
    # share, so the segment takes what they leave and the batch still fills its budget.
    summary = tmp_path / "summary.json"
    signal = DRIFT_SUMMARY["signals"][0] | {
        "reference_value": {"PNG": 0.5, "JPEG": 0.5},
        "current_value": {"PNG": 0.8, "JPEG": 0.2},
    }
    summary.write_text(json.dumps(DRIFT_SUMMARY | {"signals": [signal]}))
    batch = sample_review(_request(window, tmp_path / "b", budget=200, drift_summary=summary))
    items, strata = list(batch.manifest["items"].values()), batch.manifest["strata"]
    assert len(items) == len({i["request_id"] for i in items}) == 200 - strata["gold"]["items"]
    assert strata["uniform"]["items"] == strata["uniform"]["frame"]  # every row outside the segment
    assert strata["drift_segment"]["items"] > round(200 * ReviewRules().drift_share)
    assert sum(i["weight"] for i in items) == pytest.approx(300 - len(window["labeled"]), abs=1e-3)


def test_batches_are_deterministic_per_seed(window, tmp_path: Path):
    first = sample_review(_request(window, tmp_path / "a"))
    again = sample_review(_request(window, tmp_path / "b"))
    other = sample_review(_request(window, tmp_path / "c", seed=4))
    assert first.tasks == again.tasks and first.manifest["items"] == again.manifest["items"]
    assert first.batch_id == again.batch_id != other.batch_id
    assert [i["request_id"] for i in first.manifest["items"].values()] != [
        i["request_id"] for i in other.manifest["items"].values()
    ]


def test_without_drift_summary_or_gold_the_uniform_stratum_takes_the_rest(window, tmp_path: Path):
    batch = sample_review(_request(window, tmp_path, drift_summary=None, gold=None, content=None))
    assert {k: v["items"] for k, v in batch.manifest["strata"].items()} == {
        "uncertainty": 18,
        "uniform": 22,
        "gold": 0,
    }
    assert batch.manifest["content"]["missing"] == 40
    assert {t["data"]["note"] for t in batch.tasks} == {
        "content missing from the content store (purged, or never stored)"
    }


def test_gold_items_look_like_any_other_task(window, tmp_path: Path):
    paths = write_batch(sample_review(_request(window, tmp_path)), tmp_path)
    tasks = json.loads(paths["tasks"].read_text())
    manifest = json.loads(paths["batch"].read_text())
    assert {frozenset(t["data"]) for t in tasks} == {
        frozenset({"ref", "batch_id", "text", "image", "modality", "note"})
    }
    assert {frozenset(t["meta"]) for t in tasks} == {frozenset({"ref", "batch_id"})}
    fields = json.dumps([{**t, "data": {**t["data"], "text": "", "image": ""}} for t in tasks])
    for word in (
        "gold",
        "stratum",
        "uncertainty",
        "weight",
        "request_id",
        *(r["request_id"] for r in window["rows"]),
    ):
        assert word not in fields  # nothing but the content tells a task apart
    gold_refs = set(manifest["gold"])
    assert gold_refs and gold_refs <= {t["data"]["ref"] for t in tasks}
    assert all(set(g["labels"]) == set(DEFAULT_POLICIES) for g in manifest["gold"].values())
    # Content comes from the store; images are data URIs; the refs are in shuffled order of strata.
    window_task = next(t for t in tasks if t["data"]["ref"] in manifest["items"])
    key = manifest["items"][window_task["data"]["ref"]]
    assert window_task["data"]["text"] == f"text of {key['request_id']}"
    assert all(t["data"]["image"].startswith("data:image/png;base64,") for t in tasks)
    assert (paths["tasks"].stat().st_mode & 0o077) == 0  # raw user content: owner only
    with pytest.raises(ReviewError, match="already holds a review batch"):
        write_batch(sample_review(_request(window, tmp_path)), tmp_path)


def test_label_studio_accepts_the_config_and_tasks(window, tmp_path: Path):
    from label_studio_sdk.label_interface import LabelInterface

    paths = write_batch(sample_review(_request(window, tmp_path)), tmp_path)
    interface = LabelInterface(paths["labeling_config"].read_text())
    interface.validate()
    assert interface.to_json_schema()["required"] == list(control_names(list(DEFAULT_POLICIES)).values())
    for task in json.loads(paths["tasks"].read_text()):
        assert interface.validate_task({"data": task["data"]})
    hostile = ["a<b&c", 'quote"s', "$text", "a<b&c"]  # data reaches the XML: escaped, names made safe
    tricky = LabelInterface(labeling_config(hostile))
    tricky.validate()
    assert sorted(tricky.controls, key=str) and len(set(control_names(hostile).values())) == 3


def _export(tasks: list[dict], labels_by_ref: dict[str, dict[str, str]], config: str) -> list[dict]:
    """A Label Studio JSON export, its annotations made by the SDK's own region helpers."""
    from label_studio_sdk.label_interface import LabelInterface
    from label_studio_sdk.label_interface.objects import AnnotationValue

    interface = LabelInterface(config)
    exported = []
    for number, task in enumerate(tasks, start=1):
        choices = labels_by_ref.get(task["data"]["ref"])
        annotations = []
        if choices is not None:
            regions = interface.create_regions(choices)
            annotation = AnnotationValue(completed_by=7, result=regions, lead_time=2.5).model_dump()
            assert interface.validate_annotation(annotation)
            annotation |= {
                "id": number,
                "created_at": "2026-12-01T10:00:00.000000Z",
                "task": number,
                "project": 1,
            }
            annotation["updated_at"] = f"2026-12-01T10:{number % 60:02d}:00.000000Z"
            annotations.append(annotation)
        exported.append(
            {
                "id": number,
                "data": task["data"],
                "meta": task["meta"],
                "annotations": annotations,
                "predictions": [],
                "project": 1,
                "inner_id": number,
            }
        )
    return exported


def _labeled_export(window, tmp_path: Path) -> tuple[dict, list[dict], dict]:
    paths = write_batch(sample_review(_request(window, tmp_path / "batch")), tmp_path / "batch")
    tasks = json.loads(paths["tasks"].read_text())
    manifest = json.loads(paths["batch"].read_text())
    controls = control_names(manifest["policies"])
    rng = np.random.default_rng(0)
    given = {}
    for task in tasks[:-1]:  # the last task stays unlabeled
        ref = task["data"]["ref"]
        if ref in manifest["gold"]:  # one wrong answer per gold item, on its first policy
            known = manifest["gold"][ref]["labels"]
            given[ref] = {p: int(v) if i else 1 - int(v) for i, (p, v) in enumerate(known.items())}
        else:
            given[ref] = {p: int(rng.random() < 0.3) for p in manifest["policies"]}
    choices = {
        ref: {controls[p]: "yes" if v else "no" for p, v in labels.items()} for ref, labels in given.items()
    }
    return manifest, _export(tasks, choices, paths["labeling_config"].read_text()), given


def test_an_export_imports_back_as_the_labels_given(window, tmp_path: Path):
    manifest, export, given = _labeled_export(window, tmp_path)
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(export))
    logs = tmp_path / "logs"
    write(logs, window["rows"])
    result = import_review(export_file, tmp_path / "batch", logs)
    lines = [json.loads(line) for line in result.labels_file.read_text().splitlines()]
    assert result.labels_file == logs / "labels" / f"review-{manifest['batch_id']}.jsonl"
    window_refs = [ref for ref in given if ref in manifest["items"]]
    assert len(lines) == len(window_refs) == result.summary["labels_written"]
    for line, ref in zip(
        lines, [t["data"]["ref"] for t in export if t["data"]["ref"] in window_refs], strict=True
    ):
        key = manifest["items"][ref]
        assert line == {
            "request_id": key["request_id"],
            "item": key["item"],
            "labels": given[ref],
            "source": "review",
            "labeler": "7",
            "labeled_at": line["labeled_at"],
            "batch_id": manifest["batch_id"],
            "gold_disagreement": 0.25,  # the batch's gold check travels with its labels
            "sampling": {"stratum": key["stratum"], "weight": key["weight"]},
        }
        assert line["labeled_at"].startswith("2026-12-01T10:")
    # The log reader joins them; gold items are not labels, their disagreement is reported.
    frame = read_logs(logs).frame.set_index("request_id")
    for line in lines:
        assert {p: int(frame.loc[line["request_id"], f"label_{p}"]) for p in DEFAULT_POLICIES} == line[
            "labels"
        ]
    gold = result.summary["gold"]
    assert gold["tasks"] == len(manifest["gold"]) == 2 and gold["compared"] == 8
    assert gold["disagreement_rate"] == 0.25 and gold["per_labeler"]["7"]["disagreement_rate"] == 0.25
    assert result.summary["unlabeled_or_skipped"] == 1
    assert json.loads(result.summary_file.read_text())["gold"] == gold


def _broken(export: list[dict], how: str) -> list[dict] | dict:
    task = next(t for t in export if t["annotations"])
    result = task["annotations"][0]["result"]
    if how == "unknown task":
        task["data"]["ref"] = "rv-000000000000-9999"
    elif how == "missing choice":
        result.pop()
    elif how == "unknown policy":
        result[0]["from_name"] = "label_fraud"
    elif how == "bad value":
        result[0]["value"]["choices"] = ["maybe"]
    elif how == "not a list":
        return {"tasks": export}
    return export


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("unknown task", "not a task of this batch"),
        ("missing choice", "no choice for"),
        ("unknown policy", "'label_fraud' is not a policy of this batch"),
        ("bad value", "must be exactly one of"),
        ("not a list", "JSON list of tasks"),
    ],
)
def test_a_bad_export_names_the_task_and_writes_nothing(window, tmp_path: Path, how: str, message: str):
    manifest, export, _ = _labeled_export(window, tmp_path)
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(_broken(export, how)))
    logs = tmp_path / "logs"
    logs.mkdir()
    with pytest.raises(ReviewError, match=message) as error:
        import_review(export_file, tmp_path / "batch", logs)
    assert how == "not a list" or "task 0" in str(error.value) or "(id " in str(error.value)
    assert not (logs / "labels").exists() and not (tmp_path / "batch" / "import_summary.json").exists()


def test_the_cli_samples_imports_and_purges(window, tmp_path: Path, capsys):
    out = tmp_path / "batch"
    common = ["--logs", str(window["logs"]), "--budget", "20", "--content", str(window["content"])]
    assert (
        main(["review", "sample", *common, "--out", str(out), "--gold", str(window["gold"]), "--seed", "1"])
        == EXIT_OK
    )
    assert "review batch rv-" in capsys.readouterr().out
    assert main(["review", "sample", *common, "--out", str(out)]) == EXIT_FAILED
    assert "already holds a review batch" in capsys.readouterr().err
    assert (
        main(["review", "sample", *common[:2], "--budget", "0", "--out", str(tmp_path / "x")]) == EXIT_USAGE
    )
    assert (
        main(["review", "sample", *common[:4], "--content", "s3://b/c", "--out", str(tmp_path / "y")])
        == EXIT_FAILED
    )
    assert "implement serving.content_store.ContentStore" in capsys.readouterr().err
    rules = tmp_path / "rules.yaml"
    rules.write_text("uniform_share: 0.5\n")
    assert (
        main(["review", "sample", *common, "--out", str(tmp_path / "z"), "--rules", str(rules)]) == EXIT_USAGE
    )

    tasks = json.loads((out / "tasks.json").read_text())
    manifest = json.loads((out / "batch.json").read_text())
    controls = manifest["controls"]
    export = _export(
        tasks,
        {t["data"]["ref"]: dict.fromkeys(controls, "no") for t in tasks},
        (out / "labeling_config.xml").read_text(),
    )
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(export))
    logs = tmp_path / "logs"
    logs.mkdir()
    assert main(["review", "import", str(export_file), "--batch", str(out), "--logs", str(logs)]) == EXIT_OK
    assert "labels written" in capsys.readouterr().out
    export_file.write_text(json.dumps(_broken(export, "unknown policy")))
    assert (
        main(["review", "import", str(export_file), "--batch", str(out), "--logs", str(logs)]) == EXIT_FAILED
    )
    assert "nothing was imported" in capsys.readouterr().err
    assert main(["review", "purge", "--content", str(tmp_path / "empty")]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["deleted"] == 0


def test_review_rules_file_and_validation(tmp_path: Path):
    assert ReviewRules.from_yaml(ROOT / "configs" / "review_rules.yaml") == ReviewRules()
    assert ReviewRules().uniform_share == pytest.approx(0.3)
    assert ReviewRules.from_dict({"policy_quotas": {"hate": 2}}).quota_weight("hate") == 2.0
    for bad, message in (
        ({"gold_share": 1.5}, "gold_share must be in"),
        ({"uncertainty_share": 0.8}, "must leave a uniform share"),
        ({"shares": 1}, "unknown review rules key"),
        ({"policy_quotas": {"hate": -1}}, "policy_quotas.hate must be >= 0"),
        ({"uncertainty_around": "middle"}, "uncertainty_around must be one of"),
    ):
        with pytest.raises(ConfigError, match=message):
            ReviewRules.from_dict(bad)
    assert split_quota(7, {"a": 1.0, "b": 1.0, "c": 2.0}) == {"a": 2, "b": 2, "c": 3}


def test_thresholds_and_segments_from_the_logs(window):
    frame = read_logs(window["logs"]).frame
    thresholds = served_thresholds(frame, list(DEFAULT_POLICIES))["3"]
    for policy, value in thresholds.items():  # between the highest unflagged and lowest flagged score
        scores, flags = frame[f"score_{policy}"], frame[f"flag_{policy}"] > 0.5
        assert scores[~flags].max() <= value and (not flags.any() or value <= scores[flags].min())
    assert served_thresholds(frame.assign(flag_spam=0.0), ["spam"])["3"]["spam"] == frame["score_spam"].max()
    summary = {
        "signals": [
            {
                "name": "text_length",
                "kind": "numeric",
                "drifted": True,
                "reference_value": 20.0,
                "current_value": 40.0,
            },
            {
                "name": "flag_rate_spam",
                "kind": "flag_rate",
                "drifted": True,
                "reference_value": 0.01,
                "current_value": 0.08,
            },
            {
                "name": "flag_rate_hate",
                "kind": "flag_rate",
                "drifted": True,
                "reference_value": 0.2,
                "current_value": 0.1,
            },
        ]
    }
    segments, skipped = drift_segments(summary, frame)
    assert [s.signal for s in segments] == ["text_length", "flag_rate_spam"]
    assert (frame.loc[segments[0].mask, "text_length"] > 30).all() and frame.loc[
        segments[0].mask, "text_present"
    ].all()
    assert (frame.loc[segments[1].mask, "flag_spam"] == 1).all()
    assert skipped == ["flag_rate_hate: the flagged share did not rise"]
