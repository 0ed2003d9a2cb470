"""The configuration of a depth head: one frozen dataclass and the hub's choices as plain values.

Which blocks feed the head is a property of the backbone, kept in its catalogue row
(minidino.catalogue, head["blocks"]); the ranges and the training sets of the published heads are
here, with the quirk of the linear heads' range.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DepthConfig", "depth_config", "DEPTH_RANGES", "DEPTH_WEIGHTS", "LINEAR_HEAD_RANGE"]

# The training sets of the published heads and the depth range (metres) each was trained for.
DEPTH_WEIGHTS = ("NYU", "KITTI")
# The DPT depthers (`*_dd`) take their range from `weights=` (measured on the hub with
# pretrained=True: NYU 10 m, KITTI 80 m; `depth_range=` overrides it). The hub's pretrained=False
# ignores `weights=` there (always 10 m); minidino applies the named range either way, so a model
# built with weights="KITTI" behaves like the KITTI one once its weights are loaded.
DEPTH_RANGES: dict[str, tuple[float, float]] = {"NYU": (0.001, 10.0), "KITTI": (0.001, 80.0)}
# QUIRK (range of the linear heads): the official `*_ld` entry points build their head with
# min_depth=0.001, max_depth=80 whatever `weights=` or `depth_range=` say (measured: the hub
# model's decode_head.max_depth is 80 for NYU, KITTI and any depth_range). The bins, and the
# final clamp, therefore span 0.001..80 m; we keep that by default so the numbers are the
# official ones. Unlike the hub, an explicit `depth_range=` is honoured, not silently dropped.
LINEAR_HEAD_RANGE = (0.001, 80.0)


@dataclass(frozen=True, kw_only=True)
class DepthConfig:
    """Every choice of a depth head, as plain values (the backbone has its own DinoConfig).

    Examples:
        >>> c = DepthConfig(head="linear", out_index=(11,), max_depth=80.0)
        >>> c.depth_range, c.n_bins
        ((0.001, 80.0), 256)
        >>> c.replace(out_index=(2, 5, 8, 11)).out_index
        (2, 5, 8, 11)
    """

    head: Literal["linear", "dpt"]
    out_index: tuple[int, ...]  # the blocks whose (un-normed) outputs feed the head, in block order
    min_depth: float = 0.001  # metres; the output is clamped to [min_depth, max_depth]
    max_depth: float = 10.0
    embed_dim: int = 384  # D of the backbone
    # linear ("bins") head
    n_bins: int = 256  # K: depth = sum_k p_k * bin_k, bins evenly spaced over [min_depth, max_depth]
    upsample: int = 4  # the head runs on the patch grid upsampled 4x
    bins_eps: float = 0.1  # added to relu(logits) before they are normalised into weights
    # DPT head
    channels: int = 256  # C of the fusion stage
    post_process_channels: tuple[int, ...] = ()  # reassembled widths per level: D/8, D/4, D/2, D
    align_corners: bool = False  # of the final resize back to the image size
    weights: str = "NYU"  # the training set of the head ("NYU" indoor, "KITTI" driving): names the official file

    def __post_init__(self) -> None:
        if self.head not in ("linear", "dpt"):
            raise ValueError(f"head must be 'linear' or 'dpt', got {self.head!r}")
        if not (math.isfinite(self.min_depth) and math.isfinite(self.max_depth)) or not 0 <= self.min_depth < self.max_depth:
            raise ValueError(f"depth range must satisfy 0 <= min < max, got ({self.min_depth}, {self.max_depth})")
        if self.head == "dpt" and len(self.out_index) != 4:
            raise ValueError(f"the DPT head takes 4 layers, got out_index={self.out_index}")
        if self.head == "linear" and len(self.out_index) not in (1, 4):
            raise ValueError(f"layers must be 1 or 4 (the published heads), got {len(self.out_index)}")
        for field in ("n_bins", "upsample", "channels"):
            if getattr(self, field) < 1:
                raise ValueError(f"config field {field} must be >= 1, got {getattr(self, field)}")
        if not (math.isfinite(self.bins_eps) and self.bins_eps > 0):  # relu(logits) + eps is divided by its sum
            raise ValueError(f"config field bins_eps must be > 0, got {self.bins_eps}")
        if self.weights not in DEPTH_WEIGHTS:
            raise ValueError(f"unknown depth weights {self.weights!r}; the published heads are {', '.join(DEPTH_WEIGHTS)}")

    @property
    def depth_range(self) -> tuple[float, float]:
        return (self.min_depth, self.max_depth)

    def replace(self, **changes: Any) -> "DepthConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def depth_config(blocks: Mapping[int, tuple[int, ...]], head: str, embed_dim: int, *, layers: int = 4,
                 weights: str = "NYU", depth_range: tuple[float, float] | None = None) -> DepthConfig:
    """The head config of a hub depther: `head` is "linear" (`_ld`) or "dpt" (`_dd`); `blocks` the
    blocks that feed it per `layers` (the catalogue row's head["blocks"]).

    Examples:
        >>> blocks = {1: (11,), 4: (2, 5, 8, 11)}                      # ViT-S/B: the hub's choice
        >>> c = depth_config(blocks, "dpt", 768, weights="KITTI")
        >>> c.out_index, c.depth_range, c.post_process_channels       # 4 layers; P_i = D/8, D/4, D/2, D
        ((2, 5, 8, 11), (0.001, 80.0), (96, 192, 384, 768))
        >>> depth_config(blocks, "linear", 384, layers=1).out_index
        (11,)
    """
    if layers not in (1, 4) or isinstance(layers, bool):
        raise ValueError(f"layers must be 1 or 4 (the published heads), got {layers!r}")
    if head == "dpt" and layers != 4:
        raise ValueError("the DPT depthers (*_dd) always take 4 layers; `layers` applies to the linear ones (*_ld)")
    name = str(getattr(weights, "name", weights)).upper()  # an official Weights enum member, or its name
    if name not in DEPTH_RANGES:
        raise ValueError(f"unknown depth weights {weights!r}; the published heads are {', '.join(DEPTH_WEIGHTS)}")
    if depth_range is not None:
        try:
            lo, hi = (float(v) for v in depth_range)
        except (TypeError, ValueError):
            raise ValueError(f"depth_range must be (min, max) in metres, got {depth_range!r}") from None
    else:
        lo, hi = LINEAR_HEAD_RANGE if head == "linear" else DEPTH_RANGES[name]
    if not (math.isfinite(lo) and math.isfinite(hi)) or not 0 <= lo < hi:
        raise ValueError(f"depth_range must satisfy 0 <= min < max (metres), got ({lo}, {hi})")
    extra = {"post_process_channels": tuple(embed_dim // 2 ** (3 - i) for i in range(4))} if head == "dpt" else {}
    return DepthConfig(head=head, out_index=tuple(blocks[layers]), min_depth=lo, max_depth=hi,  # type: ignore[arg-type]
                       embed_dim=embed_dim, weights=name, **extra)
