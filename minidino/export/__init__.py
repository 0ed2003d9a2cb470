"""Leaving eager PyTorch: torch.export programs and ONNX files with a free image size, the runtimes
porters use (targets.export_model: ONNX Runtime, OpenVINO, ExecuTorch, CoreML, the portable NPU
graph) with their precisions and operator reports, the accuracy of a path on the user's images,
the dino.txt encoders' export, and `optimize` (compiled, reduced-precision PyTorch). Each runtime
is imported only inside the functions that use it (extras.py says which extra brings which)."""

from .program import default_outputs, export_onnx, export_program

__all__ = ["export_onnx", "export_program", "default_outputs"]
