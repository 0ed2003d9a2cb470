"""Side by side: minidino and the official code, same random weights, same inputs, max abs difference.

The official models come from reference.py (the current hub code, or the PyPI April-2023 snapshot);
weights and inputs from the golden-vector generator. `minidino selftest` and the live parity tests
run these.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..factory import create_model
from .compare import max_abs_difference
from .generator import generate_for, generate_images, generate_masks
from .reference import OfficialModel, ReferenceUnavailable, official_model, official_repo, snapshot_available
from .reference_v3 import official_dinov3

__all__ = ["official_pair", "compare", "side_by_side", "side_by_side_depth", "side_by_side_dinov3"]


def official_pair(name: str, repo: str | os.PathLike | None = None, *, layers: int | None = None,
                  pypi: bool = False, **overrides: Any) -> tuple[OfficialModel, nn.Module]:
    """The official model (see official_model) and minidino's, in eval mode, minidino set to the
    attention path that performs the official operations. Weights: each its own init; load the
    same state dict into both (their keys are the same) before comparing.

    Examples:
        >>> if official_repo() or snapshot_available():
        ...     ref, ours = official_pair("dinov2_vits14", depth=2)
        ...     from minidino.conformance.golden import generate_for
        ...     sd = generate_for(ours, 0)
        ...     _ = ours.load_state_dict(sd), ref.module.load_state_dict(sd)
        ...     print(compare(ref.module, ours, torch.randn(1, 3, 28, 28)))
        ... else:
        ...     print(0.0)
        0.0
    """

    ref = official_model(name, repo=repo, layers=layers, pypi=pypi, **overrides)
    kw = {"layers": layers} if layers is not None else {}
    ours = create_model(name, **kw, **overrides)
    getattr(ours, "backbone", ours).attn_impl = ref.attn_impl  # a *_lc classifier: its backbone's blocks
    return ref, ours


@torch.no_grad()
def compare(official: nn.Module, ours: nn.Module, x: torch.Tensor, masks: torch.Tensor | None = None) -> float:
    """Max abs difference of forward_features and get_intermediate_layers (first and last block).

    Examples:
        >>> from minidino.conformance.golden import random_model
        >>> a = random_model("dinov2_vits14", depth=2)
        >>> b = random_model("dinov2_vits14", depth=2)     # the same generated weights
        >>> compare(a, b, torch.randn(1, 3, 28, 28))
        0.0
    """
    d = max_abs_difference(official.forward_features(x, masks=masks), ours.forward_features(x, masks=masks))
    kw = dict(n=[0, len(ours.blocks) - 1], reshape=True, return_class_token=True)
    return max(d, max_abs_difference(official.get_intermediate_layers(x, **kw), ours.get_intermediate_layers(x, **kw)))


def side_by_side(name: str, repo: str | os.PathLike | None = None, seed: int = 0, *, pypi: bool = False,
                 **overrides: Any) -> list[tuple[str, float]]:
    """Run the official code and minidino with the same golden-generator weights on a few inputs.

    Returns (input description, max abs difference) per input; minidino runs the attention
    path whose operations the official code performs, so every figure should be 0.0.

    Examples:
        >>> for inputs, d in side_by_side("dinov2_vits14", depth=2):   # doctest: +SKIP
        ...     print(inputs, d)
        2x3x224x224 0.0
        1x3x518x518 0.0
        2x3x182x308 masks p=0.4 0.0
        1x3x28x14 0.0

        (Needs the official code; docs/parity.md runs it where it is present.)
    """

    ref, ours = official_pair(name, repo=repo, pypi=pypi, **overrides)
    sd = generate_for(ours, seed)
    ours.load_state_dict(sd)
    ref.module.load_state_dict(sd)
    out = []
    for i, (B, H, W, p) in enumerate([(2, 224, 224, None), (1, 518, 518, None), (2, 182, 308, 0.4), (1, 28, 14, None)]):
        x = generate_images(seed, 100 + i, (B, 3, H, W))
        masks = generate_masks(seed, 200 + i, B, (H // 14) * (W // 14), p) if p else None
        out.append((f"{B}x3x{H}x{W}" + (f" masks p={p}" if p else ""), compare(ref.module, ours, x, masks)))
    return out


@torch.no_grad()
def side_by_side_depth(name: str, repo: str | os.PathLike | None = None, seed: int = 0, *,
                       layers: int | None = None) -> list[tuple[str, float]]:
    """A depther (`*_ld`, `*_dd`) of the official hub code and minidino's, same generated weights
    (the golden generator and its depth rule), on images whose sides are not multiples of 14:
    (input description, max abs of the depth maps) per input; every figure should be 0.0.

    Examples:
        >>> side_by_side_depth("dinov2_vits14_ld", layers=1)   # doctest: +SKIP
        [('2x3x47x61', 0.0), ('1x3x70x42', 0.0)]
    """

    hub = official_repo(repo)
    if hub is None:
        raise ReferenceUnavailable("the depthers need the official hub code (repo=, $MINIDINO_OFFICIAL_REPO or ../shared/official)")
    kw = {"layers": layers} if layers is not None else {}
    ref = official_model(name, hub, meta=True, **kw).module
    ours = create_model(name, device="meta", **kw)
    sd = generate_for(ref, seed)
    ref.load_state_dict(sd, strict=True, assign=True)
    ours.load_state_dict(sd, strict=True, assign=True)
    out = []
    for i, (B, H, W) in enumerate([(2, 47, 61), (1, 70, 42)]):
        x = generate_images(seed, 300 + i, (B, 3, H, W))
        want = ref.eval().whole_inference(x, img_meta=None, rescale=True)
        out.append((f"{B}x3x{H}x{W}", max_abs_difference(want, ours.eval()(x))))
    return out
@torch.no_grad()
def side_by_side_dinov3(name: str, repo: str | os.PathLike | None = None, seed: int = 0, *, weights: str | None = None,
                        depth: int | None = None) -> list[tuple[str, float]]:
    """A DINOv3 backbone of the official code (reference_v3) and minidino's, same generated weights, on
    a few inputs: a side that is not a multiple of 16, masks, a list with masks, and every output
    (forward_features, get_intermediate_layers with the class and storage tokens). Each figure should be 0.0.

    Examples:
        >>> side_by_side_dinov3("dinov3_vits16", depth=2)   # doctest: +SKIP
        [('2x3x224x224', 0.0), ('1x3x203x125', 0.0), ('2x3x112x96 masks p=0.4', 0.0), ('list of 2, masks', 0.0)]

        (Needs the official DINOv3 code; docs/dinov3.md runs it where it is present.)
    """
    import warnings

    ref = official_dinov3(name, repo, depth=depth, weights=weights, meta=True).module
    ours = create_model(name, device="meta", **({"weights": weights} if weights else {}), **({"depth": depth} if depth else {}))
    sd = generate_for(ours, seed)
    ref.load_state_dict(sd, strict=True, assign=True)
    ours.load_state_dict(sd, strict=True, assign=True)
    ref.eval(), ours.eval()
    last = len(ours.blocks) - 1
    kw = dict(n=sorted({0, last}), reshape=True, return_class_token=True, return_extra_tokens=True)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the odd size: minidino says which pixels it ignores, the official code does not
        for i, (B, H, W, p) in enumerate([(2, 224, 224, None), (1, 203, 125, None), (2, 112, 96, 0.4)]):
            x = generate_images(seed, 100 + i, (B, 3, H, W))
            masks = generate_masks(seed, 200 + i, B, (H // 16) * (W // 16), p) if p else None
            d = max(max_abs_difference(ref.forward_features(x, masks=masks), ours.forward_features(x, masks=masks)),
                    max_abs_difference(ref.get_intermediate_layers(x, **kw), ours.get_intermediate_layers(x, **kw)))
            out.append((f"{B}x3x{H}x{W}" + (f" masks p={p}" if p else ""), d))
        xs = [generate_images(seed, 110, (1, 3, 64, 48)), generate_images(seed, 111, (2, 3, 48, 80))]
        ms = [None, generate_masks(seed, 210, 2, 15, 0.3)]
        out.append(("list of 2, masks", max_abs_difference(ref.forward_features(xs, ms), ours.forward_features(xs, ms))))
    return out


# ---------------------------------------------------------------------------- dino.txt
# The configuration the official entry point `dinov2_vitl14_reg4_dinotxt_tet1280d20h24l` builds
# (read from the `model_config` attribute of the model it returns, not from its source).
