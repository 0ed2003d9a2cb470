"""The DINOv2 vision transformer backbone.

Shape legend, used in every comment in this package:
    B batch, H W image height and width in pixels, h w patch grid (H/14, W/14),
    R register tokens, N tokens (1 + R + h*w), D width, nh heads, hd head dim (D/nh),
    M stored position-embedding grid side (37).

Token order inside the model: [cls, reg_1 .. reg_R, patch_1 .. patch_hw], patches row-major.
What is DINOv2's own is here: the learned position embedding (resized per image size by
posembed.py), added to the class and patch tokens, and the registers, which get none. The
forward plumbing both families share is backbone.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .backbone import Features, VisionTransformerBase
from .config import DinoConfig
from .layers import PatchEmbed, init_linear_and_norm
from .posembed import Method, PosEmbedCache

__all__ = ["DinoVisionTransformer", "Features"]


class DinoVisionTransformer(VisionTransformerBase):
    """A DINOv2 backbone. Parameter names are the official state-dict keys.

    Build with `minidino.create_model(name)`; `DinoVisionTransformer(config, device="meta")`
    allocates nothing, and `init_weights()` (separate from construction) fills real memory.

    Examples:
        >>> model = minidino.DinoVisionTransformer(minidino.get_config("dinov2_vits14").replace(depth=1)).init_weights()
        >>> f = model.forward_features(torch.randn(2, 3, 28, 42))       # h, w = 2, 3 patches
        >>> {k: tuple(v.shape) for k, v in f.items() if v is not None}
        {'x_norm_clstoken': (2, 384), 'x_norm_regtokens': (2, 0, 384), 'x_norm_patchtokens': (2, 6, 384), 'x_prenorm': (2, 7, 384)}
    """

    extra_tokens_key = "x_norm_regtokens"
    config: DinoConfig

    def __init__(self, config: DinoConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        c = config
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        D = c.embed_dim
        self.patch_embed = PatchEmbed(patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=D, **factory)
        self.cls_token = nn.Parameter(torch.empty(1, 1, D, **factory))
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + c.grid_size**2, D, **factory))  # class position + M*M
        if c.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.empty(1, c.num_register_tokens, D, **factory))
        # (1, D), not (1, 1, D): the official shape, kept so checkpoints load strictly.
        self.mask_token = nn.Parameter(torch.empty(1, D, **factory))
        self._setup(c, ffn_layer=c.ffn_layer, mask_k_bias=False, factory=factory)  # self.blocks: w12 / w3 SwiGLU
        self.norm = nn.LayerNorm(D, eps=c.layer_norm_eps, **factory)
        self.head = nn.Identity()  # the hub models have no pre-logits head
        # Position-embedding resize: "interpolate" (bit-exact, official) or "matrix" (exportable, MPS).
        self.pos_embed_method: Method = "interpolate"
        self._pos_cache = PosEmbedCache()

    # ---------------------------------------------------------------- initialisation
    @torch.no_grad()
    def init_weights(self) -> "DinoVisionTransformer":
        """The official initialisation (truncated normal 0.02 for linears and pos_embed).

        Examples:
            >>> model = minidino.DinoVisionTransformer(minidino.get_config("dinov2_vits14").replace(depth=1), device="meta")
            >>> model = model.to_empty(device="cpu").init_weights()          # real memory, official init
            >>> float(model.blocks[0].ls1.gamma.detach()[0])                  # LayerScale starts at 1
            1.0
        """
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.num_register_tokens:
            nn.init.normal_(self.register_tokens, std=1e-6)
        nn.init.zeros_(self.mask_token)
        self.patch_embed.proj.reset_parameters()
        for name, m in self.named_modules():
            init_linear_and_norm(m)
            if name.endswith(("ls1", "ls2")):
                nn.init.constant_(m.gamma, self.config.layerscale_init)
        self._pos_cache.clear()
        return self

    # ---------------------------------------------------------------- tokens
    def interpolate_pos_encoding(self, h: int, w: int, dtype: torch.dtype) -> Tensor:
        """The position embedding for an h x w patch grid: (1, 1 + h*w, D) in `dtype` (cached per size).

        Examples:
            >>> model = minidino.create_model("dinov2_vits14", depth=1)
            >>> tuple(model.interpolate_pos_encoding(16, 16, torch.float32).shape)   # 224 px: 1 + 16*16 positions
            (1, 257, 384)
        """
        c = self.config
        # MPS has no antialiased bicubic: the matrix form is the default there.
        method: Method = "matrix" if self.pos_embed.device.type == "mps" else self.pos_embed_method
        return self._pos_cache.get(self.pos_embed, h, w, dtype, offset=c.interpolate_offset,
                                   antialias=c.interpolate_antialias, method=method)  # (1, 1 + h*w, D)

    def prepare_tokens_with_masks(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """(B, 3, H, W) images -> (B, N, D) tokens: patches, mask tokens, cls, positions, registers.

        Examples:
            >>> model = minidino.create_model("dinov2_vits14_reg", depth=1)
            >>> tuple(model.prepare_tokens_with_masks(torch.randn(2, 3, 28, 28)).shape)   # N = 1 + 4 + 2*2
            (2, 9, 384)
        """
        h, w = self._check_images(x)
        B = x.shape[0]
        x = self.patch_embed(x)  # (B, h*w, D)
        x = self._mask_patches(x, masks, h, w)  # (B, h*w, D)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)  # (B, 1 + h*w, D)
        x = x + self.interpolate_pos_encoding(h, w, x.dtype)  # registers get no position
        if self.num_register_tokens:
            reg = self.register_tokens.expand(B, -1, -1)  # (B, R, D)
            x = torch.cat((x[:, :1], reg, x[:, 1:]), dim=1)  # (B, 1 + R + h*w, D)
        return x

    def get_intermediate_layers(
        self, x: Tensor, n: int | Sequence[int] = 1, reshape: bool = False, return_class_token: bool = False, norm: bool = True
    ) -> tuple[Any, ...]:
        """Outputs of some blocks, in block order: (B, h*w, D) patch tokens each, or (B, D, h, w)
        with reshape=True; with return_class_token each item is (patches, cls (B, D)).

        Examples:
            >>> model = minidino.create_model("dinov2_vits14", depth=2)
            >>> x = torch.randn(1, 3, 224, 224)
            >>> [tuple(t.shape) for t in model.get_intermediate_layers(x, n=2)]            # the last 2 blocks
            [(1, 256, 384), (1, 256, 384)]
            >>> (p, c), = model.get_intermediate_layers(x, n=[0], reshape=True, return_class_token=True)
            >>> tuple(p.shape), tuple(c.shape)                                             # block 0: (B, D, h, w), (B, D)
            ((1, 384, 16, 16), (1, 384))
        """
        return self._intermediate_layers(x, n, reshape, return_class_token, False, norm)
