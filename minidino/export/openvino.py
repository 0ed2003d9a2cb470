"""OpenVINO: an IR (.xml + .bin) from torch.export, free batch and image size, and NNCF int8.

    pip install 'minidino[openvino]'      # openvino, nncf (no torch pin: torch stays as it is)

The IR is converted from `export_program` (no ONNX needed); its input is [?, 3, ?, ?] when the
export is dynamic, so one IR serves every batch and every size with sides multiples of the
patch size. Precisions:

    float32       parity: max abs 3e-6 to eager at full depth ViT-S/14
    bfloat16      the same IR, compiled with INFERENCE_PRECISION_HINT=bf16 (AMX / AVX512_BF16 CPUs)
    float16       float16 weights in the IR (half the file); computed in float16 where the device
                  has it (GPU, NPU, CPUs with AVX512_FP16 / AMX-FP16), else in bf16 or f32
    int8          NNCF post-training quantization, calibrated on the caller's images, with
                  model_type=TRANSFORMER (keeps LayerNorm, Softmax and the residual Adds float)
    int8-weights  NNCF weight compression: int8 weights (asymmetric, per channel), float activations

Traps met (OpenVINO 2026.4.1, NNCF 3.4.0):
- on a CPU with AVX512_BF16 or AMX, OpenVINO computes in bfloat16 BY DEFAULT (max abs ~0.02 on
  ViT-S): compile with {"INFERENCE_PRECISION_HINT": "f32"} for float32. The hint cannot be stored
  in the IR (rt_info runtime_options is ignored for it): minidino's loader (runners.py) sets it
  from the precision in the report beside the IR; anyone else must set it.
- ov.save_model compresses the weights to float16 by default (max abs 1.7e-3 at depth 2):
  written here with compress_to_fp16=False except for precision float16.
- NNCF without model_type=TRANSFORMER quantizes LayerNorm / Softmax inputs too: cls cosine 0.95
  instead of 0.999 at full depth.
- openvino.convert_model(module, example_input=...) (tracing the eager module) fails on the
  default bicubic resize ("upsample_bicubic2d() received an invalid combination of arguments")
  and, with the matrix resize, on "Tracing failed sanity checks! Graphs differed across
  invocations!"; from the ExportedProgram it works. Its outputs come out as "select_22:0" ...:
  renamed here to minidino's names.
- OpenVINO's PyTorch frontend has no aten.trunc: the antialiased resize of the register
  models uses floor instead (exactly equal there, see models/posembed.py).
- the CPU plugin has no float64: the free-size resize, which needs float64 for the plain
  models' 0.1-offset quirk, runs in float32 there, and their patch tokens move by ~1e-5 (max
  abs 1.5e-5 at full depth ViT-S, against 5e-6 on ONNX Runtime; the register models 4.8e-6).
  A static export bakes the exact embedding (1.7e-6). Said in the report when it applies.
"""

from __future__ import annotations

import errno
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .extras import quiet_logger, require
from .program import exportable
from .report import ExportReport, count_ops, describe_free

__all__ = ["export_openvino", "quantize_openvino", "PRECISIONS", "PRECISION_HINT", "openvino_ops"]

PRECISIONS = ("float32", "bfloat16", "float16", "int8", "int8-weights")
# The INFERENCE_PRECISION_HINT each precision is compiled with (the IR cannot store it).
PRECISION_HINT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16", "int8": "f32", "int8-weights": "f32"}
_SKIP = ("Parameter", "Result", "Constant")


def openvino_ops(ov_model: Any) -> dict[str, int]:
    """Operator counts of an openvino.Model (Parameter, Result and Constant left out).

    Examples:
        >>> import openvino as ov                                      # doctest: +SKIP
        >>> openvino_ops(ov.Core().read_model("vits14.xml"))            # doctest: +SKIP
        {'Add': 89, 'MatMul': 72, ...}
    """
    return count_ops(op.get_type_name() for op in ov_model.get_ordered_ops() if op.get_type_name() not in _SKIP)


def _dims(partial_shape: Any, names: Sequence[str] | None = None) -> list[Any]:
    out: list[Any] = []
    for i, d in enumerate(partial_shape):
        out.append(d.get_length() if d.is_static else (names[i] if names else "?"))
    return out


def export_openvino(
    model: nn.Module, path: str | Path, *, precision: str = "float32", calibration: Sequence[Any] | None = None,
    dynamic: bool = True, size: Sequence[int] = (224, 224), batch: int | None = None,
    outputs: Sequence[str] | None = None,
) -> ExportReport:
    """Write `path` (.xml, with its .bin beside it) for OpenVINO; returns the report.

    precision: see the module docstring; "int8" needs `calibration`, a few (B, 3, H, W) float32
    batches preprocessed like the model's inputs. dynamic / size / batch as in export_program.

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> report = export_openvino(model, "vits14.xml")             # doctest: +SKIP
        >>> report.inputs, report.free                                # doctest: +SKIP
        ({'x': ['batch', 3, 'H', 'W']}, {'batch': '1..', 'H': '14.., multiple of 14', 'W': '14.., multiple of 14'})
    """
    ov = require("openvino", "export_openvino")
    if precision not in PRECISIONS:
        raise ValueError(f"OpenVINO precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if precision == "int8" and not calibration:
        raise ValueError("OpenVINO int8 is calibrated: give calibration images (8-32 like the ones the model will see)")
    path = Path(path)
    if path.suffix != ".xml":
        raise ValueError(f"an OpenVINO IR path ends in .xml (the weights go to .bin beside it), got {str(path)!r}")
    t0 = time.perf_counter()
    import torch

    with exportable(model, dynamic=dynamic, size=size, outputs=outputs, batch=batch) as (module, shapes):
        program = torch.export.export(module, (shapes.example,), dynamic_shapes=shapes.dynamic_shapes)
        names = module.outputs
    ov_model = ov.convert_model(program)
    # The frontend leaves H and W free even for a static program: pin the fixed dimensions.
    x = shapes.example
    fixed = [-1 if "batch" in shapes.free else x.shape[0], 3, -1 if "H" in shapes.free else x.shape[2],
             -1 if "W" in shapes.free else x.shape[3]]
    ov_model.reshape({ov_model.inputs[0]: ov.PartialShape(fixed)})
    for port, name in zip(ov_model.outputs, names):  # the frontend names them 'select_22:0', 'slice_22:0' ...
        port.get_tensor().set_names({name})
    ov_model.inputs[0].get_tensor().set_names({"x"})
    notes = [f"compile with INFERENCE_PRECISION_HINT={PRECISION_HINT[precision]} (OpenVINO defaults to bf16 on "
             "CPUs with AVX512_BF16/AMX; minidino.export.runners sets it from this report)"]
    if any(o.get_element_type() == ov.Type.f64 for op in ov_model.get_ordered_ops() for o in op.outputs()):
        notes.append("the free-size position resize computes in float64, which OpenVINO's CPU plugin runs in float32: "
                     "~1e-5 max abs for the plain models' 0.1-offset resize (a static size bakes it: ~2e-6)")
    if precision in ("int8", "int8-weights"):
        ov_model, note = _quantize(ov_model, precision, calibration)
        notes.append(note)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(ov, ov_model, path, compress_to_fp16=precision == "float16")
    in_names = ["batch" if "batch" in shapes.free else None, None, "H" if "H" in shapes.free else None,
                "W" if "W" in shapes.free else None]
    in_dims = [n if n else d for n, d in zip(in_names, _dims(ov_model.inputs[0].get_partial_shape()))]
    return ExportReport(
        runtime="openvino", path=str(path), precision=precision, inputs={"x": in_dims},
        outputs={n: _dims(o.get_partial_shape()) for n, o in zip(names, ov_model.outputs)},
        ops=openvino_ops(ov_model), free=describe_free(shapes.free), notes=notes,
        seconds=round(time.perf_counter() - t0, 1),
    )


def _quantize(ov_model: Any, precision: str, calibration: Sequence[Any] | None) -> tuple[Any, str]:
    """NNCF on an openvino.Model: (the int8 model, a line saying what was done)."""
    nncf = require("nncf", f"OpenVINO {precision}")
    with quiet_logger("nncf", logging.WARNING):  # NNCF logs a statistics table at INFO
        if precision == "int8":
            if not calibration:
                raise ValueError("OpenVINO int8 is calibrated: give calibration images (8-32 like the model will see)")
            batches = [np.asarray(b.numpy() if hasattr(b, "numpy") else b, dtype=np.float32) for b in calibration]
            quantized = nncf.quantize(ov_model, nncf.Dataset(batches), subset_size=len(batches),
                                      model_type=nncf.ModelType.TRANSFORMER)
            return quantized, f"NNCF int8, model_type=TRANSFORMER, calibrated on {len(batches)} batch(es)"
        if precision == "int8-weights":
            # The free-size IR computes the position-embedding resize in float64, with constant tables
            # (MatMul, Gather) that NNCF takes for weights and refuses ("Weight must be one of the following data types:
            # [float32, ...]. But found: float64"): they stay float (they are not weights anyway).
            ov = require("openvino", "OpenVINO int8-weights")
            f64 = [op.get_friendly_name() for op in ov_model.get_ordered_ops()
                   if op.get_type_name() in ("MatMul", "Gather") and any(i.get_element_type() == ov.Type.f64 for i in op.inputs())]
            scope = nncf.IgnoredScope(names=f64, validate=False) if f64 else None
            compressed = nncf.compress_weights(ov_model, ignored_scope=scope) if scope else nncf.compress_weights(ov_model)
            return compressed, "NNCF weight compression: int8 asymmetric per-channel weights, float activations"
    raise ValueError(f"quantize_openvino makes int8 or int8-weights, not {precision!r}")


def quantize_openvino(src: str | Path, dst: str | Path, precision: str,
                      calibration: Sequence[Any] | None = None) -> ExportReport:
    """An int8 (calibrated) or int8-weights IR from a float32 IR already written; returns its report.

    Examples:
        >>> images = [torch.randn(1, 3, 224, 224) for _ in range(8)]                      # your own images, normalised
        >>> quantize_openvino("vits14.xml", "vits14_int8.xml", "int8", images).precision    # doctest: +SKIP
        'int8'
    """
    from .report import read_report, write_report

    ov = require("openvino", "quantize_openvino")
    src, dst = Path(src), Path(dst)
    if dst.suffix != ".xml":
        raise ValueError(f"an OpenVINO IR path ends in .xml, got {str(dst)!r}")
    t0 = time.perf_counter()
    ov_model, note = _quantize(ov.Core().read_model(str(src)), precision, calibration)
    _save(ov, ov_model, dst, compress_to_fp16=False)
    base = read_report(src)
    report = ExportReport(
        runtime="openvino", path=str(dst), precision=precision,
        inputs=base.inputs if base else {"x": _dims(ov_model.inputs[0].get_partial_shape())},
        outputs={n: _dims(o.get_partial_shape()) for n, o in zip([next(iter(o.get_names())) for o in ov_model.outputs],
                                                                  ov_model.outputs)},
        ops=openvino_ops(ov_model), free=base.free if base else {},
        notes=[f"compile with INFERENCE_PRECISION_HINT={PRECISION_HINT[precision]}", note],
        seconds=round(time.perf_counter() - t0, 1))
    write_report(report)
    return report


def _save(ov: Any, ov_model: Any, path: Path, compress_to_fp16: bool) -> None:
    """Write NAME.xml and NAME.bin beside each other, all or nothing (the .xml last)."""
    from ..utils.atomic import atomic_write_files

    def write(tmp: Path) -> None:
        try:
            ov.save_model(ov_model, str(tmp), compress_to_fp16=compress_to_fp16)
        except RuntimeError as e:  # a failed write is a C++ stream error, without errno: 'basic_ios::clear: iostream error'
            message = " ".join(str(e).split())
            if not re.search(r"iostream|ios_base|basic_ios|can't open|cannot open|failed to (open|write)", message, re.I):
                raise
            raise OSError(errno.EIO, f"OpenVINO could not write it or its .bin ({message[-200:]}): a full disk, a "
                                     "file-size limit or a quota?") from None

    atomic_write_files(path, write)
