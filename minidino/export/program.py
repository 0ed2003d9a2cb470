"""Export to ONNX and torch.export, with a dynamic image size (or a static one).

Exporting a DINOv2 backbone usually fails or drifts at the position-embedding resize: the
bicubic `interpolate` with scale factors (the 0.1 offset) or with antialias has no exact
ONNX counterpart. Here the resize is traced in its "matrix" form (posembed.py): plain
tensor ops on h and w that reproduce PyTorch's CPU kernel, so one graph serves every image
size and matches eager PyTorch. A static export instead bakes the exact position embedding
of one size into the graph as a constant. DINOv3 has no position embedding to resize: its
RoPE tables (rope.py) are plain tensor ops on h and w, traced into a dynamic graph; a static
export bakes the tables of its size as constants, like DINOv2's position embedding.

    import minidino
    model = minidino.create_model("dinov2_vits14_reg", pretrained=...)
    minidino.export_onnx(model, "vits14_reg.onnx")                # any H, W multiple of 14, any batch
    minidino.export_onnx(model, "vits14_224.onnx", dynamic=False)  # 224 x 224 only, pos baked
    program = minidino.export_program(model)                       # torch.export.ExportedProgram

Graph inputs and outputs: "x" (B, 3, H, W) float32 in; out, by default, "x_norm_clstoken"
(B, D), "x_norm_regtokens" (B, R, D) for the register models ("x_storage_tokens" for DINOv3), "x_norm_patchtokens"
(B, h*w, D) (the keys of `forward_features`); a `*_lc` classifier gives "logits" (B, 1000);
a depther (`*_ld`, `*_dd`) gives "depth" (B, 1, H, W) in metres, for any H and W (it pads itself).
A backbone can also output every block's output, named as `minidino trace` names them:
"blocks.{i}.residual2" (B, N, D) (what `minidino accuracy` compares block by block).
onnx and onnxruntime are optional dependencies (`pip install minidino[export]`), imported
only here, inside the functions.

Which dimensions are free:

    dynamic=True             batch, H and W free (H, W multiples of the patch size)
    dynamic=False            H, W fixed to `size` (position embedding baked), batch free
    batch=N                  the batch fixed to N as well (dynamic=False, batch=1: fully static,
                             what CoreML and NPU compilers want)
    max_batch, max_side      upper bounds on the free dimensions (ExecuTorch plans its memory for
                             them; a program without bounds is sized for the example input)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..utils.atomic import atomic_write_files
from ..heads import Depther, LinearClassifier
from ..models.backbone import VisionTransformerBase
from .mode import _backbone, export_mode, torch_onnx_quiet

__all__ = ["export_onnx", "export_program", "exportable", "default_outputs", "feature_keys", "block_output_names", "Shapes"]

# Smallest side of an exported depther's input: 3 patches after padding. torch.export guards the
# patch grid to h, w >= 3 (the DPT's 2x-down level and the size-1 specialisation); eager takes any size.
DEPTH_MIN_SIDE = 29


def feature_keys(backbone: nn.Module) -> tuple[str, ...]:
    """The tensor outputs of the backbone's `forward_features`, in its order, without the empty
    ones (no registers: no register tokens). Read from one forward on a single patch, so it holds
    for any family (DINOv3 names its extra tokens "x_storage_tokens"); free on the meta device.

    Examples:
        >>> feature_keys(minidino.create_model("dinov2_vits14", device="meta"))
        ('x_norm_clstoken', 'x_norm_patchtokens', 'x_prenorm')
    """
    weight = backbone.patch_embed.proj.weight
    p = backbone.patch_size
    x = torch.zeros(1, weight.shape[1], p, p, device=weight.device, dtype=weight.dtype)  # (1, 3, p, p): one patch
    with torch.no_grad():
        feats = backbone.forward_features(x)
    return tuple(k for k, v in feats.items() if isinstance(v, Tensor) and v.dtype.is_floating_point and v.numel())


def block_output_names(backbone: nn.Module) -> tuple[str, ...]:
    """"blocks.{i}.residual2" for every block: the block outputs a graph can return (trace names).

    Examples:
        >>> block_output_names(minidino.create_model("dinov2_vits14", depth=2, device="meta"))
        ('blocks.0.residual2', 'blocks.1.residual2')
    """
    return tuple(f"blocks.{i}.residual2" for i in range(len(backbone.blocks)))


def default_outputs(model: nn.Module) -> tuple[str, ...]:
    """The graph outputs used when none are asked for: ("logits",) for a classifier; class,
    register / storage (only if the model has them) and patch tokens for a backbone.

    Examples:
        >>> default_outputs(minidino.create_model("dinov2_vits14_reg", device="meta"))
        ('x_norm_clstoken', 'x_norm_regtokens', 'x_norm_patchtokens')
        >>> default_outputs(minidino.create_model("dinov3_vits16", device="meta"))
        ('x_norm_clstoken', 'x_storage_tokens', 'x_norm_patchtokens')
    """
    if isinstance(model, LinearClassifier):
        return ("logits",)
    if isinstance(model, Depther):
        return ("depth",)
    return tuple(k for k in feature_keys(_backbone(model)) if k != "x_prenorm")


class _Exportable(nn.Module):
    """Tensors in, a tuple of tensors out: what exporters take. Wraps the model, shares its weights.

    Block outputs ("blocks.{i}.residual2") are caught by forward hooks on the blocks while
    `forward_features` runs, so the graph is the model's own forward with more outputs. The input
    and the outputs are float32 whatever the model's dtype (a float16 model casts inside).
    """

    def __init__(self, model: nn.Module, outputs: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.outputs = tuple(outputs)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        dtype = _backbone(self.model).patch_embed.proj.weight.dtype
        if dtype != torch.float32:  # a reduced-precision model: float32 in and out, the cast inside the graph
            return tuple(t.float() for t in self._forward(x.to(dtype)))
        return self._forward(x)

    def _forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if isinstance(self.model, (LinearClassifier, Depther)):
            return (self.model(x),)  # (B, C) logits or (B, 1, H, W) depth
        caught: dict[str, Tensor] = {}
        hooks = [blk.register_forward_hook(lambda m, a, out, name=name: caught.__setitem__(name, out))
                 for name, blk in zip(block_output_names(self.model), self.model.blocks) if name in self.outputs]
        try:
            feats = self.model.forward_features(x)
        finally:
            for h in hooks:
                h.remove()
        return tuple(caught[k] if k in caught else feats[k] for k in self.outputs)


def _check_outputs(model: nn.Module, outputs: Sequence[str] | None) -> tuple[str, ...]:
    if outputs is None:
        return default_outputs(model)
    outputs = tuple(outputs)
    if isinstance(model, (LinearClassifier, Depther)):
        allowed: tuple[str, ...] = ("logits",) if isinstance(model, LinearClassifier) else ("depth",)
    else:
        backbone = _backbone(model)
        allowed = feature_keys(backbone) + block_output_names(backbone)
    bad = [o for o in outputs if o not in allowed]
    if bad or not outputs:
        shown = allowed if len(allowed) < 12 else allowed[:6] + ("...",) + allowed[-2:]
        raise ValueError(f"unknown graph outputs {bad or outputs!r}; choose from {shown}")
    if len(set(outputs)) != len(outputs):
        raise ValueError(f"graph outputs named twice: {outputs!r}")
    return outputs


def _check_size(model: VisionTransformerBase, size: Sequence[int], any_size: bool = False) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(s, int) for s in size):
        raise TypeError(f"size must be (H, W) in pixels, got {size!r}")
    if any_size:  # a depther pads the image itself
        if min(size) < DEPTH_MIN_SIDE:
            raise ValueError(f"size {size[0]}x{size[1]}: an exported depther takes sides of {DEPTH_MIN_SIDE} px or more")
        return size[0], size[1]
    p = model.patch_size
    H, W = size
    if H < p or W < p or H % p or W % p:
        raise ValueError(f"size {H}x{W} must have both sides positive multiples of the patch size {p} (e.g. 224x224)")
    return H, W


@dataclass(frozen=True)
class Shapes:
    """The example input a graph is traced with and which of its dimensions stay free.

    `dynamic_shapes` is torch.export's description of input "x" (None: every dimension fixed);
    `free` names the free dimensions with their ranges, for reports, e.g.
    {"batch": (1, 8), "H": (14, 518, "14*h"), "W": ...}.

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1, device="meta")
        >>> _shapes(model, (224, 224), dynamic=True, max_batch=8).free["batch"]
        (1, 8)
    """

    example: Tensor  # (B, 3, H, W)
    dynamic_shapes: Any
    free: dict[str, tuple[Any, ...]]


def _shapes(model: nn.Module, size: tuple[int, int], *, dynamic: bool, batch: int | None = None,
            max_batch: int | None = None, max_side: int | None = None) -> Shapes:
    """The example input and dynamic shapes of an export (see the module docstring)."""
    backbone = _backbone(model)
    any_size = isinstance(model, Depther)
    weight = backbone.patch_embed.proj.weight
    p = backbone.patch_size
    Dim = torch.export.Dim
    if batch is not None:
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch must be a positive int (a fixed batch), got {batch!r}")
        if max_batch is not None:
            raise ValueError("give batch= (a fixed batch) or max_batch= (a bound on a free batch), not both")
    elif max_batch is not None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive int, got {max_batch!r}")
        if max_batch < 3:
            # The program is traced at batch 2 with sizes assumed >= 2 (see mode.size_oblivious): a
            # range [1, 2] collapses onto the example and the program then refuses batch 1
            # (ExecuTorch: "Check failed (self.numel() == out.numel())").
            raise ValueError(f"max_batch={max_batch}: a free batch needs max_batch >= 3; for one batch size "
                             f"use batch={max_batch} (a fixed batch)")
    if max_side is not None:
        if not dynamic:
            raise ValueError("max_side bounds a free image size: it needs dynamic=True")
        if any_size:
            raise ValueError("max_side is not supported for depthers")
        if max_side < max(size):
            raise ValueError(f"max_side={max_side} is smaller than the traced size {size[0]}x{size[1]}: "
                             "trace at a smaller size=, or raise max_side")
    # Batch 2, not 1, when the batch is free: torch.export specialises dimensions of size 1.
    B = batch if batch is not None else 2
    x = torch.randn(B, 3, *size, device=weight.device, dtype=torch.float32)  # (B, 3, H, W)
    dims: dict[int, Any] = {}
    free: dict[str, tuple[Any, ...]] = {}
    if batch is None and not (any_size and dynamic):
        dims[0] = Dim("batch", min=1, max=max_batch) if max_batch else Dim("batch", min=1)
        free["batch"] = (1, max_batch)
    if dynamic and any_size:  # a depther: H and W free (it pads to whole patches itself), from DEPTH_MIN_SIDE px
        # batch 1, fixed: with a symbolic batch torch.export (2.13) adds a guard batch != 1 that we
        # could not trace to its op; one image at a time is what depth inference does anyway
        dims = {2: Dim("H", min=DEPTH_MIN_SIDE), 3: Dim("W", min=DEPTH_MIN_SIDE)}
        free = {"H": (DEPTH_MIN_SIDE, None), "W": (DEPTH_MIN_SIDE, None)}
        x = x[:1]
    elif dynamic:
        # H = p h and W = p w: the graph knows the sides are multiples of the patch size.
        top = max_side // p if max_side else None
        h, w = Dim("h", min=1, max=top), Dim("w", min=1, max=top)
        dims[2], dims[3] = p * h, p * w
        free["H"] = free["W"] = (p, top * p if top else None, f"{p}*n")
    return Shapes(x, {"x": dims} if dims else None, free)


@contextlib.contextmanager
def exportable(
    model: nn.Module, *, dynamic: bool = True, size: Sequence[int] = (224, 224), outputs: Sequence[str] | None = None,
    batch: int | None = None, max_batch: int | None = None, max_side: int | None = None, attn_impl: str | None = None,
) -> Iterator[tuple[nn.Module, Shapes]]:
    """What every exporter traces: the module (x -> tuple of outputs) and its Shapes (example input,
    dynamic shapes), valid inside the with-block (the model is in export mode there). Arguments
    as in export_program; for exporters that need more than one torch.export call (int8 PT2E).

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> with exportable(model, dynamic=False, size=(28, 28), batch=1) as (module, shapes):
        ...     [tuple(t.shape) for t in module(shapes.example)], shapes.free
        ([(1, 384), (1, 4, 384)], {})
    """
    backbone = _backbone(model)
    outputs = _check_outputs(model, outputs)
    size = _check_size(backbone, size, isinstance(model, Depther))
    shapes = _shapes(model, size, dynamic=dynamic, batch=batch, max_batch=max_batch, max_side=max_side)
    with export_mode(model, None if dynamic else size, attn_impl):
        yield _Exportable(model, outputs).eval(), shapes


def export_program(
    model: nn.Module, *, dynamic: bool = True, size: Sequence[int] = (224, 224), outputs: Sequence[str] | None = None,
    batch: int | None = None, max_batch: int | None = None, max_side: int | None = None, attn_impl: str | None = None,
) -> torch.export.ExportedProgram:
    """torch.export the model: x (B, 3, H, W) -> the tuple of `outputs` (see module docstring).

    dynamic=True: batch, H and W are symbolic (H, W multiples of the patch size), traced at
    `size`; the position embedding uses the matrix form. dynamic=False: the graph is for
    exactly `size`, with the position embedding baked. batch=N fixes the batch too (with
    dynamic=False: a fully static program). max_batch / max_side (pixels) bound the free
    dimensions (ExecuTorch needs bounds; max_batch >= 3). attn_impl "explicit" writes attention
    as MatMul + Softmax, "fused" as scaled_dot_product_attention (default: the model's own).
    Call `.module()` on the result to run it.

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> program = export_program(model, dynamic=False, size=(28, 28))           # doctest: +SKIP
        >>> [tuple(t.shape) for t in program.module()(torch.randn(2, 3, 28, 28))]  # doctest: +SKIP
        [(2, 384), (2, 4, 384)]

        (Skipped in the doctests for time; docs/export.md runs a dynamic export.)
    """
    with exportable(model, dynamic=dynamic, size=size, outputs=outputs, batch=batch, max_batch=max_batch,
                    max_side=max_side, attn_impl=attn_impl) as (module, shapes):
        return torch.export.export(module, (shapes.example,), dynamic_shapes=shapes.dynamic_shapes)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    dynamic: bool = True,
    opset: int | None = None,
    size: Sequence[int] = (224, 224),
    outputs: Sequence[str] | None = None,
    batch: int | None = None,
    attn_impl: str | None = None,
) -> Path:
    """Write the model to an ONNX file; returns its path.

    dynamic=True: the batch and image size are free (sides multiples of the patch size);
    dynamic=False: a graph for `size` = (H, W) only, with its position embedding baked.
    batch=N fixes the batch; attn_impl as in export_program. For NPU toolchains see
    minidino.export.portable (static, MatMul + Softmax attention, opset 17/18).
    opset None takes the exporter's default. Needs the `export` extra (onnx, onnxscript).
    Graph input "x", outputs named as in `outputs` (module docstring).

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> path = export_onnx(model, "vits14.onnx", dynamic=False, size=(28, 28))   # doctest: +SKIP
        >>> import onnxruntime as ort                                                 # doctest: +SKIP
        >>> cls, patches = ort.InferenceSession(str(path)).run(None, {"x": torch.randn(1, 3, 28, 28).numpy()})  # doctest: +SKIP
        >>> cls.shape, patches.shape                                                  # doctest: +SKIP
        ((1, 384), (1, 4, 384))

        (Skipped in the doctests for time; docs/export.md runs the same export.)
    """
    try:
        import onnx  # noqa: F401  (the exporter needs it; fail with a clear message)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ImportError(f"export_onnx needs the export extra: pip install 'minidino[export]' ({e})") from None
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"ONNX path should end in .onnx, got {str(path)!r}")
    kwargs: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    with exportable(model, dynamic=dynamic, size=size, outputs=outputs, batch=batch, attn_impl=attn_impl) as (module, shapes), \
            torch_onnx_quiet():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_files(path, lambda tmp: torch.onnx.export(  # a failed export leaves no partial file
            module, (shapes.example,), str(tmp), dynamo=True, dynamic_shapes=shapes.dynamic_shapes,
            input_names=["x"], output_names=list(module.outputs), verbose=False, **kwargs,
        ))
    return path
