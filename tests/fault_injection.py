"""Faults injected into real parts, for tests that prove a failure blocks promotion."""

from __future__ import annotations

from pathlib import Path


def broken_onnxruntime_backends(folder: Path) -> Path:
    """A Triton backend directory (for `$TNS_TRITON_BACKENDS`) whose onnxruntime backend fails to load any
    model, as a Triton image with an incompatible onnxruntime would."""
    from serving.triton_install import prepare_backend_dir

    backends = prepare_backend_dir(folder)
    stand_in = backends / "onnxruntime" / "model.py"
    stand_in.unlink()
    stand_in.write_text(
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise RuntimeError('this onnxruntime cannot read the model (injected failure)')\n",
        encoding="utf-8",
    )
    return backends
