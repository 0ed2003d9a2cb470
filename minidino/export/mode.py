"""What changes in a model for the duration of an export, and is put back after.

    with export_mode(model, static_size=None):   # eval, the exportable resize, folded key bias
        torch.export.export(...)

Each switch is one named function: the position-embedding resize in its traceable "matrix" form
or baked for one size (`set_export_pos`), DINOv3's rotary tables baked for one size
(`set_export_rope`), DINOv3's key-masked qkv bias folded to a constant (`folded_key_biases`),
torch.export's size-1 guards dropped (`size_oblivious`), and torch's own FutureWarning hidden
(`torch_onnx_quiet`). None of them changes a value the model computes.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..heads import Depther, LinearClassifier
from ..models.backbone import VisionTransformerBase
from ..models.layers import MaskedBiasLinear
from ..models.rope import Rope

__all__ = ["export_mode", "folded_key_biases", "torch_onnx_quiet", "size_oblivious", "set_export_pos", "set_export_rope"]


def _backbone(model: nn.Module) -> VisionTransformerBase:
    """The vision transformer inside `model`: any backbone create_model builds (every family's class
    derives from minidino.models.backbone.VisionTransformerBase)."""
    if isinstance(model, (LinearClassifier, Depther)):
        return model.backbone
    if isinstance(model, VisionTransformerBase):
        return model
    raise TypeError(
        f"can only export a minidino backbone or *_lc classifier (or a depther), got {type(model).__name__}; "
        "build one with minidino.create_model(name) (dino.txt: minidino.export.dinotxt.export_dinotxt_onnx)"
    )


@contextlib.contextmanager
def export_mode(model: nn.Module, static_size: tuple[int, int] | None, attn_impl: str | None = None) -> Iterator[None]:
    """Eval mode, an exportable position embedding, the attention path asked for and DINOv3's key
    bias folded (`folded_key_biases`), for the duration of an export.

    Dynamic: the "matrix" resize, traced symbolically in h and w. Static: the position
    embedding of that one size, computed now by the exact default path and baked in as a
    constant (the instance attribute shadows the method until the export ends); DINOv3's rotary
    tables likewise (`set_export_rope`).
    attn_impl: "explicit" writes attention as MatMul + Softmax (portable exports), "fused" as SDPA.

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> with export_mode(model, None):
        ...     model.pos_embed_method, model.training
        ('matrix', False)
        >>> model.pos_embed_method                     # put back after
        'interpolate'
    """
    backbone = _backbone(model)
    was_training = model.training
    method = getattr(backbone, "pos_embed_method", None)
    impl = getattr(backbone, "attn_impl", None)
    if attn_impl is not None and impl is None:
        raise ValueError(f"{type(backbone).__name__} has no attn_impl switch: export it with attn_impl=None")
    model.eval()
    try:
        if method is not None:
            set_export_pos(backbone, static_size)
        if static_size is not None:
            set_export_rope(backbone, static_size)
        if attn_impl is not None:
            backbone.attn_impl = attn_impl
        with size_oblivious(), folded_key_biases(model):
            yield
    finally:
        backbone.__dict__.pop("interpolate_pos_encoding", None)
        backbone.__dict__.pop("rope_tables", None)
        if method is not None:
            backbone.pos_embed_method = method
        if impl is not None:
            backbone.attn_impl = impl
        model.train(was_training)


@contextlib.contextmanager
def folded_key_biases(model: nn.Module) -> Iterator[None]:
    """DINOv3's key-masked qkv bias (layers.MaskedBiasLinear: `bias * bias_mask` at every call),
    computed once and held by a plain Linear for the duration of an export (weights shared, the
    model's own modules put back after). The same values as the eager product, so the same outputs;
    the graph loses a Mul per block, and the bias becomes a constant, which XNNPACK's int8 linear
    needs: with the Mul in the graph the int8-dynamic qkv projection stayed outside the delegate and
    the lowering failed ("Missing out variants: {'quantized_decomposed::choose_qparams', ...}").

    Examples:
        >>> model = minidino.create_model("dinov3_vits16", depth=1)
        >>> with folded_key_biases(model):
        ...     type(model.blocks[0].attn.qkv).__name__
        'Linear'
        >>> type(model.blocks[0].attn.qkv).__name__
        'MaskedBiasLinear'
    """
    swapped = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MaskedBiasLinear):
                plain = nn.Linear(child.in_features, child.out_features, device="meta")
                plain.weight = child.weight  # shared
                plain.bias = nn.Parameter((child.bias * child.bias_mask).detach(), requires_grad=False)  # (3D,)
                setattr(parent, name, plain)
                swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


@contextlib.contextmanager
def torch_onnx_quiet() -> Iterator[None]:
    """torch 2.13's ONNX exporter trips over its own deprecation (`isinstance(treespec, LeafSpec)`, a
    FutureWarning from inside its run_decompositions): nothing a caller can act on, so it is not shown.
    Every other warning still is.

    Examples:
        >>> with torch_onnx_quiet():
        ...     warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning)  # not shown
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning)
        yield


def size_oblivious() -> contextlib.AbstractContextManager:
    """Quirk of torch.export: it assumes a symbolic size is never 1 and guards on it, so an
    image 14 px wide or tall (h or w == 1) or a batch of 1 would be refused by the program.
    Tracing "size-obliviously" (a private torch.fx switch; skipped where absent) drops those
    guards; the graph is correct at 1 (tests/test_export.py runs 28x14 and batch 1).

    Examples:
        >>> with size_oblivious():
        ...     pass                                   # torch.export.export(...) here
    """
    from torch.fx.experimental import _config as fx_config

    if not hasattr(fx_config, "backed_size_oblivious"):
        return contextlib.nullcontext()
    return fx_config.patch(backed_size_oblivious=True)


def set_export_pos(backbone: nn.Module, static_size: tuple[int, int] | None) -> None:
    """Dynamic: the matrix resize. Static: the exact position embedding of that size, as a constant
    (export_mode puts the model back afterwards).

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> set_export_pos(model, (28, 42))
        >>> tuple(model.interpolate_pos_encoding(2, 3, torch.float32).shape)   # baked: (1, 1 + 2*3, D)
        (1, 7, 384)
        >>> del model.interpolate_pos_encoding                                 # what export_mode does after
    """
    if static_size is None:
        backbone.pos_embed_method = "matrix"
        return
    p = backbone.patch_size
    with torch.no_grad():
        baked = backbone.interpolate_pos_encoding(static_size[0] // p, static_size[1] // p, torch.float32).clone()

    def fixed_pos(h: int, w: int, dtype: torch.dtype) -> Tensor:
        return baked.to(dtype)  # (1, 1 + h*w, D): the graph's shapes are static, so h, w are that size

    backbone.interpolate_pos_encoding = fixed_pos  # type: ignore[method-assign]


def set_export_rope(backbone: VisionTransformerBase, static_size: tuple[int, int]) -> None:
    """Static: DINOv3's rotary tables of that size, computed now by the model's own code and baked in
    as constants (no Range, Sin or Cos in the graph; the same values as eager). Another grid (a
    depther's padded one) is still computed in the graph. A family without tables has nothing to bake.

    Examples:
        >>> model = minidino.create_model("dinov3_vits16", depth=1)
        >>> set_export_rope(model, (32, 48))
        >>> tuple(model.rope_tables(2, 3).sin.shape)                            # baked: (h*w, head dim)
        (6, 64)
        >>> del model.rope_tables                                               # what export_mode does after
    """
    p = backbone.patch_size
    grid = (static_size[0] // p, static_size[1] // p)
    with torch.no_grad():
        tables = backbone.rope_tables(*grid)
    if tables is None:
        return
    baked = Rope(*(t.clone() for t in tables))  # each (h*w, hd) float32

    def fixed_rope(h: int, w: int) -> Rope | None:
        return baked if (h, w) == grid else type(backbone).rope_tables(backbone, h, w)  # static shapes: ints

    backbone.rope_tables = fixed_rope  # type: ignore[method-assign]
