"""The DINOv2 vision transformer backbone.

Shape legend, used in every comment in this package:
    B batch, H W image height and width in pixels, h w patch grid (H/14, W/14),
    R register tokens, N tokens (1 + R + h*w), D width, nh heads, hd head dim (D/nh),
    M stored position-embedding grid side (37).

Token order inside the model: [cls, reg_1 .. reg_R, patch_1 .. patch_hw], patches row-major.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import attention_maps, cls_attention_map
from .checks import check_block_indices, check_images, check_list_masks, check_masks
from .packing import Packing
from .config import DinoConfig
from .layers import Block, PatchEmbed, init_linear_and_norm
from .posembed import Method, PosEmbedCache

__all__ = ["DinoVisionTransformer", "Features"]

Features = dict[str, Tensor | None]


class DinoVisionTransformer(nn.Module):
    """A DINOv2 backbone. Parameter names are the official state-dict keys.

    Build with `minidino.create_model(name)`; `DinoVisionTransformer(config, device="meta")`
    allocates nothing, and `init_weights()` (separate from construction) fills real memory.

    Examples:
        >>> model = minidino.DinoVisionTransformer(minidino.get_config("dinov2_vits14").replace(depth=1)).init_weights()
        >>> f = model.forward_features(torch.randn(2, 3, 28, 42))       # h, w = 2, 3 patches
        >>> {k: tuple(v.shape) for k, v in f.items() if v is not None}
        {'x_norm_clstoken': (2, 384), 'x_norm_regtokens': (2, 0, 384), 'x_norm_patchtokens': (2, 6, 384), 'x_prenorm': (2, 7, 384)}
    """

    def __init__(self, config: DinoConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        c = self.config = config
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        D = c.embed_dim
        self.patch_size = c.patch_size
        self.num_register_tokens = c.num_register_tokens
        self.patch_embed = PatchEmbed(patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=D, **factory)
        self.cls_token = nn.Parameter(torch.empty(1, 1, D, **factory))
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + c.grid_size**2, D, **factory))  # class position + M*M
        if c.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.empty(1, c.num_register_tokens, D, **factory))
        # (1, D), not (1, 1, D): the official shape, kept so checkpoints load strictly.
        self.mask_token = nn.Parameter(torch.empty(1, D, **factory))
        drop = [c.drop_path_rate * i / max(c.depth - 1, 1) for i in range(c.depth)]  # linear in depth
        self.blocks = nn.ModuleList(
            Block(
                dim=D, num_heads=c.num_heads, ffn_layer=c.ffn_layer, ffn_hidden_dim=c.ffn_hidden_dim,
                qkv_bias=c.qkv_bias, proj_bias=c.proj_bias, ffn_bias=c.ffn_bias, eps=c.layer_norm_eps,
                drop_path=drop[i], **factory,
            )
            for i in range(c.depth)
        )
        self.norm = nn.LayerNorm(D, eps=c.layer_norm_eps, **factory)
        self.head = nn.Identity()  # the hub models have no pre-logits head
        self.grad_checkpointing = False
        # Position-embedding resize: "interpolate" (bit-exact, official) or "matrix" (exportable, MPS).
        self.pos_embed_method: Method = "interpolate"
        self._pos_cache = PosEmbedCache()
        # Attention of every block: "fused" (SDPA, as the current official code) or "explicit"
        # (softmax(q k^T * scale) v, as the April-2023 official code: bit-identical to it, see reference.py).
        self.attn_impl: str = "fused"

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

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass (training only) to save activation memory.

        Examples:
            >>> model = minidino.create_model("dinov2_vits14", depth=1).train()
            >>> model.set_grad_checkpointing()
            >>> model(torch.randn(1, 3, 14, 14)).sum().backward()             # blocks recomputed in backward
        """
        self.grad_checkpointing = enable

    def _check_images(self, x: Any, what: str = "x") -> tuple[int, int]:
        """Validate a (B, 3, H, W) batch (see checks.py); returns the patch grid (h, w)."""
        c = self.config
        return check_images(x, in_chans=c.in_chans, patch_size=c.patch_size, weight_dtype=self.patch_embed.proj.weight.dtype,
                            what=what)

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
        if masks is not None:
            check_masks(masks, B, h * w)
            if getattr(self, "mask_token_missing", False):  # set by minidino.weights for files without one (timm)
                raise ValueError("masks were given but the loaded weights have no mask_token (a timm checkpoint?): "
                                 "load a checkpoint that has one (official or Hugging Face), or pass masks=None")
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)  # (B, h*w, D)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)  # (B, 1 + h*w, D)
        x = x + self.interpolate_pos_encoding(h, w, x.dtype)  # registers get no position
        if self.num_register_tokens:
            reg = self.register_tokens.expand(B, -1, -1)  # (B, R, D)
            x = torch.cat((x[:, :1], reg, x[:, 1:]), dim=1)  # (B, 1 + R + h*w, D)
        return x

    def _run_blocks(self, x: Tensor, take: Sequence[int] = (), packing: Packing | None = None) -> tuple[Tensor, list[Tensor]]:
        """Run all blocks on (B, N, D) tokens, or on (T, D) packed rows; also return the outputs
        of the blocks whose indices are in `take`."""
        taken = []
        ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        if self.attn_impl not in ("fused", "explicit"):
            raise ValueError(f"attn_impl must be 'fused' or 'explicit', got {self.attn_impl!r}")
        explicit = self.attn_impl == "explicit"
        for i, blk in enumerate(self.blocks):
            if ckpt:
                x = checkpoint(blk, x, None, explicit, packing, use_reentrant=False)  # (B, N, D)
            else:
                x = blk(x, None, explicit, packing)  # (B, N, D)
            if i in take:
                taken.append(x)
        return x, taken

    def _split(self, x_norm: Tensor, x_prenorm: Tensor, masks: Tensor | None) -> Features:
        R = self.num_register_tokens
        return {
            "x_norm_clstoken": x_norm[:, 0],  # (B, D)
            "x_norm_regtokens": x_norm[:, 1 : R + 1],  # (B, R, D)
            "x_norm_patchtokens": x_norm[:, R + 1 :],  # (B, h*w, D)
            "x_prenorm": x_prenorm,  # (B, N, D)
            "masks": masks,
        }

    # ---------------------------------------------------------------- public API
    def forward_features(self, x: Tensor | Sequence[Tensor], masks: Tensor | Sequence[Tensor | None] | None = None) -> Any:
        """Features of a batch: a dict (see README). A list of batches, each its own size, gives a list of dicts.

        Examples:
            >>> model = minidino.create_model("dinov2_vits14", depth=1)
            >>> f = model.forward_features(torch.randn(2, 3, 224, 224))
            >>> tuple(f["x_norm_clstoken"].shape), tuple(f["x_norm_patchtokens"].shape)
            ((2, 384), (2, 256, 384))
            >>> masks = torch.zeros(2, 256, dtype=torch.bool); masks[:, :10] = True   # (B, h*w): True = mask_token
            >>> tuple(model.forward_features(torch.randn(2, 3, 224, 224), masks=masks)["x_prenorm"].shape)
            (2, 257, 384)
            >>> fs = model.forward_features([torch.randn(1, 3, 28, 28), torch.randn(2, 3, 42, 14)])   # sizes may differ
            >>> [tuple(f["x_norm_patchtokens"].shape) for f in fs]
            [(1, 4, 384), (2, 3, 384)]
        """
        if isinstance(x, (list, tuple)):
            return self.forward_features_list(x, masks)  # type: ignore[arg-type]
        if isinstance(masks, (list, tuple)):
            raise TypeError("masks is a list but x is a single tensor: pass a (B, h*w) bool tensor, or make x a list too")
        tokens = self.prepare_tokens_with_masks(x, masks)  # (B, N, D)
        x_prenorm, _ = self._run_blocks(tokens)
        return self._split(self.norm(x_prenorm), x_prenorm, masks)

    def forward_features_list(self, xs: Sequence[Tensor], masks_list: Sequence[Tensor | None] | None = None) -> list[Features]:
        """Images of different sizes in one packed pass (see packing.py).

        The tokens of every image become rows of one (T, D) matrix and the blocks run once over
        it; only attention pads them to the longest sequence, with a mask that keeps each
        image's queries on its own keys, so each result equals running that image alone.

        Examples:
            >>> model = minidino.create_model("dinov2_vits14", depth=1)
            >>> fs = model.forward_features_list([torch.randn(1, 3, 28, 28), torch.randn(2, 3, 42, 14)])
            >>> [tuple(f["x_norm_clstoken"].shape) for f in fs]
            [(1, 384), (2, 384)]
        """
        masks_list = check_list_masks(xs, masks_list)
        seqs = [self.prepare_tokens_with_masks(x, m) for x, m in zip(xs, masks_list)]  # each (B_i, N_i, D)
        lengths = [s.shape[1] for s in seqs for _ in range(s.shape[0])]
        rows = torch.cat([s.reshape(-1, s.shape[-1]) for s in seqs])  # (T, D), image by image
        packing = None if len(set(lengths)) == 1 else Packing.of(lengths, device=rows.device)
        if packing is None:  # one length: an ordinary batch
            rows = rows.view(len(lengths), lengths[0], -1)  # (sum B_i, N, D)
        prenorm, _ = self._run_blocks(rows, packing=packing)
        prenorm = prenorm.reshape(-1, prenorm.shape[-1])  # (T, D)
        normed = self.norm(prenorm)  # (T, D)
        out, start = [], 0
        for s, m in zip(seqs, masks_list):
            B, N, D = s.shape
            rows_i = slice(start, start + B * N)
            out.append(self._split(normed[rows_i].view(B, N, D), prenorm[rows_i].view(B, N, D), m))
            start += B * N
        return out

    def forward(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """The normalised class token, (B, D): the image embedding.

        Examples:
            >>> model = minidino.create_model("dinov2_vits14", depth=1)
            >>> tuple(model(torch.randn(3, 3, 224, 224)).shape)
            (3, 384)
        """
        return self.forward_features(x, masks)["x_norm_clstoken"]

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
        take = check_block_indices(n, len(self.blocks))
        h, w = self._check_images(x)
        _, outputs = self._run_blocks(self.prepare_tokens_with_masks(x), take=take)
        if norm:
            outputs = [self.norm(o) for o in outputs]
        R = self.num_register_tokens
        class_tokens = [o[:, 0] for o in outputs]  # each (B, D)
        patches = [o[:, 1 + R :] for o in outputs]  # each (B, h*w, D)
        if reshape:
            patches = [rearrange(p, "B (h w) D -> B D h w", h=h).contiguous() for p in patches]  # (B, D, h, w)
        if return_class_token:
            return tuple(zip(patches, class_tokens))
        return tuple(patches)

    def get_block_outputs(self, x: Tensor, masks: Tensor | None = None) -> list[Tensor]:
        """Every block's output, (B, N, D) each, before the final norm: bisect a parity failure in one call.

        Examples:
            >>> model = minidino.create_model("dinov2_vits14", depth=2)
            >>> [tuple(t.shape) for t in model.get_block_outputs(torch.randn(1, 3, 28, 28))]
            [(1, 5, 384), (1, 5, 384)]
        """
        return self._run_blocks(self.prepare_tokens_with_masks(x, masks), take=range(len(self.blocks)))[1]

    def get_attention_maps(self, x: Tensor, blocks: Sequence[int] = (-1,)) -> tuple[Tensor, ...]:
        """Softmax attention weights, one (B, nh, N, N) per requested block (see attention.py).

        Examples:
            >>> model = minidino.create_model("dinov2_vits14_reg", depth=2)
            >>> a0, a1 = model.get_attention_maps(torch.randn(1, 3, 28, 28), blocks=(0, -1))
            >>> tuple(a1.shape), bool(torch.allclose(a1.sum(-1), torch.ones(1)))          # (B, nh, N, N); rows sum to 1
            ((1, 6, 9, 9), True)
        """
        return attention_maps(self, x, blocks)

    def cls_attention_map(self, attn: Tensor, h: int, w: int) -> Tensor:
        """The class token's attention to the patches, (B, nh, N, N) -> (B, nh, h, w); registers skipped.

        Examples:
            >>> model = minidino.create_model("dinov2_vits14_reg", depth=1)
            >>> (attn,) = model.get_attention_maps(torch.randn(1, 3, 28, 42))
            >>> tuple(model.cls_attention_map(attn, 2, 3).shape)                           # (B, nh, h, w)
            (1, 6, 2, 3)
        """
        return cls_attention_map(attn, h, w, self.num_register_tokens)
