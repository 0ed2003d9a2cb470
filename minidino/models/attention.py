"""Attention maps: the softmax weights that the fused attention kernel never materialises.

Computed on the explicit maths path (Attention.forward_explicit) for the requested blocks
only; every block still runs its usual fused path to produce the next block's input.
Token order along both N axes: [cls, extra_1 .. extra_R (registers or storage tokens), patch_1 .. patch_hw].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from einops import rearrange
from torch import Tensor, nn

__all__ = ["attention_maps", "cls_attention_map"]


class _Backbone(Protocol):
    """What attention_maps needs of a backbone (either family's); named here, not imported,
    so that this module and backbone.py do not import each other."""

    blocks: nn.ModuleList

    def prepare(self, x: Tensor) -> tuple[Tensor, Any]: ...


def attention_maps(model: _Backbone, x: Tensor, blocks: Sequence[int] = (-1,)) -> tuple[Tensor, ...]:
    """One (B, nh, N, N) tensor of softmax weights per requested block (negative indices count from the end).

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=2)
        >>> (a,) = attention_maps(model, torch.randn(1, 3, 28, 28), blocks=(-1,))
        >>> tuple(a.shape)                                   # (B, nh, N, N), N = 1 + 2*2
        (1, 6, 5, 5)
    """
    depth = len(model.blocks)
    wanted = []
    for b in blocks:
        if not isinstance(b, int) or not -depth <= b < depth:
            raise ValueError(f"block index {b!r} out of range for depth {depth}")
        wanted.append(b % depth)
    tokens, rope = model.prepare(x)  # (B, N, D); DINOv3's rotary tables (None for DINOv2)
    maps: dict[int, Tensor] = {}
    for i, blk in enumerate(model.blocks):
        if i in wanted:
            _, maps[i] = blk.attn.forward_explicit(blk.norm1(tokens), rope=rope)  # (B, nh, N, N)
        if i >= max(wanted):
            break
        tokens = blk(tokens, rope=rope)
    return tuple(maps[i] for i in wanted)


def cls_attention_map(attn: Tensor, h: int, w: int, num_register_tokens: int) -> Tensor:
    """The class token's attention to the patches, (B, nh, N, N) -> (B, nh, h, w); registers skipped.

    Examples:
        >>> attn = torch.rand(1, 6, 1 + 4 + 6, 1 + 4 + 6).softmax(-1)   # 4 registers, a 2 x 3 grid
        >>> tuple(cls_attention_map(attn, 2, 3, num_register_tokens=4).shape)
        (1, 6, 2, 3)
    """
    B, nh, N, _ = attn.shape
    start = 1 + num_register_tokens
    if N != start + h * w:
        raise ValueError(f"attention over {N} tokens does not fit an {h}x{w} grid with {num_register_tokens} registers")
    return rearrange(attn[:, :, 0, start:], "B nh (h w) -> B nh h w", h=h)  # (B, nh, h, w)
