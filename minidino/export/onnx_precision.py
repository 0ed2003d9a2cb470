"""Reduced precision for ONNX files, with the tools that ship inside onnxruntime (no other package).

    int8-dynamic  int8 weights (per output channel) on every MatMul, activations quantized at run
                  time (MatMulInteger + DynamicQuantizeLinear): no calibration
    int8          static QDQ: int8 weights and activations on the MatMul and Conv nodes only,
                  activation ranges calibrated on the images the caller gives
    float16       every float32 weight and activation as float16, graph inputs and outputs kept
                  float32 (keep_io_types)

All three keep the free batch and image size of minidino's ONNX graph. Measured on ViT-S/14
(random weights, full depth, docs/porting.md): cls cosine 0.9994 (int8-dynamic), 0.9991 (int8),
0.9999998 (float16). Quantizing every op type instead drops the static QDQ to 0.93: LayerNorm,
Softmax and the residual Adds stay float on purpose.

Traps met (kept out of the way here):
- both quantizers log "Please consider to run pre-processing before quantization"
  (quant_pre_process); skipping it did no harm on these graphs, so the warning is silenced.
- per_channel=True on a LayerNorm weight logs "Axis 1 is out-of-range for weight ... rank 1"
  once per LayerNorm: restricting the quantized op types to MatMul (and Conv) avoids it.
- a model over 2 GB (ViT-g) must be written with external data: done by size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.atomic import atomic_write_files
from .extras import quiet_logger, require

__all__ = ["convert_onnx", "quantize_dynamic_int8", "quantize_static_int8", "convert_float16", "save_onnx", "PRECISIONS"]

PRECISIONS = ("float16", "int8", "int8-dynamic")

_TWO_GB = 2**31 - 2**26  # protobuf's limit, with room for the graph itself


def _external(src: Path) -> bool:
    """Whether a model this large needs external data (>~2 GB of weights)."""
    data = src.with_name(src.name + ".data")
    return src.stat().st_size + (data.stat().st_size if data.exists() else 0) > _TWO_GB


def quantize_dynamic_int8(src: str | Path, dst: str | Path) -> Path:
    """int8-dynamic: int8 per-channel weights on the MatMuls, activations quantized at run time.

    Examples:
        >>> quantize_dynamic_int8("vits14.onnx", "vits14_int8.onnx")               # doctest: +SKIP
        PosixPath('vits14_int8.onnx')
    """
    q = require("onnxruntime.quantization", "int8 quantization of an ONNX file")
    src, dst = Path(src), Path(dst)
    with quiet_logger(None, logging.ERROR):  # the root logger's "Please consider to run pre-processing"
        atomic_write_files(dst, lambda tmp: q.quantize_dynamic(
            str(src), str(tmp), weight_type=q.QuantType.QInt8, op_types_to_quantize=["MatMul"], per_channel=True,
            use_external_data_format=_external(src)))
    return dst


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over a list of (B, 3, H, W) float32 arrays."""

    def __init__(self, batches: Sequence[np.ndarray]) -> None:
        self._it = iter([{"x": np.ascontiguousarray(b, dtype=np.float32)} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_static_int8(src: str | Path, dst: str | Path, calibration: Sequence[Any]) -> Path:
    """int8 (static QDQ) on MatMul and Conv, activation ranges calibrated on `calibration`:
    (B, 3, H, W) float32 batches (tensors or arrays), preprocessed as the model's inputs are.

    Examples:
        >>> images = [torch.randn(1, 3, 224, 224) for _ in range(8)]             # your own images, normalised
        >>> quantize_static_int8("vits14.onnx", "vits14_qdq.onnx", images)       # doctest: +SKIP
        PosixPath('vits14_qdq.onnx')
    """
    q = require("onnxruntime.quantization", "int8 quantization of an ONNX file")
    if not calibration:
        raise ValueError("static int8 needs calibration images: give a few (8-32) images like the ones the model will see")
    batches = [np.asarray(b.numpy() if hasattr(b, "numpy") else b, dtype=np.float32) for b in calibration]
    src, dst = Path(src), Path(dst)
    with quiet_logger(None, logging.ERROR):  # the root logger's "Please consider to run pre-processing"
        atomic_write_files(dst, lambda tmp: q.quantize_static(
            str(src), str(tmp), _Batches(batches), quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Conv"], per_channel=True, activation_type=q.QuantType.QInt8,
            weight_type=q.QuantType.QInt8, use_external_data_format=_external(src)))
    return dst


def convert_float16(src: str | Path, dst: str | Path) -> Path:
    """float16 weights and arithmetic, float32 graph inputs and outputs (keep_io_types=True), with
    onnxruntime's own converter (onnxruntime.transformers.float16, the code of onnxconverter-common).

    Examples:
        >>> convert_float16("vits14.onnx", "vits14_fp16.onnx")                     # doctest: +SKIP
        PosixPath('vits14_fp16.onnx')
    """
    onnx = require("onnx", "float16 conversion of an ONNX file")
    f16 = require("onnxruntime.transformers.float16", "float16 conversion of an ONNX file")
    model = f16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    return save_onnx(model, dst)


def save_onnx(model: Any, dst: str | Path) -> Path:
    """Write a ModelProto, its weights in DST.data beside it when it is over ~2 GB.

    Examples:
        >>> import onnx                                                             # doctest: +SKIP
        >>> save_onnx(onnx.load("vits14.onnx"), "copy.onnx")                        # doctest: +SKIP
        PosixPath('copy.onnx')
    """
    onnx = require("onnx", "writing an ONNX file")
    dst = Path(dst)
    big = sum(len(t.raw_data) or 4 * int(np.prod(t.dims)) for t in model.graph.initializer) > _TWO_GB
    atomic_write_files(dst, lambda tmp: onnx.save(model, str(tmp), save_as_external_data=big,
                                                  location=tmp.name + ".data" if big else None))
    return dst


def convert_onnx(src: str | Path, dst: str | Path, precision: str, calibration: Sequence[Any] | None = None) -> str:
    """Write `src` (a float32 ONNX file) at `precision` to `dst`; returns a line saying what was done.

    Examples:
        >>> convert_onnx("vits14.onnx", "vits14_int8.onnx", "int8-dynamic")   # doctest: +SKIP
        'int8 per-channel weights on the MatMuls, activations quantized at run time'
    """
    if precision == "float16":
        convert_float16(src, dst)
        return "float16 weights and arithmetic, float32 inputs and outputs"
    if precision == "int8-dynamic":
        quantize_dynamic_int8(src, dst)
        return "int8 per-channel weights on the MatMuls, activations quantized at run time"
    if precision == "int8":
        if not calibration:
            raise ValueError("ONNX int8 (static QDQ) is calibrated: give calibration images (8-32 like the model will see)")
        quantize_static_int8(src, dst, calibration)
        return f"static int8 QDQ on MatMul and Conv, calibrated on {len(calibration)} batch(es)"
    raise ValueError(f"ONNX precision {precision!r}: convert_onnx makes {', '.join(PRECISIONS)} from a float32 file")
