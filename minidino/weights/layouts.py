"""Checkpoint layouts: every published DINOv2 and DINOv3 layout translated to the official keys, one
small function per layout (the transformers layouts are in huggingface.py):

    official      torch.hub .pth / .safetensors (both families)   `_from_official`
    chunked       FSDP training with block_chunks         `_from_chunked`
    huggingface   facebook/dinov2-* (hub and new names)   huggingface.py `_from_huggingface`
    huggingface-dinov3   facebook/dinov3-* (DINOv3ViTModel)   huggingface.py `_from_huggingface_dinov3`
    timm          vit_*_patch14[_reg4]_dinov2             `_from_timm`
    timm-dinov3   vit_*_patch16_dinov3[_qkvb]             `_from_timm_dinov3`
    training      {"model"}, {"teacher"}, *.backbone.*    `_unwrap_training`, `_split_parts`
    linear head   *_linear[4]_head.pth: weight, bias      `_split_parts`
    dino head     dino_head.* / a DINOHead's own keys     `_from_dino_head`
    depth head    *_{nyu,kitti}_{linear,linear4,dpt}_head.pth: decode_head.* (maybe under "state_dict")
    HF DPT        facebook/dpt-dinov2-*-{nyu,kitti} (DPTForDepthEstimation)   huggingface.py `_dpt_from_huggingface`

minidino's parameter names are the official torch.hub keys (SPEC.md section 2), so the
official layout needs no mapping; the model never sees any other. Functions here take and
return plain dicts of tensors.

Shapes: D width, R registers, M stored grid side (37), H FFN hidden width.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..catalogue import backbone_entries
from ..models.config import BackboneConfig, DinoConfig, Dinov3Config, swiglu_hidden_dim
from .huggingface import _from_huggingface, _from_huggingface_dinov3, _is_huggingface, _is_huggingface_dinov3, is_dinov3
from .read import CheckpointError, StateDict

__all__ = ["detect_layout", "to_official", "guess_hub_name", "infer_config", "FILLED_BY_LAYOUT"]


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _unwrap_training(obj: dict[str, Any], network: str) -> tuple[dict[str, Any], list[str]]:
    """Training checkpoints of the official DINOv2 trainer (SPEC.md section 2).

    The full training state is {"model": {...}, "optimizer": ..., "iteration": ...}; the
    eval-time teacher_checkpoint.pth is {"teacher": {backbone.*, dino_head.*, ibot_head.*}};
    inside "model" every key starts with `teacher.` or `student.`. `network` picks one.
    DDP's `module.` prefix is dropped too.
    """
    if network not in ("teacher", "student"):
        raise ValueError(f"network must be 'teacher' or 'student', got {network!r}")
    notes: list[str] = []
    for wrapper in ("model", "state_dict"):  # {"model": ...}: full training state; "state_dict": common wrapper
        if wrapper in obj and isinstance(obj[wrapper], Mapping) and not isinstance(obj[wrapper], Tensor):
            obj, notes = dict(obj[wrapper]), notes + [wrapper]
    if network in obj and isinstance(obj[network], Mapping):  # {"teacher": {...}}
        return dict(obj[network]), notes + [network]
    other = "student" if network == "teacher" else "teacher"
    if other in obj and isinstance(obj[other], Mapping):
        raise ValueError(f"this checkpoint holds only the {other} network, not the {network}: pass network={other!r}")
    if any(k.startswith(("teacher.", "student.")) for k in obj):
        picked = {k[len(network) + 1 :]: v for k, v in obj.items() if k.startswith(network + ".")}
        if not picked:
            raise ValueError(f"this checkpoint has no {network}.* keys: pass network={other!r}")
        obj, notes = picked, notes + [network]
    if obj and all(k.startswith("module.") for k in obj):  # torch DistributedDataParallel
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj, notes


# Prefixes of the parts a checkpoint can hold beside the backbone.
_PARTS = {"backbone.": "backbone", "dinov2.": "backbone", "linear_head.": "linear_head", "classifier.": "linear_head",
          "dino_head.": "dino_head", "ibot_head.": "ibot_head", "decode_head.": "decode_head"}


def _split_parts(sd: dict[str, Any]) -> dict[str, StateDict]:
    """Split into backbone / linear_head / dino_head / ibot_head parts, prefixes removed.

    `backbone.` is the prefix of the hub `*_lc` wrapper and of the training checkpoints;
    `dinov2.` and `classifier.` are those of Hugging Face's Dinov2ForImageClassification,
    whose classifier is the layers=1 linear head. A file of just `weight` and `bias` is an
    official linear-head file (*_linear_head.pth). A DINOHead's own keys (mlp.*, last_layer.*)
    are a dino head.
    """
    if not _is_tensor_dict(sd):
        bad = next((k for k, v in sd.items() if not isinstance(v, Tensor)), None)
        raise CheckpointError(f"expected a state dict of tensors; key {bad!r} holds a {type(sd.get(bad)).__name__}" if bad
                              else "the checkpoint is empty: it holds no tensors")
    if set(sd) == {"weight", "bias"} and sd["weight"].ndim == 2:  # official linear-head file
        return {"linear_head": dict(sd)}
    if any(k.startswith("last_layer.") for k in sd) and all(k.startswith(("mlp.", "last_layer.")) for k in sd):
        return {"dino_head": dict(sd)}
    parts: dict[str, StateDict] = {}
    for key, value in sd.items():
        for prefix, part in _PARTS.items():
            if key.startswith(prefix):
                parts.setdefault(part, {})[key[len(prefix) :]] = value
                break
        else:
            parts.setdefault("backbone", {})[key] = value
    return parts


_CHUNKED = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.*)$")


def _from_chunked(sd: StateDict) -> StateDict:
    """FSDP training with block_chunks=k (official trainer): `blocks.c.i.<rest>`, i the global index."""
    out = {}
    for key, value in sd.items():
        m = _CHUNKED.match(key)
        out[f"blocks.{m[2]}.{m[3]}" if m else key] = value
    return out


def _is_timm(sd: StateDict) -> bool:
    looks_official = "patch_embed.proj.weight" in sd and "cls_token" in sd
    return "reg_token" in sd or (looks_official and "mask_token" not in sd)


def _from_timm(sd: StateDict) -> StateDict:
    """timm's vit_*_patch14_dinov2 / vit_*_patch14_reg4_dinov2 (SPEC.md section 2).

    Official names except: no `mask_token`; registers are `reg_token`; for the register models
    `pos_embed` holds the M*M patch positions only and `cls_token` already has the class
    position added. That is folded back exactly: class position 0, cls_token as stored, since
    cls + 0 is cls and the official forward adds the same two numbers. timm's giant packs its
    SwiGLU as mlp.fc1 (2H, D) / mlp.fc2 (D, H): those are w12 / w3, recognised by shape.
    """
    out = dict(sd)
    if "reg_token" in out:
        out["register_tokens"] = out.pop("reg_token")
    pos = out.get("pos_embed")
    if pos is not None and pos.ndim == 3:
        n = pos.shape[1]
        if int(n**0.5) ** 2 == n:  # patch positions only: prepend a zero class position
            out["pos_embed"] = torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos], dim=1)  # (1, 1 + M*M, D)
    D = out["cls_token"].shape[-1] if "cls_token" in out else None
    for key in [k for k in out if k.endswith("mlp.fc1.weight")]:
        if D is not None and out[key].shape[0] == 2 * swiglu_hidden_dim(D) != 4 * D:
            stem = key.removesuffix("fc1.weight")
            for a, b in (("fc1", "w12"), ("fc2", "w3")):
                for param in ("weight", "bias"):
                    if stem + f"{a}.{param}" in out:
                        out[stem + f"{b}.{param}"] = out.pop(stem + f"{a}.{param}")
    return out


def _is_timm_dinov3(sd: StateDict) -> bool:
    """timm's DINOv3 ViTs (its Eva class): LayerScale as gamma_1 / gamma_2, no position embedding."""
    return any(k.endswith((".gamma_1", ".attn.q_bias")) for k in sd) or ("reg_token" in sd and "pos_embed" not in sd)


_TIMM3 = {"gamma_1": "ls1.gamma", "gamma_2": "ls2.gamma", "mlp.fc1_g": "mlp.w1", "mlp.fc1_x": "mlp.w2"}


def _from_timm_dinov3(sd: StateDict) -> StateDict:
    """timm's vit_*_patch16_dinov3[_qkvb] (1.0.20 and later): the official names except storage tokens as
    `reg_token`, LayerScale as `gamma_1` / `gamma_2`, SwiGLU's w1 / w2 as `fc1_g` / `fc1_x` (w3 is `fc2`),
    and the qkv bias, where there is one (the `_qkvb` models), as `q_bias` and `v_bias` (timm's key bias is
    a zero buffer, not saved). No mask_token, RoPE periods, bias masks or local_cls_norm: see FILLED_BY_LAYOUT."""
    out: StateDict = {}
    swiglu = any(k.endswith("mlp.fc1_g.weight") for k in sd)
    biases: dict[str, dict[str, Tensor]] = {}
    for key, value in sd.items():
        if key == "reg_token":
            out["storage_tokens"] = value
            continue
        m = re.match(r"^blocks\.(\d+)\.(.*)$", key)
        if m is None:
            out[key] = value
            continue
        i, rest = m.groups()
        if rest in ("attn.q_bias", "attn.k_bias", "attn.v_bias"):
            biases.setdefault(i, {})[rest[5]] = value
            continue
        name, _, param = rest.rpartition(".")
        if rest in _TIMM3:
            rest = _TIMM3[rest]
        elif name in _TIMM3:
            rest = f"{_TIMM3[name]}.{param}"
        elif swiglu and name == "mlp.fc2":
            rest = f"mlp.w3.{param}"
        out[f"blocks.{i}.{rest}"] = value
    for i, b in biases.items():
        out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([b["q"], b.get("k", torch.zeros_like(b["q"])), b["v"]])  # (3D,)
    return out


# What a file of each foreign DINOv3 layout lacks, filled by minidino.weights.load with the values the
# official model has (the last three are the official init; RoPE periods recomputed in float32, which moves
# the outputs by ~2e-3 against a checkpoint that stores them rounded to bfloat16, docs/dinov3.md):
#   rope_embed.periods, *.attn.qkv.bias_mask (1 q, 0 k, 1 v), local_cls_norm.* (1, 0: unused at inference),
#   and for timm's models without qkv bias, attn.qkv.bias (zeros, what timm computes with).
FILLED_BY_LAYOUT = {
    "huggingface-dinov3": ("rope_embed.periods", "attn.qkv.bias_mask", "local_cls_norm"),
    "timm-dinov3": ("rope_embed.periods", "attn.qkv.bias_mask", "local_cls_norm", "attn.qkv.bias"),
}


def _from_official(sd: StateDict) -> StateDict:
    """The torch.hub checkpoints (dinov2_*_pretrain.pth): minidino's own names, nothing to do."""
    return dict(sd)


def _from_dino_head(sd: StateDict) -> StateDict:
    """dino_head.* of the training checkpoints; newer torch saves weight norm as parametrizations."""
    renames = {"last_layer.parametrizations.weight.original0": "last_layer.weight_g",
               "last_layer.parametrizations.weight.original1": "last_layer.weight_v"}
    return {renames.get(k, k): v for k, v in sd.items()}


def detect_layout(sd: StateDict) -> str:
    """The layout of a backbone state dict (prefixes already removed): "official" (either family:
    the keys are minidino's), "chunked", "huggingface", "timm" (DINOv2's), "huggingface-dinov3",
    "timm-dinov3" (DINOv3's).

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> detect_layout(sd), detect_layout(minidino.weights.to_huggingface(sd))
        ('official', 'huggingface')
        >>> sd3 = generate_for(minidino.create_model("dinov3_vits16", depth=1, device="meta"), 0)
        >>> detect_layout(sd3), detect_layout(minidino.weights.to_huggingface(sd3))
        ('official', 'huggingface-dinov3')
    """
    if _is_huggingface_dinov3(sd):
        return "huggingface-dinov3"
    if _is_huggingface(sd):
        return "huggingface"
    if any(_CHUNKED.match(k) for k in sd):
        return "chunked"
    if _is_timm_dinov3(sd):
        return "timm-dinov3"
    if _is_timm(sd):
        return "timm"
    return "official"


def to_official(sd: StateDict) -> tuple[StateDict, str]:
    """A backbone state dict in any layout -> (official keys, the layout's name).

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> hf = minidino.weights.to_huggingface(sd)
        >>> back, layout = to_official(hf)
        >>> layout, sorted(back) == sorted(sd)
        ('huggingface', True)
    """
    layout = detect_layout(sd)
    if layout == "huggingface-dinov3":
        return _from_huggingface_dinov3(sd), layout
    if layout == "timm-dinov3":
        return _from_timm_dinov3(sd), layout
    if layout == "huggingface":
        return _from_huggingface(sd), layout
    if layout == "chunked":
        out = _from_chunked(sd)
        return (_from_timm(out), "chunked + timm") if _is_timm(out) else (out, layout)
    if layout == "timm":
        return _from_timm(sd), layout
    return _from_official(sd), layout


def guess_hub_name(sd: StateDict) -> str:
    """Which hub model an official-layout backbone state dict looks like, for error messages.

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> guess_hub_name(sd)
        'dinov2_vits14 truncated to depth 1'
        >>> guess_hub_name(generate_for(minidino.create_model("dinov3_vitl16", weights="SAT493M", device="meta"), 0))
        'dinov3_vitl16 (SAT493M)'
    """
    w = sd.get("patch_embed.proj.weight")
    D = w.shape[0] if w is not None else (sd["cls_token"].shape[-1] if "cls_token" in sd else None)
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    family = "dinov3" if is_dinov3(sd) else "dinov2"
    R = sd["register_tokens" if family == "dinov2" else "storage_tokens"].shape[1] \
        if ("register_tokens" if family == "dinov2" else "storage_tokens") in sd else 0
    swiglu = any(k.endswith((".mlp.w12.weight", ".mlp.w1.weight")) for k in sd)
    for entry in backbone_entries(family):
        name, cfg = entry.name, entry.config
        if cfg.embed_dim == D and (cfg.num_register_tokens > 0) == (R > 0) and (cfg.ffn_layer == "swiglu") == swiglu:
            sat = " (SAT493M)" if "local_cls_norm.weight" in sd and not getattr(cfg, "local_cls_norm", True) else ""
            return (name if depth in (cfg.depth, 0) else f"{name} truncated to depth {depth}") + sat
    extra = "storage tokens" if family == "dinov3" else "registers"
    return f"no hub model ({family}, D={D}, depth {depth}, {R} {extra}, {'SwiGLU' if swiglu else 'GELU MLP'})"


def infer_config(sd: StateDict, num_heads: int | None = None) -> BackboneConfig:
    """The architecture of an official-layout backbone state dict, read from its shapes: a DinoConfig,
    or a Dinov3Config for DINOv3 keys.

    The DINOv2 head count is not in the weights: it is the look-alike hub model's, else `num_heads`,
    else D // 64 (every DINOv2 model has 64-wide heads). DINOv3's is: D / (4 x the number of RoPE periods).

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> c = infer_config(sd)
        >>> c.embed_dim, c.depth, c.num_heads
        (384, 1, 6)
        >>> c = infer_config(generate_for(minidino.create_model("dinov3_vit7b16", depth=1, device="meta"), 0))
        >>> c.num_heads, c.ffn_hidden_dim, c.qkv_bias, c.local_cls_norm
        (32, 8192, False, True)
    """
    D = sd["patch_embed.proj.weight"].shape[0]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    look = guess_hub_name(sd).split(" ")[0]
    if is_dinov3(sd):
        presets3 = {e.name: e.config for e in backbone_entries("dinov3")}
        base3: Dinov3Config = presets3.get(look, presets3["dinov3_vits16"])  # type: ignore[assignment]
        w1 = sd.get("blocks.0.mlp.w1.weight")
        hidden = w1.shape[0] if w1 is not None else sd["blocks.0.mlp.fc1.weight"].shape[0]
        periods = sd.get("rope_embed.periods")
        if num_heads is None:
            num_heads = D // (4 * periods.shape[0]) if periods is not None else base3.num_heads
        R = sd["storage_tokens"].shape[1] if "storage_tokens" in sd else 0
        return base3.replace(embed_dim=D, depth=depth, num_heads=num_heads, ffn_hidden_dim=hidden, num_register_tokens=R,
                             ffn_layer="swiglu" if w1 is not None else "mlp", qkv_bias="blocks.0.attn.qkv.bias" in sd,
                             local_cls_norm="local_cls_norm.weight" in sd)
    R = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
    w12 = sd.get("blocks.0.mlp.w12.weight")
    hidden = w12.shape[0] // 2 if w12 is not None else sd["blocks.0.mlp.fc1.weight"].shape[0]
    presets = {e.name: e.config for e in backbone_entries("dinov2")}
    if num_heads is None:
        num_heads = presets[look].num_heads if look in presets else max(D // 64, 1)
    base: DinoConfig = presets[look] if look in presets else presets["dinov2_vits14_reg" if R else "dinov2_vits14"]  # type: ignore[assignment]
    grid = int((sd["pos_embed"].shape[1] - 1) ** 0.5)
    return base.replace(embed_dim=D, depth=depth, num_heads=num_heads, ffn_hidden_dim=hidden, num_register_tokens=R,
                        ffn_layer="swiglu" if w12 is not None else "mlp", img_size=grid * base.patch_size)
