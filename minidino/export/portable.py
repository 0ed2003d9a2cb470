"""A "portable" ONNX graph for NPU toolchains: the plainest operators, every shape fixed.

NPU compilers (vendor SDKs that take ONNX) reject what desktop runtimes accept: free
dimensions, fused attention, operators newer than their opset, tensors of rank 5. This export
gives them the model as

    static shapes         batch, H and W fixed; the position embedding of that size baked in
                          (DINOv3: the RoPE sine and cosine tables of that size, as constants)
    attention             MatMul + Softmax (attn_impl="explicit"), with q, k and v cut from the
                          qkv projection by Slice and reshaped to rank 4 (no 5-D tensor, no Gather);
                          DINOv3 rotates the patches' q and k with Slice, Mul, Neg, Add, Concat
    no fused/custom ops   only the ai.onnx domain; checked after the export
    LayerNorm             LayerNormalization (opset 17+), or written out (layer_norm="primitive":
                          ReduceMean, Sub, Mul, Add, Sqrt, Div) for compilers without it
    GELU                  exact (Gelu at opset 20; Div, Erf, Add, Mul at 17-19); gelu="tanh" swaps
                          in the tanh approximation for chips without Erf: NOT the model's maths
                          (max abs 7.9e-4 at full depth ViT-S/14, random weights)
    opset                 18 (the exporter's oldest), 17 (converted down), 19, 20...

Opset traps met (torch 2.13, onnx 1.2x), all handled or refused here with the reason:
- asking torch.onnx for 17 or lower prints "Setting ONNX exporter to use operator set version 18
  because the requested opset_version 17 is a lower version than we have implementations for"
  and runs onnx's version converter; below 17 that fails on LayerNormalization ("No Previous
  Version of LayerNormalization exists") and the file is silently left at opset 18. So 17 is
  made here from an 18 file, and the result's opset is checked.
- with LayerNorm written out, converting 18 -> 17 turns ReduceMean's axes input into an
  attribute but keeps the opset-18 attribute noop_with_empty_axes, which 17 rejects
  ("Unrecognized attribute: noop_with_empty_axes for operator ReduceMean"): it is dropped first
  (0, its default).
- opset 16 and below: "No Adapter From Version $14 for Reshape" (13) or the LayerNormalization
  failure above: refused with that reason.
- opset 23 with the fused path emits the fused `Attention` op: the explicit path never does.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.layers import Attention, Mlp
from ..models.rope import Rope, apply_rope
from .extras import require
from .program import export_onnx

__all__ = ["portable_copy", "export_portable_onnx", "downgrade_opset", "check_portable", "MIN_OPSET"]

MIN_OPSET = 17  # LayerNormalization appears in opset 17; 16 and below cannot be reached (module docstring)
FUSED_OPS = ("Attention", "MultiHeadAttention", "GroupQueryAttention", "SkipLayerNormalization", "FastGelu", "BiasGelu")


class PrimitiveLayerNorm(nn.Module):
    """LayerNorm written out: (x - mean) / sqrt(var + eps) * weight + bias, biased variance.
    Shares the weights of the LayerNorm it replaces."""

    def __init__(self, ln: nn.LayerNorm) -> None:
        super().__init__()
        self.weight, self.bias, self.eps = ln.weight, ln.bias, ln.eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(-1, keepdim=True)  # (..., 1)
        centred = x - mean
        var = (centred * centred).mean(-1, keepdim=True)  # (..., 1)
        return centred / torch.sqrt(var + self.eps) * self.weight + self.bias


class PortableAttention(nn.Module):
    """Attention with tensors of rank 4 at most and MatMul + Softmax: q, k, v are slices of the
    qkv projection (each (B, N, D)), reshaped to (B, N, nh, hd) and transposed. The same maths as
    Attention.forward_explicit (same products, same order); shares its weights.

    DINOv3 (rope given): the patches' q and k are rotated as in the model (rope.apply_rope): Slice,
    Mul, Neg, Add, Concat on the tables, which a static export holds as constants (no Sin, Cos or
    Range in the file, see mode.export_mode)."""

    def __init__(self, attn: Attention) -> None:
        super().__init__()
        self.qkv, self.proj = attn.qkv, attn.proj
        self.num_heads, self.head_dim, self.scale = attn.num_heads, attn.head_dim, attn.scale

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, explicit: bool = True, rope: Rope | None = None) -> Tensor:
        if attn_mask is not None:
            raise ValueError("the portable attention takes no mask")
        B, N, _ = x.shape
        D = self.num_heads * self.head_dim
        qkv = self.qkv(x)  # (B, N, 3D)
        q, k, v = (qkv[:, :, i * D:(i + 1) * D].reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
                   for i in range(3))  # each (B, nh, N, hd)
        if rope is not None:  # DINOv3: the patches' queries and keys turned by their places
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        weights = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, nh, N, N)
        out = (weights @ v).transpose(1, 2).reshape(B, N, D)  # (B, N, D)
        return self.proj(out)


class TanhGeluMlp(nn.Module):
    """fc1 -> the tanh approximation of GELU -> fc2 (an opt-in for chips without Erf; not exact)."""

    def __init__(self, mlp: Mlp) -> None:
        super().__init__()
        self.fc1, self.fc2 = mlp.fc1, mlp.fc2

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def portable_copy(model: nn.Module, *, layer_norm: Literal["op", "primitive"] = "op",
                  gelu: Literal["erf", "tanh"] = "erf") -> nn.Module:
    """A copy of `model` (weights shared) with minidino's Attention replaced by PortableAttention,
    and, if asked, LayerNorm written out and GELU's tanh approximation. Attention modules of other
    classes (another family's) are kept; export them with attn_impl="explicit".

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> port = portable_copy(model, layer_norm="primitive")
        >>> type(port.blocks[0].attn).__name__, type(port.norm).__name__
        ('PortableAttention', 'PrimitiveLayerNorm')
        >>> x = torch.randn(1, 3, 28, 28)
        >>> with torch.no_grad():
        ...     float((port(x) - model(x)).abs().max()) < 1e-5
        True
    """
    if layer_norm not in ("op", "primitive") or gelu not in ("erf", "tanh"):
        raise ValueError(f"layer_norm must be 'op' or 'primitive' and gelu 'erf' or 'tanh', got {layer_norm!r}, {gelu!r}")
    params = {id(p): p for p in model.parameters()}
    port = copy.deepcopy(model, memo={k: v for k, v in params.items()})  # modules copied, parameters shared
    for module in list(port.modules()):
        for name, child in list(module.named_children()):
            if type(child) is Attention:
                setattr(module, name, PortableAttention(child))
            elif layer_norm == "primitive" and isinstance(child, nn.LayerNorm):
                setattr(module, name, PrimitiveLayerNorm(child))
            elif gelu == "tanh" and type(child) is Mlp:
                setattr(module, name, TanhGeluMlp(child))
    return port.eval()


def downgrade_opset(src: str | Path, dst: str | Path, opset: int) -> Path:
    """Convert an ONNX file to an older opset with onnx's version converter, then check the result
    (onnx.checker, full check) and that its opset is the one asked for.

    Examples:
        >>> downgrade_opset("vits14_o18.onnx", "vits14_o17.onnx", 17)                # doctest: +SKIP
        PosixPath('vits14_o17.onnx')
    """
    onnx = require("onnx", "downgrade_opset")
    from onnx import version_converter

    mp = onnx.load(str(src))
    for n in mp.graph.node:  # noop_with_empty_axes is opset 18's; 0 is its default (module docstring)
        if n.op_type.startswith("Reduce"):
            keep = [a for a in n.attribute if not (a.name == "noop_with_empty_axes" and a.i == 0)]
            del n.attribute[:]
            n.attribute.extend(keep)
    try:
        out = version_converter.convert_version(mp, opset)
    except Exception as e:  # the converter's own assertion: say which opset and why
        raise ValueError(f"cannot convert {Path(src).name} to opset {opset}: {' '.join(str(e).split())}") from None
    onnx.checker.check_model(out, full_check=True)
    got = {o.domain or "ai.onnx": o.version for o in out.opset_import}.get("ai.onnx")
    if got != opset:
        raise ValueError(f"the converter left {Path(src).name} at opset {got}, not {opset}")
    from .onnx_precision import save_onnx

    return save_onnx(out, dst)


def check_portable(path: str | Path) -> dict[str, int]:
    """The op counts of a portable file, after checking what the module docstring promises:
    every dimension fixed, only ai.onnx operators, no fused ones, rank <= 4 where shapes are known.

    Examples:
        >>> check_portable("vits14_npu.onnx")                                      # doctest: +SKIP
        {'Add': 73, 'MatMul': 72, 'Slice': 38, ...}
    """
    from .report import onnx_summary

    onnx = require("onnx", "check_portable")
    ops, opset, inputs, outputs = onnx_summary(path)
    free = [f"{k}[{i}]={d}" for k, dims in {**inputs, **outputs}.items() for i, d in enumerate(dims) if isinstance(d, str)]
    custom = [d for d in opset if d not in ("ai.onnx", "")]
    fused = [op for op in ops if op in FUSED_OPS]
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    rank5 = [v.name for v in inferred.graph.value_info if len(v.type.tensor_type.shape.dim) > 4]
    if free or custom or fused or rank5:
        raise AssertionError(f"{Path(path).name} is not portable: free dims {free}, custom domains {custom}, "
                             f"fused ops {fused}, tensors of rank > 4 {rank5[:5]}")
    return ops


def export_portable_onnx(
    model: nn.Module, path: str | Path, *, size: Sequence[int] = (224, 224), batch: int = 1, opset: int = 18,
    layer_norm: Literal["op", "primitive"] = "op", gelu: Literal["erf", "tanh"] = "erf",
    outputs: Sequence[str] | None = None,
) -> Path:
    """Write the portable graph (module docstring) for exactly (batch, 3, *size); returns its path.

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> export_portable_onnx(model, "vits14_npu.onnx", size=(28, 28), opset=17)   # doctest: +SKIP
    """
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ValueError(f"opset {opset!r}: the portable export supports opset {MIN_OPSET} and above (16 and below: "
                         "the converter has no previous version of LayerNormalization and no adapter for Reshape from 14)")
    path = Path(path)
    port = portable_copy(model, layer_norm=layer_norm, gelu=gelu)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter; failures still raise
        if opset >= 18:
            export_onnx(port, path, dynamic=False, size=size, batch=batch, opset=opset, outputs=outputs, attn_impl="explicit")
        else:
            with tempfile.TemporaryDirectory(prefix=".portable-", dir=path.parent) as tmp:
                at18 = export_onnx(port, Path(tmp) / path.name, dynamic=False, size=size, batch=batch, opset=18,
                                   outputs=outputs, attn_impl="explicit")
                downgrade_opset(at18, path, opset)
    check_portable(path)
    return path
