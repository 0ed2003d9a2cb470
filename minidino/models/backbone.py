"""What the DINOv2 and DINOv3 backbones share: the forward plumbing around their blocks.

Shape legend, used in every comment in this package:
    B batch, H W image height and width in pixels, h w patch grid (H/p, W/p for patch p),
    R register (DINOv2) or storage (DINOv3) tokens, N tokens (1 + R + h*w), D width,
    nh heads, hd head dim (D/nh).

Token order inside both models: [cls, extra_1 .. extra_R, patch_1 .. patch_hw], patches row-major.

A family module (dinov2.py, dinov3.py) builds the modules, initialises them and turns images into
tokens (`prepare_tokens_with_masks`); DINOv3 also gives the rotary tables of a patch grid
(`rope_tables`), which every block takes. Everything after that is here, once: running the blocks
(with gradient checkpointing), splitting the output into class / extra / patch tokens, lists of
batches of different sizes, the outputs of chosen blocks, attention maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import attention_maps, cls_attention_map
from .checks import check_block_indices, check_images, check_list_masks, check_masks
from .config import BackboneConfig
from .layers import Block, PatchEmbed
from .rope import Rope

__all__ = ["VisionTransformerBase", "Features"]

Features = dict[str, Tensor | None]


class VisionTransformerBase(nn.Module):
    """The shared part of minidino's backbones (see the module docstring); not built on its own.

    Examples:
        >>> model = minidino.create_model("dinov3_vits16", depth=1)
        >>> isinstance(model, VisionTransformerBase), model.extra_tokens_key
        (True, 'x_storage_tokens')
    """

    extra_tokens_key: ClassVar[str]  # the output key of the R extra tokens: "x_norm_regtokens" | "x_storage_tokens"
    crop_partial_patches: ClassVar[bool] = False  # True: sides need not be multiples of the patch (DINOv3)
    config: BackboneConfig
    patch_embed: PatchEmbed
    blocks: nn.ModuleList
    norm: nn.LayerNorm

    def _setup(self, config: BackboneConfig, ffn_layer: str, mask_k_bias: bool, factory: dict[str, Any]) -> None:
        """The attributes and blocks both families have (called by their __init__)."""
        c = self.config = config
        self.patch_size = c.patch_size
        self.num_register_tokens = c.num_register_tokens
        drop = [c.drop_path_rate * i / max(c.depth - 1, 1) for i in range(c.depth)]  # linear in depth
        self.blocks = nn.ModuleList(
            Block(
                dim=c.embed_dim, num_heads=c.num_heads, ffn_layer=ffn_layer, ffn_hidden_dim=c.ffn_hidden_dim,
                qkv_bias=c.qkv_bias, proj_bias=c.proj_bias, ffn_bias=c.ffn_bias, eps=c.layer_norm_eps,
                drop_path=drop[i], mask_k_bias=mask_k_bias, **factory,
            )
            for i in range(c.depth)
        )
        self.grad_checkpointing = False
        # Attention of every block: "fused" (SDPA, as the current official code) or "explicit"
        # (softmax(q k^T * scale) v, as the April-2023 official DINOv2 code: bit-identical to it, see reference.py).
        self.attn_impl: str = "fused"

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
                            what=what, crop=self.crop_partial_patches)

    def _mask_patches(self, x: Tensor, masks: Tensor | None, h: int, w: int) -> Tensor:
        """Replace the masked patch tokens of (B, h*w, D) with mask_token (both families, before any
        class / extra token or position is added); masks bool (B, h*w), True = masked."""
        if masks is None:
            return x
        check_masks(masks, x.shape[0], h * w)
        if getattr(self, "mask_token_missing", False):  # set by minidino.weights for files without one (timm)
            raise ValueError("masks were given but the loaded weights have no mask_token (a timm checkpoint?): "
                             "load a checkpoint that has one (official or Hugging Face), or pass masks=None")
        return torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)  # (B, h*w, D)

    # ---------------------------------------------------------------- what each family defines
    def prepare_tokens_with_masks(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """(B, 3, H, W) images -> (B, N, D) tokens entering the first block (each family's own).

        Examples:
            >>> tuple(minidino.create_model("dinov2_vits14", depth=1).prepare_tokens_with_masks(torch.randn(1, 3, 28, 28)).shape)
            (1, 5, 384)
        """
        raise NotImplementedError

    def rope_tables(self, h: int, w: int) -> Rope | None:
        """The rotary tables of an h x w patch grid for every block (DINOv3); None: no rotation (DINOv2).

        Examples:
            >>> minidino.create_model("dinov2_vits14", depth=1).rope_tables(2, 2) is None
            True
        """
        return None

    def prepare(self, x: Tensor, masks: Tensor | None = None) -> tuple[Tensor, Rope | None]:
        """The tokens entering the first block, (B, N, D), and the rotary tables every block takes (or None).

        Examples:
            >>> model = minidino.create_model("dinov3_vits16", depth=1)
            >>> tokens, rope = model.prepare(torch.randn(2, 3, 32, 48))          # a 2 x 3 patch grid
            >>> tuple(tokens.shape), tuple(rope.sin.shape)                        # (B, 1 + 4 + 6, D), (h*w, hd)
            ((2, 11, 384), (6, 64))
        """
        tokens = self.prepare_tokens_with_masks(x, masks)  # (B, N, D); checks x
        H, W = x.shape[-2:]
        return tokens, self.rope_tables(H // self.patch_size, W // self.patch_size)

    # ---------------------------------------------------------------- the blocks
    def _run_blocks(self, x: Tensor, take: Sequence[int] = (), rope: Rope | None = None) -> tuple[Tensor, list[Tensor]]:
        """Run all blocks on (B, N, D) tokens; also return the outputs of the blocks whose indices are in `take`."""
        taken = []
        ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        if self.attn_impl not in ("fused", "explicit"):
            raise ValueError(f"attn_impl must be 'fused' or 'explicit', got {self.attn_impl!r}")
        explicit = self.attn_impl == "explicit"
        for i, blk in enumerate(self.blocks):
            if ckpt:
                x = checkpoint(blk, x, None, explicit, rope, use_reentrant=False)  # (B, N, D)
            else:
                x = blk(x, None, explicit, rope)  # (B, N, D)
            if i in take:
                taken.append(x)
        return x, taken

    def _split(self, x_norm: Tensor, x_prenorm: Tensor, masks: Tensor | None) -> Features:
        R = self.num_register_tokens
        return {
            "x_norm_clstoken": x_norm[:, 0],  # (B, D)
            self.extra_tokens_key: x_norm[:, 1 : R + 1],  # (B, R, D)
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
        tokens, rope = self.prepare(x, masks)  # (B, N, D)
        x_prenorm, _ = self._run_blocks(tokens, rope=rope)
        return self._split(self.norm(x_prenorm), x_prenorm, masks)

    def forward_features_list(self, xs: Sequence[Tensor], masks_list: Sequence[Tensor | None] | None = None) -> list[Features]:
        """Batches of different image sizes in one call: one dict per batch, each bit-identical to
        `forward_features` of that batch alone (as the official DINOv3 list call gives).

        Each batch runs on its own: stacking the token rows of several sizes into one matrix would
        change their values (on this CPU, matrix products of fewer than 12 rows take other kernels:
        3e-6 apart), and on a CPU it was no faster (0.96x, benchmarks/results/list_batching_cpu.md).

        Examples:
            >>> model = minidino.create_model("dinov2_vits14", depth=1)
            >>> fs = model.forward_features_list([torch.randn(1, 3, 28, 28), torch.randn(2, 3, 42, 14)])
            >>> [tuple(f["x_norm_clstoken"].shape) for f in fs]
            [(1, 384), (2, 384)]
        """
        masks_list = check_list_masks(xs, masks_list)
        return [self.forward_features(x, m) for x, m in zip(xs, masks_list)]

    def forward(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """The normalised class token, (B, D): the image embedding.

        Examples:
            >>> model = minidino.create_model("dinov2_vits14", depth=1)
            >>> tuple(model(torch.randn(3, 3, 224, 224)).shape)
            (3, 384)
        """
        return self.forward_features(x, masks)["x_norm_clstoken"]

    def _intermediate_layers(self, x: Tensor, n: int | Sequence[int], reshape: bool, return_class_token: bool,
                             return_extra_tokens: bool, norm: bool) -> tuple[Any, ...]:
        """get_intermediate_layers of both families: per chosen block, in block order, the patch
        tokens, then the class token and the extra tokens if asked, as a tuple (or the bare patches)."""
        take = check_block_indices(n, len(self.blocks))
        tokens, rope = self.prepare(x)  # checks x
        h = x.shape[-2] // self.patch_size
        _, outputs = self._run_blocks(tokens, take=take, rope=rope)
        if norm:
            outputs = [self.norm(o) for o in outputs]
        R = self.num_register_tokens
        class_tokens = [o[:, 0] for o in outputs]  # each (B, D)
        extra_tokens = [o[:, 1 : 1 + R] for o in outputs]  # each (B, R, D)
        patches = [o[:, 1 + R :] for o in outputs]  # each (B, h*w, D)
        if reshape:
            patches = [rearrange(p, "B (h w) D -> B D h w", h=h).contiguous() for p in patches]  # (B, D, h, w)
        parts = [patches] + ([class_tokens] if return_class_token else []) + ([extra_tokens] if return_extra_tokens else [])
        if len(parts) == 1:
            return tuple(patches)
        return tuple(zip(*parts))

    def get_block_outputs(self, x: Tensor, masks: Tensor | None = None) -> list[Tensor]:
        """Every block's output, (B, N, D) each, before the final norm: bisect a parity failure in one call.

        Examples:
            >>> model = minidino.create_model("dinov2_vits14", depth=2)
            >>> [tuple(t.shape) for t in model.get_block_outputs(torch.randn(1, 3, 28, 28))]
            [(1, 5, 384), (1, 5, 384)]
        """
        tokens, rope = self.prepare(x, masks)
        return self._run_blocks(tokens, take=range(len(self.blocks)), rope=rope)[1]

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
        """The class token's attention to the patches, (B, nh, N, N) -> (B, nh, h, w); extra tokens skipped.

        Examples:
            >>> model = minidino.create_model("dinov2_vits14_reg", depth=1)
            >>> (attn,) = model.get_attention_maps(torch.randn(1, 3, 28, 42))
            >>> tuple(model.cls_attention_map(attn, 2, 3).shape)                           # (B, nh, h, w)
            (1, 6, 2, 3)
        """
        return cls_attention_map(attn, h, w, self.num_register_tokens)
