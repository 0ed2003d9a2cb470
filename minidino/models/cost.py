"""What a model costs, from its config alone: parameters, tokens, FLOPs and activation sizes.

FLOPs count 2 per multiply-add of the matrix products and the patch convolution (norms,
softmax, GELU, residual adds are not counted: they are under 1% at these widths), the
convention of torch.utils.flop_counter. Works on models built on the meta device.

Shapes: P patch, D width, L depth, nh heads, Hf FFN hidden width, R registers, N tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ModelCost", "model_cost"]


@dataclass(frozen=True)
class ModelCost:
    """Analytic cost of one image (B = 1) at H x W pixels.

    Examples:
        >>> cost = model_cost(minidino.create_model("dinov2_vits14", device="meta"), 224, 224)
        >>> cost.grid, cost.tokens, round(cost.total_flops / 1e9, 1)      # (h, w), N, GFLOP per image
        ((16, 16), 257, 12.2)
    """

    params: int
    head_params: int
    grid: tuple[int, int]  # (h, w) patches
    tokens: int  # N = 1 + R + h*w
    flops: dict[str, int]  # per part, per image
    act_values_fused: int  # peak live activation values per image, fused attention
    act_values_explicit: int  # the same when attention maps are materialised

    @property
    def total_flops(self) -> int:
        return sum(self.flops.values())


def model_cost(model: Any, H: int, W: int, *, backbone: Any = None) -> ModelCost:
    """Parameters, tokens, FLOPs and activation sizes of `model` (a backbone or *_lc classifier) at H x W.

    Examples:
        >>> clf = minidino.create_model("dinov2_vits14_lc", device="meta")
        >>> cost = model_cost(clf, 224, 224)
        >>> cost.params - cost.head_params, cost.head_params              # backbone, linear head (5D -> 1000)
        (22056576, 1921000)
    """
    backbone = getattr(model, "backbone", model) if backbone is None else backbone  # the ViT inside the model
    c = backbone.config
    P, D, L, nh, Hf, R = c.patch_size, c.embed_dim, c.depth, c.num_heads, c.ffn_hidden_dim, c.num_register_tokens
    h, w = H // P, W // P
    N = 1 + R + h * w
    ffn_matmul = 3 * N * D * Hf if c.ffn_layer == "swiglu" else 2 * N * D * Hf  # multiply-adds: w12 + w3 / fc1 + fc2
    flops = {
        "patch embedding": 2 * h * w * (c.in_chans * P * P) * D,
        "qkv + output projections": L * 2 * (3 * N * D * D + N * D * D),
        "attention (q k^T, a v)": L * 2 * (2 * N * N * D),
        "FFN": L * 2 * ffn_matmul,
    }
    head = getattr(model, "linear_head", None)
    if head is not None:
        flops["linear head"] = 2 * head.in_features * head.out_features
    params = sum(p.numel() for p in model.parameters())
    head_params = params - sum(p.numel() for p in backbone.parameters())  # heads, text encoder: all but the ViT
    # Peak live values inside one block in inference (the residual x and its norm, plus the larger
    # branch), checked against `--measure` (tests/test_cli.py):
    # attention: qkv (3ND) + merged heads (ND) + projection (ND); the explicit path also holds the
    # logits and the softmax weights (2 nh N N) at once;
    # FFN: GELU MLP, the hidden state once (in-place GELU) + fc2's output (ND); SwiGLU, w12's 2F,
    # silu(a) and the product (4NF).
    ffn_live = 4 * N * Hf if c.ffn_layer == "swiglu" else N * Hf + N * D
    base = 2 * N * D
    fused = base + max(5 * N * D, ffn_live)
    explicit = base + max(5 * N * D + 2 * nh * N * N, ffn_live)
    return ModelCost(params, head_params, (h, w), N, flops, fused, explicit)
