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

Both are fixed linear maps for a given (h, w): pos = A @ grid @ B^T per channel, with
A (h x M) and B (w x M). `resize_matrices` builds those matrices from the definitions with
plain tensor ops on h and w, so exported graphs (ONNX, torch.export) stay symbolic in
the image size and run on backends without antialiased bicubic (MPS). Their entries equal
the weights PyTorch's CPU kernels use, bit for bit (quirk 3 below says how), so the matrix
path agrees with `interpolate` to float32 rounding of the final sums (within 1e-6 for
every h, w in 1..80; tests/test_posembed.py). The default path calls
`torch.nn.functional.interpolate` exactly as the official code does, which is what makes
outputs bit-identical to the official model.

A layout note, measured with torch 2.13: the official code hands `interpolate` the grid
channels-last (a permuted (1, M, M, D) tensor). On a contiguous (1, D, M, M) tensor the CPU
antialiased kernel, asked for one output column (w == 1) while resizing rows, copies row
0 into every row; on the channels-last layout it does not. The model always uses the
channels-last layout, so neither the official outputs nor ours carry that artefact, and
the matrices do not model it.

Shapes: M stored grid side, h w output grid, D width.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PosEmbedCache", "resize_pos_embed", "resize_matrices", "resize_taps", "Method"]

Method = Literal["interpolate", "matrix"]

_CUBIC_A = -0.75  # PyTorch's bicubic (align_corners=False) kernel parameter
_AA_CUBIC_A = -0.5  # PyTorch's antialiased bicubic uses the PIL kernel parameter


def resize_pos_embed(
    pos_embed: Tensor, h: int, w: int, *, offset: float, antialias: bool, method: Method = "interpolate"
) -> Tensor:
    """Resize a (1, 1 + M*M, D) position embedding to (1, 1 + h*w, D), in float32.

    The class position (index 0) is kept as is. The caller casts to the tokens' dtype.

    Examples:
        >>> pos = torch.randn(1, 1 + 37 * 37, 384)          # (1, 1 + M*M, D), M = 37
        >>> tuple(resize_pos_embed(pos, 16, 16, offset=0.1, antialias=False).shape)   # 224 px: 16 x 16
        (1, 257, 384)
        >>> m = resize_pos_embed(pos, 16, 16, offset=0.1, antialias=False, method="matrix")
        >>> float((m - resize_pos_embed(pos, 16, 16, offset=0.1, antialias=False)).abs().max()) < 1e-5
        True
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
        # No early return here: at h == w == M the maps are exactly the identity, and a
        # Python branch on h would pin exported graphs to one size.
        out = _resize_linear(patch_pos.reshape(M, M, D), h, w, offset=offset, antialias=antialias)  # (h, w, D)
        return torch.cat((cls_pos, out.reshape(1, -1, D)), dim=1)  # (1, 1 + h*w, D)
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


def _resize_linear(grid: Tensor, h: int, w: int, *, offset: float, antialias: bool) -> Tensor:
    """(M, M, D) -> (h, w, D) with tensor ops only (the "matrix" method), width first then
    height, as PyTorch's kernels do. Channels stay last, so every step moves whole rows.

    Antialiased: T = B @ grid, out = A @ T (within 7.2e-7 of `interpolate` for all sizes
    1..80). Plain bicubic on a device with float64: each output is summed from its 4 taps in
    the order and with the fused multiply-adds of PyTorch's CPU kernel, which makes it equal
    to `interpolate` bit for bit; a matrix product would round differently (up to 1.2e-6).
    MPS has no float64, so there the plain case uses the matrix product too.
    """
    M, _, D = grid.shape
    dev = grid.device
    if antialias or dev.type == "mps":
        A, B = resize_matrices(h, w, M, offset=offset, antialias=antialias)  # (h, M), (w, M), on the CPU
        T = B.to(dev) @ grid  # (w, M) @ (M, M, D) -> (M, w, D)
        return (A.to(dev) @ T.reshape(M, -1)).reshape(-1, T.shape[1], D)  # (h, w * D) -> (h, w, D)
    (idx_h, wts_h), (idx_w, wts_w) = resize_taps(h, w, M, offset=offset)  # (h, 4), (w, 4) each
    T = _sum_taps(grid, 1, idx_w.to(dev), wts_w.to(dev))  # (M, w, D)
    return _sum_taps(T, 0, idx_h.to(dev), wts_h.to(dev))  # (h, w, D)


def _sum_taps(x: Tensor, dim: int, idx: Tensor, wts: Tensor) -> Tensor:
    """Resample axis `dim` (0 or 1) of x (M, M', D) from 4 taps per output (idx, wts: (out, 4)).

    Quirk 3 (rounding): the kernel's compiled loop computes tap 1's product first, then adds
    taps 0, 2, 3 with fused multiply-adds (found by trying every order against `interpolate`).
    A float32 product is exact in float64, so "product + acc in float64, rounded once" is the FMA.
    """
    x64 = x.double()
    w64 = wts.double()[:, :, None, None] if dim == 0 else wts.double()[None, :, :, None]  # (out, 4, 1, 1) or (1, out, 4, 1)

    def tap(k: int) -> Tensor:
        return x64.index_select(dim, idx[:, k]) * w64.select(dim + 1, k)  # x with axis `dim` of length out

    acc = tap(1).float()  # tap 1's product, rounded
    for k in (0, 2, 3):
        acc = (tap(k) + acc.double()).float()
    return acc


def _fma(x: Tensor, y: Tensor | float, z: Tensor | float) -> Tensor:
    """x * y + z rounded once to float32, like a fused multiply-add: float32 products are
    exact in float64, so one float64 step and one rounding reproduce the fused result."""
    return (x.double() * (y.double() if isinstance(y, Tensor) else y) + (z.double() if isinstance(z, Tensor) else z)).float()


def _cubic(x: Tensor, a: float, *, fused: bool) -> Tensor:
    """The cubic convolution kernel (Keys) with parameter a, zero for |x| >= 2, in float32.

    Quirk 3 (rounding, not maths): PyTorch's x86-64 CPU build evaluates the two pieces with
    some multiply-adds fused into FMAs by the compiler, and which ones differs between its two
    kernels (found by trying every combination against `interpolate` for all sizes 1..80,
    which then agree bit for bit). `fused=True` is the antialiased kernel (every step fused);
    `fused=False` the plain one (only the first step of the inner piece and the first two
    of the outer piece fused).
    """
    x = x.abs()
    near = _fma(torch.full_like(x, a + 2), x, -(a + 3))  # (a+2)|x| - (a+3), |x| < 1
    near = _fma(near * x, x, 1.0) if fused else near * x * x + 1
    far = _fma(torch.full_like(x, a), x, -5 * a)  # 1 <= |x| < 2
    far = _fma(far, x, 8 * a)
    far = _fma(far, x, -4 * a) if fused else far * x - 4 * a
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


_MATRIX_CACHE: dict[tuple, tuple[Tensor, Tensor]] = {}
_MATRIX_CACHE_SIZE = 64


def resize_matrices(h: int, w: int, in_size: int, *, offset: float, antialias: bool) -> tuple[Tensor, Tensor]:
    """A (h, M) and B (w, M), float32 on the CPU: the resize of an M x M grid to h x w is A @ grid @ B^T.

    h and w may be symbolic sizes (torch.export): only tensor ops touch them. Coordinates
    and weights follow PyTorch's CPU kernels step by step, in the same float32/float64 mix
    (the kernels mix C++ double literals into float32 arithmetic), so each matrix equals
    the weights `interpolate` uses bit for bit. With offset > 0 the source scale is
    M / (n + offset), except at h == w == M, where the official code skips the resize and
    both matrices are exactly the identity. Results for int sizes are cached (they are
    recomputed under torch.compile / torch.export, where sizes may be symbolic).

    Examples:
        >>> A, B = resize_matrices(16, 24, 37, offset=0.1, antialias=False)
        >>> tuple(A.shape), tuple(B.shape)                  # (h, M), (w, M): pos = A @ grid @ B^T
        ((16, 37), (24, 37))
    """
    key = (h, w, in_size, float(offset), bool(antialias))
    cacheable = isinstance(h, int) and isinstance(w, int) and not torch.compiler.is_compiling()
    if cacheable and key in _MATRIX_CACHE:
        return _MATRIX_CACHE[key]
    with torch.device("cpu"):  # float64 steps: MPS has no float64, and the weights are tiny
        dst, n_out, n_h, n_w = _both_axes(h, w)  # (h + w,) each, and h, w as 0-d tensors
        if antialias:
            mat = _matrix_1d_aa(dst, n_out, in_size)  # (h + w, M)
        else:
            idx, wts = _taps_1d(dst, _plain_scale(n_h, n_w, n_out, in_size, offset), in_size)  # (h + w, 4) each
            src_pos = torch.arange(in_size)  # (M,)
            mat = torch.zeros(dst.shape[0], in_size)  # (h + w, M)
            for k in range(4):  # taps clamped onto the same border pixel add up, left to right
                mat = mat + (idx[:, k : k + 1] == src_pos[None, :]).float() * wts[:, k : k + 1]
        A, B = mat[:h], mat[h:]  # (h, M), (w, M)
    if cacheable:
        if len(_MATRIX_CACHE) >= _MATRIX_CACHE_SIZE:
            _MATRIX_CACHE.clear()
        _MATRIX_CACHE[key] = (A, B)
    return A, B


def resize_taps(h: int, w: int, in_size: int, *, offset: float) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The plain bicubic resize as taps: ((idx_h, wts_h), (idx_w, wts_w)), each (n, 4), int64
    source indices (clamped to the border) and float32 weights, on the CPU. Cached like
    `resize_matrices`; the same weights, before duplicates are summed into a matrix.

    Examples:
        >>> (ih, wh), (iw, ww) = resize_taps(16, 16, 37, offset=0.1)
        >>> tuple(ih.shape), ih.dtype, tuple(wh.shape)      # 4 bicubic taps per output row
        ((16, 4), torch.int64, (16, 4))
    """
    key = ("taps", h, w, in_size, float(offset))
    cacheable = isinstance(h, int) and isinstance(w, int) and not torch.compiler.is_compiling()
    if cacheable and key in _MATRIX_CACHE:
        return _MATRIX_CACHE[key]  # type: ignore[return-value]
    with torch.device("cpu"):
        dst, n_out, n_h, n_w = _both_axes(h, w)  # (h + w,) each, and h, w as 0-d tensors
        idx, wts = _taps_1d(dst, _plain_scale(n_h, n_w, n_out, in_size, offset), in_size)  # (h + w, 4)
        result = ((idx[:h], wts[:h]), (idx[h:], wts[h:]))
    if cacheable:
        if len(_MATRIX_CACHE) >= _MATRIX_CACHE_SIZE:
            _MATRIX_CACHE.clear()
        _MATRIX_CACHE[key] = result  # type: ignore[assignment]
    return result


def _both_axes(h: int, w: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Output indices of both axes in one vector (both axes in one pass: fewer graph nodes to
    export), each with its axis length; and h, w as float64 0-d tensors. Built from tensor
    ops only, so exported graphs stay symbolic in h and w."""
    rows = torch.arange(h, dtype=torch.float64)  # (h,)
    cols = torch.arange(w, dtype=torch.float64)  # (w,)
    n_h, n_w = torch.ones_like(rows).sum(), torch.ones_like(cols).sum()
    dst = torch.cat((rows, cols))  # (h + w,)
    n_out = torch.cat((n_h.expand_as(rows), n_w.expand_as(cols)))  # (h + w,)
    return dst, n_out, n_h, n_w


def _plain_scale(n_h: Tensor, n_w: Tensor, n_out: Tensor, in_size: int, offset: float) -> Tensor:
    """(out,) float32 source scale per output index of the plain bicubic resize."""
    if offset:
        # Quirk 1 (module docstring): scale factors (n + offset) / M, not sizes, except at
        # h == w == M, where the official code uses the stored grid as is (scale 1: identity).
        at_m = (n_h == in_size) & (n_w == in_size)
        inv = torch.where(at_m, torch.ones_like(n_out), 1.0 / ((n_out + offset) / in_size))  # 1 / scale_factor
        return inv.float()  # a float64 division, rounded to float32 as the kernel does
    return torch.tensor(float(in_size)) / n_out.float()  # a float32 division, as the kernel does


def _taps_1d(dst: Tensor, scale: Tensor, in_size: int) -> tuple[Tensor, Tensor]:
    """Plain bicubic taps (a = -0.75, align_corners=False): (out, 4) int64 indices floor(src) - 1
    .. floor(src) + 2 clamped to the border, and (out, 4) float32 weights, from (out,) float64
    output indices and (out,) float32 scales."""
    src = (scale.double() * (dst + 0.5) - 0.5).float()  # (out,): float32 scale times a C++ double, rounded once
    base = src.floor().clamp(max=in_size - 1)  # (out,)
    t = (src - base).clamp(0, 1)  # (out,)
    t_rev = 1 - t  # the kernel forms 1 - t first, then (1 - t) + 1: float32 rounding matters here
    dist = torch.stack((t + 1, t, t_rev, t_rev + 1), dim=1)  # (out, 4): distance of each tap
    offsets = torch.arange(-1, 3, dtype=base.dtype)  # (4,)
    idx = (base[:, None] + offsets[None, :]).clamp(0, in_size - 1).long()  # (out, 4)
    return idx, _cubic(dist, _CUBIC_A, fused=False)


def _matrix_1d_aa(dst: Tensor, n_out: Tensor, in_size: int) -> Tensor:
    """Antialiased bicubic weights (PIL-style, a = -0.5): (out, M) from (out,) float64 output
    indices and (out,) float64 output lengths.

    The support widens by the downsampling factor; taps outside [xmin, xmin + xsize) are
    dropped (not clamped); each row is divided by its float32 sum taken left to right.
    """
    f32 = torch.float32
    src_pos = torch.arange(in_size, dtype=f32)  # (M,)
    scale = torch.tensor(float(in_size)) / n_out.to(f32)  # (out,) float32, like the kernel
    down = scale >= 1
    support = torch.where(down, 2 * scale, torch.full_like(scale, 2.0))  # (interp_size / 2) * scale
    invscale = torch.where(down, (1.0 / scale.double()).float(), torch.ones_like(scale))
    max_taps = support.ceil() * 2 + 1
    center = (scale.double() * (dst + 0.5)).float()  # (out,)
    # The C++ int cast truncates; floor is the same here and is an operator every runtime has
    # (OpenVINO's PyTorch frontend has no aten.trunc): xmin's value differs only below 0, which
    # the clamp sends to 0 either way, and xmax's is always positive (center >= 0, support > 0).
    xmin = ((center - support).double() + 0.5).floor().clamp(min=0)  # (out,)
    xmax = ((center + support).double() + 0.5).floor().clamp(max=in_size)  # (out,)
    xsize = torch.minimum((xmax - xmin).clamp(min=0), max_taps.double())  # (out,)
    x = (((src_pos[None, :] - center[:, None]).double() + 0.5) * invscale.double()[:, None]).float()  # (out, M)
    inside = (src_pos[None, :] >= xmin[:, None]) & (src_pos[None, :] < (xmin + xsize)[:, None])  # (out, M)
    wts = torch.where(inside, _cubic(x, _AA_CUBIC_A, fused=True), torch.zeros_like(x))  # (out, M)
    cols = wts.T  # (M, out)
    total = cols[0]
    for j in range(1, in_size):  # a float32 sum left to right, as the kernel's loop (torch.sum regroups)
        total = total + cols[j]
    return wts / total[:, None]  # (out, M)


class PosEmbedCache:
    """Resized position embeddings per (size, method, dtype, device), for inference.

    Keyed on the parameter's identity and version, so an in-place update (training step,
    load_state_dict) invalidates it. Bypassed while the graph is traced (torch.compile,
    torch.export: the key reads a data pointer) and whenever gradients flow to pos_embed.

    Examples:
        >>> cache = PosEmbedCache()
        >>> pos = torch.randn(1, 1 + 37 * 37, 384)
        >>> a = cache.get(pos, 16, 16, torch.float32, offset=0.1, antialias=False, method="interpolate")
        >>> b = cache.get(pos, 16, 16, torch.float32, offset=0.1, antialias=False, method="interpolate")
        >>> tuple(a.shape), a is b                          # computed once per size
        ((1, 257, 384), True)
    """

    def __init__(self, max_entries: int = 16) -> None:
        self.max_entries = max_entries
        self._store: dict[tuple, Tensor] = {}

    def clear(self) -> None:
        self._store.clear()

    def get(self, pos_embed: Tensor, h: int, w: int, dtype: torch.dtype, *, offset: float, antialias: bool,
            method: Method) -> Tensor:
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and pos_embed.requires_grad):
            return resize_pos_embed(pos_embed, h, w, offset=offset, antialias=antialias, method=method).to(dtype)
        key = (h, w, offset, antialias, method, dtype, pos_embed.device, pos_embed._version, pos_embed.data_ptr())
        if key not in self._store:
            if len(self._store) >= self.max_entries:
                self._store.clear()
            self._store[key] = resize_pos_embed(pos_embed, h, w, offset=offset, antialias=antialias, method=method).to(dtype)
        return self._store[key]  # (1, 1 + h*w, D)
