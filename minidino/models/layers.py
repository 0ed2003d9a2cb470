"""The building blocks both families' ViTs share. Module and parameter names are the checkpoint's keys.

Shapes: B batch, N tokens, D width, nh heads, hd head dim, F FFN hidden width.
Each module takes `device=` and `dtype=` and allocates uninitialised memory (build on
the "meta" device to allocate nothing); `DinoVisionTransformer.init_weights` fills it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rope import Rope, apply_rope

__all__ = ["PatchEmbed", "MaskedBiasLinear", "Attention", "Mlp", "SwiGLUFFN", "SwiGLUSplitFFN", "LayerScale", "DropPath",
           "Block"]


class PatchEmbed(nn.Module):
    """Non-overlapping patch x patch convolution: (B, 3, H, W) -> (B, h*w, D), row-major.

    Examples:
        >>> pe = PatchEmbed(patch_size=14, in_chans=3, embed_dim=384)
        >>> tuple(pe(torch.randn(2, 3, 28, 42)).shape)          # (B, h*w, D), row-major
        (2, 6, 384)
    """

    def __init__(self, *, patch_size: int, in_chans: int, embed_dim: int, **factory: Any) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, **factory)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)  # (B, D, h, w)
        return x.flatten(2).transpose(1, 2)  # (B, h*w, D)


class MaskedBiasLinear(nn.Linear):
    """DINOv3's qkv projection: a Linear whose bias is multiplied by the `bias_mask` buffer in the same call.

    The mask is 1 for the query and value rows and 0 for the key rows: the key bias is stored (and
    trained) but never used. Both are checkpoint keys (`attn.qkv.bias`, `attn.qkv.bias_mask`), so
    the mask a file holds is the one applied.

    Examples:
        >>> qkv = MaskedBiasLinear(4, 12)
        >>> _ = qkv.reset_bias_mask()
        >>> qkv.bias_mask.tolist()                      # rows q, k, v
        [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    """

    def __init__(self, in_features: int, out_features: int, **factory: Any) -> None:
        super().__init__(in_features, out_features, bias=True, **factory)
        self.register_buffer("bias_mask", torch.empty(out_features, **factory))  # persistent: a checkpoint key

    @torch.no_grad()
    def reset_bias_mask(self) -> "MaskedBiasLinear":
        D = self.out_features // 3
        self.bias_mask.fill_(1.0)
        self.bias_mask[D : 2 * D] = 0.0  # the key rows
        return self

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias * self.bias_mask)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (rows: q, k, v; heads contiguous).

    Two paths computing the same thing: `F.scaled_dot_product_attention` (the fast, default
    path, and the one the current official models run) and the explicit softmax(q k^T * scale) v,
    which is the readable maths, the only one that can return the attention weights, and the
    operation order of the April-2023 official DINOv2 code (bit-identical to it on CPU float32).
    DINOv3 adds two things, each in one place: the key-masked qkv bias (`MaskedBiasLinear`,
    mask_k_bias=True) and the rotation of q and k by the patches' places (`rope`, see rope.py).

    Examples:
        >>> attn = Attention(dim=384, num_heads=6, qkv_bias=True, proj_bias=True)
        >>> tuple(attn(torch.randn(2, 5, 384)).shape)            # (B, N, D) -> (B, N, D)
        (2, 5, 384)
    """

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool, proj_bias: bool, mask_k_bias: bool = False,
                 **factory: Any) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        if qkv_bias and mask_k_bias:
            self.qkv: nn.Linear = MaskedBiasLinear(dim, 3 * dim, **factory)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **factory)
        self.proj = nn.Linear(dim, dim, bias=proj_bias, **factory)

    def _split_heads(self, qkv: Tensor, rope: Rope | None) -> tuple[Tensor, Tensor, Tensor]:
        B, N, _ = qkv.shape
        qkv = qkv.reshape(B, N, 3, self.num_heads, self.head_dim)  # (B, N, 3, nh, hd)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, nh, N, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, nh, N, hd)
        if rope is not None:  # DINOv3: the patches' queries and keys turned by their places
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        return q, k, v

    def _attend(self, qkv: Tensor, attn_mask: Tensor | None, explicit: bool, rope: Rope | None
                ) -> tuple[Tensor, Tensor | None]:
        """(B, N, 3D) projections -> the heads' outputs merged, (B, N, D), and the weights (explicit path only)."""
        q, k, v = self._split_heads(qkv, rope)
        weights = None
        if explicit:
            logits = (q * self.scale) @ k.transpose(-2, -1)  # (B, nh, N, N)
            if attn_mask is not None:
                logits = logits.masked_fill(~attn_mask, float("-inf"))
            weights = logits.softmax(dim=-1)  # (B, nh, N, N), rows sum to 1
            x = weights @ v  # (B, nh, N, hd)
        else:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, nh, N, hd)
        B, nh, N, hd = x.shape
        return x.transpose(1, 2).reshape(B, N, nh * hd), weights  # (B, N, D)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, explicit: bool = False,
                rope: Rope | None = None) -> Tensor:
        """x: (B, N, D). attn_mask: optional bool (B or 1, 1, N, N), True = may attend.
        rope: the patch grid's rotary tables (DINOv3); None for DINOv2."""
        out, _ = self._attend(self.qkv(x), attn_mask, explicit, rope)  # (B, N, D)
        return self.proj(out)

    def forward_explicit(self, x: Tensor, attn_mask: Tensor | None = None,
                         rope: Rope | None = None) -> tuple[Tensor, Tensor]:
        """The readable maths on (B, N, D). Returns the output (B, N, D) and the weights (B, nh, N, N)."""
        out, weights = self._attend(self.qkv(x), attn_mask, True, rope)
        assert weights is not None
        return self.proj(out), weights


class Mlp(nn.Module):
    """The GELU FFN of ViT-S/B/L: fc1 -> GELU (exact erf) -> fc2.

    Examples:
        >>> tuple(Mlp(dim=384, hidden_dim=1536, bias=True)(torch.randn(2, 5, 384)).shape)
        (2, 5, 384)
    """

    def __init__(self, *, dim: int, hidden_dim: int, bias: bool, **factory: Any) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias, **factory)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias, **factory)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)  # (B, N, F)
        if h.requires_grad:
            return self.fc2(F.gelu(h))
        # Inference: the same GELU kernel in place: the (B, N, F) hidden state is held once, not twice.
        return self.fc2(torch.ops.aten.gelu_(h))


class SwiGLUFFN(nn.Module):
    """The SwiGLU FFN of DINOv2's ViT-g: w12 projects to 2F, halves a, b -> silu(a) * b -> w3.

    Named w12 / w3 after the official keys (w1 and w2 fused into one matrix).

    Examples:
        >>> ffn = SwiGLUFFN(dim=64, hidden_dim=176, bias=True)
        >>> tuple(ffn.w12.weight.shape), tuple(ffn(torch.randn(2, 5, 64)).shape)   # w12: (2F, D)
        ((352, 64), (2, 5, 64))
    """

    def __init__(self, *, dim: int, hidden_dim: int, bias: bool, **factory: Any) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden_dim, bias=bias, **factory)
        self.w3 = nn.Linear(hidden_dim, dim, bias=bias, **factory)

    def forward(self, x: Tensor) -> Tensor:
        ab = self.w12(x)  # (B, N, 2F)
        # Two slices, not chunk(2): the same views of the same values, but ExecuTorch lowers chunk to a
        # split whose outputs it plans for the traced batch and size (a free-size program then fails at
        # run time, "Attempted to resize a static tensor"); slices keep the sizes free.
        F_ = ab.shape[-1] // 2
        return self.w3(F.silu(ab[..., :F_]) * ab[..., F_:])  # silu(a) * b, each (B, N, F)


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch; `gamma` is the checkpoint's name.

    Examples:
        >>> ls = LayerScale(dim=4)
        >>> with torch.no_grad():
        ...     _ = ls.gamma.fill_(0.5)
        >>> ls(torch.ones(1, 2, 4)).tolist()
        [[[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]]]
    """

    def __init__(self, *, dim: int, **factory: Any) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(dim, **factory))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: in training, drop a sample's residual branch with probability p
    and rescale the kept ones by 1 / (1 - p). The identity in eval mode or at p == 0.

    Examples:
        >>> dp = DropPath(0.5).eval()                       # the identity at inference
        >>> x = torch.randn(4, 5, 8)
        >>> bool(torch.equal(dp(x), x))
        True
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, 1)
        return x * mask / keep


class Block(nn.Module):
    """Pre-norm transformer block: x + ls1 * attn(norm1(x)), then x + ls2 * ffn(norm2(x)).

    Examples:
        >>> blk = Block(dim=384, num_heads=6, ffn_layer="mlp", ffn_hidden_dim=1536, qkv_bias=True, proj_bias=True,
        ...             ffn_bias=True, eps=1e-6)
        >>> tuple(blk(torch.randn(2, 257, 384)).shape)       # (B, N, D) -> (B, N, D)
        (2, 257, 384)
    """

    def __init__(
        self, *, dim: int, num_heads: int, ffn_layer: str, ffn_hidden_dim: int, qkv_bias: bool, proj_bias: bool,
        ffn_bias: bool, eps: float, drop_path: float = 0.0, mask_k_bias: bool = False, **factory: Any,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps, **factory)
        self.attn = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias,
                              mask_k_bias=mask_k_bias, **factory)
        self.ls1 = LayerScale(dim=dim, **factory)
        self.norm2 = nn.LayerNorm(dim, eps=eps, **factory)
        ffn = {"mlp": Mlp, "swiglu": SwiGLUFFN, "swiglu_split": SwiGLUSplitFFN}[ffn_layer]
        self.mlp = ffn(dim=dim, hidden_dim=ffn_hidden_dim, bias=ffn_bias, **factory)
        self.ls2 = LayerScale(dim=dim, **factory)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, explicit: bool = False,
                rope: Rope | None = None) -> Tensor:
        """x: (B, N, D); rope: DINOv3's rotary tables (only attention uses them), None for DINOv2."""
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), attn_mask, explicit, rope)))  # (B, N, D)
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))  # (B, N, D)


class SwiGLUSplitFFN(nn.Module):
    """SwiGLU with the two input projections kept apart: silu(w1 x) * (w2 x) -> w3.

    The same maths as SwiGLUFFN with w12 split in two; this is how DINOv3's SwiGLU models
    (ViT-S+, L+, H+, 7B) and the dino.txt vision head's blocks store it (keys mlp.w1, mlp.w2, mlp.w3).

    Examples:
        >>> ffn = SwiGLUSplitFFN(dim=64, hidden_dim=176, bias=True)
        >>> tuple(ffn.w1.weight.shape), tuple(ffn(torch.randn(2, 5, 64)).shape)   # w1, w2: (F, D)
        ((176, 64), (2, 5, 64))
        >>> fused = SwiGLUFFN(dim=64, hidden_dim=176, bias=True)                  # the same maths, w12 = [w1; w2]
        >>> _ = fused.load_state_dict({"w12.weight": torch.cat([ffn.w1.weight, ffn.w2.weight]),
        ...                            "w12.bias": torch.cat([ffn.w1.bias, ffn.w2.bias]),
        ...                            "w3.weight": ffn.w3.weight, "w3.bias": ffn.w3.bias})
        >>> x = torch.randn(2, 5, 64)
        >>> torch.allclose(fused(x), ffn(x), atol=1e-6)
        True
    """

    def __init__(self, *, dim: int, hidden_dim: int, bias: bool, **factory: Any) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=bias, **factory)
        self.w2 = nn.Linear(dim, hidden_dim, bias=bias, **factory)
        self.w3 = nn.Linear(hidden_dim, dim, bias=bias, **factory)

    def forward(self, x: Tensor) -> Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))  # (B, N, F) gate * value -> (B, N, D)


def init_linear_and_norm(m: nn.Module) -> None:
    """The ViT init of one module: a Linear's weight truncated normal (std 0.02) and its bias zero;
    a LayerNorm reset (weight 1, bias 0); any other module untouched."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        m.reset_parameters()
