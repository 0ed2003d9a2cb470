"""The DPT depth head of the `*_dd` depthers (Ranftl et al., "Vision Transformers for Dense
Prediction", 2021), with the official key names.

Shapes: B batch, D backbone width, h w patch grid, C fusion channels (256), P_i reassembled
widths (D/8, D/4, D/2, D), and the four levels' grids 4h, 2h, h, ceil(h/2) (same for w).

    4 x ((B, D, h, w), (B, D))
      -> reassemble_blocks: readout (cls) projected in, 1x1 conv to P_i, resized:
         (B, P0, 4h, 4w), (B, P1, 2h, 2w), (B, P2, h, w), (B, P3, ceil(h/2), ceil(w/2))
      -> convs: 3x3 to C each
      -> fusion_blocks: coarse to fine, each upsampling 2x: (B, C, 16 ceil(h/2), 16 ceil(w/2))
      -> project (3x3 + ReLU), conv_depth (3x3 to C/2, 2x up, 3x3 to 32, ReLU, 1x1 to 1)
      -> relu + min_depth: (B, 1, h', w') metres, h' = 32 ceil(h/2), w' = 32 ceil(w/2)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .depth_config import DepthConfig

__all__ = ["DPTHead", "ConvModule"]


class ConvModule(nn.Module):
    """A conv with an optional ReLU before (`act_first`) or after it; keys `conv` (as the
    official ConvModule, whose activation has no parameters).

    Examples:
        >>> m = ConvModule(3, 8, 3, padding=1, act=True)           # conv then ReLU
        >>> y = m(torch.randn(1, 3, 5, 5))
        >>> tuple(y.shape), bool((y >= 0).all()), list(m.state_dict())
        ((1, 8, 5, 5), True, ['conv.weight', 'conv.bias'])
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, *, padding: int = 0, bias: bool = True,
                 act: bool = False, act_first: bool = False, **factory: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=padding, bias=bias, **factory)
        self.act = act
        self.act_first = act_first

    def forward(self, x: Tensor) -> Tensor:
        if self.act and self.act_first:
            x = F.relu(x)
        x = self.conv(x)
        if self.act and not self.act_first:
            x = F.relu(x)
        return x


class ReassembleBlocks(nn.Module):
    """Tokens back to image-like maps at four scales (keys `projects`, `resize_layers`, `readout_projects`)."""

    def __init__(self, D: int, widths: tuple[int, ...], **factory: Any) -> None:
        super().__init__()
        self.projects = nn.ModuleList([ConvModule(D, p, 1, **factory) for p in widths])
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(widths[0], widths[0], kernel_size=4, stride=4, **factory),  # 4x up
            nn.ConvTranspose2d(widths[1], widths[1], kernel_size=2, stride=2, **factory),  # 2x up
            nn.Identity(),
            nn.Conv2d(widths[3], widths[3], kernel_size=3, stride=2, padding=1, **factory),  # 2x down (ceil)
        ])
        # readout "project": the class token joins every patch token through Linear(2D, D) + GELU
        self.readout_projects = nn.ModuleList([nn.Sequential(nn.Linear(2 * D, D, **factory), nn.GELU()) for _ in widths])

    def forward(self, feats: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
        out = []
        for i, (x, cls) in enumerate(feats):
            B, D, h, w = x.shape
            t = x.flatten(2).permute(0, 2, 1)  # (B, h*w, D)
            t = torch.cat([t, cls.unsqueeze(1).expand_as(t)], dim=-1)  # (B, h*w, 2D)
            t = self.readout_projects[i](t)  # (B, h*w, D)
            x = t.permute(0, 2, 1).reshape(B, D, h, w)  # (B, D, h, w)
            x = self.projects[i](x)  # (B, P_i, h, w)
            out.append(self.resize_layers[i](x))  # (B, P_i, level grid)
        return out


class PreActResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), 3x3 convs without bias (keys `conv1.conv`, `conv2.conv`)."""

    def __init__(self, C: int, **factory: Any) -> None:
        super().__init__()
        self.conv1 = ConvModule(C, C, 3, padding=1, bias=False, act=True, act_first=True, **factory)
        self.conv2 = ConvModule(C, C, 3, padding=1, bias=False, act=True, act_first=True, **factory)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x)) + x


class FeatureFusionBlock(nn.Module):
    """Add the (resized) skip after a residual unit, another residual unit, 2x up, 1x1 project."""

    def __init__(self, C: int, *, first: bool, **factory: Any) -> None:
        super().__init__()
        self.project = ConvModule(C, C, 1, **factory)
        # the coarsest block has no skip input, so no unit for it (no keys res_conv_unit1 in block 0)
        self.res_conv_unit1 = None if first else PreActResidualConvUnit(C, **factory)
        self.res_conv_unit2 = PreActResidualConvUnit(C, **factory)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None:
            assert self.res_conv_unit1 is not None
            # QUIRK (odd grids): the 2x-down level has ceil(h/2) rows, so the upsampled coarse map can
            # be one row larger than the skip; the official block then resizes the skip to it (bilinear,
            # not cropped). Resizing unconditionally is the same (a same-size bilinear resize is an exact
            # copy) and keeps the graph free of a shape test, so one export serves every image size.
            skip = F.interpolate(skip, size=x.shape[2:], mode="bilinear", align_corners=False)
            x = x + self.res_conv_unit1(skip)
        x = self.res_conv_unit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)  # (B, C, 2*, 2*)
        return self.project(x)


class HeadDepth(nn.Module):
    """conv 3x3 C -> C/2, 2x up (bilinear, align_corners=True), conv 3x3 -> 32, ReLU, conv 1x1 -> 1.
    Keys `head.0`, `head.2`, `head.4` (1 and 3 are the parameterless upsample and ReLU)."""

    def __init__(self, C: int, **factory: Any) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Conv2d(C, C // 2, 3, padding=1, **factory),
            _Upsample2x(),
            nn.Conv2d(C // 2, 32, 3, padding=1, **factory),
            nn.ReLU(),
            nn.Conv2d(32, 1, 1, **factory),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)


class _Upsample2x(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class DPTHead(nn.Module):
    """The `*_dd` head: reassemble 4 layers, fuse coarse to fine, regress depth (metres).

    Examples:
        >>> cfg = DepthConfig(head="dpt", out_index=(0, 1, 2, 3), embed_dim=32, channels=16,
        ...                   post_process_channels=(4, 8, 16, 32))          # tiny: D 32, C 16
        >>> head = DPTHead(cfg).init_weights()
        >>> feats = [(torch.randn(1, 32, 3, 4), torch.randn(1, 32)) for _ in range(4)]   # 4 x ((B, D, h, w), (B, D))
        >>> tuple(head(feats).shape)                    # (B, 1, 32 ceil(h/2), 32 ceil(w/2))
        (1, 1, 64, 64)
    """

    def __init__(self, config: DepthConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.config = config
        C, widths = config.channels, config.post_process_channels
        self.reassemble_blocks = ReassembleBlocks(config.embed_dim, widths, **factory)
        self.convs = nn.ModuleList([ConvModule(p, C, 3, padding=1, bias=False, **factory) for p in widths])
        self.fusion_blocks = nn.ModuleList([FeatureFusionBlock(C, first=i == 0, **factory) for i in range(len(widths))])
        self.project = ConvModule(C, C, 3, padding=1, act=True, **factory)
        self.conv_depth = HeadDepth(C, **factory)

    @torch.no_grad()
    def init_weights(self) -> "DPTHead":
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                m.reset_parameters()
        return self

    def forward(self, feats: list[tuple[Tensor, Tensor]]) -> Tensor:
        xs = self.reassemble_blocks(feats)  # 4 levels, fine to coarse
        xs = [conv(x) for conv, x in zip(self.convs, xs)]  # each (B, C, level grid)
        out = self.fusion_blocks[0](xs[-1])
        for i in range(1, len(self.fusion_blocks)):
            out = self.fusion_blocks[i](out, xs[-(i + 1)])
        out = self.project(out)  # (B, C, h', w')
        # metres: relu(regression) + min_depth (the official non-bins head; clamped later by the Depther)
        return F.relu(self.conv_depth(out)) + self.config.min_depth  # (B, 1, 2h', 2w')
