"""torch -> ONNX -> TensorRT export, parity checks and the export manifest."""
