"""Position-embedding resize: the one place where DINOv2's interpolation quirks live.

The checkpoints store a position embedding for a 37x37 patch grid (518 px at patch 14),
plus one class position. Other image sizes resize the patch part with bicubic
interpolation. Two historical quirks decide the exact numbers (SPEC.md section 4):

* offset > 0 (the plain models, offset 0.1): the official code asks `interpolate` for
  scale factors ((h + 0.1) / M, (w + 0.1) / M) instead of an output size. The output is
  still h x w (floor(M * scale)), but source coordinates are computed from the given
  scale, src = (dst + 0.5) / scale - 0.5, which shifts every sample slightly. It was a
  work-around for a floating-point rounding bug in an old PyTorch; it stays because the
  checkpoints were trained and evaluated with it. A plain size=(h, w) resize differs by
  up to ~1.0, which is why timm and transformers are not exact at 224 px.
* offset == 0 (the register models): size=(h, w) with antialias=True, i.e. the
  PIL-style antialiased bicubic filter (a = -0.5, support widened when downsampling).
  On CPU, PyTorch's antialiased kernel copies row 0 to every row when the output is one
  column wide (images 14 px wide); the official outputs carry that, and so do ours.

Both are fixed linear maps for a given (h, w): pos = A @ grid @ B^T per channel, with
A (h x M) and B (w x M). `resize_matrix` builds those matrices from the definitions with
plain tensor ops on h and w, so exported graphs (ONNX, torch.export) stay symbolic in
the image size and run on backends without antialiased bicubic. The default path calls
`torch.nn.functional.interpolate` exactly as the official code does, which is what makes
outputs bit-identical.

Shapes: M stored grid side, h w output grid, D width.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["resize_pos_embed", "resize_matrices", "Method"]

Method = Literal["interpolate", "matrix"]

_CUBIC_A = -0.75  # PyTorch's bicubic (align_corners=False) kernel parameter
_AA_CUBIC_A = -0.5  # PyTorch's antialiased bicubic uses the PIL kernel parameter


def resize_pos_embed(
    pos_embed: Tensor, h: int, w: int, *, offset: float, antialias: bool, method: Method = "interpolate"
) -> Tensor:
    """Resize a (1, 1 + M*M, D) position embedding to (1, 1 + h*w, D), in float32.

    The class position (index 0) is kept as is. The caller casts to the tokens' dtype.
    """
    # pos_embed: (1, 1 + M*M, D)
    pos = pos_embed.float()
    n_patch = pos.shape[1] - 1
    M = int(n_patch**0.5)
    if M * M != n_patch:
        raise ValueError(f"pos_embed holds {n_patch} patch positions, which is not a square grid")
    if method not in ("interpolate", "matrix"):
        raise ValueError(f"unknown position-embedding method {method!r}; use 'interpolate' or 'matrix'")
    cls_pos, patch_pos = pos[:, :1], pos[:, 1:]  # (1, 1, D), (1, M*M, D)
    D = pos.shape[-1]
    grid = patch_pos.reshape(1, M, M, D).permute(0, 3, 1, 2)  # (1, D, M, M)
    if method == "matrix":
        # No early return here: at h == w == M the matrices are exactly the identity, and a
        # Python branch on h would pin exported graphs to one size.
        A, Bm = resize_matrices(h, w, M, offset=offset, antialias=antialias)  # (h, M), (w, M)
        out = torch.einsum("hm,dmn,wn->dhw", A, grid[0], Bm).unsqueeze(0)  # (1, D, h, w)
    else:
        if h == M and w == M:
            return pos  # the stored grid is used unchanged (official behaviour)
        if offset:
            # Quirk 1: scale factors with the +offset, not an output size (see module docstring).
            kw = dict(scale_factor=((h + offset) / M, (w + offset) / M))
        else:
            kw = dict(size=(h, w))
        out = F.interpolate(grid, mode="bicubic", antialias=antialias, **kw)  # (1, D, h, w)
        if out.shape[-2:] != (h, w):  # cannot happen for h, w >= 1 with offset < 1; guard anyway
            raise RuntimeError(f"position-embedding resize gave {tuple(out.shape[-2:])}, expected {(h, w)}")
    patch_pos = out.permute(0, 2, 3, 1).reshape(1, -1, D)  # (1, h*w, D)
    return torch.cat((cls_pos, patch_pos), dim=1)  # (1, 1 + h*w, D)


def _cubic(x: Tensor, a: float) -> Tensor:
    """The cubic convolution kernel (Keys), zero outside |x| >= 2, evaluated in float32.

    Written step by step as PyTorch's CPU kernel evaluates it: its compiler fuses the middle
    multiply-add of the outer piece into one FMA (measured on the x86-64 CPU build), which
    we mimic by doing that one step in float64. This keeps the matrices within float32
    rounding of `interpolate`; it does not change the maths.
    """
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1  # |x| <= 1
    u = a * x - 5 * a
    v = (u.double() * x.double() + 8 * a).float()  # fused multiply-add in the reference kernel
    far = v * x - 4 * a  # 1 < |x| < 2
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_matrices(h: int, w: int, in_size: int, *, offset: float, antialias: bool) -> tuple[Tensor, Tensor]:
    """A (h, M) and B (w, M), float32: the resize of an M x M grid to h x w is A @ grid @ B^T.

    h and w may be symbolic sizes (torch.export): only tensor ops touch them. Coordinates
    and weights are computed in float32 with the formulas of PyTorch's CPU kernels, so the
    matrices agree with `interpolate` to float32 rounding. With offset > 0 the source scale
    is M / (h + offset), except at h == w == M, where the official code skips the resize
    and both matrices are exactly the identity.
    """
    rows = torch.arange(h, dtype=torch.float64)  # (h,)
    cols = torch.arange(w, dtype=torch.float64)  # (w,)
    n_h, n_w = torch.ones_like(rows).sum(), torch.ones_like(cols).sum()  # h, w as tensors: graphs stay symbolic
    eff_offset = torch.where((n_h == in_size) & (n_w == in_size), torch.zeros_like(n_h), torch.full_like(n_h, offset))
    A = _matrix_1d(rows, n_h, in_size, eff_offset, antialias=antialias, use_offset=bool(offset))  # (h, M)
    B = _matrix_1d(cols, n_w, in_size, eff_offset, antialias=antialias, use_offset=bool(offset))  # (w, M)
    if antialias:
        # Quirk 2b: PyTorch's CPU antialiased bicubic, asked for an output one column wide
        # (w == 1, a 14-px-wide image) while resizing rows (h != M), gives every output row the values of row 0 (measured
        # with torch 2.13). The official register models inherit this on CPU, so the matrix
        # form does too: its job is to reproduce eager CPU outputs, exported or not.
        A = torch.where((n_w == 1) & (n_h != in_size), A[:1].expand_as(A), A)
    return A, B


def _matrix_1d(dst: Tensor, n_out: Tensor, in_size: int, offset: Tensor, *, antialias: bool, use_offset: bool) -> Tensor:
    f32, f64 = torch.float32, torch.float64
    src_pos = torch.arange(in_size, dtype=f32)  # (in,)
    if antialias:
        # PIL-style filter of PyTorch's _upsample_bicubic2d_aa (align_corners=False): the support
        # widens by the downsampling factor, taps outside the image are dropped (not clamped),
        # and each row is normalised to sum to 1.
        scale = (torch.tensor(float(in_size), dtype=f32) / n_out.to(f32)).to(f64)  # float32, like the kernel
        invscale = torch.where(scale >= 1, (1.0 / scale).to(f32).to(f64), torch.ones_like(scale))
        center = (scale * (dst + 0.5)).to(f32)  # (out,)
        x = (((src_pos[None, :] - center[:, None]).to(f64) + 0.5) * invscale).to(f32)  # (out, in)
        wts = _cubic(x, _AA_CUBIC_A)
        return wts / wts.sum(dim=1, keepdim=True)
    # Plain bicubic (a = -0.75): taps floor(src)-1 .. floor(src)+2, clamped to the border.
    if use_offset:
        scale = (1.0 / ((n_out + offset) / in_size)).to(f32)  # 1 / scale_factor, rounded as the kernel does
    else:
        scale = torch.tensor(float(in_size), dtype=f32) / n_out.to(f32)
    src = scale * (dst.to(f32) + 0.5) - 0.5  # (out,) float32
    base = src.floor()
    t = src - base
    t_rev = 1 - t  # the kernel forms 1 - t first, then (1 - t) + 1: float32 rounding matters here
    taps = (_cubic(t + 1, _CUBIC_A), _cubic(t, _CUBIC_A), _cubic(t_rev, _CUBIC_A), _cubic(t_rev + 1, _CUBIC_A))
    mat = torch.zeros(dst.shape[0], in_size, dtype=f32)
    for k, wk in enumerate(taps):
        idx = (base + (k - 1)).clamp(0, in_size - 1)  # (out,)
        mat = mat + (idx[:, None] == src_pos[None, :]).to(f32) * wk[:, None]
    return mat
