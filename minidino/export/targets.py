"""One call for every runtime: `export_model(model, path, to=..., precision=...)`.

    report = minidino.export.export_model(model, "vits14.xml", precision="int8", calibration=images)
    print(report.summary())            # operators, opset, free dimensions, and the check against eager

The runtime follows from the file name (.onnx, .xml, .pte, .mlpackage) or from `to`. Each export
is checked against eager float32 right after it is written (check=True), on one generated image
at the export size, where the runtime runs on this machine (CoreML does not: macOS only); the
max abs and cosine of every output go into the report, and the report is written beside the
artifact (NAME.report.json).

What each runtime offers (the precision names used everywhere in minidino):

    runtime      extra         free size                     precisions
    onnx         export        batch, H, W                   float32, float16, int8, int8-dynamic
    openvino     openvino      batch, H, W                   float32, bfloat16, float16, int8, int8-weights
    executorch   executorch    batch, H, W, each bounded     float32, float16, int8 (static size), int8-dynamic
    coreml       coreml        batch only (size static)      float32, float16, int8-weights   (runs on macOS only)

    int8          static post-training quantization, calibrated on the images given (`calibration`)
    int8-dynamic  int8 weights, activations quantized at run time (no calibration)
    int8-weights  int8 weights only, float activations

portable=True (ONNX only) writes the NPU-toolchain graph of minidino.export.portable instead.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..conformance.compare import tensor_metrics
from .mode import torch_onnx_quiet
from .program import _check_outputs, _Exportable, export_onnx
from .report import ExportReport, describe_free, onnx_summary, report_path, write_report
from .runners import SUFFIXES, load_runner

__all__ = ["Target", "TARGETS", "PRECISION_ALIASES", "export_model", "canonical_precision", "check_against_eager"]


@dataclass(frozen=True)
class Target:
    """One runtime minidino exports to.

    Examples:
        >>> TARGETS["executorch"].suffix, TARGETS["executorch"].extra
        ('.pte', 'executorch')
    """

    name: str
    suffix: str
    extra: str
    precisions: tuple[str, ...]
    free: str  # which dimensions can stay free
    runs_here: bool  # whether it runs on a Linux CPU (CoreML: macOS only)


TARGETS = {
    "onnx": Target("onnx", ".onnx", "export", ("float32", "float16", "int8", "int8-dynamic"), "batch, H, W", True),
    "openvino": Target("openvino", ".xml", "openvino", ("float32", "bfloat16", "float16", "int8", "int8-weights"),
                       "batch, H, W", True),
    "executorch": Target("executorch", ".pte", "executorch", ("float32", "float16", "int8", "int8-dynamic"),
                         "batch, H, W, each with an upper bound", True),
    "coreml": Target("coreml", ".mlpackage", "coreml", ("float32", "float16", "int8-weights"),
                     "batch only (the image size is static)", False),
}
PRECISION_ALIASES = {"fp32": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16",
                     "int8-static": "int8", "int8-weight-only": "int8-weights"}


def canonical_precision(name: str) -> str:
    """A precision's canonical name (aliases fp32, fp16, bf16 ... accepted).

    Examples:
        >>> canonical_precision("fp16"), canonical_precision("int8-dynamic")
        ('float16', 'int8-dynamic')
    """
    return PRECISION_ALIASES.get(name, name)


def _target(path: Path, to: str | None) -> Target:
    if to is None:
        if path.suffix not in SUFFIXES:
            raise ValueError(f"{str(path)!r}: cannot tell the runtime from the name; give to= "
                             f"({', '.join(TARGETS)}) or a name ending in {', '.join(SUFFIXES)}")
        to = SUFFIXES[path.suffix]
    if to not in TARGETS:
        raise ValueError(f"unknown runtime {to!r}; choose from {', '.join(TARGETS)}")
    target = TARGETS[to]
    if path.suffix != target.suffix:
        raise ValueError(f"a {to} file name ends in {target.suffix}, got {str(path)!r}")
    return target


def export_model(
    model: nn.Module, path: str | Path, *, to: str | None = None, precision: str = "float32",
    calibration: Sequence[Any] | None = None, dynamic: bool = True, size: Sequence[int] = (224, 224),
    batch: int | None = None, max_batch: int | None = None, max_side: int | None = None,
    outputs: Sequence[str] | None = None, opset: int | None = None, portable: bool = False,
    layer_norm: str = "op", gelu: str = "erf", check: bool = True,
) -> ExportReport:
    """Export `model` for a runtime (module docstring) and return the report, also written beside
    the artifact. The artifact, its side files and the report are written (and checked) in a private
    folder beside `path`, then moved into place, the artifact last: a failure changes no file.
    `calibration`: (B, 3, H, W) float32 batches of the user's images for int8.
    dynamic / size / batch / max_batch / max_side as in export_program (CoreML: static size, batch
    1 or batch=N, dynamic ignored; ExecuTorch: bounds default to 8 images and 518 px). portable, layer_norm,
    gelu, opset: the ONNX graph for NPU toolchains (minidino.export.portable; static, batch 1).

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> report = export_model(model, "vits14.onnx", dynamic=False, size=(28, 28))   # doctest: +SKIP
        >>> report.check["x_norm_clstoken"][0] < 1e-4                                 # doctest: +SKIP
        True
    """
    path = Path(path)
    target = _target(path, to)
    precision = canonical_precision(precision)
    if precision not in target.precisions:
        raise ValueError(f"{target.name} precision {precision!r}: choose from {', '.join(target.precisions)}")
    if portable and target.name != "onnx":
        raise ValueError("portable=True is an ONNX graph for NPU toolchains: export it with to='onnx'")
    if (max_batch or max_side) and target.name != "executorch":
        raise ValueError(f"max_batch / max_side bound ExecuTorch's planned memory; {target.name} takes free dimensions "
                         "without bounds")
    outputs = _check_outputs(model, outputs)
    size = tuple(size)
    options = dict(precision=precision, calibration=calibration, dynamic=dynamic, size=size, batch=batch,
                   max_batch=max_batch, max_side=max_side, outputs=outputs, opset=opset, portable=portable,
                   layer_norm=layer_norm, gelu=gelu, check=check)
    if target.name == "coreml":  # a package folder, swapped in whole by its writer; then its report
        return _export_checked(model, path, target, final=path, **options)  # type: ignore[arg-type]
    # The artifact, its side files (.onnx.data, OpenVINO's .bin) and its report are all written, and the
    # artifact checked, in a private folder beside `path`; then moved into place, the artifact last. A
    # failure anywhere leaves the old files as they were and nothing new, and no intermediate file (a
    # portable export's float32 graph) ever lands beside `path`.
    from ..utils.atomic import WriteError, atomic_write_files

    path.parent.mkdir(parents=True, exist_ok=True)
    done: list[ExportReport] = []

    def write(staged: Path) -> None:
        try:
            done.append(_export_checked(model, staged, target, final=path, **options))  # type: ignore[arg-type]
        except WriteError as e:  # name the file the user asked for, not its staged name
            raise WriteError(path.with_name(Path(e.filename).name), e.strerror, e.errno) from None

    atomic_write_files(path, write)
    return done[0]


def _export_checked(model: nn.Module, path: Path, target: Target, *, final: Path, precision: str,
                    calibration: Sequence[Any] | None, dynamic: bool, size: tuple[int, ...], batch: int | None,
                    max_batch: int | None, max_side: int | None, outputs: Sequence[str], opset: int | None,
                    portable: bool, layer_norm: str, gelu: str, check: bool) -> ExportReport:
    """export_model's work at `path`: the artifact, its report beside it (naming `final`), the check."""
    with torch_onnx_quiet():  # torch's own LeafSpec FutureWarning fires in every exporter's decompositions
        if target.name == "onnx":
            report = _export_onnx(model, path, precision=precision, calibration=calibration, dynamic=dynamic, size=size,
                                  batch=batch, outputs=outputs, opset=opset, portable=portable, layer_norm=layer_norm,
                                  gelu=gelu)
        elif target.name == "openvino":
            from .openvino import export_openvino

            report = export_openvino(model, path, precision=precision, calibration=calibration, dynamic=dynamic, size=size,
                                     batch=batch, outputs=outputs)
        elif target.name == "executorch":
            from .executorch import export_executorch

            report = export_executorch(model, path, precision=precision, calibration=calibration, dynamic=dynamic,
                                       size=size, batch=batch, max_batch=max_batch, max_side=max_side, outputs=outputs)
        else:
            from .coreml import export_coreml

            report = export_coreml(model, path, precision=precision, size=size, batch=1 if batch is None else batch,
                                   outputs=outputs)
    write_report(report)  # before the check: the loaders read the output names and the precision from it
    if check:
        if target.runs_here:
            report.check = check_against_eager(model, path, size=size, batch=batch or 1, outputs=outputs)
            worst = max(report.check.values(), key=lambda v: v[0])
            report.notes.append(f"checked against eager float32 on one generated {size[0]}x{size[1]} image: "
                                f"max abs {worst[0]:.1e}, min cosine {min(v[1] for v in report.check.values()):.6f}")
        else:
            report.notes.append("not run here: " + ("CoreML predicts on macOS only" if target.name == "coreml" else "no runtime"))
    report.path = str(final)
    write_report(report, at=report_path(path))
    return report


def _export_onnx(model: nn.Module, path: Path, *, precision: str, calibration: Sequence[Any] | None, dynamic: bool,
                 size: tuple[int, ...], batch: int | None, outputs: Sequence[str], opset: int | None, portable: bool,
                 layer_norm: str, gelu: str) -> ExportReport:
    import time

    t0 = time.perf_counter()
    notes: list[str] = []
    free: dict[str, str] = {}
    if portable:
        from .portable import export_portable_onnx

        export_portable_onnx(model, path if precision == "float32" else path.with_suffix(".fp32.onnx"), size=size,
                             batch=batch or 1, opset=opset or 18, layer_norm=layer_norm, gelu=gelu,  # type: ignore[arg-type]
                             outputs=outputs)
        notes.append("portable: static shapes, attention as MatMul + Softmax, rank <= 4, ai.onnx operators only"
                     + (", LayerNorm written out" if layer_norm == "primitive" else "")
                     + (", tanh GELU (NOT the model's maths: ~1e-3 drift)" if gelu == "tanh" else ""))
        fp32 = path if precision == "float32" else path.with_suffix(".fp32.onnx")
    else:
        from .program import _shapes

        shapes_free = _shapes(model, size, dynamic=dynamic, batch=batch).free  # type: ignore[arg-type]
        free = describe_free(shapes_free)
        with tempfile.TemporaryDirectory(prefix=".minidino-onnx-", dir=path.parent if path.parent.exists() else None) as tmp:
            fp32 = path if precision == "float32" else Path(tmp) / "float32.onnx"
            export_onnx(model, fp32, dynamic=dynamic, opset=opset, size=size, outputs=outputs, batch=batch)
            if precision != "float32":
                _onnx_precision(fp32, path, precision, calibration, notes)
    if portable and precision != "float32":
        _onnx_precision(fp32, path, precision, calibration, notes)
        for f in (fp32, fp32.with_name(fp32.name + ".data")):
            f.unlink(missing_ok=True)
    ops, opset_used, inputs, outs = onnx_summary(path)
    if (path.with_name(path.name + ".data")).exists():
        notes.append(f"the weights are in {path.name}.data beside it: copy both")
    return ExportReport(runtime="onnx", path=str(path), precision=precision, inputs=inputs, outputs=outs, ops=ops,
                        free=free, opset=opset_used, notes=notes, seconds=round(time.perf_counter() - t0, 1))


def _onnx_precision(src: Path, dst: Path, precision: str, calibration: Sequence[Any] | None, notes: list[str]) -> None:
    from .onnx_precision import convert_onnx

    notes.append(convert_onnx(src, dst, precision, calibration))


def check_against_eager(model: nn.Module, path: str | Path, *, size: Sequence[int], batch: int = 1,
                        outputs: Sequence[str] | None = None, seed: int = 0) -> dict[str, list[float]]:
    """{output: [max abs, cosine]} of an artifact run on this machine against the eager float32
    model, on one generated batch of `size` (standard normal pixels: normalised-image statistics).

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> check_against_eager(model, "vits14.onnx", size=(224, 224))   # doctest: +SKIP
        {'x_norm_clstoken': [2.1e-06, 1.0], 'x_norm_patchtokens': [3.3e-06, 1.0]}
    """
    outputs = _check_outputs(model, outputs)
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))  # (B, 3, H, W)
    with torch.no_grad():
        ref = _Exportable(model.eval(), outputs)(x)
    got = load_runner(path)(x.numpy())
    return {k: [float(f"{d:.3g}"), round(c, 7)] for k, r in zip(outputs, ref)
            for d, c in [tensor_metrics(r.numpy(), np.asarray(got[k]))]}
