"""CoreML: an .mlpackage (ML program) for Apple devices, converted on any OS; run on macOS only.

    pip install 'minidino[coreml]'        # coremltools (also comes with the executorch extra)

Conversion works on Linux; prediction does not ("Model prediction is only supported on macOS
version 10.13 or later"), so minidino checks here what Linux can check: the conversion, the
saved package, the input and output shapes and the MIL operators. Parity on a Mac: load the
package with coremltools and compare with `minidino compare` (docs/porting.md). Precisions:

    float32       compute_precision FLOAT32
    float16       compute_precision FLOAT16 (coremltools' own default), inputs and outputs float32
    int8-weights  float16 compute, weights linearly quantized to int8 (symmetric): a quarter of float32

Calibrated int8 activations (coremltools.optimize's linear_quantize_activations) need the model
run on the sample data, hence macOS: not offered here.

Traps met (coremltools 9.0, torch 2.13; it warns that torch 2.13 is untested, harmlessly):
- the image size must be static: the free-size program fails ("NotImplementedError: Unsupported
  fx node and_1, kind __and__"); a static-size program with a free batch converts (the input
  gets a batch range 1..2147483647); batch=1 gives a fully static (1, 3, H, W) input.
- a torch.export program in the training dialect must be decomposed first ("Conversion for
  models with only ATEN or EDGE dialect is supported/tested. Provided Dialect: TRAINING. Run
  '.run_decompositions({})'"): done here.
- ct.RangeDim on a static program fails ("inconsistent shape between EXIR input x shape ...
  and user specified input x shape (is185, 3, 224, 224)"): the batch range comes from the program.
- outputs come out named "select_6", "slice_2": renamed here to minidino's names.
- deployment target iOS17 writes attention as matmul + softmax (portable to every Apple
  device of the last years); iOS18 fuses it into scaled_dot_product_attention.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .extras import require
from .program import exportable
from .report import ExportReport, count_ops

__all__ = ["export_coreml", "coreml_ops", "PRECISIONS"]

PRECISIONS = ("float32", "float16", "int8-weights")


def coreml_ops(mlmodel: Any) -> dict[str, int]:
    """MIL operator counts of an ML program (constants left out), from its spec.

    Examples:
        >>> import coremltools as ct                                      # doctest: +SKIP
        >>> coreml_ops(ct.models.MLModel("vits14.mlpackage"))              # doctest: +SKIP
        {'linear': 48, 'slice_by_index': 38, 'add': 25, 'layer_norm': 25, ...}
    """
    spec = mlmodel.get_spec()
    names: list[str] = []
    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            names += [op.type for op in block.operations if op.type not in ("const", "constexpr_affine_dequantize")]
    return count_ops(names)


def _dims(feature: Any) -> list[Any]:
    array = feature.type.multiArrayType
    ranges = list(array.shapeRange.sizeRanges)
    out: list[Any] = []
    for i, d in enumerate(array.shape):
        free = i < len(ranges) and ranges[i].lowerBound != ranges[i].upperBound
        out.append("batch" if free and i == 0 else "?" if free else int(d))
    return out


def export_coreml(
    model: nn.Module, path: str | Path, *, precision: str = "float32", size: Sequence[int] = (224, 224),
    batch: int | None = 1, target: str = "iOS17", outputs: Sequence[str] | None = None,
) -> ExportReport:
    """Write `path` (an .mlpackage folder) for exactly H x W = `size`; returns the report.

    batch=1 (default): a fully static input; batch=None: a free batch. target: the minimum
    deployment target (iOS17: attention as matmul + softmax; iOS18: a fused SDPA op).

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> report = export_coreml(model, "vits14.mlpackage")   # doctest: +SKIP
        >>> report.inputs, report.ops["layer_norm"]              # doctest: +SKIP
        ({'x': [1, 3, 224, 224]}, 3)
    """
    ct = require("coremltools", "export_coreml")
    if precision not in PRECISIONS:
        raise ValueError(f"CoreML precision {precision!r}: choose from {', '.join(PRECISIONS)} (calibrated int8 "
                         "activations need the model run on sample data, which needs macOS)")
    if not hasattr(ct.target, target):
        raise ValueError(f"unknown CoreML deployment target {target!r} (e.g. iOS17, iOS18, macOS14)")
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ValueError(f"a CoreML package path ends in .mlpackage, got {str(path)!r}")
    t0 = time.perf_counter()
    import torch

    with exportable(model, dynamic=False, size=size, outputs=outputs, batch=batch) as (module, shapes):
        program = torch.export.export(module, (shapes.example,), dynamic_shapes=shapes.dynamic_shapes)
        names = module.outputs
    program = program.run_decompositions({})  # coremltools takes the ATEN dialect, not the training one
    compute = ct.precision.FLOAT32 if precision == "float32" else ct.precision.FLOAT16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Torch version 2.13.0 has not been tested with coremltools"
        mlmodel = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, target),
                             compute_precision=compute)
    spec = mlmodel.get_spec()
    for old, new in zip([o.name for o in spec.description.output], names):  # "select_6", "slice_2" -> our names
        ct.utils.rename_feature(spec, old, new)
    mlmodel = ct.models.MLModel(spec, weights_dir=mlmodel.weights_dir)
    if precision == "int8-weights":
        cto = require("coremltools.optimize.coreml", "CoreML int8-weights")
        config = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric"))
        mlmodel = cto.linear_quantize_weights(mlmodel, config=config)
    _save_package(mlmodel, path)
    spec = mlmodel.get_spec()
    return ExportReport(
        runtime="coreml", path=str(path), precision=precision,
        inputs={i.name: _dims(i) for i in spec.description.input},
        outputs={o.name: _dims(o) for o in spec.description.output},
        ops=coreml_ops(mlmodel), opset={"minimum deployment target": target},
        free={"batch": "1.."} if batch is None else {},
        notes=["converted on this machine; running it needs macOS (coremltools predicts on macOS only)"],
        seconds=round(time.perf_counter() - t0, 1),
    )


def _save_package(mlmodel: Any, path: Path) -> None:
    """Save the package folder beside `path` under a temporary name, then swap it in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        mlmodel.save(str(staged))
        if path.exists():
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else os.remove(path)
        os.replace(staged, path)
