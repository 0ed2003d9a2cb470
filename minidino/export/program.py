"""Export to ONNX and torch.export, with a dynamic image size (or a static one).

Exporting a DINOv2 backbone usually fails or drifts at the position-embedding resize: the
bicubic `interpolate` with scale factors (the 0.1 offset) or with antialias has no exact
ONNX counterpart. Here the resize is traced in its "matrix" form (posembed.py): plain
tensor ops on h and w that reproduce PyTorch's CPU kernel, so one graph serves every image
size and matches eager PyTorch. A static export instead bakes the exact position embedding
of one size into the graph as a constant. DINOv3 has no position embedding to resize: its
RoPE tables (rope.py) are plain tensor ops on h and w, traced into the graph in both modes.

    import minidino
    model = minidino.create_model("dinov2_vits14_reg", pretrained=...)
    minidino.export_onnx(model, "vits14_reg.onnx")                # any H, W multiple of 14, any batch
    minidino.export_onnx(model, "vits14_224.onnx", dynamic=False)  # 224 x 224 only, pos baked
    program = minidino.export_program(model)                       # torch.export.ExportedProgram

Graph inputs and outputs: "x" (B, 3, H, W) float32 in; out, by default, "x_norm_clstoken"
(B, D), "x_norm_regtokens" (B, R, D) for the register models ("x_storage_tokens" for DINOv3), "x_norm_patchtokens"
(B, h*w, D) (the keys of `forward_features`); a `*_lc` classifier gives "logits" (B, 1000);
a depther (`*_ld`, `*_dd`) gives "depth" (B, 1, H, W) in metres, for any H and W (it pads itself).
onnx and onnxruntime are optional dependencies (`pip install minidino[export]`), imported
only here, inside the functions.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..utils.atomic import atomic_write_files
from ..heads import Depther, LinearClassifier
from ..models.backbone import VisionTransformerBase
from ..models.dinov2 import DinoVisionTransformer

__all__ = ["export_onnx", "export_program", "default_outputs"]

# Smallest side of an exported depther's input: 3 patches after padding. torch.export guards the
# patch grid to h, w >= 3 (the DPT's 2x-down level and the size-1 specialisation); eager takes any size.
DEPTH_MIN_SIDE = 29
FEATURE_KEYS = ("x_norm_clstoken", "x_norm_regtokens", "x_storage_tokens", "x_norm_patchtokens", "x_prenorm")


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
    backbone = _backbone(model)
    regs = (backbone.extra_tokens_key,) if backbone.num_register_tokens else ()
    return ("x_norm_clstoken", *regs, "x_norm_patchtokens")


class _Exportable(nn.Module):
    """Tensors in, a tuple of tensors out: what exporters take. Wraps the model, shares its weights."""

    def __init__(self, model: nn.Module, outputs: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.outputs = tuple(outputs)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        if isinstance(self.model, (LinearClassifier, Depther)):
            return (self.model(x),)  # (B, C) logits or (B, 1, H, W) depth
        feats = self.model.forward_features(x)
        return tuple(feats[k] for k in self.outputs)


def _backbone(model: nn.Module) -> VisionTransformerBase:
    if isinstance(model, (LinearClassifier, Depther)):
        return model.backbone
    if isinstance(model, VisionTransformerBase):
        return model
    raise TypeError(
        f"can only export a minidino backbone or *_lc classifier (or a depther), got {type(model).__name__}; "
        "build one with minidino.create_model(name) (dino.txt: minidino.export.dinotxt.export_dinotxt_onnx)"
    )


def _check_outputs(model: nn.Module, outputs: Sequence[str] | None) -> tuple[str, ...]:
    if outputs is None:
        return default_outputs(model)
    outputs = tuple(outputs)
    if isinstance(model, (LinearClassifier, Depther)):
        allowed: tuple[str, ...] = ("logits",) if isinstance(model, LinearClassifier) else ("depth",)
    else:  # a backbone: its own keys (x_norm_regtokens for DINOv2, x_storage_tokens for DINOv3)
        allowed = tuple(k for k in FEATURE_KEYS if k not in ("x_norm_regtokens", "x_storage_tokens")
                        or k == _backbone(model).extra_tokens_key)
    bad = [o for o in outputs if o not in allowed]
    if bad or not outputs:
        raise ValueError(f"unknown graph outputs {bad or outputs!r}; choose from {allowed}")
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


@contextlib.contextmanager
def _export_mode(model: nn.Module, static_size: tuple[int, int] | None) -> Iterator[None]:
    """Eval mode and an exportable position embedding for the duration of an export.

    Dynamic: the "matrix" resize, traced symbolically in h and w. Static: the position
    embedding of that one size, computed now by the exact default path and baked in as a
    constant (the instance attribute shadows the method until the export ends).
    """
    backbone = _backbone(model)
    was_training, method = model.training, getattr(backbone, "pos_embed_method", None)
    model.eval()
    try:
        if isinstance(backbone, DinoVisionTransformer):  # DINOv3 computes its RoPE tables in the graph
            _set_export_pos(backbone, static_size)
        with _size_oblivious():
            yield
    finally:
        backbone.__dict__.pop("interpolate_pos_encoding", None)
        if method is not None:
            backbone.pos_embed_method = method  # type: ignore[attr-defined]
        model.train(was_training)


@contextlib.contextmanager
def torch_onnx_quiet() -> Iterator[None]:
    """torch 2.13's ONNX exporter trips over its own deprecation (`isinstance(treespec, LeafSpec)`, a
    FutureWarning from inside its run_decompositions): nothing a caller can act on, so it is not shown.
    Every other warning still is."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning)
        yield


def _size_oblivious() -> contextlib.AbstractContextManager:
    """Quirk of torch.export: it assumes a symbolic size is never 1 and guards on it, so an
    image 14 px wide or tall (h or w == 1) or a batch of 1 would be refused by the program.
    Tracing "size-obliviously" (a private torch.fx switch; skipped where absent) drops those
    guards; the graph is correct at 1 (tests/test_export.py runs 28x14 and batch 1)."""
    from torch.fx.experimental import _config as fx_config

    if not hasattr(fx_config, "backed_size_oblivious"):
        return contextlib.nullcontext()
    return fx_config.patch(backed_size_oblivious=True)


def _set_export_pos(backbone: DinoVisionTransformer, static_size: tuple[int, int] | None) -> None:
    """Dynamic: the matrix resize. Static: the exact position embedding of that size, as a constant."""
    if static_size is None:
        backbone.pos_embed_method = "matrix"
        return
    p = backbone.patch_size
    with torch.no_grad():
        baked = backbone.interpolate_pos_encoding(static_size[0] // p, static_size[1] // p, torch.float32).clone()

    def fixed_pos(h: int, w: int, dtype: torch.dtype) -> Tensor:
        return baked.to(dtype)  # (1, 1 + h*w, D): the graph's shapes are static, so h, w are that size

    backbone.interpolate_pos_encoding = fixed_pos  # type: ignore[method-assign]


def _example_and_shapes(model: VisionTransformerBase, size: tuple[int, int], dynamic: bool,
                        any_size: bool = False) -> tuple[Tensor, Any]:
    weight = model.patch_embed.proj.weight
    # Batch 2, not 1: torch.export specialises dimensions of size 1.
    x = torch.randn(2, 3, *size, device=weight.device, dtype=torch.float32)  # (B, 3, H, W)
    Dim = torch.export.Dim
    batch = Dim("batch", min=1)  # the batch is free in both modes
    if not dynamic:
        return x, {"x": {0: batch}}
    if any_size:  # a depther: H and W free (it pads to whole patches itself), from DEPTH_MIN_SIDE px
        sides = {2: Dim("H", min=DEPTH_MIN_SIDE), 3: Dim("W", min=DEPTH_MIN_SIDE)} if dynamic else {}
        # batch 1, fixed: with a symbolic batch torch.export (2.13) adds a guard batch != 1 that we
        # could not trace to its op; one image at a time is what depth inference does anyway
        return x[:1], {"x": sides}
    p = model.patch_size
    # H = p h and W = p w: the graph knows the sides are multiples of the patch size (DINOv3 models
    # take other sides in eager mode, floored; their exported graphs take multiples of 16).
    h, w = Dim("h", min=1), Dim("w", min=1)
    return x, {"x": {0: batch, 2: p * h, 3: p * w}}


def export_program(
    model: nn.Module, *, dynamic: bool = True, size: Sequence[int] = (224, 224), outputs: Sequence[str] | None = None
) -> torch.export.ExportedProgram:
    """torch.export the model: x (B, 3, H, W) -> the tuple of `outputs` (see module docstring).

    dynamic=True: batch, H and W are symbolic (H, W multiples of the patch size), traced at
    `size`; the position embedding uses the matrix form. dynamic=False: the graph is for
    exactly `size` (any batch), with the position embedding baked. Call `.module()` on the
    result to run it.

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> program = export_program(model, dynamic=False, size=(28, 28))           # doctest: +SKIP
        >>> [tuple(t.shape) for t in program.module()(torch.randn(2, 3, 28, 28))]  # doctest: +SKIP
        [(2, 384), (2, 4, 384)]

        (Skipped in the doctests for time; docs/export.md runs a dynamic export.)
    """
    backbone = _backbone(model)
    outputs = _check_outputs(model, outputs)
    size = _check_size(backbone, size, isinstance(model, Depther))
    x, shapes = _example_and_shapes(backbone, size, dynamic, isinstance(model, Depther))
    with _export_mode(model, None if dynamic else size):
        return torch.export.export(_Exportable(model, outputs).eval(), (x,), dynamic_shapes=shapes)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    dynamic: bool = True,
    opset: int | None = None,
    size: Sequence[int] = (224, 224),
    outputs: Sequence[str] | None = None,
) -> Path:
    """Write the model to an ONNX file; returns its path.

    dynamic=True: the batch and image size are free (sides multiples of the patch size);
    dynamic=False: a graph for `size` = (H, W) only, with its position embedding baked.
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
    backbone = _backbone(model)
    outputs = _check_outputs(model, outputs)
    size = _check_size(backbone, size, isinstance(model, Depther))
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"ONNX path should end in .onnx, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    x, shapes = _example_and_shapes(backbone, size, dynamic, isinstance(model, Depther))
    kwargs: dict[str, Any] = {} if opset is None else {"opset_version": opset}
    with _export_mode(model, None if dynamic else size), torch_onnx_quiet():
        atomic_write_files(path, lambda tmp: torch.onnx.export(  # a failed export leaves no partial file
            _Exportable(model, outputs).eval(), (x,), str(tmp), dynamo=True, dynamic_shapes=shapes,
            input_names=["x"], output_names=list(outputs), verbose=False, **kwargs,
        ))
    return path
