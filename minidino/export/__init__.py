"""Leaving eager PyTorch: torch.export programs and ONNX files with a free image size, the dino.txt
encoders' export, and `optimize` (compiled, reduced-precision PyTorch)."""

from .program import default_outputs, export_onnx, export_program

__all__ = ["export_onnx", "export_program", "default_outputs"]
