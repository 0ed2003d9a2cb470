"""The torch.hub depth estimators (`*_ld`, `*_dd`): a backbone, a depth head, and the glue.

Shapes: B batch, H W image pixels, Hp Wp the image padded to multiples of 14, h w patch grid
(Hp/14, Wp/14), D backbone width, L number of backbone layers fed to the head (1 or 4),
K depth bins (256), C head channels.

    image (B, 3, H, W)
      -> centre-pad to (B, 3, Hp, Wp)                              pad_to_patch_multiple
      -> L blocks' outputs, not normed: L x ((B, D, h, w), (B, D))  backbone.get_intermediate_layers
      -> decode_head: (B, 1, h', w') metres                         LinearDepthHead | DPTHead
      -> clamp to [min_depth, max_depth], resize to (B, 1, H, W)    Depther.forward

Every choice of the official depthers that decides the numbers is a plain value in
`DepthConfig` (heads/depth_config.py: ranges, training sets; the blocks per size are in the
catalogue) or one of the
functions marked QUIRK below, each with why it is there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.dinov2 import DinoVisionTransformer
from .depth_config import DepthConfig
from .dpt import DPTHead

__all__ = ["Depther", "LinearDepthHead", "pad_to_patch_multiple", "bins_to_metres"]

# ---------------------------------------------------------------------------- the quirks
def pad_to_patch_multiple(x: Tensor, patch_size: int) -> Tensor:
    """QUIRK (padding): the official depthers zero-pad the image to multiples of the patch size,
    the extra row/column split evenly with the odd one at the bottom/right, instead of resizing
    or cropping it. The depth map is then computed for the padded image and resized as a whole
    back to (H, W) (see Depther.forward), so the border it sees is part of the picture.

    Examples:
        >>> x = torch.ones(1, 3, 15, 30)
        >>> tuple(pad_to_patch_multiple(x, 14).shape)         # (B, C, H, W) -> (B, C, Hp, Wp)
        (1, 3, 28, 42)
        >>> pad_to_patch_multiple(x, 14)[0, 0, :, 20].tolist()[5:8]   # 6 zero rows on top (13 = 6 + 7)
        [0.0, 1.0, 1.0]
    """
    B, C, H, W = x.shape
    p = patch_size
    ph, pw = (H + p - 1) // p * p - H, (W + p - 1) // p * p - W  # rows, columns to add (0 .. p-1)
    # no early return for 0: a zero pad copies the values, and one graph then serves every size
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))  # (B, C, Hp, Wp)


def bins_to_metres(logits: Tensor, min_depth: float, max_depth: float, eps: float) -> Tensor:
    """QUIRK (bins to metres, the "UD" bins with "linear" normalisation of the official BNHead):
    K bin centres evenly spaced over [min_depth, max_depth]; weights relu(logit) + eps, divided
    by their sum (not a softmax); depth = the weighted mean of the centres. (B, K, h, w) -> (B, 1, h, w).

    Examples:
        >>> logits = torch.full((1, 3, 1, 1), -1.0)                    # relu -> 0: equal weights eps / (3 eps)
        >>> round(float(bins_to_metres(logits, 1.0, 3.0, eps=0.1)), 5)  # the mean of the bins 1, 2, 3
        2.0
    """
    bins = torch.linspace(min_depth, max_depth, logits.shape[1], device=logits.device)  # (K,)
    p = torch.relu(logits) + eps
    p = p / p.sum(dim=1, keepdim=True)  # (B, K, h, w), sums to 1 over K
    # readable: (p * bins[:, None, None]).sum(1). Written as the one matrix product that
    # einsum("ikmn,k->imn") performs for this pattern (bit-identical to it, measured; the plain
    # sum above is not), so an exported graph holds a plain matmul rather than einsum's reshapes.
    B, K, h, w = p.shape
    depth = p.permute(0, 2, 3, 1).reshape(B * h * w, K) @ bins.to(p.dtype).unsqueeze(1)  # (B*h*w, 1)
    return depth.reshape(B, 1, h, w)  # (B, 1, h, w)


# ---------------------------------------------------------------------------- the linear head
class LinearDepthHead(nn.Module):
    """The `*_ld` head: a 1x1 conv to K bin logits on the 4x-upsampled patch grid (key `conv_depth`).

    Each chosen layer gives its patch map with its class token broadcast beside it, (B, 2D, h, w);
    the L maps are upsampled 4x (bilinear) and concatenated: (B, 2DL, 4h, 4w) -> (B, K, 4h, 4w)
    -> metres (B, 1, 4h, 4w).

    Examples:
        >>> head = LinearDepthHead(DepthConfig(head="linear", out_index=(0,), embed_dim=8)).init_weights()
        >>> feats = [(torch.randn(2, 8, 3, 4), torch.randn(2, 8))]     # L x ((B, D, h, w), (B, D))
        >>> tuple(head.features(feats).shape), tuple(head(feats).shape)   # (B, 2DL, 4h, 4w), (B, 1, 4h, 4w)
        ((2, 16, 12, 16), (2, 1, 12, 16))
    """

    def __init__(self, config: DepthConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.config = config
        in_ch = 2 * config.embed_dim * len(config.out_index)  # the official `channels`
        self.conv_depth = nn.Conv2d(in_ch, config.n_bins, kernel_size=1, device=device, dtype=dtype)

    @torch.no_grad()
    def init_weights(self) -> "LinearDepthHead":
        nn.init.normal_(self.conv_depth.weight, std=0.01)
        nn.init.zeros_(self.conv_depth.bias)
        return self

    def features(self, feats: list[tuple[Tensor, Tensor]]) -> Tensor:
        """The conv's input, (B, 2DL, 4h, 4w)."""
        maps = [torch.cat([x, cls[:, :, None, None].expand_as(x)], dim=1) for x, cls in feats]  # L x (B, 2D, h, w)
        h, w = maps[0].shape[2:]
        size = [h * self.config.upsample, w * self.config.upsample]
        maps = [F.interpolate(m, size=size, mode="bilinear", align_corners=self.config.align_corners) for m in maps]
        return torch.cat(maps, dim=1)  # (B, 2DL, 4h, 4w)

    def forward(self, feats: list[tuple[Tensor, Tensor]]) -> Tensor:
        logits = self.conv_depth(self.features(feats))  # (B, K, 4h, 4w)
        c = self.config
        return bins_to_metres(logits, c.min_depth, c.max_depth, c.bins_eps)  # (B, 1, 4h, 4w)


# ---------------------------------------------------------------------------- the depther
class Depther(nn.Module):
    """A hub depther: `backbone` (a DinoVisionTransformer) and `decode_head` (linear or DPT).

    forward(images (B, 3, H, W)) -> depth (B, 1, H, W) in metres, the official
    `whole_inference(images, img_meta=None, rescale=True)`.

    Build one with `minidino.create_model("dinov2_vits14_dd")` (the hub's 8 names); below, a
    1-block backbone with a linear head on its block 0, to keep the example cheap.

    Examples:
        >>> backbone = minidino.create_model("dinov2_vits14", depth=1)
        >>> config = DepthConfig(head="linear", out_index=(0,), embed_dim=384, max_depth=80.0)
        >>> model = Depther(backbone, config).init_weights().eval()
        >>> x = torch.randn(2, 3, 30, 45)                      # any size: padded to 42 x 56 inside
        >>> [tuple(t.shape) for t in model.features(x)[0]]     # (B, D, h, w), (B, D)
        [(2, 384, 3, 4), (2, 384)]
        >>> depth = model(x)
        >>> tuple(depth.shape), model.depth_range              # (B, 1, H, W) metres
        ((2, 1, 30, 45), (0.001, 80.0))
        >>> bool(depth.min() >= 0.001 and depth.max() <= 80.0)
        True
    """

    def __init__(self, backbone: DinoVisionTransformer, config: DepthConfig, *,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if config.embed_dim != backbone.config.embed_dim:
            raise ValueError(f"head width {config.embed_dim} != backbone width {backbone.config.embed_dim}")
        if max(config.out_index) >= len(backbone.blocks):
            raise ValueError(f"the head reads block {max(config.out_index)}, the backbone has {len(backbone.blocks)}")
        self.config = config
        self.backbone = backbone
        if config.head == "linear":
            self.decode_head: nn.Module = LinearDepthHead(config, device=device, dtype=dtype)
        else:
            self.decode_head = DPTHead(config, device=device, dtype=dtype)

    @property
    def depth_range(self) -> tuple[float, float]:
        return self.config.depth_range

    @torch.no_grad()
    def init_weights(self) -> "Depther":
        self.backbone.init_weights()
        self.decode_head.init_weights()  # type: ignore[operator]
        return self

    def features(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        """The head's input: L x ((B, D, h, w) patch maps, (B, D) class tokens), not normed."""
        x = pad_to_patch_multiple(images, self.backbone.config.patch_size)  # (B, 3, Hp, Wp)
        out = self.backbone.get_intermediate_layers(x, n=list(self.config.out_index), reshape=True,
                                                    return_class_token=True, norm=False)
        return list(out)

    def forward(self, images: Tensor) -> Tensor:
        from ..models.checks import check_images

        # any H, W >= 1 (the image is padded): patch_size=1 checks shape, channels and dtype only
        check_images(images, in_chans=self.backbone.config.in_chans, patch_size=1,
                     weight_dtype=self.backbone.patch_embed.proj.weight.dtype, what="images")
        B, _, H, W = images.shape
        depth = self.decode_head(self.features(images))  # (B, 1, h', w')
        # QUIRK (range, then size): the official EncoderDecoder clamps the head's output to the
        # depth range on its own grid, then resizes the clamped map to the *unpadded* image size
        # (bilinear, align_corners=False), so the padded border is squeezed in, not cropped off.
        depth = depth.clamp(min=self.config.min_depth, max=self.config.max_depth)
        return F.interpolate(depth, size=(H, W), mode="bilinear", align_corners=self.config.align_corners)  # (B, 1, H, W)
