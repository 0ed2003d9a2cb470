"""Every named intermediate of one forward pass: what `minidino trace` writes and a port dumps.

The names are the numpy reference's (numpy_reference.py), in the order the forward computes them:

    input                    (B, 3, H, W)  the preprocessed image batch (feed exactly this to the port)
    patch_embed              (B, h*w, D)   after the patch convolution
    tokens                   (B, N, D)     the blocks' input: class token, registers / storage tokens,
                                           position embedding (DINOv2; DINOv3 rotates q, k instead)
    blocks.{i}.norm1         (B, N, D)
    blocks.{i}.attn          (B, N, D)     attention output (after proj, before LayerScale)
    blocks.{i}.residual1     (B, N, D)     x + ls1 * attn
    blocks.{i}.norm2         (B, N, D)
    blocks.{i}.mlp           (B, N, D)     FFN output (before LayerScale)
    blocks.{i}.residual2     (B, N, D)     x + ls2 * mlp: the block's output
    norm                     (B, N, D)     after the final LayerNorm

They are caught with forward hooks on the model's own modules (patch_embed, blocks[i].norm1, attn,
ls1, norm2, mlp, ls2, norm), so the traced forward is the ordinary one, for any backbone whose
blocks have those parts (DINOv2's and DINOv3's do). residual1 is the block's input plus ls1's
output: the very addition the block performs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["BLOCK_PARTS", "trace_names", "trace_model"]

BLOCK_PARTS = ("norm1", "attn", "residual1", "norm2", "mlp", "residual2")


def trace_names(depth: int, *, with_input: bool = True) -> list[str]:
    """The names of a trace of a `depth`-block model, in order.

    Examples:
        >>> trace_names(1)
        ['input', 'patch_embed', 'tokens', 'blocks.0.norm1', 'blocks.0.attn', 'blocks.0.residual1', 'blocks.0.norm2', 'blocks.0.mlp', 'blocks.0.residual2', 'norm']
    """
    names = (["input"] if with_input else []) + ["patch_embed", "tokens"]
    for i in range(depth):
        names += [f"blocks.{i}.{part}" for part in BLOCK_PARTS]
    return names + ["norm"]


def _backbone(model: nn.Module) -> nn.Module:
    inner = getattr(model, "backbone", None)
    backbone = inner if isinstance(inner, nn.Module) and hasattr(inner, "blocks") else model
    for part in ("patch_embed", "blocks", "norm", "forward_features"):
        if not hasattr(backbone, part):
            raise TypeError(f"cannot trace a {type(model).__name__}: a backbone with patch_embed, blocks and norm is needed "
                            "(a minidino backbone, or a *_lc classifier / depther around one)")
    return backbone


def _one(t: Any) -> Tensor:
    """A module's tensor input or output (some blocks pass lists of one tensor)."""
    while isinstance(t, (list, tuple)):
        t = t[0]
    return t


@torch.no_grad()
def trace_model(model: nn.Module, x: Tensor, masks: Tensor | None = None) -> dict[str, Tensor]:
    """Run one forward of the backbone inside `model` on x (B, 3, H, W) and return every named
    intermediate (module docstring), in order, as float32 CPU tensors.

    Examples:
        >>> model = minidino.create_model("dinov2_vits14_reg", depth=2)
        >>> trace = trace_model(model, torch.randn(1, 3, 28, 42))
        >>> len(trace), tuple(trace["patch_embed"].shape), tuple(trace["blocks.1.residual2"].shape)
        (16, (1, 6, 384), (1, 11, 384))
        >>> torch.equal(trace["norm"][:, 0], model.forward_features(trace["input"])["x_norm_clstoken"])
        True
    """
    backbone = _backbone(model)
    was_training = backbone.training
    backbone.eval()
    got: dict[str, Tensor] = {}
    hooks = []

    def keep(name: str, transform: Any = None) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            t = _one(out)
            got[name] = (transform(t) if transform else t).detach().float().cpu().clone()
        return hook

    def keep_input(name: str) -> Any:
        return lambda module, args: got.__setitem__(name, _one(args).detach().float().cpu().clone())

    try:
        hooks.append(backbone.patch_embed.register_forward_hook(keep("patch_embed", lambda t: t.flatten(1, -2))))
        hooks.append(backbone.blocks[0].register_forward_pre_hook(keep_input("tokens")))
        for i, blk in enumerate(backbone.blocks):
            for part in ("norm1", "attn", "ls1", "norm2", "mlp"):
                if not hasattr(blk, part):
                    raise TypeError(f"block {i} ({type(blk).__name__}) has no {part}: cannot name its intermediates")
                hooks.append(getattr(blk, part).register_forward_hook(keep(f"blocks.{i}.{part}")))
            hooks.append(blk.register_forward_pre_hook(keep_input(f"blocks.{i}.input")))
            hooks.append(blk.register_forward_hook(keep(f"blocks.{i}.residual2")))
        hooks.append(backbone.norm.register_forward_hook(keep("norm")))
        backbone.forward_features(x, masks=masks) if masks is not None else backbone.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
        backbone.train(was_training)
    depth = len(backbone.blocks)
    for i in range(depth):  # the block's first addition: its input plus ls1's output
        got[f"blocks.{i}.residual1"] = got.pop(f"blocks.{i}.input") + got.pop(f"blocks.{i}.ls1")
    got["input"] = x.detach().float().cpu().clone()
    return {name: got[name] for name in trace_names(depth)}
