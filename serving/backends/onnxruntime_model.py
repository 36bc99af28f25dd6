"""Stand-in for Triton's C++ onnxruntime backend, for hosts where it is not installed (the CPU dev machine).

What it stands in for: the `onnxruntime` backend that a Triton image ships as `backends/onnxruntime/
libtriton_onnxruntime.so`, which serves model folders whose `config.pbtxt` says `platform: "onnxruntime_onnx"`
(or `backend: "onnxruntime"`). `serving/triton_install.py` copies this file to
`<backend-dir>/onnxruntime/model.py`; Triton then loads the folder as a python-based backend, and the python
backend stub runs this TritonPythonModel.

It serves model folders laid out exactly for the real backend: `config.pbtxt` with
`platform: "onnxruntime_onnx"` and `<version>/model.onnx` (or `<version>/<default_model_filename>`). Where the
real `libtriton_onnxruntime.so` is present, as on a Triton image, that backend takes precedence and the same
repository is served by it, unchanged.

Limits, compared with the real backend:
- CPU execution provider only, whatever the instance kind; no TensorRT or CUDA, no graph optimization settings
  beyond onnxruntime's defaults. Threads: the real backend's `intra_op_thread_count` and
  `inter_op_thread_count` config parameters are honoured.
- No sequence batching, no decoupled models, no ragged batching, no `reshape` of tensors.
- String (BYTES) inputs are decoded as UTF-8 for onnxruntime. This path is not exercised by the tests: the
  project's ONNX models take numeric tensors only.
- It runs as a python-backend model, so every request crosses the stub's shared memory: slower than in-process.

It checks the config against the model at load time (names, data types, ranks, a dynamic first dimension when
the config batches), as the real backend does, so a mismatched repository fails to load with the reason. At
inference, it concatenates each input across the requests that Triton's dynamic batcher hands it (in groups of
equal non-batch shapes), runs each group once, splits the outputs back per request, and answers a bad request
with an error response without failing the others.

It runs inside the serving env (numpy<2), imported by the python backend stub; `triton_python_backend_utils`
is importable there only, so it is imported inside the methods.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_MODEL_FILENAME = "model.onnx"  # the real backend's default file name
INTRA_OP_THREADS_PARAMETER = "intra_op_thread_count"  # parameter keys of the real backend
INTER_OP_THREADS_PARAMETER = "inter_op_thread_count"

# Triton data type -> (numpy dtype, onnxruntime type string).
DATA_TYPES: dict[str, tuple[Any, str]] = {
    "TYPE_BOOL": (np.bool_, "tensor(bool)"),
    "TYPE_UINT8": (np.uint8, "tensor(uint8)"),
    "TYPE_UINT16": (np.uint16, "tensor(uint16)"),
    "TYPE_UINT32": (np.uint32, "tensor(uint32)"),
    "TYPE_UINT64": (np.uint64, "tensor(uint64)"),
    "TYPE_INT8": (np.int8, "tensor(int8)"),
    "TYPE_INT16": (np.int16, "tensor(int16)"),
    "TYPE_INT32": (np.int32, "tensor(int32)"),
    "TYPE_INT64": (np.int64, "tensor(int64)"),
    "TYPE_FP16": (np.float16, "tensor(float16)"),
    "TYPE_FP32": (np.float32, "tensor(float)"),
    "TYPE_FP64": (np.float64, "tensor(double)"),
    "TYPE_STRING": (np.object_, "tensor(string)"),
}


class ModelConfigError(ValueError):
    """The model config does not fit the ONNX model (or asks for what this stand-in cannot do)."""


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of the model config.

    Attributes:
        name: tensor name, the same in the config and the ONNX model.
        data_type: Triton data type, e.g. `TYPE_FP32`.
        dims: dimensions without the batch dimension (-1: variable).
        optional: whether requests may leave this input out.
    """

    name: str
    data_type: str
    dims: tuple[int, ...]
    optional: bool = False

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the tensor."""
        return np.dtype(DATA_TYPES[self.data_type][0])

    @property
    def onnx_type(self) -> str:
        """The onnxruntime type string of the tensor, e.g. `tensor(float)`."""
        return DATA_TYPES[self.data_type][1]

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> TensorSpec:
        """Reads one entry of the config's `input` or `output` list (JSON form).

        Raises:
            ModelConfigError: for a data type without an onnxruntime equivalent.
        """
        data_type = entry.get("data_type", "")
        if data_type not in DATA_TYPES:
            raise ModelConfigError(f"tensor '{entry.get('name')}': data type {data_type!r} is not supported")
        dims = tuple(int(dim) for dim in entry.get("dims", ()))
        return cls(entry["name"], data_type, dims, bool(entry.get("optional", False)))


def model_file(args: dict[str, str], config: dict[str, Any]) -> Path:
    """Returns the ONNX file: `<model folder>/<version>/<default_model_filename or model.onnx>`.

    As with the real backend, the file may also be a folder that holds `model.onnx`.
    """
    name = config.get("default_model_filename") or DEFAULT_MODEL_FILENAME
    path = Path(args["model_repository"]) / str(args["model_version"]) / name
    return path / DEFAULT_MODEL_FILENAME if path.is_dir() else path


def _parameter(config: dict[str, Any], key: str) -> str | None:
    value = config.get("parameters", {}).get(key)
    return value.get("string_value") if isinstance(value, dict) else None


def _is_dynamic(dim: Any) -> bool:
    return not isinstance(dim, int) or dim < 0


def check_signature(session: Any, inputs: list[TensorSpec], outputs: list[TensorSpec], batched: bool) -> None:
    """Checks the config's tensors against the ONNX model's, as the real backend does at load time.

    Args:
        session: the `onnxruntime.InferenceSession`.
        inputs: the config's inputs.
        outputs: the config's outputs.
        batched: whether the config's `max_batch_size` is above 0 (the first model dimension is then the batch).

    Raises:
        ModelConfigError: naming the first tensor that does not fit.
    """
    model_inputs = {tensor.name: tensor for tensor in session.get_inputs()}
    model_outputs = {tensor.name: tensor for tensor in session.get_outputs()}
    missing = sorted(set(model_inputs) - {spec.name for spec in inputs})
    if missing:
        raise ModelConfigError(f"the model needs inputs that the config does not declare: {missing}")
    for kind, specs, model_tensors in (("input", inputs, model_inputs), ("output", outputs, model_outputs)):
        for spec in specs:
            tensor = model_tensors.get(spec.name)
            if tensor is None:
                raise ModelConfigError(
                    f"{kind} '{spec.name}' is not in the model, whose {kind}s are {sorted(model_tensors)}"
                )
            if tensor.type != spec.onnx_type:
                raise ModelConfigError(
                    f"{kind} '{spec.name}': the config says {spec.data_type}, the model has {tensor.type}"
                )
            shape = list(tensor.shape or [])
            if batched:
                if not shape or not _is_dynamic(shape[0]):
                    raise ModelConfigError(
                        f"{kind} '{spec.name}': with max_batch_size > 0 the model's first dimension must be "
                        f"dynamic (the batch), but the model shape is {shape}"
                    )
                shape = shape[1:]
            if len(shape) != len(spec.dims) or any(
                not _is_dynamic(model_dim) and config_dim not in (-1, model_dim)
                for model_dim, config_dim in zip(shape, spec.dims, strict=True)
            ):
                raise ModelConfigError(
                    f"{kind} '{spec.name}': config dims {list(spec.dims)} do not fit the model shape "
                    f"{list(tensor.shape)}{' (first dimension: the batch)' if batched else ''}"
                )


def group_by_shape(feeds: dict[int, dict[str, np.ndarray]], batched: bool) -> list[list[int]]:
    """Groups requests that can run as one batch: same inputs, dtypes and non-batch shapes, in request order.

    Args:
        feeds: request index -> input name -> array.
        batched: whether the first dimension is the batch; without it every request runs alone.

    Returns:
        Lists of request indices.
    """
    groups: dict[Any, list[int]] = {}
    for index, arrays in feeds.items():
        key = (
            tuple(sorted((name, array.dtype.str, array.shape[1:]) for name, array in arrays.items()))
            if batched
            else index
        )
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _to_onnxruntime(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    if spec.data_type != "TYPE_STRING":
        return array
    decoded = [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in array.ravel()]
    return np.array(decoded, dtype=np.object_).reshape(array.shape)


class TritonPythonModel:
    """Runs one ONNX model with onnxruntime on CPU, batching the requests Triton hands over together."""

    def initialize(self, args: dict[str, str]) -> None:
        """Reads the model config, opens the ONNX file and checks that they fit.

        Args:
            args: what the python backend passes: `model_config` (JSON), `model_repository` (the model's
                folder), `model_version`, `model_name`, ...

        Raises:
            FileNotFoundError: when the ONNX file is missing.
            ModelConfigError: when the config does not fit the model.
        """
        import onnxruntime

        config = json.loads(args["model_config"])
        self.model_name = args.get("model_name", config.get("name", "?"))
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.inputs = [TensorSpec.from_config(entry) for entry in config.get("input", [])]
        self.outputs = [TensorSpec.from_config(entry) for entry in config.get("output", [])]
        if config.get("sequence_batching") or config.get("model_transaction_policy", {}).get("decoupled"):
            raise ModelConfigError("sequence batching and decoupled models are not supported by the stand-in")
        path = model_file(args, config)
        if not path.is_file():
            raise FileNotFoundError(f"model '{self.model_name}': no ONNX file at {path}")
        options = onnxruntime.SessionOptions()
        for key, attribute in (
            (INTRA_OP_THREADS_PARAMETER, "intra_op_num_threads"),
            (INTER_OP_THREADS_PARAMETER, "inter_op_num_threads"),
        ):
            value = _parameter(config, key)
            if value:
                setattr(options, attribute, int(value))
        self.session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        check_signature(self.session, self.inputs, self.outputs, self.batched)
        self.output_names = [spec.name for spec in self.outputs]
        self._log(
            f"model '{self.model_name}': {path.name} on onnxruntime {onnxruntime.__version__} (CPU), "
            "python stand-in for the onnxruntime backend"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        """Answers each request: one onnxruntime run per group of requests with equal non-batch shapes.

        Args:
            requests: `pb_utils.InferenceRequest`s, several at once under dynamic batching.

        Returns:
            One `pb_utils.InferenceResponse` per request, in order; a failed request gets an error response.
        """
        import triton_python_backend_utils as pb_utils

        responses: list[Any] = [None] * len(requests)
        feeds: dict[int, dict[str, np.ndarray]] = {}
        for index, request in enumerate(requests):
            try:
                feeds[index] = self._read_inputs(request)
            except Exception as error:  # a bad request must not fail the others
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error)))
        for group in group_by_shape(feeds, self.batched):
            self._run_group(group, feeds, responses)
        return responses

    def finalize(self) -> None:
        """Releases the onnxruntime session."""
        self.session = None

    def _read_inputs(self, request: Any) -> dict[str, np.ndarray]:
        import triton_python_backend_utils as pb_utils

        arrays: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
            if tensor is None:
                if spec.optional:
                    continue
                raise ValueError(f"model '{self.model_name}': missing input '{spec.name}'")
            array = tensor.as_numpy()
            if spec.data_type != "TYPE_STRING" and array.dtype != spec.dtype:
                raise ValueError(
                    f"model '{self.model_name}': input '{spec.name}' has dtype {array.dtype}, "
                    f"expected {spec.dtype} ({spec.data_type})"
                )
            arrays[spec.name] = _to_onnxruntime(array, spec)
        if self.batched:
            batch_sizes = {name: array.shape[0] if array.ndim else None for name, array in arrays.items()}
            if None in batch_sizes.values() or len(set(batch_sizes.values())) > 1:
                raise ValueError(
                    f"model '{self.model_name}': inputs disagree on the batch dimension: {batch_sizes}"
                )
        return arrays

    def _run_group(
        self, group: list[int], feeds: dict[int, dict[str, np.ndarray]], responses: list[Any]
    ) -> None:
        """Runs the requests of one group as one batch and fills their responses.

        When a batch of several requests fails, each request is run alone, so that only the bad ones fail.
        """
        import triton_python_backend_utils as pb_utils

        try:
            per_request = self._run_batch([feeds[index] for index in group])
        except Exception as error:
            if len(group) > 1:
                for index in group:
                    self._run_group([index], feeds, responses)
                return
            responses[group[0]] = pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"model '{self.model_name}': {error}")
            )
            return
        for index, outputs in zip(group, per_request, strict=True):
            tensors = [
                pb_utils.Tensor(spec.name, np.ascontiguousarray(array.astype(spec.dtype, copy=False)))
                for spec, array in zip(self.outputs, outputs, strict=True)
            ]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)

    def _run_batch(self, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """Runs a list of requests' inputs as one batch; returns each request's outputs in config order."""
        if len(feeds) == 1:
            return [self.session.run(self.output_names, feeds[0])]
        batch_sizes = [next(iter(arrays.values())).shape[0] for arrays in feeds]
        joined = {name: np.concatenate([arrays[name] for arrays in feeds]) for name in feeds[0]}
        outputs = self.session.run(self.output_names, joined)
        total = sum(batch_sizes)
        for name, output in zip(self.output_names, outputs, strict=True):
            if output.ndim == 0 or output.shape[0] != total:
                raise ValueError(f"output '{name}' has shape {output.shape}, not a batch of {total}")
        bounds = np.cumsum(batch_sizes)[:-1]
        split = [np.split(output, bounds) for output in outputs]
        return [[parts[position] for parts in split] for position in range(len(feeds))]

    @staticmethod
    def _log(message: str) -> None:
        import triton_python_backend_utils as pb_utils

        logger = getattr(pb_utils, "Logger", None)
        if logger is not None:
            logger.log_info(message)
