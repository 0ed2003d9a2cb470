"""Input checks: bad input fails here with a message that names the problem and the fix,
never as a shape error from deep inside torch."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_images", "check_masks", "check_list_masks", "check_block_indices"]


def check_images(x: Any, *, in_chans: int, patch_size: int, weight_dtype: torch.dtype, what: str = "x",
                 crop: bool = False) -> tuple[int, int]:
    """Validate a (B, C, H, W) image batch for a model; returns the patch grid (h, w).

    crop=False (DINOv2): both sides must be multiples of the patch size. crop=True (DINOv3, as
    its official model does): any side of at least one patch; the grid is floor(H / p) x
    floor(W / p) and the pixels past the last whole patch are ignored, with a warning.

    Examples:
        >>> check_images(torch.randn(2, 3, 28, 42), in_chans=3, patch_size=14, weight_dtype=torch.float32)
        (2, 3)
        >>> check_images(torch.randn(2, 3, 30, 42), in_chans=3, patch_size=14, weight_dtype=torch.float32)
        Traceback (most recent call last):
        ...
        ValueError: ...multiple...
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of shape (B, 3, H, W) or a list of them, got {type(x).__name__}")
    if x.ndim != 4:
        hint = " For one image use x.unsqueeze(0)." if x.ndim == 3 else ""
        raise ValueError(f"{what} must have 4 dimensions (B, 3, H, W), got shape {tuple(x.shape)}.{hint}")
    B, C, H, W = x.shape
    if C != in_chans:
        raise ValueError(
            f"{what} has {C} channels, expected {in_chans} (RGB) in dim 1: shape must be (B, 3, H, W), "
            f"got {tuple(x.shape)}. Channels-last images need x.permute(0, 3, 1, 2)."
        )
    if not x.is_floating_point():
        raise TypeError(f"{what} has dtype {x.dtype}; convert to float and normalise (see minidino.utils.transforms)")
    p = patch_size
    if crop and H >= p and W >= p and (H % p or W % p):
        warnings.warn(f"image size {H}x{W} is not a multiple of the patch size {p}: the model sees its top-left "
                      f"{H // p * p}x{W // p * p} pixels (the official DINOv3 crops the same way); resize or crop the "
                      "images to multiples of the patch size to use every pixel", UserWarning, stacklevel=2)
    for side, n in (("height", H), ("width", W)):
        if n < p or (n % p and not crop):
            lo, hi = max(p, n // p * p), max(p, -(-n // p) * p)
            near = f"{lo}" if lo == hi else f"{lo} or {hi}"
            if crop:
                raise ValueError(f"image {side} {n} is smaller than one patch ({p} pixels)")
            raise ValueError(f"image {side} {n} is not a positive multiple of the patch size {p}; nearest valid: {near}")
    if x.dtype != weight_dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(
            f"{what} has dtype {x.dtype} but the model's weights are {weight_dtype}: "
            f"call model.to({x.dtype}) or pass x.to({weight_dtype})"
        )
    return H // p, W // p


def check_masks(masks: Any, B: int, hw: int, what: str = "masks") -> None:
    """Validate a (B, h*w) bool mask (True = replace the patch token by mask_token).

    Examples:
        >>> check_masks(torch.zeros(2, 6, dtype=torch.bool), B=2, hw=6)       # fine: returns None
        >>> check_masks(torch.zeros(2, 6), B=2, hw=6)
        Traceback (most recent call last):
        ...
        TypeError: masks must have dtype torch.bool (True = replace by mask_token), got torch.float32
    """
    if not isinstance(masks, Tensor):
        raise TypeError(f"{what} must be a bool tensor of shape ({B}, {hw}) or None, got {type(masks).__name__}")
    if masks.dtype != torch.bool:
        raise TypeError(f"{what} must have dtype torch.bool (True = replace by mask_token), got {masks.dtype}")
    if tuple(masks.shape) != (B, hw):
        hint = " Flatten a (B, h, w) mask with masks.flatten(1)." if masks.ndim == 3 and masks[0].numel() == hw else ""
        raise ValueError(f"{what} must have shape (B, h*w) = ({B}, {hw}), got {tuple(masks.shape)}.{hint}")


def check_list_masks(xs: Sequence[Any], masks_list: Any) -> list[Any]:
    """The masks of a list input: one entry (tensor or None) per item; None means no masks at all.

    Examples:
        >>> check_list_masks([torch.randn(1, 3, 28, 28), torch.randn(2, 3, 14, 14)], None)
        [None, None]
    """
    if len(xs) == 0:
        raise ValueError("x is an empty list; pass at least one (B, 3, H, W) tensor")
    if masks_list is None:
        return [None] * len(xs)
    if not isinstance(masks_list, (list, tuple)) or len(masks_list) != len(xs):
        got = f"{len(masks_list)} masks" if isinstance(masks_list, (list, tuple)) else type(masks_list).__name__
        raise ValueError(f"x is a list of {len(xs)} tensors, so masks must be a list of {len(xs)} (entries may be None); got {got}")
    return list(masks_list)


def check_block_indices(n: int | Sequence[int], depth: int) -> list[int]:
    """get_intermediate_layers' n: an int takes the last n blocks, a sequence those 0-based indices.

    Examples:
        >>> check_block_indices(2, depth=12), check_block_indices([0, 11], depth=12)
        ([10, 11], [0, 11])
    """
    if isinstance(n, bool):
        raise TypeError(f"n={n!r}: give the number of last blocks (an int) or a list of block indices")
    if isinstance(n, int):
        if not 1 <= n <= depth:
            raise ValueError(f"n={n}: asks for the last n blocks, so 1 <= n <= depth ({depth})")
        return list(range(depth - n, depth))
    idx = list(n)
    bad = [i for i in idx if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < depth]
    if bad or not idx:
        raise ValueError(f"n={idx}: block indices must be 0-based ints in [0, {depth - 1}]")
    if len(set(idx)) != len(idx):  # each block's output comes once: a repeat would return fewer outputs than asked
        dup = sorted({i for i in idx if idx.count(i) > 1})
        raise ValueError(f"n={idx}: block index {', '.join(map(str, dup))} is given twice; each block is returned once")
    return idx
