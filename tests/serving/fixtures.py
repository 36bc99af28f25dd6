"""Session fixtures of the serving and monitoring tests (registered in tests/conftest.py): a tiny model exported to a Triton repository, and one tritonserver for it.

`exported_repository` runs the export path a training run takes (save, golden set, PyTorch reference, ONNX,
parity, repository) on a tiny random-init fusion model, once per session. `triton_server` serves that repository
from the serving env (`make setup` builds `.venv-serving`) with the CPU configs, once per session; a missing
serving env fails the tests that need it with the command that builds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.common.constants import DEFAULT_POLICIES, ONNX_MODEL_FILE, ONNX_OPSET
from tests.serving.helpers import (
    IMAGE_SIZE,
    MAX_TEXT_LENGTH,
    MODEL_NAME,
    MODEL_VERSION,
    TOLERANCE,
    ExportedRepository,
    golden_items,
)


@pytest.fixture(scope="session")
def exported_repository(
    tmp_path_factory: pytest.TempPathFactory, tiny_text_encoder: Path
) -> ExportedRepository:
    """Tiny BERT + CNN fusion model (4 default policies) saved, exported to ONNX and written as a repository."""
    import torch

    from core.config.run import ServingConfig
    from core.export.onnx_export import check_parity, export_onnx, reference_probabilities
    from core.training.model import build_model, save_model
    from core.training.preprocessing import PreprocessingSpec
    from serving.repository import ServedModel, write_model_repository

    root = tmp_path_factory.mktemp("exported")
    policies = list(DEFAULT_POLICIES)
    torch.manual_seed(0)
    model, sources = build_model(
        policies,
        str(tiny_text_encoder),
        "cnn",
        16,
        0.1,
        PreprocessingSpec(max_text_length=MAX_TEXT_LENGTH, image_size=IMAGE_SIZE),
    )
    with torch.no_grad():  # spread the random-init scores over (0, 1), so that items differ clearly
        for layer in model.head:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(2.0)
        model.missing_text.normal_()
        model.missing_image.normal_()
    model_dir = root / "model"
    save_model(model.eval(), model_dir, sources)

    golden = golden_items()
    golden.probabilities = reference_probabilities(model_dir, golden)
    onnx_path = export_onnx(model_dir, root / "onnx" / ONNX_MODEL_FILE, ONNX_OPSET)
    parity = check_parity(model_dir, onnx_path, golden, [1, 4, len(golden)], TOLERANCE)
    assert parity.passed, parity.describe()

    # Thresholds at each policy's median golden score, so that both flag values occur.
    thresholds = {p: round(float(np.median(golden.probabilities[:, j])), 6) for j, p in enumerate(policies)}
    repository = write_model_repository(
        root / "repository",
        model_dir,
        onnx_path,
        ServedModel(MODEL_NAME, MODEL_VERSION, policies, thresholds),
        ServingConfig(),
    )
    return ExportedRepository(repository, model_dir, onnx_path, golden, MODEL_VERSION, policies, thresholds)


@pytest.fixture(scope="session")
def serving_tns_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TNS_HOME of the session's servers (backend directory, logs)."""
    return tmp_path_factory.mktemp("triton_home")


@pytest.fixture(scope="session")
def triton_server(exported_repository: ExportedRepository, serving_tns_home: Path) -> Iterator:
    """One tritonserver (CPU configs, free ports, metrics endpoint) serving `exported_repository` for the whole
    session."""
    from serving.triton_install import TritonNotAvailable
    from serving.triton_server import TritonServer

    server = TritonServer(
        exported_repository.path, log_file=serving_tns_home / "tritonserver.log", metrics_port=0
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TNS_HOME", str(serving_tns_home))
        try:
            server.start()
        except TritonNotAvailable as error:
            pytest.fail(
                f"{error}\nThe serving tests run a real tritonserver from the serving env.", pytrace=False
            )
    try:
        yield server
    finally:
        server.stop()
