"""Inference: the onnxruntime engine, the pipeline that pairs it with the prior, ONNX export (fp32, fp16, int8),
checkpoints, the processing resolution, and the dual-modal models (a real thermal camera present)."""
