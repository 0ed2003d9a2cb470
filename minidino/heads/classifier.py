"""The torch.hub `*_lc` models: ImageNet linear classifiers on backbone features.

Shapes: B batch, D backbone width, C classes.
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

from ..models.dinov2 import DinoVisionTransformer

__all__ = ["LinearClassifier"]


class LinearClassifier(nn.Module):
    """The torch.hub `*_lc` models: a linear layer on backbone features (keys `backbone.*`, `linear_head.*`).

    layers=1: Linear(2D, C) on cat(cls, mean of patch tokens).
    layers=4: Linear(5D, C) on cat(cls of each of the last 4 blocks (normed), mean of the last block's patches).
    Registers never enter the mean.

    Examples:
        >>> clf = minidino.create_model("dinov2_vits14_lc", layers=1, depth=1)
        >>> x = torch.randn(2, 3, 28, 28)
        >>> tuple(clf.features(x).shape), tuple(clf(x).shape)       # (B, (1 + layers) * D), (B, 1000)
        ((2, 768), (2, 1000))
    """

    def __init__(self, backbone: DinoVisionTransformer, *, layers: int = 4, num_classes: int = 1000,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if layers not in (1, 4):
            raise ValueError(f"layers must be 1 or 4 (the published heads), got {layers!r}")
        self.layers = layers
        self.backbone = backbone
        D = backbone.config.embed_dim
        self.linear_head = nn.Linear((1 + layers) * D, num_classes, device=device, dtype=dtype)

    @torch.no_grad()
    def init_weights(self) -> "LinearClassifier":
        """The backbone's official init, then the head's (truncated normal 0.02, zero bias)."""
        self.backbone.init_weights()
        nn.init.trunc_normal_(self.linear_head.weight, std=0.02)
        nn.init.zeros_(self.linear_head.bias)
        return self

    def features(self, x: Tensor) -> Tensor:
        """The classifier's input, (B, (1 + layers) * D)."""
        if self.layers == 1:
            f = self.backbone.forward_features(x)
            return torch.cat([f["x_norm_clstoken"], f["x_norm_patchtokens"].mean(dim=1)], dim=1)  # (B, 2D)
        outs = self.backbone.get_intermediate_layers(x, n=4, return_class_token=True)  # 4 x ((B, h*w, D), (B, D))
        return torch.cat([cls for _, cls in outs] + [outs[-1][0].mean(dim=1)], dim=1)  # (B, 5D)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_head(self.features(x))  # (B, C)
