"""How far an exported path is from eager float32, on the user's own images and weights.

    report = measure_accuracy(model, images, to="openvino", precision="int8", calibration=other_images)
    print(report.table())

The model is exported for the runtime with extra graph outputs, every block's output
("blocks.{i}.residual2", the names `minidino trace` uses), run there on the images, and compared
with the eager float32 model output by output and block by block: max abs difference, cosine
similarity over the whole tensor, and the worst per-image cosine. The block rows show where the
error enters and how it grows with depth; for a classifier or a depther only its output is
compared (its graph has no block outputs).

READ THE FIGURES WITH THE WEIGHTS THEY CAME FROM. On random weights they say little about real
ones: DINOv2's trained weights have high-norm outlier tokens (a few patch tokens, or the
registers, with norms tens of times the others) and outlier channels that random weights lack,
and those are exactly what sets int8 scales and float16 overflow. This function (and `minidino
accuracy`) is what a user runs with the real weights on their own images to choose a precision.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..conformance.compare import tensor_metrics
from ..heads import Depther, LinearClassifier
from .mode import _backbone
from .program import _Exportable, block_output_names, default_outputs
from .report import ExportReport
from .targets import TARGETS, canonical_precision, export_model
from .runners import load_runner

__all__ = ["AccuracyRow", "AccuracyReport", "measure_accuracy", "WEIGHTS_NOTE"]

WEIGHTS_NOTE = ("These figures hold for these weights and these images. Random weights say little about real ones: "
                "DINOv2's trained weights have high-norm outlier tokens and channels that random weights lack, and "
                "those set int8 scales and float16 ranges. Run this with the real weights on your own images to decide.")


@dataclass
class AccuracyRow:
    """One compared tensor: max abs difference, cosine over the tensor, worst cosine of one image.

    Examples:
        >>> AccuracyRow("x_norm_clstoken", (4, 384), 0.12, 0.9991, 0.9984).cosine > 0.999
        True
    """

    name: str
    shape: tuple[int, ...]
    max_abs: float
    cosine: float
    worst_image_cosine: float


@dataclass
class AccuracyReport:
    """The comparison of one runtime and precision against eager float32 (see the module docstring).

    Examples:
        >>> r = AccuracyReport("onnx", "int8-dynamic", 2, (224, 224), [AccuracyRow("x_norm_clstoken", (2, 384), 0.1, 0.9993, 0.999)])
        >>> print(r.table().splitlines()[0])
        onnx int8-dynamic against eager float32, 2 image(s) at 224x224
    """

    runtime: str
    precision: str
    images: int
    size: tuple[int, int]
    rows: list[AccuracyRow]
    export: ExportReport | None = None
    notes: list[str] = field(default_factory=list)

    def row(self, name: str) -> AccuracyRow:
        return next(r for r in self.rows if r.name == name)

    def table(self) -> str:
        """The rows as text, outputs first, then blocks; then the notes and the weights note."""
        lines = [f"{self.runtime} {self.precision} against eager float32, {self.images} image(s) at {self.size[0]}x{self.size[1]}"]
        width = max(len(r.name) for r in self.rows)
        lines.append(f"  {'tensor'.ljust(width)}  {'max abs':>9}  {'cosine':>9}  {'worst image':>11}")
        for r in self.rows:
            lines.append(f"  {r.name.ljust(width)}  {r.max_abs:9.2e}  {r.cosine:9.6f}  {r.worst_image_cosine:11.6f}")
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"note: {WEIGHTS_NOTE}")
        return "\n".join(lines)


def _rows(names: Sequence[str], ref: Sequence[torch.Tensor], got: dict[str, np.ndarray]) -> list[AccuracyRow]:
    rows = []
    for name, r in zip(names, ref):
        r_np, g = r.numpy(), got[name]
        diff, cos = tensor_metrics(r_np, g)
        worst = min(tensor_metrics(r_np[i], g[i])[1] for i in range(r_np.shape[0]))
        rows.append(AccuracyRow(name, tuple(r_np.shape), diff, cos, worst))
    return rows


def measure_accuracy(
    model: nn.Module, images: torch.Tensor, *, to: str, precision: str = "float32",
    calibration: Sequence[Any] | None = None, per_block: bool = True, dynamic: bool | None = None,
    workdir: str | Path | None = None,
) -> AccuracyReport:
    """Export `model` for runtime `to` in `precision`, run it on `images` (B, 3, H, W) (normalised,
    one size), and compare it with eager float32, per output and (per_block, backbones) per block.

    calibration: (B, 3, H, W) batches for precision "int8"; None uses `images` themselves, which
    flatters the figure (said in the notes). dynamic: None chooses the runtime's usual export (free
    size; static where the runtime or precision needs it). workdir: where the artifact is written
    (default: a temporary folder, removed afterwards).

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=2)
        >>> report = measure_accuracy(model, torch.randn(2, 3, 56, 56), to="onnx", precision="int8-dynamic")  # doctest: +SKIP
        >>> report.row("x_norm_clstoken").cosine > 0.99                                                       # doctest: +SKIP
        True
    """
    if to not in TARGETS:
        raise ValueError(f"unknown runtime {to!r}; choose from {', '.join(TARGETS)}")
    if not TARGETS[to].runs_here:
        raise ValueError(f"{to} models cannot run on this machine (CoreML predicts on macOS only): measure them on a Mac "
                         "with `minidino compare` on a dump of the port")
    precision = canonical_precision(precision)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be one (B, 3, H, W) batch, got {tuple(images.shape)}")
    B, _, H, W = images.shape
    notes: list[str] = []
    if precision == "int8" and not calibration:
        calibration = list(images.split(1))
        notes.append("calibrated on the evaluated images themselves: the figure is optimistic; calibrate on other images")
    if dynamic is None:
        dynamic = not (to == "executorch" and precision == "int8")
    outputs = default_outputs(model)
    if per_block and not isinstance(model, (LinearClassifier, Depther)):
        outputs = outputs + block_output_names(_backbone(model))
    bounds: dict[str, Any] = {}
    if to == "executorch":
        bounds = {"max_batch": max(8, B)}
        if dynamic:
            bounds["max_side"] = max(518, H, W)
    with tempfile.TemporaryDirectory(prefix="minidino-accuracy-") as tmp:
        folder = Path(workdir) if workdir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"model{TARGETS[to].suffix}"
        exported = export_model(model, path, to=to, precision=precision, calibration=calibration, dynamic=dynamic,
                                size=(H, W), outputs=outputs, check=False, **bounds)
        got = load_runner(path)(images.float().numpy())
    with torch.no_grad():
        ref = _Exportable(model.eval(), outputs)(images.float())
    return AccuracyReport(to, precision, B, (H, W), _rows(outputs, ref, got), exported, notes)
