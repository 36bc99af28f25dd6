"""Golden compiled YAML: up to date, byte-identical across compiles, names the images and the GPU, no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from core.common.constants import (
    COMPONENT_IMAGE,
    SERVING_IMAGE,
    TRAINING_ACCELERATOR,
    TRAINING_GPU_IMAGE,
)
from core.common.env import COMPILED_PIPELINES_DIR
from pipelines.compile import check_all, compile_all


def test_committed_yaml_is_up_to_date():
    assert check_all() == []


def test_compile_is_byte_identical(tmp_path: Path):
    first = {p.name: p.read_bytes() for p in compile_all(tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in compile_all(tmp_path / "b")}
    assert first == second
    assert first["training.yaml"] == (COMPILED_PIPELINES_DIR / "training.yaml").read_bytes()


def test_check_reports_stale_file(tmp_path: Path):
    compile_all(tmp_path)
    stale = tmp_path / "training.yaml"
    stale.write_text(stale.read_text().replace("Ingest and fingerprint dataset", "Renamed step"))
    problems = check_all(tmp_path)
    assert len(problems) == 1 and "out of date" in problems[0] and "Renamed step" in problems[0]


def test_compiling_does_not_import_torch(tmp_path: Path):
    code = (
        "import sys; from pipelines.compile import compile_all; "
        f"compile_all(__import__('pathlib').Path({str(tmp_path)!r})); "
        "print('torch' in sys.modules, 'mlflow' in sys.modules, 'great_expectations' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


def _spec() -> dict:
    documents = list(yaml.safe_load_all((COMPILED_PIPELINES_DIR / "training.yaml").read_text()))
    return documents[0], documents[1:]


def test_yaml_names_images_and_requests_gpus_for_training_and_infra_validation():
    spec, platform = _spec()
    executors = spec["deploymentSpec"]["executors"]
    images = {name: executor["container"]["image"] for name, executor in executors.items()}
    assert images["exec-train-model"] == TRAINING_GPU_IMAGE
    assert images["exec-infra-validate"] == SERVING_IMAGE  # tritonserver with the project installed
    special = {"exec-train-model", "exec-infra-validate"}
    assert {image for name, image in images.items() if name not in special} == {COMPONENT_IMAGE}
    for name in special:
        accelerator = executors[name]["container"]["resources"]["accelerator"]
        assert accelerator["resourceType"] == TRAINING_ACCELERATOR and int(accelerator["resourceCount"]) == 1


def test_promotion_waits_for_export_and_infra_validation_inside_the_blessed_branch():
    spec, _ = _spec()
    blessed = next(
        c
        for name, c in spec["components"].items()
        if name.startswith("comp-condition") and "promote-model" in c.get("dag", {}).get("tasks", {})
    )
    tasks = blessed["dag"]["tasks"]
    assert set(tasks) >= {"register-model", "export-model", "infra-validate", "promote-model"}
    assert "register-model" in tasks["export-model"]["dependentTasks"]
    assert "export-model" in tasks["infra-validate"]["dependentTasks"]
    assert set(tasks["promote-model"]["dependentTasks"]) == {"infra-validate", "register-model"}
    validation = tasks["promote-model"]["inputs"]["artifacts"]["validation"]["taskOutputArtifact"]
    assert validation == {"outputArtifactKey": "validation", "producerTask": "infra-validate"}


def test_parameters_have_defaults_and_descriptions_and_tasks_have_display_names():
    spec, _ = _spec()
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    assert set(parameters) >= {"data_uri", "config_json", "policies", "force_promote", "force_reason"}
    for name, parameter in parameters.items():
        assert "defaultValue" in parameter or parameter.get("isOptional"), name
        assert parameter.get("description"), f"pipeline parameter {name} has no description"

    component_tasks = [
        (name, task)
        for component in [spec["root"], *spec["components"].values()]
        for name, task in component.get("dag", {}).get("tasks", {}).items()
        if not name.startswith("condition-branches")
    ]
    assert len(component_tasks) >= 12
    for name, task in component_tasks:
        assert task["taskInfo"]["name"] != name, f"task {name} has no display name"


def test_mlflow_credentials_come_from_a_kubernetes_secret_not_the_yaml():
    text = (COMPILED_PIPELINES_DIR / "training.yaml").read_text()
    _, platform = _spec()
    assert "mlflow-credentials" in text
    executors = platform[0]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert all(e["secretAsEnv"][0]["secretName"] == "mlflow-credentials" for e in executors.values())
    assert "MLFLOW_TRACKING_PASSWORD" in text
    assert "password:" not in text.lower()
