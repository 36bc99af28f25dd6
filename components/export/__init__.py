"""Export: ONNX conversion with a parity check, golden requests, and the Triton model repository."""
