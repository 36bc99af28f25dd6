"""Infra validation against a real tritonserver: a served answer that is NaN fails, however close the other
scores are (`max` and `>` ignore NaN, so a NaN used to pass the tolerance check)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from core.common.constants import ONNX_MODEL_FILE, TRITON_CLASSIFIER, TRITON_CPU_CONFIG
from serving.infra_validation import infra_validate
from tests.serving.helpers import TOLERANCE


def _with_nan_head(repository: Path, version: int, target: Path) -> Path:
    """A copy of the repository whose classifier's last bias is NaN: every served probability is NaN."""
    import onnx
    from onnx import numpy_helper

    shutil.copytree(repository, target)
    path = target / TRITON_CLASSIFIER / str(version) / ONNX_MODEL_FILE
    model = onnx.load(str(path))
    (bias,) = [i for i in model.graph.initializer if i.name == "classifier.head.6.bias"]
    bias.CopyFrom(
        numpy_helper.from_array(np.full(numpy_helper.to_array(bias).shape, np.nan, np.float32), bias.name)
    )
    onnx.save(model, str(path))
    return target


def test_nan_served_scores_fail_infra_validation(exported_repository, tmp_path: Path):
    healthy = infra_validate(
        exported_repository.path, exported_repository.golden, str(exported_repository.version), TOLERANCE,
        TRITON_CPU_CONFIG, latency_requests=2,
    )  # fmt: skip
    assert healthy.passed, healthy.to_markdown()
    broken = _with_nan_head(exported_repository.path, exported_repository.version, tmp_path / "nan")
    report = infra_validate(
        broken, exported_repository.golden, str(exported_repository.version), TOLERANCE, TRITON_CPU_CONFIG,
        latency_requests=2,
    )  # fmt: skip
    assert not report.passed
    failed = [check for check in report.checks if not check.passed]
    assert failed and all("non-finite score(s) (NaN or inf)" in check.detail for check in failed)
    assert {check.name.split()[0] for check in failed} == {"http", "grpc"}
