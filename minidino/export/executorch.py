"""ExecuTorch with the XNNPACK backend: a .pte program with bounded free dimensions, and int8.

    pip install 'minidino[executorch]'    # executorch (brings torchao, coremltools, pandas, scipy...; no torch pin)

ExecuTorch plans every buffer ahead of time, for the largest shapes the program allows, so each
free dimension needs an upper bound: the batch up to `max_batch` (default 8) and the sides up to
`max_side` pixels (default 518); past a bound a call fails cleanly ("Attempted to resize a
bounded tensor with a maximum capacity of ... elements", error 0x12 or 0x10). A static size
(dynamic=False) lowers in half the time and runs faster (the resize arithmetic of the position
embedding is gone). Precisions:

    float32       parity: max abs 5e-6 to eager at full depth ViT-S/14
    float16       LayerNorms kept in float32 (the trap below); on x86 no faster than float32
                  (XNNPACK has no fp16 arithmetic there): for ARM targets
    int8-dynamic  PT2E, XNNPACK quantizer: int8 per-channel weights, activations quantized at
                  run time; keeps the free size; cls cosine 0.9996 (full depth, random weights)
    int8          PT2E with static (calibrated) activations: static size only, and measured at
                  cls cosine 0.935 (depth 2, random weights): prefer int8-dynamic

Traps met (ExecuTorch 1.5.1, torch 2.13):
- a program without bounds is planned for the example input: batch 4 then fails ("Attempted to
  resize a bounded tensor with a maximum capacity of 301056 elements to 602112 elements").
- a bound equal to the traced example collapses (max_batch=2 with the batch-2 example gives a
  program that refuses batch 1): export_program refuses max_batch < 3.
- the portable (non-XNNPACK) float16 LayerNorm kernel is wrong for rows of 256 values or more
  (max abs 3.4 on one LayerNorm(256); its vectorised moments read Half data as float), while
  XNNPACK leaves every LayerNorm to the portable kernels. A plain model.half() therefore gives
  cls cosine ~0; here the LayerNorms run in float32 inside the float16 model (cosine 0.999999).
- executorch.runtime's Method keeps neither its Program nor the bytes it was loaded from alive:
  load_program(buffer).load_method("forward") on a temporary buffer segfaults in execute().
  minidino's loader (runners.py) keeps all three together.
- static-activation int8 on the free-size program fails at the re-export: the quantizer annotates
  a float64 arange of the position resize ("Expecting input to have dtype torch.float32, but got
  dtype: torch.float64"): refused here with that reason.
- DINOv3 (fixed in the model's RoPE and in the export, kept here for other models): an unsqueeze
  with two free dimensions (the (h, w) patch grid stacked to (h, w, 2)) is taken by the partitioner
  and then refused ("XNNPACK reshape only supports 1 dynamic dimension"); an op returning a list
  (x.chunk in rotate_half) pins a free batch to the traced one in to_edge's verifier (batch 1 then
  fails: "Attempted to resize a static tensor. Expected shape (2, 4, 48), but received (1, 4, 48)");
  and the key-masked qkv bias, computed in the graph, keeps int8-dynamic's qkv linear out of the
  delegate ("Missing out variants: {'quantized_decomposed::choose_qparams', ...}"): the export
  folds it to a constant (mode.folded_key_biases).
- what XNNPACK leaves to the portable kernels: the LayerNorms, SDPA's mask plumbing (any,
  logical_not, where, full_like), views and copies, and the resize arithmetic of a free size;
  which is why float32 runs at about 0.8-1.3x eager. The report lists them.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .extras import require
from .program import exportable
from .report import ExportReport, count_ops, describe_free, program_io_dims, program_ops

__all__ = ["export_executorch", "half_with_float32_layernorm", "PRECISIONS", "Float32LayerNorm"]

PRECISIONS = ("float32", "float16", "int8", "int8-dynamic")
DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_SIDE = 518


class Float32LayerNorm(nn.Module):
    """A LayerNorm computed in float32 inside a reduced-precision model: the input is cast up,
    normalised with float32 weights, and cast back.

    Examples:
        >>> ln = Float32LayerNorm(torch.nn.LayerNorm(256))
        >>> ln(torch.randn(2, 256).half()).dtype
        torch.float16
    """

    def __init__(self, ln: nn.LayerNorm) -> None:
        super().__init__()
        self.ln = copy.deepcopy(ln).float()

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(x.float()).to(x.dtype)


def half_with_float32_layernorm(model: nn.Module) -> nn.Module:
    """A float16 copy of the model whose LayerNorms run in float32 (the ExecuTorch trap above).

    Examples:
        >>> half = half_with_float32_layernorm(minidino.create_model("dinov2_vits14", depth=1))
        >>> half.blocks[0].attn.qkv.weight.dtype, type(half.norm).__name__
        (torch.float16, 'Float32LayerNorm')
    """
    half = copy.deepcopy(model).half()
    for module in list(half.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.LayerNorm):
                setattr(module, name, Float32LayerNorm(child))
    return half.eval()


def _images(calibration: Sequence[Any], batch: int | None) -> list[Tensor]:
    """Calibration batches the traced program accepts: single images, or groups of a fixed batch."""
    singles = [img for b in calibration for img in torch.as_tensor(b.numpy() if hasattr(b, "numpy") else b).float().split(1)]
    if batch is None or batch == 1:
        return singles
    while len(singles) < batch:
        singles = singles + singles
    return [torch.cat(singles[i:i + batch]) for i in range(0, len(singles) - batch + 1, batch)]


def _quantized_program(module: nn.Module, shapes: Any, precision: str, calibration: Sequence[Any] | None,
                       batch: int | None) -> torch.export.ExportedProgram:
    """PT2E: export, annotate for XNNPACK, calibrate (static) or run once (dynamic), convert, export again."""
    xq = require("executorch.backends.xnnpack.quantizer.xnnpack_quantizer", f"ExecuTorch {precision}")
    pt2e = require("torchao.quantization.pt2e.quantize_pt2e", f"ExecuTorch {precision}")
    dynamic_activations = precision == "int8-dynamic"
    graph = torch.export.export(module, (shapes.example,), dynamic_shapes=shapes.dynamic_shapes).module()
    config = xq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic_activations)
    prepared = pt2e.prepare_pt2e(graph, xq.XNNPACKQuantizer().set_global(config))
    with torch.no_grad():
        for x in (_images(calibration, batch) if calibration else [shapes.example]):
            prepared(x)
    converted = pt2e.convert_pt2e(prepared)
    return torch.export.export(converted, (shapes.example,), dynamic_shapes=shapes.dynamic_shapes)


def _delegated_ops(edge_program: Any) -> dict[str, int]:
    """Operator counts inside the XNNPACK segments (the lowered modules' original graphs)."""
    names: list[str] = []
    for _, sub in edge_program.graph_module.named_children():
        original = getattr(sub, "original_module", None)
        if original is not None:
            names += [k for k, v in program_ops(original).items() for _ in range(v)]
    return count_ops(names)


def export_executorch(
    model: nn.Module, path: str | Path, *, precision: str = "float32", calibration: Sequence[Any] | None = None,
    dynamic: bool = True, size: Sequence[int] = (224, 224), batch: int | None = None,
    max_batch: int | None = None, max_side: int | None = None, outputs: Sequence[str] | None = None,
) -> ExportReport:
    """Write `path` (.pte) lowered to XNNPACK; returns the report (also written beside it by
    export_model, which is where the loader reads the output names: a .pte keeps none).

    Free dimensions get bounds (module docstring): max_batch (default 8, unless batch= fixes it)
    and max_side (default 518 px, dynamic=True only). precision "int8" needs `calibration` and
    dynamic=False; "int8-dynamic" needs neither.

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> report = export_executorch(model, "vits14.pte", max_batch=4, max_side=336)   # doctest: +SKIP
        >>> report.free                                                                 # doctest: +SKIP
        {'batch': '1..4', 'H': '14..336, multiple of 14', 'W': '14..336, multiple of 14'}
    """
    exir = require("executorch.exir", "export_executorch")
    xnnpack = require("executorch.backends.xnnpack.partition.xnnpack_partitioner", "export_executorch")
    if precision not in PRECISIONS:
        raise ValueError(f"ExecuTorch precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if precision == "int8" and dynamic:
        raise ValueError("ExecuTorch static int8 needs a static image size (dynamic=False, or --static HxW): on the "
                         "free-size program the quantizer annotates a float64 arange of the position resize (\"Expecting "
                         "input to have dtype torch.float32, but got dtype: torch.float64\"); or use int8-dynamic")
    if precision == "int8" and not calibration:
        raise ValueError("ExecuTorch int8 is calibrated: give calibration images (8-32 like the ones the model will see)")
    path = Path(path)
    if path.suffix != ".pte":
        raise ValueError(f"an ExecuTorch program path ends in .pte, got {str(path)!r}")
    if batch is None and max_batch is None:
        max_batch = DEFAULT_MAX_BATCH
    if dynamic and max_side is None:
        max_side = max(DEFAULT_MAX_SIDE, *size)
    t0 = time.perf_counter()
    source = half_with_float32_layernorm(model) if precision == "float16" else model
    with exportable(source, dynamic=dynamic, size=size, outputs=outputs, batch=batch, max_batch=max_batch,
                    max_side=max_side) as (module, shapes):
        if precision.startswith("int8"):
            program = _quantized_program(module, shapes, precision, calibration, batch)
        else:
            program = torch.export.export(module, (shapes.example,), dynamic_shapes=shapes.dynamic_shapes)
        names = module.outputs
    inputs, outs = program_io_dims(program, names)
    edge = exir.to_edge_transform_and_lower(program, partitioner=[xnnpack.XnnpackPartitioner()])
    ops, delegated = program_ops(edge.exported_program()), _delegated_ops(edge.exported_program())  # before
    buffer = edge.to_executorch().buffer  # to_executorch rewrites the program in place (out variants, allocs)
    from ..utils.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer))
    notes = ["memory is planned for the bounds: a call past them fails with 'Attempted to resize a bounded tensor'"]
    if precision == "float16":
        notes.append("float16 with every LayerNorm in float32 (the portable fp16 LayerNorm kernel is wrong for rows >= 256)")
    if precision == "int8":
        notes.append("static int8 activations scored cls cosine 0.935 at depth 2 (random weights): prefer int8-dynamic")
    return ExportReport(
        runtime="executorch", path=str(path), precision=precision, inputs=inputs, outputs=outs,
        ops=ops, delegated=delegated,
        free=describe_free(shapes.free), notes=notes, seconds=round(time.perf_counter() - t0, 1),
    )
