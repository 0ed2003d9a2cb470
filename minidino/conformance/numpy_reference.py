"""A numpy-only reference of the DINOv2 and DINOv3 ViT forward passes, to read top to bottom.

This file is meant to be translated line by line into C, or into the operator graph of an NPU.
It is self-contained: copy it out of minidino and it still runs (numpy is its only dependency).
tests/test_numpy_reference.py runs it on every DINOv2 and DINOv3 golden case (within 1e-5 of the
official outputs) and checks its trace against `minidino trace`, whose names are the ones below.
Over 400 lines on purpose: a porter copies ONE file and needs nothing else, so both families, the
exact bicubic resize, RoPE and the heads stay together, in the order the forward runs.
It uses numpy (arrays, matrix products, exp, sqrt) and the Python standard library (math.erf)
and nothing else: no torch, no scipy. Every function is plain: arrays in, arrays out; the
weights are a dict of numpy arrays under the official state-dict key names
(SPEC.md sections 2 and 8), e.g. "blocks.3.attn.qkv.weight".

Shape legend, used in every comment:
    B batch, H W image height and width in pixels, p patch side (14 or 16), h w patch grid,
    R registers (DINOv2) or storage tokens (DINOv3), N tokens (1 + R + h*w), D width,
    nh heads, hd head dim (D / nh), F FFN hidden width, M stored position-embedding grid side.

Token order inside both models: [cls, R extra tokens, patch_1 .. patch_hw], patches row-major.

Precision. The functions take `dtype`, float64 by default. In float64 the result is, to about
1e-12, the exact mathematics of the model, whatever BLAS library or blocking computes the
matrix products; so the difference between any float32 implementation and this reference
measures only that implementation's own float32 rounding, which is what a porter wants to know.
One deliberate exception: the weights of the DINOv2 position-embedding resize are built with
PyTorch's float32 arithmetic (QUIRK 3 in section 4), because that rounding is large enough to be
part of what the official model computes. Pass dtype=np.float32 to run the same code in float32
(what an NPU port would do). Measured against the golden vectors: DINOv2 float64 within 6.9e-6 on
every case, float32 within 6.2e-6 on the cases tried; DINOv3 float64 within 5.0e-6. The weights are converted
to `dtype` one tensor at a time, when used, so a 1B-parameter state dict is never held twice.

Named intermediates: pass `trace={}` and the forward fills it, in order, with (the names
`minidino trace` writes, after its "input"; `minidino compare` compares a port's dump with either)
    "patch_embed"            (B, h*w, D)   after the patch convolution
    "tokens"                 (B, N, D)     after cls, registers/storage tokens and positions
    "blocks.{i}.norm1"       (B, N, D)
    "blocks.{i}.attn"        (B, N, D)     attention output (after proj, before LayerScale)
    "blocks.{i}.residual1"   (B, N, D)     x + ls1 * attn
    "blocks.{i}.norm2"       (B, N, D)
    "blocks.{i}.mlp"         (B, N, D)     FFN output (before LayerScale)
    "blocks.{i}.residual2"   (B, N, D)     x + ls2 * mlp: the block's output
    "norm"                   (B, N, D)     after the final LayerNorm
so a port can be bisected to the first wrong operation in one run.

Contents, in reading order:
    1. configuration (a small frozen dataclass, inferred from the state dict)
    2. elementary operations (linear, layer_norm, gelu, silu, softmax)
    3. the layers (patch_embed, attention, mlp, swiglu, layer_scale, block)
    4. DINOv2 position embeddings: the bicubic resize and its three quirks
    5. DINOv3 rotary position embeddings (RoPE)
    6. the two forward passes, get_intermediate_layers, and the DINOv2 heads
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

# The entry points. Every other function is as public (read it, call it); these take a state dict.
__all__ = [
    "ViTConfig", "config_from_state_dict", "resize_pos_embed",
    "dinov2_forward_features", "dinov3_forward_features",
    "dinov2_get_intermediate_layers", "dinov3_get_intermediate_layers", "select_layers",
    "dinov2_linear_classifier", "dino_head",
]

StateDict = Mapping[str, Any]  # key -> numpy array (anything np.asarray accepts)


# =============================================================================================
# 1. Configuration
# =============================================================================================

@dataclass(frozen=True)
class ViTConfig:
    """What the state dict cannot say by itself, plus what it can (for checking).

    family:                "dinov2" or "dinov3"
    patch_size:            p, 14 (DINOv2) or 16 (DINOv3)
    embed_dim:             D
    depth:                 number of blocks
    num_heads:             nh (hd = D / nh)
    ffn:                   "mlp" (fc1, exact GELU, fc2), "swiglu" (DINOv2 ViT-g: one fused w12, then w3)
                           or "swiglu_split" (DINOv3: separate w1, w2, then w3)
    ffn_hidden:            F
    num_registers:         R: DINOv2 register tokens (0 or 4) or DINOv3 storage tokens (4)
    layer_norm_eps:        1e-6 (DINOv2) or 1e-5 (DINOv3), every LayerNorm of the model
    interpolate_offset:    DINOv2 only: 0.1 for the plain models, 0.0 for the register models
    interpolate_antialias: DINOv2 only: False for the plain models, True for the register models

    Examples:
        >>> ViTConfig(family="dinov2", patch_size=14, embed_dim=384, depth=12, num_heads=6, ffn="mlp",
        ...           ffn_hidden=1536, num_registers=0, layer_norm_eps=1e-6).head_dim
        64
    """

    family: str
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    ffn: str
    ffn_hidden: int
    num_registers: int
    layer_norm_eps: float
    interpolate_offset: float = 0.0
    interpolate_antialias: bool = False

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


def config_from_state_dict(state_dict: StateDict, num_heads: int | None = None) -> ViTConfig:
    """Infer the configuration from the keys and shapes of an official state dict.

    Everything is read from shapes except three things, which follow the published models:
    - num_heads: DINOv3 stores rope_embed.periods with hd/4 entries, so nh = D / (4 * len);
      DINOv2 stores nothing that says it, but all four published widths use hd = 64.
    - DINOv2's resize quirk: the register models (R > 0) use offset 0.0 with antialias, the
      plain models offset 0.1 without (SPEC.md sections 1 and 4).
    - the LayerNorm eps: 1e-6 for DINOv2, 1e-5 for DINOv3.

    Examples:
        >>> sd = {k: v.numpy() for k, v in minidino.create_model("dinov2_vits14_reg", depth=2).state_dict().items()}
        >>> cfg = config_from_state_dict(sd)
        >>> cfg.family, cfg.depth, cfg.num_heads, cfg.num_registers, cfg.interpolate_antialias
        ('dinov2', 2, 6, 4, True)
    """
    sd = state_dict
    family = "dinov3" if ("storage_tokens" in sd or "rope_embed.periods" in sd) else "dinov2"
    D = int(np.shape(sd["cls_token"])[-1])
    p = int(np.shape(sd["patch_embed.proj.weight"])[-1])
    depth = 0
    while f"blocks.{depth}.norm1.weight" in sd:
        depth += 1
    if depth == 0:
        raise ValueError("no blocks.0.norm1.weight: not an official ViT state dict (strip any prefix first)")
    if "blocks.0.mlp.fc1.weight" in sd:
        ffn, F = "mlp", int(np.shape(sd["blocks.0.mlp.fc1.weight"])[0])  # fc1: (F, D)
    elif "blocks.0.mlp.w12.weight" in sd:
        ffn, F = "swiglu", int(np.shape(sd["blocks.0.mlp.w12.weight"])[0]) // 2  # w12: (2F, D)
    elif "blocks.0.mlp.w1.weight" in sd:
        ffn, F = "swiglu_split", int(np.shape(sd["blocks.0.mlp.w1.weight"])[0])  # w1: (F, D)
    else:
        raise ValueError("unknown FFN: expected blocks.0.mlp.fc1, .w12 or .w1")
    if num_heads is None:
        if "rope_embed.periods" in sd:
            num_heads = D // (4 * int(np.shape(sd["rope_embed.periods"])[0]))
        else:  # hd = 64 (every DINOv2 model; wrong for a DINOv3 7B file without periods: pass num_heads=32)
            num_heads = D // 64
    if family == "dinov3":
        R = int(np.shape(sd["storage_tokens"])[1]) if "storage_tokens" in sd else 0
        return ViTConfig(family="dinov3", patch_size=p, embed_dim=D, depth=depth, num_heads=num_heads, ffn=ffn,
                         ffn_hidden=F, num_registers=R, layer_norm_eps=1e-5)
    R = int(np.shape(sd["register_tokens"])[1]) if "register_tokens" in sd else 0
    return ViTConfig(family="dinov2", patch_size=p, embed_dim=D, depth=depth, num_heads=num_heads, ffn=ffn,
                     ffn_hidden=F, num_registers=R, layer_norm_eps=1e-6,
                     interpolate_offset=0.0 if R else 0.1, interpolate_antialias=bool(R))


def param(state_dict: StateDict, key: str, dtype: Any) -> np.ndarray:
    """One weight, converted to the compute dtype when it is used."""
    return np.asarray(state_dict[key], dtype=dtype)


# =============================================================================================
# 2. Elementary operations
# =============================================================================================

def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """y = x W^T + b, as torch.nn.Linear. x: (..., in), weight: (out, in), bias: (out,)."""
    lead = x.shape[:-1]
    # One 2-D product (numpy hands it to BLAS; a stacked 3-D product is slower, same maths).
    y = (x.reshape(-1, x.shape[-1]) @ weight.T).reshape(*lead, weight.shape[0])  # (..., out)
    if bias is not None:
        y = y + bias
    return y


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis: biased variance (divide by D, not D - 1), eps inside the sqrt."""
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)  # (..., 1)
    return centred / np.sqrt(var + eps) * weight + bias


# math.erf applied element by element (C: erf / erff from <math.h>). numpy has no erf of its
# own; an approximation (e.g. Abramowitz-Stegun 7.1.26, error 1.5e-7) would be visible in
# float64, so the exact function is used. ~0.1 us per element.
_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU: x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))). Not the tanh approximation."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(x.dtype))


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU (swish): x * sigmoid(x) = x / (1 + exp(-x))."""
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for x < -709 (float64): x / inf = -0, correct
        return x / (1.0 + np.exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; subtracting the row maximum changes nothing but avoids overflow."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


# =============================================================================================
# 3. Layers
# =============================================================================================

def patch_embed(sd: StateDict, images: np.ndarray, p: int, dtype: Any) -> np.ndarray:
    """Conv2d(3, D, kernel p, stride p) as one matrix product: (B, 3, H, W) -> (B, h*w, D), row-major.

    h = floor(H / p), w = floor(W / p): pixels past the last full patch are not used (a strided
    convolution ignores them; DINOv3 relies on this, DINOv2's callers check H, W first).
    """
    weight = param(sd, "patch_embed.proj.weight", dtype)  # (D, 3, p, p)
    bias = param(sd, "patch_embed.proj.bias", dtype)  # (D,)
    B, C, H, W = images.shape
    h, w = H // p, W // p
    x = images[:, :, : h * p, : w * p].astype(dtype)  # (B, C, h*p, w*p)
    x = x.reshape(B, C, h, p, w, p)  # (B, C, h, p, w, p)
    x = x.transpose(0, 2, 4, 1, 3, 5)  # (B, h, w, C, p, p): one patch per (row, column)
    x = x.reshape(B, h * w, C * p * p)  # (B, h*w, C*p*p), each patch flattened channel, row, column
    D = weight.shape[0]
    return linear(x, weight.reshape(D, C * p * p), bias)  # (B, h*w, D)


def attention(sd: StateDict, prefix: str, x: np.ndarray, num_heads: int, dtype: Any,
              rope: tuple[np.ndarray, np.ndarray] | None = None, num_prefix: int = 0,
              mask_key_bias: bool = False) -> np.ndarray:
    """Multi-head self-attention with a fused qkv projection. x: (B, N, D) -> (B, N, D).

    qkv rows are [q; k; v], heads contiguous within each. The scale is hd ** -0.5. No mask.
    DINOv3 only (mask_key_bias=True): the qkv bias is multiplied by `bias_mask` (1 for q, 0 for
    k, 1 for v: the key bias is switched off), and `rope` = (sin, cos), each (h*w, hd), rotates
    q and k of the patch tokens (all tokens after the first `num_prefix` = 1 + R, which pass
    unrotated).
    """
    B, N, D = x.shape
    nh = num_heads
    hd = D // nh
    weight = param(sd, prefix + "qkv.weight", dtype)  # (3D, D)
    bias = param(sd, prefix + "qkv.bias", dtype) if prefix + "qkv.bias" in sd else None  # (3D,); DINOv3 7B has none
    if bias is not None and mask_key_bias:
        if prefix + "qkv.bias_mask" in sd:
            bias_mask = param(sd, prefix + "qkv.bias_mask", dtype)  # (3D,) the stored buffer
        else:  # not stored: the spec's value, computed here
            bias_mask = np.concatenate([np.ones(D), np.zeros(D), np.ones(D)]).astype(dtype)  # (3D,): q, k, v
        bias = bias * bias_mask  # the k third of the bias becomes 0
    qkv = linear(x, weight, bias)  # (B, N, 3D)
    qkv = qkv.reshape(B, N, 3, nh, hd)  # (B, N, 3, nh, hd)
    qkv = qkv.transpose(2, 0, 3, 1, 4)  # (3, B, nh, N, hd)
    # Contiguous copies: numpy runs a stacked product on strided views in a slow loop, on
    # contiguous arrays through BLAS (25x faster here); the values are the same.
    q, k, v = (np.ascontiguousarray(t) for t in (qkv[0], qkv[1], qkv[2]))  # each (B, nh, N, hd)
    if rope is not None:
        sin, cos = rope  # each (h*w, hd)
        q = np.concatenate([q[:, :, :num_prefix], apply_rope(q[:, :, num_prefix:], sin, cos)], axis=2)  # (B, nh, N, hd)
        k = np.concatenate([k[:, :, :num_prefix], apply_rope(k[:, :, num_prefix:], sin, cos)], axis=2)  # (B, nh, N, hd)
    k_t = np.ascontiguousarray(k.transpose(0, 1, 3, 2))  # (B, nh, hd, N)
    scores = (q @ k_t) * (hd ** -0.5)  # (B, nh, N, N): query rows, key columns
    weights = softmax(scores)  # (B, nh, N, N), each row sums to 1
    out = weights @ v  # (B, nh, N, hd)
    out = out.transpose(0, 2, 1, 3).reshape(B, N, D)  # (B, N, nh, hd) -> (B, N, D), heads concatenated
    return linear(out, param(sd, prefix + "proj.weight", dtype), param(sd, prefix + "proj.bias", dtype))  # (B, N, D)


def _optional(sd: StateDict, key: str, dtype: Any) -> np.ndarray | None:
    return param(sd, key, dtype) if key in sd else None


def mlp(sd: StateDict, prefix: str, x: np.ndarray, dtype: Any) -> np.ndarray:
    """GELU MLP: fc2(gelu(fc1(x))). (B, N, D) -> (B, N, F) -> (B, N, D)."""
    hidden = linear(x, param(sd, prefix + "fc1.weight", dtype), _optional(sd, prefix + "fc1.bias", dtype))  # (B, N, F)
    return linear(gelu(hidden), param(sd, prefix + "fc2.weight", dtype), _optional(sd, prefix + "fc2.bias", dtype))


def swiglu(sd: StateDict, prefix: str, x: np.ndarray, dtype: Any) -> np.ndarray:
    """SwiGLU FFN: w3(silu(a) * b). (B, N, D) -> (B, N, D).

    DINOv2 ViT-g stores the two input projections fused: w12 (2F, D); a is the first half of its
    output, b the second. DINOv3 stores them apart: a = w1 x, b = w2 x. The maths is the same.
    """
    if prefix + "w12.weight" in sd:
        ab = linear(x, param(sd, prefix + "w12.weight", dtype), _optional(sd, prefix + "w12.bias", dtype))  # (B, N, 2F)
        F = ab.shape[-1] // 2
        a, b = ab[..., :F], ab[..., F:]  # each (B, N, F)
    else:
        a = linear(x, param(sd, prefix + "w1.weight", dtype), _optional(sd, prefix + "w1.bias", dtype))  # (B, N, F)
        b = linear(x, param(sd, prefix + "w2.weight", dtype), _optional(sd, prefix + "w2.bias", dtype))  # (B, N, F)
    return linear(silu(a) * b, param(sd, prefix + "w3.weight", dtype), _optional(sd, prefix + "w3.bias", dtype))


def layer_scale(x: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Per-channel scale of a residual branch: x * gamma, gamma (D,)."""
    return x * gamma


def block(sd: StateDict, i: int, x: np.ndarray, cfg: ViTConfig, dtype: Any,
          rope: tuple[np.ndarray, np.ndarray] | None = None, trace: dict | None = None) -> np.ndarray:
    """Pre-norm transformer block i: x + ls1 * attn(norm1(x)), then x + ls2 * ffn(norm2(x)). (B, N, D) -> (B, N, D)."""
    pre = f"blocks.{i}."
    eps = cfg.layer_norm_eps
    n1 = layer_norm(x, param(sd, pre + "norm1.weight", dtype), param(sd, pre + "norm1.bias", dtype), eps)
    a = attention(sd, pre + "attn.", n1, cfg.num_heads, dtype, rope=rope, num_prefix=1 + cfg.num_registers,
                  mask_key_bias=cfg.family == "dinov3")
    x = x + layer_scale(a, param(sd, pre + "ls1.gamma", dtype))  # (B, N, D)
    r1 = x
    n2 = layer_norm(x, param(sd, pre + "norm2.weight", dtype), param(sd, pre + "norm2.bias", dtype), eps)
    f = mlp(sd, pre + "mlp.", n2, dtype) if cfg.ffn == "mlp" else swiglu(sd, pre + "mlp.", n2, dtype)
    x = x + layer_scale(f, param(sd, pre + "ls2.gamma", dtype))  # (B, N, D)
    if trace is not None:
        trace[pre + "norm1"], trace[pre + "attn"], trace[pre + "residual1"] = n1, a, r1
        trace[pre + "norm2"], trace[pre + "mlp"], trace[pre + "residual2"] = n2, f, x
    return x


# =============================================================================================
# 4. DINOv2 position embeddings: bicubic resize of the stored M x M grid (SPEC.md section 4)
# =============================================================================================
#
# The checkpoint stores one position per patch of a 37 x 37 grid (518 px), plus the class
# position. Another grid h x w resizes the patch part with bicubic interpolation, exactly as
# torch.nn.functional.interpolate(mode="bicubic", align_corners=False) does. A 2-D bicubic resize
# is separable: out[:, :, d] = A @ grid[:, :, d] @ B^T for every channel d, with A (h, M) the
# 1-D weights along rows and B (w, M) along columns. So all that matters is how one 1-D weight
# matrix is built: two ways, one per model kind (quirks 1 and 2), both in float32 (quirk 3):
#
# QUIRK 1 (plain models, offset 0.1). The official code asks interpolate for *scale factors*
#   s = (n + 0.1) / M instead of an output size n. The output size is still floor(M * s) = n,
#   but the source coordinate of output pixel i is computed from the given scale:
#       src = (i + 0.5) / s - 0.5,  not  (i + 0.5) * M / n - 0.5,
#   which moves every sample slightly (up to ~1.0 on random embeddings versus a size=(h, w)
#   resize). Kept for checkpoint compatibility. Plain bicubic: a = -0.75, 4 taps at
#   floor(src) - 1 .. floor(src) + 2, indices past the border clamped onto the border pixel.
#
# QUIRK 2 (register models, offset 0). Resize to size (h, w) with antialias=True: PyTorch's
#   antialiased ("PIL-style") bicubic, with a = -0.5, a support widened by the downsampling
#   factor, taps outside the image dropped rather than clamped, and each output's weights
#   divided by their sum.
#
# QUIRK 3 (float32 arithmetic, both kinds; a property of PyTorch's CPU kernels, not of DINOv2).
#   The kernels compute the resize weights in float32: the scale (input pixels per output pixel)
#   is a float32, every source coordinate is rounded to float32, and the cubic polynomial is
#   evaluated in float32 in Horner form, some multiply-adds fused (one rounding, an FMA) by the
#   compiler. None of this is rounding noise: near |x| = 1 and 2 the polynomial cancels terms of
#   size 8|a| = 6, so a float32 weight is off by up to 5e-7, and the float32 coordinates move
#   the weights by more. Exact-maths weights give a resized embedding up to 6e-6 away from the
#   official one (measured at 224 px with the 0.1 offset), which is more than the whole float32
#   error budget of a port. So the weights below are built exactly as the kernels build them:
#   `f32` marks a float32 rounding, `fma32` a fused multiply-add. The weighted sums themselves
#   are left exact (float64): PyTorch rounds them in float32, which changes results by ~1 ulp.
#   Measured: within 4e-7 of interpolate (float32) for every h in 1..80 and 15 widths (NOTES.md).
#
# When h == w == M the official code skips the resize and uses the stored grid as is.

def f32(value: float) -> float:
    """Round a number to the nearest float32 (and hand it back as a Python float)."""
    return float(np.float32(value))


def fma32(a: float, b: float, c: float) -> float:
    """a * b + c for float32 a, b, c, rounded once to float32, as a fused multiply-add (C: fmaf).
    The product of two float32 is exact in float64, so only the final rounding happens (barring a
    double-rounding tie, too rare to matter here)."""
    return f32(a * b + c)


def cubic_kernel(x: float, a: float) -> float:
    """Keys' cubic convolution kernel with parameter a, as a function of the distance |x| (exact maths).

        W(x) = (a + 2)|x|^3 - (a + 3)|x|^2 + 1       for |x| <= 1
        W(x) = a|x|^3 - 5a|x|^2 + 8a|x| - 4a         for 1 < |x| < 2
        W(x) = 0                                     otherwise
    """
    x = abs(x)
    if x <= 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


def cubic_kernel_f32(x: float, a: float, all_fused: bool) -> float:
    """cubic_kernel as PyTorch's CPU kernels evaluate it in float32 (QUIRK 3), for a float32 x.

    Horner form: ((a + 2) x - (a + 3)) x x + 1 and ((a x - 5a) x + 8a) x - 4a. Which steps the
    compiler fused into FMAs differs between the two kernels: all of them in the antialiased
    kernel (all_fused=True); in the plain bicubic kernel only the first step of the near piece
    and the first two steps of the far piece. (The constants a + 2, 5a, 8a ... are exact in
    float32 for a = -0.75 and -0.5.)
    """
    x = abs(x)
    if x < 1.0:
        w = fma32(a + 2.0, x, -(a + 3.0))  # (a + 2) x - (a + 3)
        if all_fused:
            return fma32(f32(w * x), x, 1.0)  # (w x) x + 1
        return f32(f32(f32(w * x) * x) + 1.0)
    if x < 2.0:
        w = fma32(a, x, -5.0 * a)  # a x - 5a
        w = fma32(w, x, 8.0 * a)  # (...) x + 8a
        if all_fused:
            return fma32(w, x, -4.0 * a)  # (...) x - 4a
        return f32(f32(w * x) - 4.0 * a)
    return 0.0


def bicubic_matrix(n_out: int, n_in: int, inv_scale: float) -> np.ndarray:
    """(n_out, n_in) weights of the plain bicubic resize (a = -0.75, align_corners=False).

    `inv_scale` is the number of input pixels per output pixel that sets the source
    coordinates, a float32 (QUIRK 3): f32(n_in) / f32(n_out) for a resize to a size,
    f32(1 / ((n + offset) / M)) for DINOv2's scale-factor quirk (QUIRK 1).
    """
    mat = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        src = f32((i + 0.5) * inv_scale - 0.5)  # source coordinate of output pixel i (may be < 0), float32
        # PyTorch's guard: the base index never passes the last pixel, t stays in [0, 1].
        base = min(math.floor(src), n_in - 1)
        t = min(max(src - base, 0.0), 1.0)  # fractional position between taps base and base + 1 (exact)
        t_rev = f32(1.0 - t)
        distances = (f32(t + 1.0), t, t_rev, f32(t_rev + 1.0))  # of taps base - 1, base, base + 1, base + 2
        for k, dist in enumerate(distances):
            j = min(max(base - 1 + k, 0), n_in - 1)  # clamp to the border: taps past it reuse the edge pixel
            mat[i, j] += cubic_kernel_f32(dist, -0.75, all_fused=False)  # taps clamped onto one pixel add up
    return mat


def bicubic_antialias_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights of the antialiased bicubic resize to size n_out (PyTorch antialias=True).

    scale = n_in / n_out (input pixels per output pixel). Downsampling (scale > 1) stretches the
    kernel by `scale` so every input pixel contributes (that is the antialiasing); upsampling
    uses the kernel as is. The cubic parameter is a = -0.5 in both cases (PIL's value).
    Pixel j covers [j, j + 1) in input coordinates; its centre is j + 0.5.
    """
    scale = float(np.float32(n_in) / np.float32(n_out))  # a float32 division (QUIRK 3)
    support = 2.0 * scale if scale >= 1.0 else 2.0  # half-width of the kernel, in input pixels
    invscale = f32(1.0 / scale) if scale >= 1.0 else 1.0  # input distances -> kernel units (float32)
    mat = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        center = f32(scale * (i + 0.5))  # centre of output pixel i, in input coordinates (float32)
        # Input pixels used: [xmin, xmax), the kernel's support rounded to whole pixels (int()
        # truncates, as the C++ cast does); pixels outside the image are dropped, not clamped.
        xmin = max(int(f32(center - support) + 0.5), 0)
        xmax = min(int(f32(center + support) + 0.5), n_in)
        total = 0.0
        for j in range(xmin, xmax):
            x = f32((f32(j - center) + 0.5) * invscale)  # distance of pixel centre j + 0.5 from `center`, kernel units
            mat[i, j] = cubic_kernel_f32(x, -0.5, all_fused=True)
            total = f32(total + mat[i, j])  # the float32 sum, left to right
        for j in range(xmin, xmax):
            mat[i, j] = f32(mat[i, j] / total)  # normalise: the kept weights sum to 1 (compensates the dropped taps)
    return mat


def resize_pos_embed(pos_embed: np.ndarray, h: int, w: int, offset: float, antialias: bool) -> np.ndarray:
    """Resize a (1, 1 + M*M, D) position embedding to (1, 1 + h*w, D); the class position is kept.

    Examples:
        >>> pos = np.random.default_rng(0).standard_normal((1, 1 + 37 * 37, 8))
        >>> resize_pos_embed(pos, 16, 16, offset=0.1, antialias=False).shape      # 224 px, a plain model
        (1, 257, 8)
    """
    _, n_pos, D = pos_embed.shape
    M = int(round(math.sqrt(n_pos - 1)))
    if M * M != n_pos - 1:
        raise ValueError(f"pos_embed holds {n_pos - 1} patch positions, not a square grid")
    if h == M and w == M:
        return pos_embed  # the stored grid, unchanged (no resize at all)
    cls_pos = pos_embed[:, :1]  # (1, 1, D)
    grid = pos_embed[0, 1:].reshape(M, M, D)  # (M, M, D): row, column, channel
    if antialias:  # QUIRK 2: register models, size (h, w)
        A = bicubic_antialias_matrix(h, M)  # (h, M)
        Bm = bicubic_antialias_matrix(w, M)  # (w, M)
    elif offset:  # QUIRK 1: plain models, scale factors (n + offset) / M; the kernel keeps 1 / scale in float32
        A = bicubic_matrix(h, M, f32(1.0 / ((h + offset) / M)))  # (h, M)
        Bm = bicubic_matrix(w, M, f32(1.0 / ((w + offset) / M)))  # (w, M)
    else:  # a plain resize to a size (no published model uses it)
        A = bicubic_matrix(h, M, float(np.float32(M) / np.float32(h)))  # (h, M)
        Bm = bicubic_matrix(w, M, float(np.float32(M) / np.float32(w)))  # (w, M)
    A, Bm = A.astype(pos_embed.dtype), Bm.astype(pos_embed.dtype)
    cols = np.einsum("wj,ijd->iwd", Bm, grid)  # (M, w, D): each row resampled along the columns first
    out = np.einsum("hi,iwd->hwd", A, cols)  # (h, w, D): then along the rows
    return np.concatenate([cls_pos, out.reshape(1, h * w, D)], axis=1)  # (1, 1 + h*w, D)


def interpolate_pos_encoding(sd: StateDict, cfg: ViTConfig, h: int, w: int, dtype: Any) -> np.ndarray:
    """The DINOv2 position embedding for an h x w grid: (1, 1 + h*w, D)."""
    pos = param(sd, "pos_embed", dtype)  # (1, 1 + M*M, D)
    return resize_pos_embed(pos, h, w, cfg.interpolate_offset, cfg.interpolate_antialias)


# =============================================================================================
# 5. DINOv3 rotary position embeddings (SPEC.md section 8, step 6)
# =============================================================================================
#
# No position embedding is added to the tokens. Instead q and k of the patch tokens are rotated
# by angles that depend on the patch's (row, column). Each coordinate is normalised by its own
# axis length to [-1, 1]: c = 2 * (i + 0.5) / n - 1. With hd/4 periods (read from the state dict
# key rope_embed.periods; the published files hold them rounded to bfloat16, and recomputing
# them moves outputs by ~2e-3, so never recompute when the key is present), the angles of one
# patch are 2*pi*c/period for (row then column) x (each period): hd/2 angles, repeated twice to hd.

def rope_periods(sd: StateDict, head_dim: int) -> np.ndarray:
    """The (hd/4,) RoPE periods: the stored key. Only if absent: 100 ** (2k / (hd/2)), k = 0 .. hd/4 - 1."""
    if "rope_embed.periods" in sd:
        return np.asarray(sd["rope_embed.periods"], dtype=np.float64)
    k = np.arange(head_dim // 4, dtype=np.float64)
    return 100.0 ** (2.0 * k / (head_dim // 2))  # base 100 (computed: the key was missing)


def rope_sin_cos(periods: np.ndarray, h: int, w: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """sin and cos of the rotation angles, each (h*w, hd), patches row-major."""
    rows = (np.arange(h, dtype=np.float64) + 0.5) / h * 2.0 - 1.0  # (h,) in (-1, 1)
    cols = (np.arange(w, dtype=np.float64) + 0.5) / w * 2.0 - 1.0  # (w,)
    coords = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)  # (h, w, 2): (row, column) of each patch
    coords = coords.reshape(h * w, 2)  # (h*w, 2), row-major
    angles = 2.0 * math.pi * coords[:, :, None] / periods[None, None, :]  # (h*w, 2, hd/4)
    angles = angles.reshape(h * w, -1)  # (h*w, hd/2): all row angles, then all column angles
    angles = np.concatenate([angles, angles], axis=-1)  # (h*w, hd): the same hd/2 angles twice
    return np.sin(angles).astype(dtype), np.cos(angles).astype(dtype)


def apply_rope(x: np.ndarray, sin: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """Rotate by halves: x * cos + rotate_half(x) * sin, rotate_half([x1, x2]) = [-x2, x1].

    x: (B, nh, h*w, hd); sin, cos: (h*w, hd). Channel j of the first half and channel j of the
    second half form one 2-D pair, rotated by angle j.
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # each (B, nh, h*w, hd/2)
    rotated = np.concatenate([-x2, x1], axis=-1)  # (B, nh, h*w, hd)
    return x * cos + rotated * sin


# =============================================================================================
# 6. The forward passes
# =============================================================================================

def _check_images(images: np.ndarray, cfg: ViTConfig, exact: bool) -> tuple[int, int]:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {images.shape}")
    B, C, H, W = images.shape
    p = cfg.patch_size
    if exact and (H % p or W % p):
        raise ValueError(f"DINOv2 needs H and W multiples of {p}, got {H}x{W}")
    if H < p or W < p:
        raise ValueError(f"image {H}x{W} is smaller than one {p}x{p} patch")
    return H // p, W // p


def _apply_masks(sd: StateDict, x: np.ndarray, masks: np.ndarray | None, dtype: Any) -> np.ndarray:
    """Masked patches (masks: bool (B, h*w), True = masked) are replaced by mask_token (1, D)."""
    if masks is None:
        return x
    masks = np.asarray(masks, dtype=bool)
    if masks.shape != x.shape[:2]:
        raise ValueError(f"masks must be (B, h*w) = {x.shape[:2]}, got {masks.shape}")
    mask_token = param(sd, "mask_token", dtype)  # (1, D)
    return np.where(masks[:, :, None], mask_token[None], x)  # (B, h*w, D)


def _run_blocks(sd: StateDict, cfg: ViTConfig, x: np.ndarray, dtype: Any, rope: Any, trace: dict | None) -> list[np.ndarray]:
    """All blocks in order; returns every block's output (B, N, D)."""
    outputs = []
    for i in range(cfg.depth):
        x = block(sd, i, x, cfg, dtype, rope=rope, trace=trace)
        outputs.append(x)
    return outputs


def _final_norm(sd: StateDict, cfg: ViTConfig, x: np.ndarray, dtype: Any) -> np.ndarray:
    return layer_norm(x, param(sd, "norm.weight", dtype), param(sd, "norm.bias", dtype), cfg.layer_norm_eps)


def dinov2_tokens(sd: StateDict, cfg: ViTConfig, images: np.ndarray, masks: np.ndarray | None, dtype: Any,
                  trace: dict | None) -> np.ndarray:
    """DINOv2 input tokens (B, N, D): patches, masks, cls, positions, then registers."""
    h, w = _check_images(images, cfg, exact=True)
    B = images.shape[0]
    x = patch_embed(sd, images, cfg.patch_size, dtype)  # (B, h*w, D)
    if trace is not None:
        trace["patch_embed"] = x
    x = _apply_masks(sd, x, masks, dtype)  # (B, h*w, D)
    cls = np.broadcast_to(param(sd, "cls_token", dtype), (B, 1, cfg.embed_dim))  # (B, 1, D)
    x = np.concatenate([cls, x], axis=1)  # (B, 1 + h*w, D)
    x = x + interpolate_pos_encoding(sd, cfg, h, w, dtype)  # + (1, 1 + h*w, D); registers get none
    if cfg.num_registers:
        reg = np.broadcast_to(param(sd, "register_tokens", dtype), (B, cfg.num_registers, cfg.embed_dim))  # (B, R, D)
        x = np.concatenate([x[:, :1], reg, x[:, 1:]], axis=1)  # (B, 1 + R + h*w, D)
    if trace is not None:
        trace["tokens"] = x
    return x


def dinov3_tokens(sd: StateDict, cfg: ViTConfig, images: np.ndarray, masks: np.ndarray | None, dtype: Any,
                  trace: dict | None) -> np.ndarray:
    """DINOv3 input tokens (B, N, D): [cls, storage tokens, patches]; no position embedding."""
    _check_images(images, cfg, exact=False)
    B = images.shape[0]
    x = patch_embed(sd, images, cfg.patch_size, dtype)  # (B, h*w, D), h = floor(H / 16)
    if trace is not None:
        trace["patch_embed"] = x
    cls = param(sd, "cls_token", dtype)  # (1, 1, D)
    if masks is not None:
        x = _apply_masks(sd, x, masks, dtype)
    else:
        # The official code adds 0 * mask_token to the class token when there are no masks (so
        # that mask_token always takes part in the computation). Numerically a no-op, unless
        # mask_token holds inf or nan; kept for fidelity.
        cls = cls + 0.0 * param(sd, "mask_token", dtype)  # (1, 1, D) + (1, D) -> (1, 1, D)
    cls = np.broadcast_to(cls, (B, 1, cfg.embed_dim))  # (B, 1, D)
    parts = [cls]
    if cfg.num_registers:
        parts.append(np.broadcast_to(param(sd, "storage_tokens", dtype), (B, cfg.num_registers, cfg.embed_dim)))  # (B, R, D)
    x = np.concatenate(parts + [x], axis=1)  # (B, 1 + R + h*w, D)
    if trace is not None:
        trace["tokens"] = x
    return x


def dinov3_rope(sd: StateDict, cfg: ViTConfig, images: np.ndarray, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """(sin, cos) for the patch grid of these images, each (h*w, hd); the same for every block."""
    h, w = images.shape[2] // cfg.patch_size, images.shape[3] // cfg.patch_size
    return rope_sin_cos(rope_periods(sd, cfg.head_dim), h, w, dtype)


def _features(sd: StateDict, cfg: ViTConfig, x_prenorm: np.ndarray, dtype: Any, trace: dict | None) -> dict[str, np.ndarray]:
    x_norm = _final_norm(sd, cfg, x_prenorm, dtype)  # (B, N, D)
    if trace is not None:
        trace["norm"] = x_norm
    R = cfg.num_registers
    extra = "x_norm_regtokens" if cfg.family == "dinov2" else "x_storage_tokens"
    return {
        "x_norm_clstoken": x_norm[:, 0],  # (B, D)
        extra: x_norm[:, 1 : 1 + R],  # (B, R, D)
        "x_norm_patchtokens": x_norm[:, 1 + R :],  # (B, h*w, D)
        "x_prenorm": x_prenorm,  # (B, N, D)
    }


def _config(sd: StateDict, config: ViTConfig | None, family: str) -> ViTConfig:
    cfg = config if config is not None else config_from_state_dict(sd)
    if cfg.family != family:
        raise ValueError(f"this state dict / config is {cfg.family}, not {family}")
    return cfg


def dinov2_forward_features(state_dict: StateDict, config: ViTConfig | None, images: np.ndarray,
                            masks: np.ndarray | None = None, trace: dict | None = None,
                            dtype: Any = np.float64) -> dict[str, np.ndarray]:
    """DINOv2 forward_features. images (B, 3, H, W), H and W multiples of 14; masks bool (B, h*w).

    Returns x_norm_clstoken (B, D), x_norm_regtokens (B, R, D), x_norm_patchtokens (B, h*w, D),
    x_prenorm (B, N, D). config=None infers it from the state dict.

    Examples:
        >>> model = minidino.create_model("dinov2_vits14_reg", depth=2)
        >>> sd = {k: v.numpy() for k, v in model.state_dict().items()}
        >>> x = np.random.default_rng(0).standard_normal((1, 3, 28, 42)).astype(np.float32)
        >>> trace = {}
        >>> f = dinov2_forward_features(sd, None, x, trace=trace)
        >>> f["x_norm_patchtokens"].shape, list(trace)[:4]
        ((1, 6, 384), ['patch_embed', 'tokens', 'blocks.0.norm1', 'blocks.0.attn'])
        >>> ref = model.forward_features(torch.from_numpy(x))["x_norm_clstoken"].detach().numpy()
        >>> float(np.abs(f["x_norm_clstoken"] - ref).max()) < 1e-5
        True
    """
    sd, cfg = state_dict, _config(state_dict, config, "dinov2")
    x = dinov2_tokens(sd, cfg, np.asarray(images), masks, dtype, trace)  # (B, N, D)
    x = _run_blocks(sd, cfg, x, dtype, None, trace)[-1]  # (B, N, D)
    return _features(sd, cfg, x, dtype, trace)


def dinov3_forward_features(state_dict: StateDict, config: ViTConfig | None, images: np.ndarray,
                            masks: np.ndarray | None = None, trace: dict | None = None,
                            dtype: Any = np.float64) -> dict[str, np.ndarray]:
    """DINOv3 forward_features. images (B, 3, H, W), any H, W >= 16 (h = floor(H / 16)); masks bool (B, h*w).

    Returns x_norm_clstoken (B, D), x_storage_tokens (B, R, D), x_norm_patchtokens (B, h*w, D),
    x_prenorm (B, N, D).

    Examples:
        >>> sd = {k: v.numpy() for k, v in minidino.create_model("dinov3_vits16", depth=1).state_dict().items()}
        >>> f = dinov3_forward_features(sd, None, np.zeros((1, 3, 40, 50)))          # 2 x 3 patches, pixels left over
        >>> f["x_storage_tokens"].shape, f["x_norm_patchtokens"].shape
        ((1, 4, 384), (1, 6, 384))
    """
    sd, cfg = state_dict, _config(state_dict, config, "dinov3")
    images = np.asarray(images)
    x = dinov3_tokens(sd, cfg, images, masks, dtype, trace)  # (B, N, D)
    x = _run_blocks(sd, cfg, x, dtype, dinov3_rope(sd, cfg, images, dtype), trace)[-1]  # (B, N, D)
    return _features(sd, cfg, x, dtype, trace)


def _block_indices(n: int | Sequence[int], depth: int) -> list[int]:
    """n an int: the last n blocks; a sequence: those block indices (0-based), kept in block order."""
    if isinstance(n, int):
        return list(range(depth - n, depth))
    return [i for i in range(depth) if i in n]


def select_layers(sd: StateDict, cfg: ViTConfig, block_outputs: Sequence[np.ndarray], h: int, w: int,
                  n: int | Sequence[int] = 1, reshape: bool = False, return_class_token: bool = False,
                  return_extra_tokens: bool = False, norm: bool = True, dtype: Any = np.float64) -> tuple:
    """The selection step of get_intermediate_layers, from every block's output (B, N, D) (e.g. a
    trace's "blocks.{i}.residual2"): per chosen block, in block order, its patch tokens (B, h*w, D),
    or (B, D, h, w) with reshape; normed with the final norm when norm=True; with
    return_class_token / return_extra_tokens each item is a tuple: patches, then cls (B, D), then extra (B, R, D), as asked.

    Examples:
        >>> sd = {k: v.numpy() for k, v in minidino.create_model("dinov2_vits14", depth=3).state_dict().items()}
        >>> cfg, trace = config_from_state_dict(sd), {}
        >>> _ = dinov2_forward_features(sd, cfg, np.zeros((1, 3, 28, 28)), trace=trace)
        >>> outs = [trace[f"blocks.{i}.residual2"] for i in range(3)]
        >>> [a.shape for a in select_layers(sd, cfg, outs, 2, 2, n=[0, 2], reshape=True)]
        [(1, 384, 2, 2), (1, 384, 2, 2)]
    """
    R = cfg.num_registers
    items = []
    for i in _block_indices(n, cfg.depth):
        o = _final_norm(sd, cfg, block_outputs[i], dtype) if norm else block_outputs[i]  # (B, N, D)
        B, N, D = o.shape
        patches = o[:, 1 + R :]  # (B, h*w, D)
        if reshape:
            patches = patches.reshape(B, h, w, D).transpose(0, 3, 1, 2)  # (B, h, w, D) -> (B, D, h, w)
        item = (patches,)
        if return_class_token:
            item += (o[:, 0],)  # (B, D)
        if return_extra_tokens:
            item += (o[:, 1 : 1 + R],)  # (B, R, D)
        items.append(item[0] if len(item) == 1 else item)
    return tuple(items)


def dinov2_get_intermediate_layers(state_dict: StateDict, config: ViTConfig | None, images: np.ndarray,
                                   n: int | Sequence[int] = 1, reshape: bool = False, return_class_token: bool = False,
                                   norm: bool = True, dtype: Any = np.float64) -> tuple:
    """DINOv2 get_intermediate_layers: per chosen block (in block order), patches (B, h*w, D)
    or (B, D, h, w) with reshape, normed with the final norm when norm=True; with
    return_class_token each item is (patches, cls (B, D)).

    Examples:
        >>> sd = {k: v.numpy() for k, v in minidino.create_model("dinov2_vits14", depth=2).state_dict().items()}
        >>> (patches, cls), = dinov2_get_intermediate_layers(sd, None, np.zeros((1, 3, 28, 42)), n=1, return_class_token=True)
        >>> patches.shape, cls.shape
        ((1, 6, 384), (1, 384))
    """
    sd, cfg = state_dict, _config(state_dict, config, "dinov2")
    images = np.asarray(images)
    h, w = _check_images(images, cfg, exact=True)
    outputs = _run_blocks(sd, cfg, dinov2_tokens(sd, cfg, images, None, dtype, None), dtype, None, None)
    return select_layers(sd, cfg, outputs, h, w, n, reshape, return_class_token, False, norm, dtype)


def dinov3_get_intermediate_layers(state_dict: StateDict, config: ViTConfig | None, images: np.ndarray,
                                   n: int | Sequence[int] = 1, reshape: bool = False, return_class_token: bool = False,
                                   return_extra_tokens: bool = False, norm: bool = True,
                                   dtype: Any = np.float64) -> tuple:
    """DINOv3 get_intermediate_layers: per chosen block, patches, or a tuple: patches, then cls (B, D), then storage (B, R, D), as asked.

    Examples:
        >>> sd = {k: v.numpy() for k, v in minidino.create_model("dinov3_vits16", depth=2).state_dict().items()}
        >>> [p.shape for p in dinov3_get_intermediate_layers(sd, None, np.zeros((1, 3, 32, 48)), n=2, reshape=True)]
        [(1, 384, 2, 3), (1, 384, 2, 3)]
    """
    sd, cfg = state_dict, _config(state_dict, config, "dinov3")
    images = np.asarray(images)
    h, w = _check_images(images, cfg, exact=False)
    tokens = dinov3_tokens(sd, cfg, images, None, dtype, None)
    outputs = _run_blocks(sd, cfg, tokens, dtype, dinov3_rope(sd, cfg, images, dtype), None)
    return select_layers(sd, cfg, outputs, h, w, n, reshape, return_class_token, return_extra_tokens, norm, dtype)


# ---------------------------------------------------------------------------- DINOv2 heads

def sub_state_dict(state_dict: StateDict, prefix: str) -> dict[str, Any]:
    """The keys under `prefix`, with the prefix removed (e.g. "backbone.")."""
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def dinov2_linear_classifier(state_dict: StateDict, images: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """The hub's *_lc ImageNet classifiers: keys backbone.* and linear_head.{weight,bias}. -> logits (B, 1000).

    layers=1 (head input 2D): cat(cls, mean of the patch tokens) of forward_features.
    layers=4 (head input 5D): cat(cls of each of the last 4 blocks, normed, in block order;
    mean of the last block's normed patch tokens). Registers never enter the mean.

    Examples:
        >>> clf = minidino.create_model("dinov2_vits14_lc", depth=4, layers=4)
        >>> sd = {k: v.numpy() for k, v in clf.state_dict().items()}
        >>> dinov2_linear_classifier(sd, np.zeros((1, 3, 28, 28))).shape
        (1, 1000)
    """
    sd = sub_state_dict(state_dict, "backbone.")
    cfg = config_from_state_dict(sd)
    weight = param(state_dict, "linear_head.weight", dtype)  # (1000, k*D)
    layers = weight.shape[1] // cfg.embed_dim - 1  # 2D -> 1 layer, 5D -> 4 layers
    outs = dinov2_get_intermediate_layers(sd, cfg, images, n=layers, return_class_token=True, norm=True, dtype=dtype)
    class_tokens = [cls for _, cls in outs]  # `layers` arrays (B, D), in block order
    last_patches = outs[-1][0]  # (B, h*w, D), the last block, normed
    features = np.concatenate(class_tokens + [last_patches.mean(axis=1)], axis=-1)  # (B, (layers + 1) D)
    return linear(features, weight, param(state_dict, "linear_head.bias", dtype))  # (B, 1000)


def dino_head(state_dict: StateDict, x: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """The DINO projection head: mlp (Linear, GELU, ..., Linear), L2-normalise, weight-normalised last layer.

    Keys mlp.{0,2,4,...}.{weight,bias} (GELU between them), last_layer.weight_g (K, 1) and
    last_layer.weight_v (K, bottleneck): weight = g * v / ||v|| per row, no bias. x (B, D) -> (B, K).

    Examples:
        >>> head = minidino.DINOHead(384, 1000, 512, 64, 3)
        >>> rng = np.random.default_rng(0)                  # random values: a fresh head's weight_v rows are zero
        >>> sd = {k: rng.standard_normal(tuple(v.shape)) for k, v in head.state_dict().items()}
        >>> dino_head(sd, np.ones((2, 384))).shape
        (2, 1000)
    """
    x = np.asarray(x, dtype=dtype)
    i = 0
    while f"mlp.{i}.weight" in state_dict:
        if i:
            x = gelu(x)
        x = linear(x, param(state_dict, f"mlp.{i}.weight", dtype), _optional(state_dict, f"mlp.{i}.bias", dtype))
        i += 2
    x = x / np.maximum(np.sqrt((x * x).sum(axis=-1, keepdims=True)), 1e-12)  # F.normalize, eps 1e-12
    g = param(state_dict, "last_layer.weight_g", dtype)  # (K, 1)
    v = param(state_dict, "last_layer.weight_v", dtype)  # (K, bottleneck)
    weight = g * v / np.sqrt((v * v).sum(axis=1, keepdims=True))  # (K, bottleneck)
    return linear(x, weight, None)  # (B, K)
