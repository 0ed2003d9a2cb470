"""What create_model(name, pretrained=...) loads: the published files of a catalogue row, or a given source.

pretrained=True fetches the files the row's weight set names (minidino.catalogue), each
verified against its pin where one exists (weights/checkpoints.json) and cached, then loads
every part the model has; a path, URL or state dict is loaded as it is with `load_weights`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from ..catalogue import FAMILIES, Entry, Weights, lookup
from ..heads import DinoTxt
from . import download
from .download import DownloadError, Pin, pin
from .load import DINOTXT_PARTS, LoadReport, load_weights

__all__ = ["weight_files", "load_pretrained"]


def weight_files(entry: Entry | str, weights: Weights | str | None = None, *, layers: int | None = None) -> dict[str, Pin]:
    """The published files of an entry point, by part, with their pins.

    `{layers}` in a head's path is "4" for layers=4 and "" for layers=1 (the official names);
    `layers` defaults to the entry point's default.

    Examples:
        >>> files = weight_files("dinov2_vitl14_reg_lc", layers=4)
        >>> files["backbone"].path, files["linear_head"].path
        ('dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth', 'dinov2_vitl14/dinov2_vitl14_reg4_linear4_head.pth')
        >>> weight_files("dinov2_vitg14_ld", "NYU", layers=1)["decode_head"].path
        'dinov2_vitg14/dinov2_vitg14_nyu_linear_head.pth'
    """
    entry = lookup(entry) if isinstance(entry, str) else entry
    chosen = weights if isinstance(weights, Weights) else entry.weights_named(weights) if weights else entry.default_weights
    if layers is None:
        layers = entry.options.get("layers", (4,))[0]
    return {part: pin(path.format(layers="4" if layers == 4 else "")) for part, path in chosen.files.items()}


def load_pretrained(model: nn.Module, entry: Entry, weights: Weights, pretrained: Any, *, layers: int | None = None,
                    cache_dir: str | os.PathLike | None = None, progress: bool = True, check_hash: bool = True) -> LoadReport:
    """Load `pretrained` into a model built from `entry`: True for the published files of `weights`,
    else a file path, an http(s) URL or a state dict. A family without a public URL (DINOv3's gated
    weights) says in one line how to get them, unless $MINIDINO_BASE_URL names a mirror.

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> torch.save(sd, "vits14_depth1.pth")
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> entry = minidino.catalogue.lookup("dinov2_vits14")
        >>> load_pretrained(model, entry, entry.default_weights, "vits14_depth1.pth", progress=False).loaded
        ['backbone']
    """
    if pretrained is True:
        family = FAMILIES[entry.family]
        base = os.environ.get("MINIDINO_BASE_URL") or family.base_url
        if base is None:
            raise DownloadError(f"{entry.name}: the {entry.family} weights have no public URL. {family.access}")
        files = weight_files(entry, weights, layers=layers)
        fetched = {part: download.fetch(p, cache_dir=cache_dir, base=base, progress=progress, check_hash=check_hash)
                   for part, p in files.items() if part in _parts_of(model)}
        if isinstance(model, DinoTxt):  # the three files together: one strict load each
            return load_weights(model, fetched, cache_dir=cache_dir, progress=progress)
        report = load_weights(model, fetched.pop("backbone"))
        for path in fetched.values():
            report.loaded += load_weights(model, path).loaded
        return report
    if isinstance(pretrained, (str, os.PathLike, Mapping)):
        return load_weights(model, pretrained, cache_dir=cache_dir, progress=progress, check_hash=check_hash)
    raise TypeError(f"pretrained must be True, False, a file path, an http(s) URL or a state dict; got {type(pretrained).__name__}")


def _parts_of(model: nn.Module) -> tuple[str, ...]:
    """The parts of the published files a model takes (a dino.txt vocabulary is no weight)."""
    if isinstance(model, DinoTxt):
        return DINOTXT_PARTS
    return ("backbone", "linear_head", "decode_head")
