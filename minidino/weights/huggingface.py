"""The transformers layouts, both ways: Dinov2Model / Dinov2WithRegistersModel (the names stored in
the facebook/dinov2-* hub repos and the newer q/k/v/o_proj, gate/up/down_proj names),
DINOv3ViTModel (the facebook/dinov3-* repos) and DPTForDepthEstimation (the `*_dd` depthers),
with the config.json that builds each offline.

A DINOv3ViTModel file lacks four things of the official checkpoint (transformers recomputes or
drops them): `rope_embed.periods` (transformers recomputes the RoPE frequencies in float32 from
`rope_theta`), every `attn.qkv.bias_mask` (it has no key bias at all: `k_proj` has none), the key
part of `attn.qkv.bias` (masked out anyway) and `local_cls_norm` (used only in training). Loading
such a file fills them with their defined values (minidino.weights.load, LoadReport.filled).

Shapes: D width, H FFN hidden width.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..heads import Depther
from ..models.config import BackboneConfig, Dinov3Config
from .read import CheckpointError, StateDict

__all__ = ["to_huggingface", "huggingface_config", "huggingface_dpt_config", "dpt_to_huggingface", "is_dinov3"]


def is_dinov3(sd: Mapping[str, Any]) -> bool:
    """Whether official-layout keys are a DINOv3 backbone's (storage tokens, RoPE periods, masked key bias).

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> is_dinov3(generate_for(minidino.create_model("dinov3_vits16", depth=1, device="meta"), 0))
        True
    """
    return "storage_tokens" in sd or "rope_embed.periods" in sd or any(k.endswith(".attn.qkv.bias_mask") for k in sd)


# Hugging Face transformers' Dinov2Model / Dinov2WithRegistersModel keys -> official keys.
# Both the names stored in the facebook/dinov2-* hub repos and the newer transformers names
# (q/k/v/o_proj, gate/up/down_proj); the split q/k/v and gate/up matrices are fused below.
_HF_TOP = {
    "embeddings.cls_token": "cls_token", "embeddings.mask_token": "mask_token",
    "embeddings.position_embeddings": "pos_embed", "embeddings.register_tokens": "register_tokens",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
}


_HF_BLOCK = {  # hub name -> official; new name -> official
    "attention.output.dense": "attn.proj", "attention.o_proj": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
    "mlp.weights_in": "mlp.w12", "mlp.weights_out": "mlp.w3", "mlp.down_proj": "mlp.w3",
    "norm1": "norm1", "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}


_HF_FUSED = {  # parts concatenated along dim 0 (output rows), in this order
    "attn.qkv": (("attention.attention.query", "attention.attention.key", "attention.attention.value"),
                 ("attention.q_proj", "attention.k_proj", "attention.v_proj")),
    "mlp.w12": (("mlp.gate_proj", "mlp.up_proj"),),  # gate = first half (silu'd), up = second half
}


_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.*)\.(weight|bias|lambda1)$")


def _is_huggingface(sd: StateDict) -> bool:
    return any(k.startswith(("embeddings.", "encoder.layer.")) for k in sd)


def _from_huggingface(sd: StateDict) -> StateDict:
    """facebook/dinov2-* and facebook/dinov2-with-registers-* (transformers), SPEC.md section 2."""
    out: StateDict = {}
    pending: dict[tuple[str, str, str], Tensor] = {}  # (block, module name, param) of split matrices
    for key, value in sd.items():
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
            continue
        m = _HF_LAYER.match(key)
        if m is None:
            out[key] = value  # unknown: reported as unexpected by the strict check
            continue
        i, name, param = m.groups()
        if param == "lambda1":
            name, param = f"{name}.lambda1", ""
        if name in _HF_BLOCK:
            target = _HF_BLOCK[name]
            out[f"blocks.{i}.{target}" + (f".{param}" if param else "")] = value
        else:
            pending[(i, name, param)] = value
    for (i, name, param) in sorted({k for k in pending}):
        if (i, name, param) not in pending:
            continue
        for target, groups in _HF_FUSED.items():
            group = next((g for g in groups if name in g), None)
            if group is None:
                continue
            pieces = [pending.pop((i, n, param), None) for n in group]
            if any(p is None for p in pieces):
                raise CheckpointError(f"Hugging Face checkpoint: encoder.layer.{i} has {name}.{param} but not all of "
                                      f"{', '.join(group)}; the file is incomplete")
            out[f"blocks.{i}.{target}.{param}"] = torch.cat(pieces, dim=0)  # type: ignore[arg-type]
            break
        else:
            out[f"encoder.layer.{i}.{name}.{param}"] = pending.pop((i, name, param))  # unknown: unexpected
    return out


def to_huggingface(sd: StateDict, *, hub_names: bool = False) -> StateDict:
    """Official keys -> transformers' Dinov2Model keys (`hub_names=True`: the older names of the hub repos),
    or DINOv3ViTModel keys for a DINOv3 backbone (see the module docstring for what they drop).

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> hf = to_huggingface(sd)
        >>> tuple(hf["embeddings.cls_token"].shape), "encoder.layer.0.attention.q_proj.weight" in hf
        ((1, 1, 384), True)
    """
    if is_dinov3(sd):
        return _to_huggingface_dinov3(sd)
    inv_top = {v: k for k, v in _HF_TOP.items()}
    out: StateDict = {}
    for key, value in sd.items():
        if key in inv_top:
            out[inv_top[key]] = value
            continue
        m = re.match(r"^blocks\.(\d+)\.(.*)\.(weight|bias|gamma)$", key)
        if m is None:
            raise ValueError(f"cannot write key {key!r} in the Hugging Face layout: it is not a backbone key")
        i, name, param = m.groups()
        pre = f"encoder.layer.{i}."
        if name in ("ls1", "ls2"):
            out[pre + f"layer_scale{name[-1]}.lambda1"] = value
        elif name == "attn.qkv":
            names = ("attention.attention.query", "attention.attention.key", "attention.attention.value") if hub_names \
                else ("attention.q_proj", "attention.k_proj", "attention.v_proj")
            for n, piece in zip(names, value.chunk(3, dim=0)):  # rows: q, k, v
                out[pre + f"{n}.{param}"] = piece.contiguous()
        elif name == "attn.proj":
            out[pre + ("attention.output.dense" if hub_names else "attention.o_proj") + f".{param}"] = value
        elif name == "mlp.w12":
            if hub_names:
                out[pre + f"mlp.weights_in.{param}"] = value
            else:
                gate, up = value.chunk(2, dim=0)  # first half is silu'd: the gate
                out[pre + f"mlp.gate_proj.{param}"], out[pre + f"mlp.up_proj.{param}"] = gate.contiguous(), up.contiguous()
        elif name == "mlp.w3":
            out[pre + ("mlp.weights_out" if hub_names else "mlp.down_proj") + f".{param}"] = value
        else:  # norm1, norm2, mlp.fc1, mlp.fc2: same names
            out[pre + f"{name}.{param}"] = value
    return out


def huggingface_config(config: BackboneConfig) -> dict[str, Any]:
    """A transformers config.json for Dinov2Model / Dinov2WithRegistersModel of this architecture,
    or for DINOv3ViTModel given a Dinov3Config.

    Examples:
        >>> cfg = huggingface_config(minidino.get_config("dinov2_vits14_reg"))
        >>> cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_register_tokens"]
        (384, 6, 4)
        >>> cfg = huggingface_config(minidino.get_config("dinov3_vits16plus"))
        >>> cfg["model_type"], cfg["intermediate_size"], cfg["use_gated_mlp"], cfg["rope_theta"]
        ('dinov3_vit', 1536, True, 100.0)
    """
    if isinstance(config, Dinov3Config):
        return _huggingface_config_dinov3(config)
    reg = config.num_register_tokens > 0
    out: dict[str, Any] = {
        "architectures": ["Dinov2WithRegistersModel" if reg else "Dinov2Model"],
        "model_type": "dinov2_with_registers" if reg else "dinov2",
        "hidden_size": config.embed_dim, "num_hidden_layers": config.depth, "num_attention_heads": config.num_heads,
        # transformers wants an int ratio; GELU hidden = D * ratio, SwiGLU hidden derives from D like ours.
        "mlp_ratio": config.ffn_hidden_dim // config.embed_dim if config.ffn_layer == "mlp" else 4,
        "use_swiglu_ffn": config.ffn_layer == "swiglu", "hidden_act": "gelu", "layer_norm_eps": config.layer_norm_eps,
        "image_size": config.img_size, "patch_size": config.patch_size, "num_channels": config.in_chans,
        "qkv_bias": config.qkv_bias, "layerscale_value": config.layerscale_init, "drop_path_rate": 0.0,
    }
    if reg:
        out["num_register_tokens"] = config.num_register_tokens
    return out


# ---------------------------------------------------------------------------------------------- DINOv3
# transformers' DINOv3ViTModel (state dict in memory: model.layer.N.*; its files: layer.N.*) <-> official keys.
_HF3_TOP = {
    "embeddings.cls_token": "cls_token", "embeddings.register_tokens": "storage_tokens",
    "embeddings.patch_embeddings.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.bias": "patch_embed.proj.bias", "norm.weight": "norm.weight", "norm.bias": "norm.bias",
}
_HF3_BLOCK = {  # per block, transformers -> official (parameter lambda1 <-> gamma; the MLP's names depend on its kind)
    "norm1": "norm1", "norm2": "norm2", "attention.o_proj": "attn.proj", "layer_scale1": "ls1", "layer_scale2": "ls2",
}
_HF3_LAYER = re.compile(r"^(?:model\.)?layer\.(\d+)\.(.*)\.(weight|bias|lambda1)$")


def _is_huggingface_dinov3(sd: Mapping[str, Any]) -> bool:
    return any(_HF3_LAYER.match(k) for k in sd) and any(k.startswith("embeddings.") for k in sd)


def _from_huggingface_dinov3(sd: StateDict) -> StateDict:
    """DINOv3ViTModel keys -> official keys. q/k/v are concatenated into qkv (the key bias, which
    transformers does not have, becomes zeros: the official model masks it out); the gated MLP's
    gate_proj / up_proj / down_proj are w1 / w2 / w3, the plain one's up_proj / down_proj fc1 / fc2."""
    out: StateDict = {}
    blocks: dict[str, dict[str, Tensor]] = {}
    for key, value in sd.items():
        if key in _HF3_TOP:
            out[_HF3_TOP[key]] = value
        elif key == "embeddings.mask_token":
            out["mask_token"] = value.reshape(1, -1)  # (1, 1, D) -> the official (1, D)
        elif (m := _HF3_LAYER.match(key)) is not None:
            i, name, param = m.groups()
            blocks.setdefault(i, {})[f"{name}.{param}"] = value
        else:
            out[key] = value  # unknown: reported as unexpected by the strict check
    for i, b in blocks.items():
        pre = f"blocks.{i}."
        gated = any(k.startswith("mlp.gate_proj.") for k in b)
        mlp = {"gate_proj": "w1", "up_proj": "w2", "down_proj": "w3"} if gated else {"up_proj": "fc1", "down_proj": "fc2"}
        parts = {p: b.pop(f"attention.{p}_proj.weight", None) for p in "qkv"}
        if any(v is None for v in parts.values()):
            raise CheckpointError(f"transformers DINOv3 checkpoint: layer {i} lacks some of q_proj, k_proj, v_proj")
        out[pre + "attn.qkv.weight"] = torch.cat([parts["q"], parts["k"], parts["v"]])  # (3D, D), rows q, k, v
        q_bias, v_bias = b.pop("attention.q_proj.bias", None), b.pop("attention.v_proj.bias", None)
        k_bias = b.pop("attention.k_proj.bias", None)
        if q_bias is not None and v_bias is not None:
            out[pre + "attn.qkv.bias"] = torch.cat([q_bias, torch.zeros_like(q_bias) if k_bias is None else k_bias, v_bias])
        for key, value in b.items():
            name, _, param = key.rpartition(".")
            if name in _HF3_BLOCK:
                out[pre + f"{_HF3_BLOCK[name]}.{'gamma' if param == 'lambda1' else param}"] = value
            elif name.startswith("mlp.") and name[4:] in mlp:
                out[pre + f"mlp.{mlp[name[4:]]}.{param}"] = value
            else:
                out[f"layer.{i}.{key}"] = value  # unknown: unexpected
    return out


def _to_huggingface_dinov3(sd: StateDict) -> StateDict:
    """Official DINOv3 keys -> DINOv3ViTModel's file keys (layer.N.*). Dropped, as transformers has no
    place for them: rope_embed.periods, every bias_mask, the key part of the qkv bias, local_cls_norm."""
    out: StateDict = {}
    inv_top = {v: k for k, v in _HF3_TOP.items()}
    inv_block = {v: k for k, v in _HF3_BLOCK.items()}
    for key, value in sd.items():
        if key in inv_top:
            out[inv_top[key]] = value
            continue
        if key == "mask_token":
            out["embeddings.mask_token"] = value.reshape(1, 1, -1)  # (1, D) -> (1, 1, D)
            continue
        if key == "rope_embed.periods" or key.startswith("local_cls_norm.") or key.endswith(".bias_mask"):
            continue
        m = re.match(r"^blocks\.(\d+)\.(.*)\.(weight|bias|gamma)$", key)
        if m is None:
            raise ValueError(f"cannot write key {key!r} in the transformers DINOv3 layout: it is not a backbone key")
        i, name, param = m.groups()
        pre = f"layer.{i}."
        if name == "attn.qkv":
            q, k, v = value.chunk(3, dim=0)  # rows q, k, v
            out[pre + f"attention.q_proj.{param}"] = q.contiguous()
            if param == "weight":
                out[pre + "attention.k_proj.weight"] = k.contiguous()
            out[pre + f"attention.v_proj.{param}"] = v.contiguous()
        elif name in inv_block:
            out[pre + f"{inv_block[name]}.{'lambda1' if param == 'gamma' else param}"] = value
        else:
            hf = {"mlp.w1": "mlp.gate_proj", "mlp.w2": "mlp.up_proj", "mlp.w3": "mlp.down_proj",
                  "mlp.fc1": "mlp.up_proj", "mlp.fc2": "mlp.down_proj"}[name]
            out[pre + f"{hf}.{param}"] = value
    return out


def _huggingface_config_dinov3(config: Dinov3Config) -> dict[str, Any]:
    """transformers' DINOv3ViTConfig of this architecture (its key bias off: the official one is masked)."""
    gated = config.ffn_layer == "swiglu"
    return {
        "architectures": ["DINOv3ViTModel"], "model_type": "dinov3_vit",
        "hidden_size": config.embed_dim, "intermediate_size": config.ffn_hidden_dim,
        "num_hidden_layers": config.depth, "num_attention_heads": config.num_heads,
        "num_register_tokens": config.num_register_tokens, "use_gated_mlp": gated, "hidden_act": "silu" if gated else "gelu",
        "query_bias": config.qkv_bias, "key_bias": False, "value_bias": config.qkv_bias, "proj_bias": config.proj_bias,
        "mlp_bias": config.ffn_bias, "layer_norm_eps": config.layer_norm_eps, "layerscale_value": config.layerscale_init,
        "rope_theta": float(config.rope_base), "patch_size": config.patch_size, "num_channels": config.in_chans,
        "image_size": 224, "drop_path_rate": 0.0,
    }


# transformers' DPTForDepthEstimation (the facebook/dpt-dinov2-* conversions) <-> the official DPT head:
# (official key after "decode_head.", Hugging Face key), both as regexes whose groups are the indices.
_HF_DPT = [
    (r"reassemble_blocks\.projects\.(\d)\.conv\.", r"neck\.reassemble_stage\.layers\.(\d)\.projection\."),
    (r"reassemble_blocks\.resize_layers\.(\d)\.", r"neck\.reassemble_stage\.layers\.(\d)\.resize\."),
    (r"reassemble_blocks\.readout_projects\.(\d)\.0\.", r"neck\.reassemble_stage\.readout_projects\.(\d)\.0\."),
    (r"convs\.(\d)\.conv\.", r"neck\.convs\.(\d)\."),
    (r"fusion_blocks\.(\d)\.project\.conv\.", r"neck\.fusion_stage\.layers\.(\d)\.projection\."),
    (r"fusion_blocks\.(\d)\.res_conv_unit(\d)\.conv(\d)\.conv\.",
     r"neck\.fusion_stage\.layers\.(\d)\.residual_layer(\d)\.convolution(\d)\."),
    (r"project\.conv\.", r"head\.projection\."),
    (r"conv_depth\.head\.(\d)\.", r"head\.head\.(\d)\."),
]


def _is_huggingface_dpt(sd: Mapping[str, Any]) -> bool:
    return any(k.startswith("neck.reassemble_stage.") for k in sd)


def _fill(pattern: str, groups: tuple[str, ...]) -> str:
    """A key pattern of _HF_DPT with its (\\d) groups replaced by `groups`, unescaped."""
    it = iter(groups)
    return re.sub(r"\(\\d\)", lambda _: next(it), pattern).replace("\\", "")


def _dpt_rename(key: str, to_hf: bool) -> str | None:
    for official, hf in _HF_DPT:
        src, dst = (r"decode_head\." + official, hf) if to_hf else (hf, r"decode_head\." + official)
        m = re.match("^" + src + r"(weight|bias)$", key)
        if m:
            return _fill(dst, m.groups()[:-1]) + m.groups()[-1]
    return None


def _dpt_from_huggingface(sd: dict[str, Any]) -> dict[str, Any]:
    """DPTForDepthEstimation keys -> the official depther's: backbone.* stays (its Dinov2 names are
    translated with the backbone), neck.* / head.* become decode_head.*. The coarsest fusion layer's
    residual_layer1 exists in transformers but is never used there (no skip input): dropped."""
    out: dict[str, Any] = {}
    for key, value in sd.items():
        if key.startswith("neck.fusion_stage.layers.0.residual_layer1."):
            continue
        new = _dpt_rename(key, to_hf=False) if key.startswith(("neck.", "head.")) else None
        out[new or key] = value
    return out


def dpt_to_huggingface(sd: StateDict) -> StateDict:
    """An official `*_dd` depther's state dict -> DPTForDepthEstimation keys (loads there strictly;
    the unused residual_layer1 of the coarsest fusion layer is written as zeros).

    Examples:
        >>> from minidino.heads import Depther; from minidino.heads.depth_config import depth_config
        >>> model = Depther(minidino.create_model("dinov2_vits14", depth=4, device="meta"),   # a 4-block DPT depther
        ...                 depth_config({4: (0, 1, 2, 3)}, "dpt", 384), device="meta")
        >>> hf = dpt_to_huggingface(model.state_dict())
        >>> sorted({k.split(".")[0] for k in hf}), tuple(hf["head.head.0.weight"].shape)   # (C/2, C, 3, 3)
        (['backbone', 'head', 'neck'], (128, 256, 3, 3))
    """
    backbone = {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}
    out = {f"backbone.{k}": v for k, v in to_huggingface(backbone).items()}
    for key, value in sd.items():
        if key.startswith("decode_head."):
            new = _dpt_rename(key, to_hf=True)
            if new is None:
                raise ValueError(f"cannot write {key!r} in the Hugging Face DPT layout (only the DPT depthers, *_dd, have one)")
            out[new] = value
    for conv in ("convolution1", "convolution2"):
        ref = out["neck.fusion_stage.layers.0.residual_layer2." + conv + ".weight"]
        out["neck.fusion_stage.layers.0.residual_layer1." + conv + ".weight"] = torch.zeros_like(ref)
    return out


def huggingface_dpt_config(model: nn.Module) -> dict[str, Any]:
    """A transformers DPTConfig (as a dict) for a minidino `*_dd` depther: DPTConfig(**cfg) builds
    the DPTForDepthEstimation that `save_weights(model, ..., layout="huggingface")` loads into.

    Examples:
        >>> from minidino.heads import Depther; from minidino.heads.depth_config import depth_config
        >>> model = Depther(minidino.create_model("dinov2_vits14", depth=4, device="meta"),   # a 4-block DPT depther
        ...                 depth_config({4: (0, 1, 2, 3)}, "dpt", 384), device="meta")
        >>> cfg = huggingface_dpt_config(model)
        >>> cfg["backbone_config"]["out_features"], cfg["neck_hidden_sizes"], cfg["max_depth"]
        (['stage1', 'stage2', 'stage3', 'stage4'], [48, 96, 192, 384], 10.0)
    """
    if not isinstance(model, Depther) or model.config.head != "dpt":
        raise TypeError("huggingface_dpt_config takes a DPT depther (*_dd)")
    backbone = huggingface_config(model.backbone.config)
    backbone.update(out_features=[f"stage{i + 1}" for i in model.config.out_index], reshape_hidden_states=False,
                    apply_layernorm=False)
    return {"backbone_config": backbone, "neck_hidden_sizes": list(model.config.post_process_channels),
            "reassemble_factors": [4, 2, 1, 0.5], "fusion_hidden_size": model.config.channels, "head_in_index": -1,
            "readout_type": "project", "add_projection": True, "use_bias_in_fusion_residual": False,
            "hidden_size": model.backbone.config.embed_dim, "is_hybrid": False, "depth_estimation_type": "metric",
            "max_depth": model.config.max_depth}
