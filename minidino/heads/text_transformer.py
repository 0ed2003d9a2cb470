"""The dino.txt text encoder: a causal transformer over CLIP byte-pair tokens.

Shape legend for this file:
    B texts, L tokens per text (at most the context length, 77), D text width (1280),
    nh heads, hd head dim (D / nh), F FFN hidden width (4 D), E joint embedding width (2048),
    V vocabulary size (49408).

A text arrives as L token ids (see minidino/heads/tokenizer.py): <start of text>, the byte-pair
tokens, <end of text>, then zeros up to the context length. <end of text> has the largest id
of the vocabulary (49407), which is how the pooling below finds it.

Module and parameter names are the official checkpoint's keys (`text_model.backbone.*`,
`text_model.head.linear_projection.weight`), so the official text-encoder file loads as it is.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..models.layers import Attention, Mlp

__all__ = ["CausalAttentionBlock", "TextTransformer", "TextHead", "TextTower", "causal_mask"]


def causal_mask(L: int, device: torch.device | None = None) -> Tensor:
    """(1, 1, L, L) bool, True where a query may look: token i sees tokens 0..i and nothing after.

    This is what makes the text transformer causal (GPT-style): a token's features never depend
    on the tokens after it, so the padding zeros after <end of text> cannot change anything
    at or before it, and the <end of text> token is the only one that has seen the whole text.

    Examples:
        >>> mask = causal_mask(3)
        >>> tuple(mask.shape), mask[0, 0].int().tolist()      # (1, 1, L, L); row i: the tokens i sees
        ((1, 1, 3, 3), [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    """
    return torch.ones(L, L, dtype=torch.bool, device=device).tril().view(1, 1, L, L)  # lower triangle


class CausalAttentionBlock(nn.Module):
    """Pre-norm block: x + attention(attention_norm(x), causal), then x + feed_forward(ffn_norm(x)).

    No LayerScale (the checkpoint has none), LayerNorm eps 1e-5, no bias on qkv (as CLIP's text
    tower in the dino.txt recipe), bias on the output projection and the FFN.

    Examples:
        >>> blk = CausalAttentionBlock(dim=64, num_heads=2, ffn_hidden_dim=256, eps=1e-5)
        >>> x = torch.randn(2, 5, 64)                                  # (B, L, D)
        >>> y = blk(x, causal_mask(5))
        >>> tuple(y.shape)
        (2, 5, 64)
        >>> x[:, 3:] = 0                                               # change what comes after token 2 ...
        >>> torch.allclose(blk(x, causal_mask(5))[:, :3], y[:, :3])    # ... and tokens 0..2 do not see it
        True
    """

    def __init__(self, *, dim: int, num_heads: int, ffn_hidden_dim: int, eps: float, **factory: Any) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim, eps=eps, **factory)
        self.attention = Attention(dim=dim, num_heads=num_heads, qkv_bias=False, proj_bias=True, **factory)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps, **factory)
        self.feed_forward = Mlp(dim=dim, hidden_dim=ffn_hidden_dim, bias=True, **factory)

    def forward(self, x: Tensor, attn_mask: Tensor, explicit: bool = False) -> Tensor:
        x = x + self.attention(self.attention_norm(x), attn_mask, explicit)  # (B, L, D)
        return x + self.feed_forward(self.ffn_norm(x))  # (B, L, D)


class TextTransformer(nn.Module):
    """Token ids (B, L) -> token features (B, L, D): embeddings + positions, causal blocks, final norm.

    Examples:
        >>> text = TextTransformer(context_length=77, vocab_size=49408, dim=64, num_heads=2, num_layers=1,
        ...                        ffn_hidden_dim=256, eps=1e-5)
        >>> _ = torch.nn.init.normal_(text.positional_embedding, std=0.01)   # torch.empty until initialised
        >>> ids = torch.tensor([[49406, 320, 1929, 49407, 0, 0]])            # (B, L): "a dog", padded
        >>> tuple(text(ids).shape)                                           # (B, L, D); L <= 77
        (1, 6, 64)
    """

    def __init__(self, *, context_length: int, vocab_size: int, dim: int, num_heads: int, num_layers: int,
                 ffn_hidden_dim: int, eps: float, **factory: Any) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"text width {dim} is not divisible by {num_heads} heads")
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, dim, **factory)  # (V, D)
        # (L_max, D), one learned vector per position; a shorter input uses the first L rows.
        self.positional_embedding = nn.Parameter(torch.empty(context_length, dim, **factory))
        self.blocks = nn.ModuleList(
            CausalAttentionBlock(dim=dim, num_heads=num_heads, ffn_hidden_dim=ffn_hidden_dim, eps=eps, **factory)
            for _ in range(num_layers)
        )
        self.ln_final = nn.LayerNorm(dim, eps=eps, **factory)
        self.attn_impl = "fused"  # "fused" (SDPA, as the official code) or "explicit" (the readable softmax)

    def forward(self, token_ids: Tensor) -> Tensor:
        B, L = token_ids.shape
        x = self.token_embedding(token_ids) + self.positional_embedding[:L]  # (B, L, D)
        mask = causal_mask(L, x.device)  # (1, 1, L, L): token i attends to 0..i only
        explicit = self.attn_impl == "explicit"
        for blk in self.blocks:
            x = blk(x, mask, explicit)  # (B, L, D)
        return self.ln_final(x)  # (B, L, D)


class TextHead(nn.Module):
    """Projection of text features into the joint space: Linear(D, E, bias=False) on every token.

    The official head also has (empty) slots for extra blocks and a norm, which hold no
    weights in the published model: they are left out here.

    Examples:
        >>> head = TextHead(dim=64, embed_dim=128)
        >>> tuple(head.linear_projection.weight.shape), tuple(head(torch.randn(1, 6, 64)).shape)  # (E, D), (B, L, E)
        ((128, 64), (1, 6, 128))
    """

    def __init__(self, *, dim: int, embed_dim: int, **factory: Any) -> None:
        super().__init__()
        self.linear_projection = nn.Linear(dim, embed_dim, bias=False, **factory)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_projection(x)  # (B, L, D) -> (B, L, E)


class TextTower(nn.Module):
    """Token ids (B, L) -> text embeddings (B, E): transformer, projection, end-of-text pooling.

    Examples:
        >>> text = TextTransformer(context_length=77, vocab_size=49408, dim=64, num_heads=2, num_layers=1,
        ...                        ffn_hidden_dim=256, eps=1e-5)
        >>> _ = torch.nn.init.normal_(text.positional_embedding, std=0.01)
        >>> tower = TextTower(text, TextHead(dim=64, embed_dim=128))
        >>> ids = torch.tensor([[49406, 320, 1929, 49407, 0, 0], [49406, 320, 49407, 0, 0, 0]])  # (B, L)
        >>> tuple(tower(ids).shape)                                          # (B, E), read at <end of text>
        (2, 128)
        >>> torch.equal(tower(ids), tower.head(text(ids))[[0, 1], [3, 2]])   # the rows at positions 3 and 2
        True
    """

    def __init__(self, backbone: TextTransformer, head: TextHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, token_ids: Tensor) -> Tensor:
        x = self.head(self.backbone(token_ids))  # (B, L, E): every token projected (the official order)
        # End-of-text pooling: the text's embedding is the projected features of its <end of text>
        # token. Its id (49407) is the largest of the vocabulary, so argmax over the ids finds it
        # (the first one, if there were several). Thanks to the causal mask it is the one token
        # that has attended to the whole text, and the padding after it has not touched it.
        eot = token_ids.argmax(dim=-1)  # (B,) position of <end of text>
        return x[torch.arange(x.shape[0], device=x.device), eot]  # (B, E)
