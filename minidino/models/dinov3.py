"""The DINOv3 vision transformer backbone (SPEC.md section 8).

Shapes: B batch, H W pixels, h w patch grid (floor(H/16), floor(W/16)), R = 4 storage tokens,
N tokens (1 + R + h*w), D width, nh heads, hd head dim (D/nh).

Token order: [cls, storage_1 .. storage_4, patch_1 .. patch_hw], patches row-major. What is
DINOv3's own, each in one named place:

- positions: nothing is added to the tokens; every block rotates the patches' queries and keys
  (rope.py; `rope_embed.periods` is a checkpoint buffer);
- the qkv bias is multiplied by `attn.qkv.bias_mask` (1 q, 0 k, 1 v): layers.MaskedBiasLinear;
- "storage tokens" are DINOv2's registers under another name, between cls and the patches;
- without masks the class token is `cls_token + 0 * mask_token` (`_class_token`);
- sides need not be multiples of 16: the grid is floored and the last pixels are ignored
  (checks.check_images, crop=True; the official model does the same, silently);
- SwiGLU models keep w1, w2, w3 apart (layers.SwiGLUSplitFFN);
- the satellite ViT-L and every 7B carry `local_cls_norm`, which inference never uses.
Running the blocks, lists of images, intermediate layers and attention maps: backbone.py.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .backbone import VisionTransformerBase
from .config import Dinov3Config
from .layers import MaskedBiasLinear, PatchEmbed, init_linear_and_norm
from .rope import Rope, RopeEmbedding

__all__ = ["Dinov3VisionTransformer"]


class Dinov3VisionTransformer(VisionTransformerBase):
    """A DINOv3 ViT backbone. Parameter and buffer names are the official state-dict keys.

    Build with `minidino.create_model("dinov3_vits16")`; `Dinov3VisionTransformer(config,
    device="meta")` allocates nothing, and `init_weights()` fills real memory.

    Examples:
        >>> model = minidino.create_model("dinov3_vits16", depth=1)
        >>> f = model.forward_features(torch.randn(2, 3, 32, 48))         # h, w = 2, 3 patches
        >>> {k: tuple(v.shape) for k, v in f.items() if v is not None}
        {'x_norm_clstoken': (2, 384), 'x_storage_tokens': (2, 4, 384), 'x_norm_patchtokens': (2, 6, 384), 'x_prenorm': (2, 11, 384)}
    """

    extra_tokens_key = "x_storage_tokens"  # normalised, like the other outputs, despite the name
    crop_partial_patches = True
    config: Dinov3Config

    def __init__(self, config: Dinov3Config, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        c = config
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        D = c.embed_dim
        self.cls_token = nn.Parameter(torch.empty(1, 1, D, **factory))
        if c.num_register_tokens:
            self.storage_tokens = nn.Parameter(torch.empty(1, c.num_register_tokens, D, **factory))
        self.mask_token = nn.Parameter(torch.empty(1, D, **factory))  # (1, D), the official shape
        self.patch_embed = PatchEmbed(patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=D, **factory)
        self.rope_embed = RopeEmbedding(head_dim=c.head_dim, base=c.rope_base, **factory)
        ffn = "swiglu_split" if c.ffn_layer == "swiglu" else "mlp"  # w1, w2, w3 apart: the official keys
        self._setup(c, ffn_layer=ffn, mask_k_bias=c.mask_k_bias, factory=factory)  # self.blocks
        self.norm = nn.LayerNorm(D, eps=c.layer_norm_eps, **factory)
        if c.local_cls_norm:
            # The satellite ViT-L and the 7B: the official training normalises the class token of
            # the local crops with it. Kept so the checkpoints load strictly; inference never uses it.
            self.local_cls_norm = nn.LayerNorm(D, eps=c.layer_norm_eps, **factory)
        self.head = nn.Identity()

    # ---------------------------------------------------------------- initialisation
    @torch.no_grad()
    def init_weights(self) -> "Dinov3VisionTransformer":
        """The official initialisation: tokens normal(0.02), linears truncated normal(0.02) with zero
        biases, LayerScale 1e-5, mask token 0, the RoPE periods and the key-bias masks.

        Examples:
            >>> model = minidino.create_model("dinov3_vits16", depth=1, device="meta").to_empty(device="cpu").init_weights()
            >>> float(model.blocks[0].ls1.gamma[0].detach()), model.rope_embed.periods[:2].tolist()
            (9.999999747378752e-06, [1.0, 1.3335214853286743])
        """
        nn.init.normal_(self.cls_token, std=0.02)
        if self.num_register_tokens:
            nn.init.normal_(self.storage_tokens, std=0.02)
        nn.init.zeros_(self.mask_token)
        self.patch_embed.proj.reset_parameters()
        self.rope_embed.reset_periods()
        for name, m in self.named_modules():
            init_linear_and_norm(m)
            if isinstance(m, MaskedBiasLinear):
                m.reset_bias_mask()
            if name.endswith(("ls1", "ls2")):
                nn.init.constant_(m.gamma, self.config.layerscale_init)
        return self

    # ---------------------------------------------------------------- tokens
    def _class_token(self, masked: bool) -> Tensor:
        """(1, 1, D). Quirk kept from the official model: without masks it adds 0 * mask_token (so that
        mask_token takes part in every training step); the value is cls_token's unless mask_token is
        not finite, in which case the class token is not either, as in the official model."""
        return self.cls_token if masked else self.cls_token + 0 * self.mask_token

    def prepare_tokens_with_masks(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """(B, 3, H, W) images -> (B, N, D) tokens: patches (masked ones replaced), then [cls, storage, patches].

        Examples:
            >>> model = minidino.create_model("dinov3_vits16", depth=1)
            >>> tuple(model.prepare_tokens_with_masks(torch.randn(2, 3, 32, 48)).shape)   # 2 x 3 patches; N = 1 + 4 + 6
            (2, 11, 384)
        """
        h, w = self._check_images(x)
        B = x.shape[0]
        x = self.patch_embed(x)  # (B, h*w, D); pixels past the last whole patch are never read
        x = self._mask_patches(x, masks, h, w)  # (B, h*w, D)
        parts = [self._class_token(masks is not None).expand(B, -1, -1)]  # (B, 1, D)
        if self.num_register_tokens:
            parts.append(self.storage_tokens.expand(B, -1, -1))  # (B, R, D)
        return torch.cat([*parts, x], dim=1)  # (B, 1 + R + h*w, D); no position is added

    def rope_tables(self, h: int, w: int) -> Rope:
        """The sine and cosine tables of an h x w grid, each (h*w, hd) float32 (see rope.py).

        Examples:
            >>> model = minidino.create_model("dinov3_vits16", depth=1)
            >>> sin, cos = model.rope_tables(2, 3)
            >>> tuple(sin.shape), sin.dtype
            ((6, 64), torch.float32)
        """
        return self.rope_embed(h, w)

    def get_intermediate_layers(self, x: Tensor, *, n: int | list[int] | tuple[int, ...] = 1, reshape: bool = False,
                                return_class_token: bool = False, return_extra_tokens: bool = False,
                                norm: bool = True) -> tuple[Any, ...]:
        """Outputs of some blocks, in block order: (B, h*w, D) patch tokens each, or (B, D, h, w) with
        reshape=True; with return_class_token and/or return_extra_tokens each item is a tuple
        (patches, cls (B, D), storage (B, R, D)) of those asked for. norm=True applies the final norm to all.

        Examples:
            >>> model = minidino.create_model("dinov3_vits16", depth=2)
            >>> x = torch.randn(1, 3, 64, 80)
            >>> [tuple(t.shape) for t in model.get_intermediate_layers(x, n=2)]            # the last 2 blocks
            [(1, 20, 384), (1, 20, 384)]
            >>> (p, c, s), = model.get_intermediate_layers(x, n=[0], reshape=True, return_class_token=True,
            ...                                            return_extra_tokens=True)
            >>> tuple(p.shape), tuple(c.shape), tuple(s.shape)                            # (B, D, h, w), (B, D), (B, R, D)
            ((1, 384, 4, 5), (1, 384), (1, 4, 384))
        """
        return self._intermediate_layers(x, n, reshape, return_class_token, return_extra_tokens, norm)
