"""DINOv3's rotary position embedding (RoPE): where each patch is, told to attention by rotating q and k.

Shapes: h w patch grid, P = h*w patches, hd head dim, F = hd/4 frequencies per axis,
B batch, nh heads, N tokens (the 1 + R leading tokens, then the P patches).

DINOv2 adds a learned position embedding to the tokens once, before the first block (and has to
resize it for every image size, posembed.py). DINOv3 adds nothing to the tokens: inside every
block it rotates each patch's query and key by angles that depend on the patch's place, so that
q . k depends on where the two patches are relative to each other. Step by step:

1. Coordinates (`patch_coordinates`): patch centres on [-1, 1] along each axis, each axis by its
   own length: row i of h is ((i + 0.5) / h) * 2 - 1. The grid (row, column), row-major: (P, 2).
2. Periods (`RopeEmbedding.periods`, a buffer of the checkpoint): F periods per axis,
   rope_base ** (2k / (hd/2)) for k = 0 .. F-1, from 1 to about 75 for hd = 64. They are read from
   the checkpoint as stored and never recomputed after loading (the published files hold them
   rounded to bfloat16, and the outputs move by ~2e-3 if they are recomputed).
3. Angles: 2 pi * coordinate / period: (P, 2, F) -> (P, hd/2), every row frequency before every
   column frequency -> written twice, (P, hd). `sin` and `cos` of that: the tables.
4. The rotation (`apply_rope`): x * cos + rotate_half(x) * sin, with rotate_half(x) = [-x2, x1] for
   the two halves x1, x2 of the head dimension: element j of the first half and element j of the
   second half form a pair rotated by angle j. Only the last P tokens are rotated: the class and
   storage tokens have no place in the image and pass unchanged.

Precision: the tables are computed in float32 from the stored periods, whatever the model's
dtype, and q and k are rotated in float32 and cast back (a bfloat16 model has bfloat16 periods,
rounded by `.to(torch.bfloat16)` as the official model's are: the same tables as the official).
Eval semantics only: the official training jitters the coordinates (a random scale in [1/2, 2]
per block); minidino does not.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["Rope", "RopeEmbedding", "patch_coordinates", "rope_periods", "rotate_half", "apply_rope"]


class Rope(NamedTuple):
    """The sine and cosine tables of one patch grid: each (h*w, hd), float32.

    Examples:
        >>> sin, cos = Rope(torch.zeros(6, 64), torch.ones(6, 64))       # what RopeEmbedding(h, w) returns
        >>> tuple(sin.shape)
        (6, 64)
    """

    sin: Tensor
    cos: Tensor


def rope_periods(head_dim: int, base: float, *, device: Any = None) -> Tensor:
    """The official periods, computed in float32: base ** (2k / (hd/2)) for k = 0 .. hd/4 - 1. (F,)

    Examples:
        >>> [round(p, 4) for p in rope_periods(64, 100.0)[:3].tolist()]
        [1.0, 1.3335, 1.7783]
    """
    F = head_dim // 4
    return base ** (2 * torch.arange(F, dtype=torch.float32, device=device) / (head_dim // 2))  # (F,)


def patch_coordinates(h: int, w: int, *, device: Any = None) -> Tensor:
    """Patch centres on [-1, 1], each axis normalised by its own length: (h*w, 2) float32, (row, column), row-major.

    Examples:
        >>> [[round(v, 4) for v in rc] for rc in patch_coordinates(2, 3).tolist()]   # (row, column), row-major
        [[-0.5, -0.6667], [-0.5, 0.0], [-0.5, 0.6667], [0.5, -0.6667], [0.5, 0.0], [0.5, 0.6667]]
    """
    # arange(n) + 0.5 holds exactly the values of arange(0.5, n), and traces with a symbolic n.
    rows = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h * 2 - 1  # (h,)
    cols = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w * 2 - 1  # (w,)
    row, col = torch.meshgrid(rows, cols, indexing="ij")  # each (h, w)
    # Flattened before stacking: the same values as stack(..., dim=-1).flatten(0, 1), but no (h, w, 1)
    # step, whose two free dimensions XNNPACK's reshape refuses in an exported free-size program.
    return torch.stack((row.flatten(), col.flatten()), dim=-1)  # (h*w, 2)


class RopeEmbedding(nn.Module):
    """The RoPE tables of a patch grid, from the `periods` buffer (official key `rope_embed.periods`).

    Examples:
        >>> rope = RopeEmbedding(head_dim=64, base=100.0).reset_periods()
        >>> sin, cos = rope(2, 3)                                      # a 2 x 3 patch grid
        >>> tuple(sin.shape), sin.dtype                               # (h*w, hd), float32
        ((6, 64), torch.float32)
    """

    def __init__(self, *, head_dim: int, base: float, device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.head_dim, self.base = head_dim, base
        # Persistent: the checkpoint's values are the ones used (float32 unless the model is cast).
        self.register_buffer("periods", torch.empty(head_dim // 4, device=device, dtype=dtype or torch.float32))

    @torch.no_grad()
    def reset_periods(self) -> "RopeEmbedding":
        """The official initial periods (init_weights; a checkpoint overwrites them)."""
        self.periods.copy_(rope_periods(self.head_dim, self.base, device=self.periods.device))
        return self

    def forward(self, h: int, w: int) -> Rope:
        coords = patch_coordinates(h, w, device=self.periods.device)  # (P, 2)
        angles = 2 * math.pi * coords[:, :, None] / self.periods.float()[None, None, :]  # (P, 2, F)
        angles = angles.flatten(1, 2).tile(2)  # (P, hd): rows' F, columns' F, then the same again
        return Rope(torch.sin(angles), torch.cos(angles))


def rotate_half(x: Tensor) -> Tensor:
    """[x1, x2] -> [-x2, x1] over the last dimension (its two halves).

    Examples:
        >>> rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist()
        [-3.0, -4.0, 1.0, 2.0]
    """
    half = x.shape[-1] // 2
    # Two slices, not x.chunk(2): an exported split returns a list of tensors, and ExecuTorch 1.5's
    # verifier reads that list in a way that pins a free batch to the traced one (tests/test_runtimes.py).
    x1, x2 = x[..., :half], x[..., half:]  # each (..., hd/2)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, rope: Rope) -> Tensor:
    """Rotate the patch tokens of queries or keys (B, nh, N, hd); the N - h*w leading tokens pass unchanged.

    Examples:
        >>> rope = RopeEmbedding(head_dim=8, base=100.0).reset_periods()(1, 2)        # 2 patches
        >>> q = torch.randn(1, 2, 1 + 4 + 2, 8)                                       # (B, nh, N, hd): cls, 4 storage, 2 patches
        >>> out = apply_rope(q, rope)
        >>> bool(torch.equal(out[:, :, :5], q[:, :, :5]))                             # cls and storage: unrotated
        True
        >>> torch.allclose(out.norm(dim=-1), q.norm(dim=-1))                          # a rotation keeps lengths
        True
    """
    prefix = x.shape[-2] - rope.sin.shape[-2]  # 1 + R tokens without a place in the image
    patches = x[:, :, prefix:].to(rope.sin.dtype)  # (B, nh, P, hd), float32
    patches = patches * rope.cos + rotate_half(patches) * rope.sin  # pairs (j, j + hd/2) rotated by angle j
    return torch.cat((x[:, :, :prefix], patches.to(x.dtype)), dim=2)  # (B, nh, N, hd)
