"""Saving weights as safetensors, in the official layout or a transformers one."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from torch import Tensor, nn

from ..heads import DINOHead, Depther, LinearClassifier
from ..models.backbone import VisionTransformerBase
from ..utils.atomic import atomic_write_all
from .huggingface import dpt_to_huggingface, is_dinov3, to_huggingface
from .layouts import guess_hub_name
from .load import check_tensors

__all__ = ["save_weights"]


Layout = Literal["official", "huggingface", "huggingface_hub"]


def save_weights(model: nn.Module | Mapping[str, Tensor], path: str | os.PathLike, layout: Layout = "official", *,
                 side_files: Mapping[str, str] | None = None) -> Path:
    """Write a model's weights (or an official-layout state dict) as safetensors.

    layout="official": the torch.hub keys (a LinearClassifier keeps its backbone.* / linear_head.*).
    layout="huggingface": transformers' Dinov2Model / Dinov2WithRegistersModel keys of current
    releases (q/k/v/o_proj, gate/up/down_proj): loads there with strict=True; for a DINOv3
    backbone, DINOv3ViTModel's keys (without what it has no place for: the RoPE periods, the
    key-bias masks and key bias, local_cls_norm; minidino.weights.huggingface).
    layout="huggingface_hub": the older names stored in the facebook/dinov2-* hub repos (DINOv2 only).
    A backbone loaded without a mask token (timm) is written without one in the official
    layout, and with zeros (transformers' own init) in the Hugging Face layouts.
    side_files: {name: text} written beside the weights together with them (a Hugging Face
    config.json): all the files are complete before any is moved into place (minidino.utils.atomic).
    What is written is checked as a load is (every tensor floating point and finite): a NaN,
    infinite or integer tensor is a CheckpointError, and nothing is written.

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> save_weights(model, "vits14_hf.safetensors", layout="huggingface").name
        'vits14_hf.safetensors'
        >>> minidino.weights.load_weights(minidino.create_model("dinov2_vits14", depth=1), "vits14_hf.safetensors").layout
        'huggingface'
    """
    from safetensors.torch import save_file

    if layout not in ("official", "huggingface", "huggingface_hub"):
        raise ValueError(f"layout must be 'official', 'huggingface' or 'huggingface_hub', got {layout!r}")
    if isinstance(model, nn.Module):
        if any(t.is_meta for t in model.state_dict().values()):
            raise ValueError("the model is on the meta device (no weights yet): load weights before saving")
        sd = dict(model.state_dict())
        if isinstance(model, VisionTransformerBase) and getattr(model, "mask_token_missing", False) and layout == "official":
            sd.pop("mask_token")
    elif isinstance(model, Mapping):
        sd = dict(model)
    else:
        raise TypeError(f"save_weights takes a model or a state dict, got {type(model).__name__}")
    if layout == "huggingface" and (isinstance(model, Depther) or any(k.startswith("decode_head.") for k in sd)):
        sd = dpt_to_huggingface(sd)  # a *_dd depther: DPTForDepthEstimation keys
    elif layout != "official":
        if isinstance(model, (LinearClassifier, DINOHead, Depther)) or any(k.startswith(("backbone.", "linear_head.", "last_layer.")) for k in sd):
            raise ValueError("the Hugging Face layouts hold a backbone only: save model.backbone, or use layout='official'")
        if layout == "huggingface_hub" and is_dinov3(sd):
            raise ValueError("layout='huggingface_hub' is the older DINOv2 hub names; a DINOv3 backbone has one "
                             "transformers layout: layout='huggingface'")
        if "mask_token" not in sd and "cls_token" in sd:
            sd["mask_token"] = sd["cls_token"].new_zeros(1, sd["cls_token"].shape[-1])
        sd = to_huggingface(sd, hub_names=layout == "huggingface_hub")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    meta = {"format": "pt", "layout": layout, "written_by": "minidino"}
    backbone = {k: v for k, v in sd.items() if not k.startswith("linear_head.")}
    if layout == "official" and any(k.startswith("blocks.") or k.startswith("backbone.blocks.") for k in sd):
        meta["looks_like"] = guess_hub_name({k.removeprefix("backbone."): v for k, v in backbone.items()})
    check_tensors(tensors, "state dict to save")
    writes = {path: lambda tmp: save_file(tensors, str(tmp), metadata=meta)}
    for name, text in (side_files or {}).items():
        writes[path.with_name(name)] = lambda tmp, text=text: tmp.write_text(text)
    return atomic_write_all(writes)[0]
