"""The DINO projection head of the training checkpoints ("projected embedding").

Shapes: B batch, D backbone width, K DINO prototypes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DINOHead", "WeightNormLinear"]


class WeightNormLinear(nn.Module):
    """Linear without bias whose weight is g * v / ||v|| per output row (weight normalisation).

    The parameters are named `weight_g` (K, 1) and `weight_v` (K, in) like the DINO training
    checkpoints (torch.nn.utils.weight_norm). Checkpoints written by newer torch
    (parametrizations) store `parametrizations.weight.original0/1` instead: the load hook
    below renames them; an already-fused `weight` is also accepted.

    Examples:
        >>> lin = WeightNormLinear(256, 10)
        >>> lin.load_state_dict({"weight_g": torch.full((10, 1), 2.0), "weight_v": torch.randn(10, 256)})
        <All keys matched successfully>
        >>> tuple(lin(torch.randn(3, 256)).shape)          # (B, in) -> (B, out)
        (3, 10)
    """

    def __init__(self, in_features: int, out_features: int, **factory: Any) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.empty(out_features, 1, **factory))
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self._register_load_state_dict_pre_hook(self._rename_keys)

    @staticmethod
    def _rename_keys(state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
        for old, new in (("parametrizations.weight.original0", "weight_g"), ("parametrizations.weight.original1", "weight_v")):
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        if prefix + "weight" in state_dict:  # fused weight: v = weight, g = its row norms
            v = state_dict.pop(prefix + "weight")
            state_dict[prefix + "weight_v"] = v
            state_dict[prefix + "weight_g"] = torch.linalg.vector_norm(v, dim=1, keepdim=True)

    @property
    def weight(self) -> Tensor:
        return torch._weight_norm(self.weight_v, self.weight_g, 0)  # (K, in), what weight_norm computes

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    """The DINO projection head of the training checkpoints ("projected embedding").

    mlp: Linear(in, hidden) GELU Linear(hidden, hidden) GELU Linear(hidden, bottleneck) (for
    nlayers=3; keys mlp.0, mlp.2, mlp.4), then L2 normalisation, then a weight-normalised
    Linear(bottleneck, out, bias=False) named `last_layer`.

    Examples:
        >>> head = minidino.DINOHead(384, 4096).init_weights()
        >>> tuple(head(torch.randn(2, 384)).shape)                   # (B, in_dim) class tokens -> (B, out_dim)
        (2, 4096)
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, nlayers: int = 3,
                 *, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers must be >= 1, got {nlayers}")
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b, **factory))
            if i < nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, **factory)

    @torch.no_grad()
    def init_weights(self) -> "DINOHead":
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.last_layer.weight_v, std=0.02)
        nn.init.ones_(self.last_layer.weight_g)
        return self

    def forward(self, x: Tensor) -> Tensor:
        x = self.mlp(x)  # (B, bottleneck)
        eps = 1e-6 if x.dtype == torch.float16 else 1e-12
        x = F.normalize(x, dim=-1, p=2, eps=eps)
        return self.last_layer(x)  # (B, K)
