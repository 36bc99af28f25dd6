"""The `preprocess` python-backend model in process, with a fake `triton_python_backend_utils`: one request's
failure answers that request only."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from core.common.constants import TRITON_INPUT_IMAGE, TRITON_INPUT_TEXT
from core.training.preprocessing import InvalidItem


@pytest.fixture
def backend_utils(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    class Tensor:
        def __init__(self, name: str, array: np.ndarray) -> None:
            self.name, self.array = name, array

        def as_numpy(self) -> np.ndarray:
            return self.array

    class TritonError:
        INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

        def __init__(self, message: str, code: str = "INTERNAL") -> None:
            self.message, self.code = message, code

    class InferenceResponse:
        def __init__(self, output_tensors=(), error=None) -> None:
            self.output_tensors, self.error = list(output_tensors), error

    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor, module.TritonError, module.InferenceResponse = Tensor, TritonError, InferenceResponse
    module.get_input_tensor_by_name = lambda request, name: Tensor(name, request[name])
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


class _Preprocessor:
    """Stands in for the real one: fails as a decoder bug would on 'crash', refuses 'bad', encodes the rest."""

    def serving_inputs(self, texts, images):
        if texts[0] == "crash":
            raise RuntimeError("decoder state corrupted")
        if texts[0] == "bad":
            raise InvalidItem(0, "text too long", "too_large")
        from serving.models.preprocess import OUTPUT_NAMES

        return {name: np.zeros((len(texts), 1), dtype=np.int64) for name in OUTPUT_NAMES}


def _request(text: str) -> dict:
    return {
        TRITON_INPUT_TEXT: np.array([[text.encode()]], dtype=object),
        TRITON_INPUT_IMAGE: np.array([[b""]], dtype=object),
    }


def test_an_unexpected_error_fails_only_its_own_request(backend_utils):
    """Finding: a non-InvalidItem exception from one co-batched request failed the whole batch."""
    from serving.models.preprocess import OUTPUT_NAMES, TritonPythonModel

    model = TritonPythonModel()
    model.preprocessor = _Preprocessor()
    responses = model.execute([_request("fine"), _request("crash"), _request("bad"), _request("also fine")])
    assert [r.error is None for r in responses] == [True, False, False, True]
    assert (
        responses[1].error.code == "INTERNAL"
        and "RuntimeError: decoder state corrupted" in responses[1].error.message
    )
    assert responses[2].error.code == "INVALID_ARG" and "bad request" in responses[2].error.message
    assert [t.name for t in responses[3].output_tensors] == list(OUTPUT_NAMES)
