"""The TrainJob the train step submits on a cluster (`train.launcher: trainjob`), against a loopback fake of the
Kubernetes API that checks it with the Kubeflow Trainer API's models (`tests/training_fakes/k8s_fake.py`).

No Kubernetes runs here, so the fake stands in for the API server, and this machine stands in for the nodes:
when the TrainJob is created, its own command (from the submitted body, with the environment it sets) runs here
under torchrun as the `torch-distributed` runtime would start it, two processes on one node. The step follows
the job through the real Kubeflow SDK (`TrainerClient`), passes its log on, and fetches what rank 0 published.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import kubernetes.client
import mlflow
import pytest
from kubeflow.trainer import KubernetesBackendConfig, TrainerClient
from mlflow.tracking import MlflowClient

from components.training.executor import training_step
from core.common.constants import MLFLOW_SECRET, MODEL_WEIGHTS, TRAINING_SUMMARY_FILE
from core.config.run import RunConfig
from core.training import trainjob
from core.training.trainjob import CONFIG_ENV
from tests.training_fakes.k8s_fake import FakeKubernetes, Outcome

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
# What this project's TrainJob must carry beside what the API requires (dropping any one must fail the test).
CONTRACT_FIELDS = (
    ("spec", "trainer", "image"),
    ("spec", "trainer", "command"),
    ("spec", "trainer", "numNodes"),
    ("spec", "trainer", "resourcesPerNode"),
    ("spec", "trainer", "env"),
    ("spec", "runtimePatches"),
)
API_FIELDS = (("apiVersion",), ("metadata", "name"), ("spec", "runtimeRef"), ("spec", "runtimeRef", "name"))


def _get(body: dict, path: tuple[str, ...]):
    for key in path:
        body = body.get(key) if isinstance(body, dict) else None
    return body


def contract_problems(body: dict) -> list[str]:
    """This project's TrainJob contract: the fields above, GPUs per node, the config and the secret by reference."""
    problems = [f"{'.'.join(path)}: missing" for path in CONTRACT_FIELDS if not _get(body, path)]
    trainer = _get(body, ("spec", "trainer")) or {}
    limits = (trainer.get("resourcesPerNode") or {}).get("limits") or {}
    if "nvidia.com/gpu" not in limits:
        problems.append("spec.trainer.resourcesPerNode: no nvidia.com/gpu")
    if CONFIG_ENV not in {entry.get("name") for entry in trainer.get("env") or []}:
        problems.append(f"spec.trainer.env: no {CONFIG_ENV}")
    secret_refs = json.dumps(_get(body, ("spec", "runtimePatches")) or [])
    if f'"name": "{MLFLOW_SECRET}"' not in secret_refs or '"value": "http' in secret_refs:
        problems.append("spec.runtimePatches: the MLflow secret is not given by reference")
    return problems


def run_like_the_runtime(body: dict) -> list[str]:
    """Runs the TrainJob's command here as the torch runtime would on one node of two processes."""
    trainer = body["spec"]["trainer"]
    command = trainer["command"]
    assert command[0] == "torchrun"
    env = {**os.environ, **{entry["name"]: entry["value"] for entry in trainer["env"]}}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run(launcher + command[1:], env=env, capture_output=True, text=True, timeout=600)
    return [] if done.returncode == 0 else [f"the TrainJob's command failed here: {done.stderr[-2000:]}"]


def _config(text_encoder: Path) -> dict:
    config = RunConfig().with_overrides(
        **{
            "train.text_encoder": str(text_encoder),
            "train.image_encoder": "cnn",
            "train.image_size": 16,
            "train.hidden_dim": 16,
            "train.lexical_buckets": 4096,
            "train.epochs": 2,
            "train.batch_size": 16,
            "train.workers": 2,
            "train.launcher": "trainjob",
        }
    )
    return config


@pytest.fixture(scope="module")
def submitted(tmp_path_factory, tiny_dataset, tiny_text_encoder):
    """The train step with a TrainJob on the fake cluster: (fake, step outputs, model folder, log lines)."""
    dataset_dir, splits_dir = tiny_dataset
    root = tmp_path_factory.mktemp("trainjob")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch, FakeKubernetes(extra_checks=[contract_problems]) as fake:
        patch.setattr(trainjob, "POLL_SECONDS", 1)
        patch.setenv("TNS_HOME", str(root / "home"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        fake.extra_checks.append(run_like_the_runtime)  # after the contract: only a valid job "runs"
        fake.outcome = Outcome(
            status="Complete", polls_until_done=2, log_lines=["epoch 1: ...", "epoch 2: ..."]
        )
        client = TrainerClient(
            KubernetesBackendConfig(
                namespace=fake.namespace, client_configuration=fake.client_configuration()
            )
        )
        model_dir = root / "model"
        run_id, summary = training_step(
            dataset_dir,
            splits_dir,
            _config(tiny_text_encoder),
            model_dir,
            tracking_uri=uri,
            artifact_uris=(str(dataset_dir), str(splits_dir), str(model_dir)),
            trainer_client=client,
        )
        fake.extra_checks.remove(run_like_the_runtime)  # later bodies are only checked
        history = MlflowClient(uri).get_metric_history(run_id, "validation_loss")
        yield {"fake": fake, "summary": summary, "model": model_dir, "history": history, "client": client}
        mlflow.set_tracking_uri(None)


def test_the_step_trains_through_a_trainjob_and_fetches_the_model(submitted):
    fake = submitted["fake"]
    assert fake.violations == []
    assert len(fake.trainjobs) == 1
    assert (submitted["model"] / MODEL_WEIGHTS).is_file()
    assert (submitted["model"] / TRAINING_SUMMARY_FILE).is_file()
    assert submitted["summary"]["world_size"] == 2 and submitted["summary"]["epochs_run"] == 2
    assert sorted(m.step for m in submitted["history"]) == [
        1,
        2,
    ]  # rank 0 logged each epoch to the step's run
    methods = [(r["method"], r["path"].rsplit("/", 2)[-2]) for r in fake.requests]
    assert ("POST", "namespaces") not in methods  # nothing but the TrainJob was created
    assert any(r["method"] == "GET" and "/log" in r["path"] for r in fake.requests)  # node 0's log followed


def test_the_trainjob_names_the_image_resources_command_and_secret(submitted):
    (body,) = submitted["fake"].trainjobs.values()
    trainer = body["spec"]["trainer"]
    assert body["spec"]["runtimeRef"] == {"name": "torch-distributed", "kind": "ClusterTrainingRuntime"}
    assert trainer["image"].endswith("tns-pipelines-gpu:0.1.0") and trainer["numNodes"] == 1
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 2
    assert trainer["command"][:3] == ["torchrun", "--max-restarts", "1"]
    assert "core.training.launch" in trainer["command"]
    env = {entry["name"]: entry["value"] for entry in trainer["env"]}
    assert json.loads(env[CONFIG_ENV])["train"]["workers"] == 2
    assert "MLFLOW_TRACKING_URI" not in env  # by reference only
    assert body["spec"]["activeDeadlineSeconds"] == 1440 * 60
    assert "sqlite" not in json.dumps(body)  # no local MLflow location or secret value travels


@pytest.mark.parametrize("path", API_FIELDS + CONTRACT_FIELDS, ids=lambda p: ".".join(p))
def test_a_trainjob_without_a_required_field_is_refused(submitted, path):
    fake = submitted["fake"]
    (body,) = fake.trainjobs.values()
    broken = copy.deepcopy(body)
    broken["metadata"] = {"name": f"broken-{len(fake.requests)}"}
    if path == ("metadata", "name"):
        broken["metadata"] = {}
    else:
        parent = _get(broken, path[:-1]) if len(path) > 1 else broken
        del parent[path[-1]]
    api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(fake.client_configuration()))
    known = len(fake.violations)
    with pytest.raises(kubernetes.client.ApiException) as refused:
        api.create_namespaced_custom_object(GROUP, VERSION, fake.namespace, PLURAL, broken)
    assert refused.value.status == 422
    assert any(path[-1] in problem for problem in fake.violations[known:]), fake.violations[known:]


def test_a_failed_trainjob_fails_the_step_with_its_events(tmp_path, tiny_dataset, tiny_text_encoder):
    dataset_dir, splits_dir = tiny_dataset
    with pytest.MonkeyPatch.context() as patch, FakeKubernetes() as fake:
        patch.setattr(trainjob, "POLL_SECONDS", 1)
        patch.setenv("TNS_HOME", str(tmp_path / "home"))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        fake.outcome = Outcome(
            status="Failed",
            polls_until_done=1,
            log_lines=["epoch 1: train_loss=0.9", "RuntimeError: CUDA out of memory"],
            events=[("BackoffLimitExceeded", "Job has reached the specified backoff limit", "Warning")],
        )
        client = TrainerClient(
            KubernetesBackendConfig(
                namespace=fake.namespace, client_configuration=fake.client_configuration()
            )
        )
        model_dir = tmp_path / "model"
        with pytest.raises(RuntimeError, match="(?s)failed.*BackoffLimitExceeded.*CUDA out of memory"):
            training_step(
                dataset_dir,
                splits_dir,
                _config(tiny_text_encoder),
                model_dir,
                tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                artifact_uris=(str(dataset_dir), str(splits_dir), str(model_dir)),
                trainer_client=client,
            )
        mlflow.set_tracking_uri(None)
    assert not model_dir.exists()
