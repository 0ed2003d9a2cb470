"""dino.txt: the frozen DINOv2 ViT-L/14 (registers) aligned with a text encoder.

Hub name `dinov2_vitl14_reg4_dinotxt_tet1280d20h24l` (short: `dinotxt`). Two towers meet in
one E-dimensional space, where a cosine similarity says how well a sentence fits an image:

    image (B, 3, H, W)
      -> frozen backbone (minidino's ViT-L/14 reg4): normed tokens [cls, reg_1..reg_R, patches]  (B, N, D)
      -> vision head: 2 trainable blocks (SwiGLU, LayerScale) + LayerNorm                      (B, N, D)
      -> pooling: cat(class token, mean of patch tokens)                                        (B, E = 2 D)
    token ids (B, L)
      -> causal text transformer (heads/text_transformer.py) + projection                       (B, L, E)
      -> end-of-text pooling                                                                    (B, E)
    logits = exp(logit_scale) * normalize(image) @ normalize(text)^T                            (B_img, B_txt)

Shape legend: B batch, H W pixels, h w patch grid, R registers (4), N tokens (1 + R + h*w),
D vision width (1024), E joint width (2048), L text tokens, T number of texts.

The patch tokens leave the head aligned too: compared with the second half of a text
embedding (the half that the mean of the patches fills) they say where in the picture a word
is (see `patch_text_similarity`; a minidino helper, used by `minidino segment`).

Parameter names are the official keys: `visual_model.backbone.model.*` (the backbone, inside
a wrapper the official code puts around it), `visual_model.head.*`, `text_model.*`, `logit_scale`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.config import MAX_WIDTH, DinoConfig, check_range, closest_names
from ..models.layers import Block, init_linear_and_norm
from ..models.dinov2 import DinoVisionTransformer
from .text_transformer import TextHead, TextTower, TextTransformer

__all__ = ["DinoTxtConfig", "DinoTxt", "VisionHead", "VisionTower", "BackboneWrapper",
           "patch_text_similarity", "check_token_ids"]


@dataclass(frozen=True, kw_only=True)
class DinoTxtConfig:
    """Everything dino.txt adds to its backbone, as plain values (the backbone has its DinoConfig).

    Examples:
        >>> c = DinoTxtConfig()                      # the published model (its defaults)
        >>> c.embed_dim, c.text_width, c.text_ffn_hidden_dim   # E = 2 * 1024, D_text, F = 4 * D_text
        (2048, 1280, 5120)
        >>> c.replace(text_width=64, text_num_heads=2, text_layers=1).text_ffn_hidden_dim
        256
        >>> c.replace(text_layer=1)
        Traceback (most recent call last):
        ...
        TypeError: unknown dino.txt config field 'text_layer'; did you mean 'text_layers', ...?
    """

    embed_dim: int = 2048  # E; the image side has no projection, so E must be 2 * the backbone width
    head_blocks: int = 2  # trainable blocks on top of the frozen backbone
    head_ffn_hidden_dim: int = 2752  # SwiGLU hidden width: 2/3 * 4 * 1024 = 2730.7, rounded up to a multiple of 64
    head_eps: float = 1e-5  # LayerNorm eps of the head (the backbone uses 1e-6)
    head_layerscale_init: float = 1e-5
    text_context_length: int = 77  # L_max
    text_vocab_size: int = 49408  # V: CLIP's byte-pair vocabulary
    text_width: int = 1280  # D_text; the hub name "tet1280d20h24l": text encoder transformer, 1280 wide (d),
    text_num_heads: int = 20  # 20 heads (h, head dim 64),
    text_layers: int = 24  # 24 layers (l)
    text_ffn_ratio: float = 4.0
    text_eps: float = 1e-5
    logit_scale_init: float = math.log(1 / 0.07)  # CLIP's initial temperature; the published files do not store it

    def __post_init__(self) -> None:
        DinoConfig._check_types(self)  # the backbone configs' type check: a function of the dataclass fields only
        for field in ("embed_dim", "head_ffn_hidden_dim", "text_context_length", "text_vocab_size", "text_width",
                      "text_num_heads", "text_layers"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
            if field != "text_layers":  # a count of layers is bounded by the memory check, not here
                check_range(self, field, high=MAX_WIDTH)
        if self.head_blocks < 0:
            raise ValueError(f"head_blocks must be >= 0, got {self.head_blocks}")
        if self.text_width % self.text_num_heads:
            raise ValueError(f"text_width={self.text_width} is not divisible by text_num_heads={self.text_num_heads}")
        # Values that build a model but give NaN (eps <= 0), a negative or empty FFN, one position
        # (nothing before <end of text>) or an infinite temperature: refused here, naming the field.
        for field in ("head_eps", "text_eps"):
            check_range(self, field, 0.0, 1.0, low_open=True)
        check_range(self, "text_ffn_ratio", 0.0, 64.0, low_open=True)
        if self.text_ffn_hidden_dim < 1:
            raise ValueError(f"config field text_ffn_ratio={self.text_ffn_ratio} gives a text FFN of "
                             f"{self.text_ffn_hidden_dim} units for text_width={self.text_width}; it needs at least 1")
        check_range(self, "text_context_length", 2)
        check_range(self, "logit_scale_init", high=math.log(100))  # CLIP clamps exp(logit_scale) at 100


    def check_backbone(self, vision_config: DinoConfig) -> None:
        """ValueError unless this config fits a backbone of `vision_config` (checked before anything is built)."""
        if self.embed_dim != 2 * vision_config.embed_dim:
            raise ValueError(f"embed_dim={self.embed_dim} must be twice the backbone width {vision_config.embed_dim} "
                             "(the image embedding is cat(class token, mean patch token), with no projection)")

    @property
    def text_ffn_hidden_dim(self) -> int:
        return int(self.text_width * self.text_ffn_ratio)

    def replace(self, **overrides: Any) -> "DinoTxtConfig":
        names = {f.name for f in dataclasses.fields(self)}
        for key in overrides:
            if key not in names:
                hint = closest_names(key, sorted(names))
                raise TypeError(f"unknown dino.txt config field {key!r}"
                                + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else ""))
        return dataclasses.replace(self, **overrides)




def check_token_ids(token_ids: Any, vocab_size: int, context_length: int) -> None:
    """Token ids must be an integer (B, L) tensor with 1 <= L <= context length, ids in [0, V) and an
    <end of text> (V - 1) in every row.

    Examples:
        >>> ids = torch.tensor([[49406, 320, 1929, 49407, 0, 0]])   # (B, L) = (1, 6): "a dog", as tokenized
        >>> check_token_ids(ids, vocab_size=49408, context_length=77)  # valid: returns None
        >>> check_token_ids(ids[:, :3], vocab_size=49408, context_length=77)
        Traceback (most recent call last):
        ...
        ValueError: token ids of text(s) [0] have no <end of text> (49407): the embedding is read there; ...
    """
    if not isinstance(token_ids, Tensor):
        raise TypeError(f"token ids must be a tensor (use minidino.tokenize(texts)), got {type(token_ids).__name__}")
    if token_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise TypeError(f"token ids must be an integer tensor, got dtype {token_ids.dtype}")
    if token_ids.ndim != 2 or token_ids.shape[1] < 1:
        raise ValueError(f"token ids must have shape (B, L), got {tuple(token_ids.shape)}")
    if token_ids.shape[1] > context_length:
        raise ValueError(f"token ids are {token_ids.shape[1]} long; the text encoder takes at most {context_length}")
    if token_ids.numel() and not torch.compiler.is_compiling() and token_ids.device.type != "meta":
        lo, hi = int(token_ids.min()), int(token_ids.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"token ids must be in [0, {vocab_size}); found values in [{lo}, {hi}]")
        eot = vocab_size - 1  # <end of text>, where the text embedding is read (end-of-text pooling)
        missing = (token_ids != eot).all(dim=1).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"token ids of text(s) {missing[:5]} have no <end of text> ({eot}): the embedding is read "
                             "there; make ids with minidino.tokenize, or cut long ids so they end with it")


class BackboneWrapper(nn.Module):
    """Holds the backbone as `.model`: the official code wraps it the same way, hence the
    `visual_model.backbone.model.` prefix of its keys. Kept (not renamed) so files load strictly.

    Examples:
        >>> wrapper = BackboneWrapper(minidino.create_model("dinov2_vits14_reg", depth=1))
        >>> list(wrapper.state_dict())[:3]
        ['model.cls_token', 'model.pos_embed', 'model.register_tokens']
    """

    def __init__(self, model: DinoVisionTransformer) -> None:
        super().__init__()
        self.model = model


class VisionHead(nn.Module):
    """The trainable part of the image tower: blocks on all backbone tokens, then a LayerNorm.

    Blocks are the backbone's own Block with a SwiGLU FFN whose w1 / w2 are stored apart
    (keys block_list.i.mlp.w1/w2/w3), no qkv bias, LayerNorm eps 1e-5. The official head also
    has an (identity) linear projection slot, which holds no weights.

    Examples:
        >>> head = VisionHead(dim=64, num_heads=2, config=DinoTxtConfig(head_ffn_hidden_dim=128))
        >>> len(head.block_list), tuple(head.block_list[0].mlp.w1.weight.shape)   # head_blocks, (F, D)
        (2, (128, 64))
        >>> tuple(head(torch.randn(2, 9, 64)).shape)       # (B, N, D) -> (B, N, D)
        (2, 9, 64)
    """

    def __init__(self, *, dim: int, num_heads: int, config: DinoTxtConfig, **factory: Any) -> None:
        super().__init__()
        c = config
        self.ln_final = nn.LayerNorm(dim, eps=c.head_eps, **factory)
        self.block_list = nn.ModuleList(
            Block(dim=dim, num_heads=num_heads, ffn_layer="swiglu_split", ffn_hidden_dim=c.head_ffn_hidden_dim,
                  qkv_bias=False, proj_bias=True, ffn_bias=True, eps=c.head_eps, **factory)
            for _ in range(c.head_blocks)
        )

    def forward(self, tokens: Tensor) -> Tensor:
        for blk in self.block_list:
            tokens = blk(tokens)  # (B, N, D), every token attends to every token
        return self.ln_final(tokens)  # (B, N, D)


class VisionTower(nn.Module):
    """Images (B, 3, H, W) -> (class token (B, D), patch tokens (B, h*w, D)) -> image embedding (B, 2 D).

    Examples:
        >>> vit = minidino.create_model("dinov2_vits14_reg", depth=1)            # D = 384, 4 registers
        >>> tower = VisionTower(vit, VisionHead(dim=384, num_heads=6, config=DinoTxtConfig(head_ffn_hidden_dim=256)))
        >>> x = torch.randn(2, 3, 28, 42)                                          # h, w = 2, 3
        >>> cls, patches = tower.get_class_and_patch_tokens(x)                    # registers dropped
        >>> tuple(cls.shape), tuple(patches.shape), tuple(tower(x).shape)         # (B, D), (B, h*w, D), (B, 2 D)
        ((2, 384), (2, 6, 384), (2, 768))
    """

    def __init__(self, backbone: DinoVisionTransformer, head: VisionHead) -> None:
        super().__init__()
        self.backbone = BackboneWrapper(backbone)
        self.head = head

    def get_class_and_patch_tokens(self, images: Tensor) -> tuple[Tensor, Tensor]:
        vit = self.backbone.model
        f = vit.forward_features(images)  # the frozen backbone's last block, after its final norm
        tokens = torch.cat([f["x_norm_clstoken"].unsqueeze(1), f["x_norm_regtokens"], f["x_norm_patchtokens"]],
                           dim=1)  # (B, 1 + R + h*w, D) = (B, N, D), the backbone's token order
        tokens = self.head(tokens)  # (B, N, D)
        R = vit.num_register_tokens
        return tokens[:, 0], tokens[:, 1 + R :]  # (B, D) class, (B, h*w, D) patches; registers dropped

    def forward(self, images: Tensor) -> Tensor:
        cls, patches = self.get_class_and_patch_tokens(images)
        # Pooling: the class token and the mean of the patch tokens, side by side.
        return torch.cat([cls, patches.mean(dim=1)], dim=-1)  # (B, 2 D) = (B, E)


class DinoTxt(nn.Module):
    """dino.txt: `encode_image`, `encode_text`, `get_logits`, patch features; official keys and semantics.

    Build with `minidino.create_model("dinotxt")`; `DinoTxt(DinoTxtConfig(), vision_config,
    device="meta")` allocates nothing and `init_weights()` fills real memory.

    Examples:
        A reduced model (the published one is `create_model("dinotxt", pretrained=True)`):

        >>> tiny = dict(depth=1, vision_embed_dim=64, vision_num_heads=2, embed_dim=128,  # D = 64, E = 128
        ...             text_width=64, text_num_heads=2, text_layers=1)
        >>> model = minidino.create_model("dinotxt", **tiny)
        >>> images = torch.randn(2, 3, 28, 42)                                 # (B, 3, H, W)
        >>> ids = torch.tensor([[49406, 320, 1929, 49407, 0, 0]] * 3)         # (T, L), from minidino.tokenize
        >>> tuple(model.encode_image(images).shape), tuple(model.encode_text(ids).shape)   # (B, E), (T, E)
        ((2, 128), (3, 128))
        >>> per_image, per_text = model.get_logits(images, ids)
        >>> tuple(per_image.shape), tuple(per_text.shape)                        # (B, T), (T, B)
        ((2, 3), (3, 2))
        >>> [tuple(t.shape) for t in model.get_visual_class_and_patch_tokens(images)]    # (B, D), (B, h*w, D)
        [(2, 64), (2, 6, 64)]
    """

    def __init__(self, config: DinoTxtConfig, vision_config: DinoConfig, *, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        c = self.config = config
        self.vision_config = vision_config
        c.check_backbone(vision_config)
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        vit = DinoVisionTransformer(vision_config, **factory)
        head = VisionHead(dim=vision_config.embed_dim, num_heads=vision_config.num_heads, config=c, **factory)
        self.visual_model = VisionTower(vit, head)
        text = TextTransformer(context_length=c.text_context_length, vocab_size=c.text_vocab_size, dim=c.text_width,
                               num_heads=c.text_num_heads, num_layers=c.text_layers,
                               ffn_hidden_dim=c.text_ffn_hidden_dim, eps=c.text_eps, **factory)
        self.text_model = TextTower(text, TextHead(dim=c.text_width, embed_dim=c.embed_dim, **factory))
        self.logit_scale = nn.Parameter(torch.empty(1, **factory))  # log of the inverse softmax temperature

    # ---------------------------------------------------------------- initialisation
    @torch.no_grad()
    def init_weights(self) -> "DinoTxt":
        """Random weights with the official init's distributions (measured on the official model's init):
        the backbone's own init; the vision head as the backbone (truncated normal 0.02, zero biases,
        LayerScale 1e-5); the text tower as CLIP's (normal, std D^-0.5 for qkv and the projection,
        D^-0.5 (2 layers)^-0.5 for the residual outputs, (2D)^-0.5 for fc1; FFN biases as nn.Linear's)."""
        self.visual_model.backbone.model.init_weights()
        for m in self.visual_model.head.modules():
            init_linear_and_norm(m)
        for blk in self.visual_model.head.block_list:
            nn.init.constant_(blk.ls1.gamma, self.config.head_layerscale_init)
            nn.init.constant_(blk.ls2.gamma, self.config.head_layerscale_init)
        text, c = self.text_model.backbone, self.config
        width_std = c.text_width**-0.5
        residual_std = width_std * (2 * c.text_layers) ** -0.5  # outputs that add into the residual stream
        nn.init.normal_(text.token_embedding.weight, std=0.02)
        nn.init.normal_(text.positional_embedding, std=0.01)
        for blk in text.blocks:
            nn.init.normal_(blk.attention.qkv.weight, std=width_std)
            nn.init.normal_(blk.attention.proj.weight, std=residual_std)
            nn.init.zeros_(blk.attention.proj.bias)
            blk.feed_forward.fc1.reset_parameters()  # its bias keeps nn.Linear's uniform init
            blk.feed_forward.fc2.reset_parameters()
            nn.init.normal_(blk.feed_forward.fc1.weight, std=(2 * c.text_width) ** -0.5)
            nn.init.normal_(blk.feed_forward.fc2.weight, std=residual_std)
            blk.attention_norm.reset_parameters()
            blk.ffn_norm.reset_parameters()
        text.ln_final.reset_parameters()
        nn.init.normal_(self.text_model.head.linear_projection.weight, std=width_std)
        nn.init.constant_(self.logit_scale, c.logit_scale_init)
        return self

    @property
    def patch_size(self) -> int:
        return self.vision_config.patch_size

    # ---------------------------------------------------------------- the official API
    def _check_images(self, images: Any) -> None:
        self.visual_model.backbone.model._check_images(images, what="images")

    def _check_text(self, token_ids: Any) -> None:
        check_token_ids(token_ids, self.config.text_vocab_size, self.config.text_context_length)

    def get_visual_class_and_patch_tokens(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """The vision head's class token (B, D) and patch tokens (B, h*w, D) (the patch-level features)."""
        self._check_images(image)
        return self.visual_model.get_class_and_patch_tokens(image)

    def encode_image(self, image: Tensor, normalize: bool = False) -> Tensor:
        """Image embeddings (B, E): cat(class token, mean patch token); unit length with normalize=True."""
        self._check_images(image)
        x = self.visual_model(image)  # (B, E)
        return F.normalize(x, dim=-1) if normalize else x

    def encode_text(self, text: Tensor, normalize: bool = False) -> Tensor:
        """Text embeddings (T, E) of token ids (T, L) from minidino.tokenize; unit length with normalize=True."""
        self._check_text(text)
        x = self.text_model(text)  # (T, E)
        return F.normalize(x, dim=-1) if normalize else x

    def get_logits(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """(logits per image (B, T), logits per text (T, B)): scaled cosine similarities; softmax over
        a row of the first gives the probabilities of the T texts for that image (zero-shot classification)."""
        image_features = self.encode_image(image, normalize=True)  # (B, E)
        text_features = self.encode_text(text, normalize=True)  # (T, E)
        logits_per_image = self.logit_scale.exp() * image_features @ text_features.T  # (B, T)
        return logits_per_image, logits_per_image.T

    def forward(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(normalized image embeddings (B, E), normalized text embeddings (T, E), exp(logit_scale) (1,))."""
        return self.encode_image(image, normalize=True), self.encode_text(text, normalize=True), self.logit_scale.exp()


def patch_text_similarity(patch_tokens: Tensor, text_features: Tensor) -> Tensor:
    """Cosine similarity of every patch with every text, (B, h*w, D) x (T, E) -> (B, T, h*w).

    The patch tokens were trained (through their mean) against the second half of the text
    embedding, so that half is what they are compared with. A minidino helper for dense use
    (`minidino segment`); the official model has no such method.

    Examples:
        >>> patches = torch.randn(2, 6, 64)        # (B, h*w, D)
        >>> text = torch.randn(3, 128)             # (T, E = 2 D)
        >>> sim = patch_text_similarity(patches, text)
        >>> tuple(sim.shape), bool(sim.abs().max() <= 1 + 1e-6)   # (B, T, h*w) cosines
        ((2, 3, 6), True)
    """
    D = patch_tokens.shape[-1]
    if text_features.shape[-1] != 2 * D:
        raise ValueError(f"text features of width {text_features.shape[-1]} do not fit patch tokens of width {D}")
    p = F.normalize(patch_tokens, dim=-1)  # (B, h*w, D)
    t = F.normalize(text_features[:, D:], dim=-1)  # (T, D): the patch half
    return torch.einsum("bnd,td->btn", p, t)  # (B, T, h*w)
