"""Acceptance: the exported repository, served by a real tritonserver, answers like the PyTorch model.

Golden items go through the `content_safety` ensemble over HTTP and gRPC with `ContentSafetyClient`; scores must
equal PyTorch's within 1e-4, flags must be score >= threshold, and the decision must name the policies and the
registered version. The `preprocess` model is also queried on its own: its tensors must be identical to what the
training code's `Preprocessor.serving_inputs` computes in process. The generated configs are checked as Triton's
`ModelConfig` protobuf.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.common.constants import (
    EMBEDDING_DIM,
    MODALITY_BOTH,
    MODALITY_IMAGE,
    MODALITY_TEXT,
    MODEL_SPEC,
    SERVING_METADATA_FILE,
    TENSOR_ATTENTION_MASK,
    TENSOR_HAS_IMAGE,
    TENSOR_HAS_TEXT,
    TENSOR_IMAGE_EMBEDDING,
    TENSOR_INPUT_IDS,
    TENSOR_NGRAM_IDS,
    TENSOR_PIXEL_VALUES,
    TENSOR_PROBABILITIES,
    TENSOR_TEXT_EMBEDDING,
    TRITON_CLASSIFIER,
    TRITON_CPU_CONFIG,
    TRITON_ENSEMBLE,
    TRITON_INPUT_IMAGE,
    TRITON_INPUT_TEXT,
    TRITON_OUTPUT_DECISION,
    TRITON_OUTPUT_FLAGS,
    TRITON_OUTPUT_IMAGE_EMBEDDING,
    TRITON_OUTPUT_SCORES,
    TRITON_OUTPUT_TEXT_EMBEDDING,
    TRITON_POSTPROCESS,
    TRITON_PREPROCESS,
)
from core.config.run import ServingConfig
from serving.repository import ServedModel, parse, write_model_repository
from tests.serving.helpers import MODEL_NAME, TOLERANCE, png_bytes, url_of

CLASSIFIER_INPUTS = [
    TENSOR_INPUT_IDS,
    TENSOR_ATTENTION_MASK,
    TENSOR_PIXEL_VALUES,
    TENSOR_HAS_TEXT,
    TENSOR_HAS_IMAGE,
    TENSOR_NGRAM_IDS,
]
PROTOCOLS = ("http", "grpc")


@pytest.fixture(scope="module")
def metadata(exported_repository) -> dict:
    version = str(exported_repository.version)
    folder = exported_repository.path / TRITON_POSTPROCESS / version
    return json.loads((folder / SERVING_METADATA_FILE).read_text(encoding="utf-8"))


def _rows(golden, case: str) -> list[int]:
    if case == "batch":
        return list(range(len(golden)))
    return golden.indices(case)[:1]


# The ensemble against PyTorch -------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [MODALITY_TEXT, MODALITY_IMAGE, MODALITY_BOTH, "batch"])
def test_golden_items_score_like_pytorch(client, exported_repository, metadata, case):
    golden = exported_repository.golden
    rows = _rows(golden, case)
    predictions = client.classify([golden.texts[i] for i in rows], [golden.images[i] for i in rows])

    assert len(predictions) == len(rows)
    thresholds = metadata["thresholds"]
    assert metadata["policies"] == exported_repository.policies
    assert thresholds == exported_repository.thresholds
    for prediction, row in zip(predictions, rows, strict=True):
        assert list(prediction.scores) == golden.policies
        scores = np.asarray(list(prediction.scores.values()), dtype=np.float32)
        np.testing.assert_allclose(scores, golden.probabilities[row], rtol=0, atol=TOLERANCE)
        assert prediction.flags == {p: prediction.scores[p] >= thresholds[p] for p in golden.policies}
        assert prediction.action == ("flag" if any(prediction.flags.values()) else "allow")
        decision = prediction.decision
        assert list(decision["policies"]) == golden.policies
        assert decision["flagged_policies"] == prediction.flagged_policies
        assert decision["model_version"] == "3" == prediction.model_version
        assert decision["model_name"] == MODEL_NAME
        for policy in golden.policies:
            assert decision["policies"][policy]["threshold"] == pytest.approx(thresholds[policy])
            assert decision["policies"][policy]["flagged"] == prediction.flags[policy]


def test_both_flag_values_occur_on_the_golden_batch(client, exported_repository):
    golden = exported_repository.golden
    flags = [f for p in client.classify(golden.texts, golden.images) for f in p.flags.values()]
    assert True in flags and False in flags  # the thresholds really split the items


def test_raw_ensemble_outputs_have_the_declared_types(triton_server, exported_repository):
    """Without the client: SCORES fp32 (N, P), FLAGS bool (N, P), DECISION bytes (N, 1) over raw tritonclient."""
    import tritonclient.grpc as grpcclient

    golden = exported_repository.golden
    rows = list(range(4))
    texts = np.asarray([[(golden.texts[i] or "").encode()] for i in rows], dtype=object)
    images = np.asarray([[golden.images[i] or b""] for i in rows], dtype=object)
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        inputs = []
        for name, array in ((TRITON_INPUT_TEXT, texts), (TRITON_INPUT_IMAGE, images)):
            tensor = grpcclient.InferInput(name, list(array.shape), "BYTES")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer(TRITON_ENSEMBLE, inputs, model_version="3")
    finally:
        client.close()
    scores, flags = result.as_numpy(TRITON_OUTPUT_SCORES), result.as_numpy(TRITON_OUTPUT_FLAGS)
    decisions = result.as_numpy(TRITON_OUTPUT_DECISION)
    assert scores.dtype == np.float32 and scores.shape == (4, len(golden.policies))
    assert flags.dtype == np.bool_ and flags.shape == scores.shape
    assert decisions.shape == (4, 1)
    np.testing.assert_allclose(scores, golden.probabilities[rows], rtol=0, atol=TOLERANCE)
    assert [json.loads(d)["model_version"] for d in decisions.ravel()] == ["3"] * 4


# Preprocessing equivalence ----------------------------------------------------------------------------------
def _preprocessing_batch() -> tuple[list[str | None], list[bytes | None]]:
    long_text = " ".join(f"word{i} antidisestablishmentarianism" for i in range(2000))
    return (
        [
            "text only, no image",
            None,
            "text with an image",
            "Über straße ça va? 😂🔥 日本語のテキスト Ελληνικά",
            long_text,
            "   ",  # blank text: no text
            "rgba picture",
            "jpeg picture",
        ],
        [
            None,
            png_bytes(37, 23, 11),
            png_bytes(32, 32, 12),
            png_bytes(5, 80, 13, "L"),
            None,
            png_bytes(300, 200, 14, image_format="JPEG"),
            png_bytes(64, 64, 15, "RGBA"),
            png_bytes(50, 70, 16, image_format="JPEG"),
        ],
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_preprocess_model_tensors_are_identical_to_training_preprocessing(
    triton_server, exported_repository, protocol
):
    import importlib

    from core.training.preprocessing import Preprocessor

    module = importlib.import_module(f"tritonclient.{protocol}")
    texts, images = _preprocessing_batch()
    expected = Preprocessor.from_model_dir(exported_repository.model_dir).serving_inputs(texts, images)

    text_array = np.asarray([[(t or "").encode("utf-8")] for t in texts], dtype=object)
    image_array = np.asarray([[i or b""] for i in images], dtype=object)
    inputs = []
    for name, array in ((TRITON_INPUT_TEXT, text_array), (TRITON_INPUT_IMAGE, image_array)):
        tensor = module.InferInput(name, [len(texts), 1], "BYTES")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    client = module.InferenceServerClient(url_of(triton_server, protocol))
    try:
        result = client.infer(
            TRITON_PREPROCESS,
            inputs,
            model_version="3",
            outputs=[module.InferRequestedOutput(name) for name in CLASSIFIER_INPUTS],
        )
    finally:
        client.close()

    assert expected[TENSOR_INPUT_IDS].shape == (len(texts), exported_repository.max_text_length)
    for name in CLASSIFIER_INPUTS:
        served = result.as_numpy(name)
        assert served.dtype == expected[name].dtype, name
        np.testing.assert_array_equal(served, expected[name], err_msg=name)
    # The batch really covers the cases: truncated long text, blank text, image-only, text-only.
    assert expected[TENSOR_ATTENTION_MASK][4].all()
    assert result.as_numpy(TENSOR_HAS_TEXT).ravel().tolist() == [1, 0, 1, 1, 1, 0, 1, 1]
    assert result.as_numpy(TENSOR_HAS_IMAGE).ravel().tolist() == [0, 1, 1, 1, 0, 1, 1, 1]


# Generated configs ------------------------------------------------------------------------------------------
def _config(repository, model: str, name: str = "config.pbtxt"):
    folder = repository / model
    path = folder / name if name == "config.pbtxt" else folder / "configs" / f"{name}.pbtxt"
    return parse(path.read_text(encoding="utf-8"))


def test_gpu_classifier_config_is_the_production_file(exported_repository):
    from tritonclient.grpc import model_config_pb2 as pb

    config = _config(exported_repository.path, TRITON_CLASSIFIER)
    assert isinstance(config, pb.ModelConfig)
    assert config.name == TRITON_CLASSIFIER
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 64
    assert [group.kind for group in config.instance_group] == [pb.ModelInstanceGroup.KIND_GPU]
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert [i.name for i in config.input] == CLASSIFIER_INPUTS
    assert [o.name for o in config.output] == [
        TENSOR_PROBABILITIES,
        TENSOR_TEXT_EMBEDDING,
        TENSOR_IMAGE_EMBEDDING,
    ]
    assert list(config.output[0].dims) == [len(exported_repository.policies)]
    assert [list(o.dims) for o in config.output[1:]] == [[EMBEDDING_DIM], [EMBEDDING_DIM]]
    assert list(config.input[0].dims) == [-1]  # dynamic sequence axis
    assert not config.HasField("optimization")  # TensorRT is opt-in


def test_cpu_classifier_config_differs_only_in_the_instance_kind_and_threads(exported_repository):
    import os

    from tritonclient.grpc import model_config_pb2 as pb

    gpu = _config(exported_repository.path, TRITON_CLASSIFIER)
    cpu = _config(exported_repository.path, TRITON_CLASSIFIER, TRITON_CPU_CONFIG)
    assert [group.kind for group in cpu.instance_group] == [pb.ModelInstanceGroup.KIND_CPU]
    # One instance (the default) gets every core of the exporting host; one inter-op thread: the graph is a chain.
    threads = {key: value.string_value for key, value in cpu.parameters.items()}
    assert threads == {"intra_op_thread_count": str(os.cpu_count()), "inter_op_thread_count": "1"}
    assert cpu.default_model_filename == ""  # no int8 file: CPU hosts serve model.onnx
    del gpu.instance_group[:]
    del cpu.instance_group[:]
    cpu.ClearField("parameters")
    assert gpu == cpu


def test_cpu_threads_follow_the_setting_and_the_instances(exported_repository):
    from core.config.run import ServingConfig
    from serving.repository import classifier_config

    spec = json.loads((exported_repository.model_dir / MODEL_SPEC).read_text(encoding="utf-8"))
    for serving, expected in ((ServingConfig(cpu_threads=3), "3"), (ServingConfig(cpu_instances=64), "1")):
        config = classifier_config(spec, serving, "cpu")
        assert config.parameters["intra_op_thread_count"].string_value == expected
    assert not classifier_config(spec, ServingConfig(cpu_threads=3), "gpu").parameters


def test_python_models_run_on_cpu_instances(exported_repository):
    from tritonclient.grpc import model_config_pb2 as pb

    for model in (TRITON_PREPROCESS, TRITON_POSTPROCESS):
        config = _config(exported_repository.path, model)
        assert config.backend == "python"
        assert {group.kind for group in config.instance_group} == {pb.ModelInstanceGroup.KIND_CPU}
    preprocess = _config(exported_repository.path, TRITON_PREPROCESS)
    assert [i.name for i in preprocess.input] == [TRITON_INPUT_TEXT, TRITON_INPUT_IMAGE]
    assert [o.name for o in preprocess.output] == CLASSIFIER_INPUTS


def test_ensemble_wires_preprocess_classifier_postprocess_at_the_registered_version(exported_repository):
    config = _config(exported_repository.path, TRITON_ENSEMBLE)
    assert config.platform == "ensemble"
    assert [i.name for i in config.input] == [TRITON_INPUT_TEXT, TRITON_INPUT_IMAGE]
    assert [o.name for o in config.output] == [
        TRITON_OUTPUT_SCORES,
        TRITON_OUTPUT_FLAGS,
        TRITON_OUTPUT_DECISION,
        TRITON_OUTPUT_TEXT_EMBEDDING,
        TRITON_OUTPUT_IMAGE_EMBEDDING,
    ]
    steps = config.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [TRITON_PREPROCESS, TRITON_CLASSIFIER, TRITON_POSTPROCESS]
    assert [s.model_version for s in steps] == [3, 3, 3]
    # Every step reads only the ensemble's inputs or an earlier step's outputs; the last one makes the outputs.
    available = {i.name for i in config.input}
    for step in steps:
        model_inputs = {i.name for i in _config(exported_repository.path, step.model_name).input}
        assert set(step.input_map) == model_inputs, step.model_name
        assert set(step.input_map.values()) <= available, step.model_name
        available |= set(step.output_map.values())
    assert set(steps[0].output_map.values()) == set(CLASSIFIER_INPUTS)
    assert dict(steps[1].output_map) == {
        TENSOR_PROBABILITIES: TENSOR_PROBABILITIES,
        TENSOR_TEXT_EMBEDDING: TRITON_OUTPUT_TEXT_EMBEDDING,
        TENSOR_IMAGE_EMBEDDING: TRITON_OUTPUT_IMAGE_EMBEDDING,
    }
    served = set(steps[1].output_map.values()) - {TENSOR_PROBABILITIES}
    assert served | set(steps[2].output_map.values()) == {o.name for o in config.output}
    for model in (TRITON_PREPROCESS, TRITON_CLASSIFIER, TRITON_POSTPROCESS, TRITON_ENSEMBLE):
        assert (exported_repository.path / model / "3").is_dir(), model


def test_tensorrt_block_only_when_asked_for(exported_repository, tmp_path):
    served = ServedModel(
        MODEL_NAME, exported_repository.version, exported_repository.policies, exported_repository.thresholds
    )
    repository = write_model_repository(
        tmp_path / "trt",
        exported_repository.model_dir,
        exported_repository.onnx_path,
        served,
        ServingConfig(tensorrt_fp16=True),
    )
    gpu = _config(repository, TRITON_CLASSIFIER)
    accelerators = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accelerators] == ["tensorrt"]
    assert accelerators[0].parameters["precision_mode"] == "FP16"
    assert not _config(repository, TRITON_CLASSIFIER, TRITON_CPU_CONFIG).HasField("optimization")
    # The default export mentions the option only as a comment.
    default_text = (exported_repository.path / TRITON_CLASSIFIER / "config.pbtxt").read_text()
    assert "tensorrt" in default_text
    assert not _config(exported_repository.path, TRITON_CLASSIFIER).HasField("optimization")
