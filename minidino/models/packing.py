"""Images of different sizes in one pass: their tokens packed as rows, padded only for attention.

Shapes: T packed token rows (the sum of every image's N), B images, L the longest N, C channels.

Everything in a block except attention works token by token (norms, linear layers, GELU,
LayerScale, residual adds), so it runs on the (T, D) rows of all images at once, with no
padding. Attention alone needs a rectangular batch: `pad` lays the rows out as (B, L, C),
zeros after each image's last token, `attn_mask` lets every query see only its own image's
real keys, and `unpad` takes the real rows back. Padding costs attention only, which is a
fraction of a block; the padded rows never reach anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Packing"]


@dataclass(frozen=True)
class Packing:
    """Where the T real token rows of images with different token counts go in a padded (B, L) layout.

    Built with `Packing.of(lengths)`; `pad` and `unpad` move (T, C) rows to (B, L, C) and back, and
    `attn_mask` (B, 1, 1, L) keeps attention off the padding.

    Examples:
        >>> p = Packing.of([2, 3])                          # two images: 2 and 3 tokens
        >>> rows = torch.arange(5.0).unsqueeze(1)           # (T, C) = (5, 1)
        >>> p.pad(rows).squeeze(-1).tolist()                # (B, L, C): zeros after each image's tokens
        [[0.0, 1.0, 0.0], [2.0, 3.0, 4.0]]
        >>> bool(torch.equal(p.unpad(p.pad(rows)), rows))
        True
    """

    index: Tensor  # (T,) where each row goes in the flattened padded (B * L) layout
    sample: Tensor  # (T,) the image each row belongs to
    attn_mask: Tensor  # (B, 1, 1, L) bool, True = a real key
    batch: int  # B
    length: int  # L

    @classmethod
    def of(cls, lengths: Sequence[int], device: torch.device | str | None = None) -> "Packing":
        """The packing of images with `lengths[i]` tokens each, rows in image order."""
        B, L = len(lengths), max(lengths)
        n = torch.tensor(list(lengths), device=device)
        valid = torch.arange(L, device=device)[None, :] < n[:, None]  # (B, L)
        index = valid.reshape(-1).nonzero().squeeze(1)  # (T,), image by image, token by token
        return cls(index=index, sample=index // L, attn_mask=valid[:, None, None, :], batch=B, length=L)

    def pad(self, rows: Tensor) -> Tensor:
        """(T, C) rows -> (B, L, C), zeros after each image's last token."""
        out = rows.new_zeros(self.batch * self.length, rows.shape[-1])  # (B * L, C)
        out.index_copy_(0, self.index, rows)
        return out.view(self.batch, self.length, -1)  # (B, L, C)

    def unpad(self, padded: Tensor) -> Tensor:
        """(B, L, C) -> the (T, C) rows of real tokens."""
        return padded.reshape(self.batch * self.length, -1).index_select(0, self.index)  # (T, C)
