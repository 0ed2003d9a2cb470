"""Checkpoint layouts: read any published DINOv2 layout safely, load it strictly, save it back.

minidino's parameter names are the official torch.hub keys (SPEC.md section 2), so the
official layout loads with no mapping. Every other layout is translated to it here, by one
small function per layout; the model never sees anything else:

    official      torch.hub .pth / .safetensors           `_from_official`
    chunked       FSDP training with block_chunks         `_from_chunked`
    huggingface   facebook/dinov2-* (hub and new names)   `_from_huggingface`; sharded folders `_read_sharded`
    timm          vit_*_patch14[_reg4]_dinov2             `_from_timm`
    training      {"model"}, {"teacher"}, *.backbone.*    `_unwrap_training`, `_split_parts`
    linear head   *_linear[4]_head.pth: weight, bias      `_split_parts`
    dino head     dino_head.* / a DINOHead's own keys     `_from_dino_head`
    depth head    *_{nyu,kitti}_{linear,linear4,dpt}_head.pth: decode_head.* (maybe under "state_dict")
    HF DPT        facebook/dpt-dinov2-*-{nyu,kitti} (DPTForDepthEstimation)   `_dpt_from_huggingface`

Safety: files are read with `torch.load(..., weights_only=True)` or safetensors, never with
plain unpickling, so a checkpoint cannot run code. Empty, truncated, HTML and otherwise
corrupt files raise `CheckpointError` naming the file and what is wrong with it.

Shapes: D width, R registers, M stored grid side (37), H FFN hidden width.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..utils.atomic import atomic_write
from ..models.config import PRESETS, DinoConfig, swiglu_hidden_dim
from ..names import split_model_name
from ..heads import DINOHead, Depther, LinearClassifier
from ..models.dinov2 import DinoVisionTransformer

__all__ = [
    "CheckpointError", "UnsafeCheckpointError", "WeightsMismatchError", "LoadReport", "read_checkpoint",
    "to_official", "to_huggingface", "detect_layout", "guess_hub_name", "infer_config", "load_weights", "save_weights",
    "load_pretrained", "huggingface_config", "huggingface_dpt_config", "dpt_to_huggingface",
]

Layout = Literal["official", "huggingface", "huggingface_hub"]
StateDict = dict[str, Tensor]


class CheckpointError(ValueError):
    """A checkpoint file is empty, truncated, corrupt or not a checkpoint at all.

    Examples:
        >>> _ = open("empty.pth", "wb").close()
        >>> try:
        ...     read_checkpoint("empty.pth")
        ... except CheckpointError as e:
        ...     print(type(e).__name__)
        CheckpointError
    """


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds pickled Python objects other than tensors; it is refused, never unpickled.

    Examples:
        >>> import collections
        >>> torch.save({"w": torch.zeros(1), "note": collections.OrderedDict(a=print)}, "unsafe.pth")
        >>> try:
        ...     read_checkpoint("unsafe.pth")
        ... except UnsafeCheckpointError as e:
        ...     print("refused")
        refused
    """


class WeightsMismatchError(ValueError):
    """A checkpoint does not fit the model: shapes differ, or keys are missing or unexpected.

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> model = minidino.create_model("dinov2_vitb14", depth=1)
        >>> try:
        ...     load_weights(model, sd)                            # ViT-S weights into a ViT-B
        ... except WeightsMismatchError as e:
        ...     print("mismatch")
        mismatch
    """


@dataclass
class LoadReport:
    """What `load_weights` did: the layout it recognised and what it loaded or left out.

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> report = load_weights(minidino.create_model("dinov2_vits14", depth=1), sd)
        >>> report.layout, report.loaded, report.missing
        ('official', ['backbone'], [])
    """

    layout: str  # e.g. "huggingface", "timm", "training (teacher) + chunked"
    loaded: list[str] = field(default_factory=list)  # the parts loaded: "backbone", "linear_head", "dino_head"
    ignored: list[str] = field(default_factory=list)  # recognised parts that do not belong to this model
    missing: list[str] = field(default_factory=list)  # model keys the checkpoint lacked (strict=False only)
    unexpected: list[str] = field(default_factory=list)  # checkpoint keys the model lacked (strict=False only)
    mask_token_missing: bool = False  # True for timm files: masks= then raises instead of using garbage


# ============================================================================ reading files
def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a .pth / .bin / .safetensors file, a sharded checkpoint's `*.index.json`, or a Hugging Face
    folder (single file or shards) without running any code.

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> save_weights(sd, "w.safetensors").name
        'w.safetensors'
        >>> tuple(read_checkpoint("w.safetensors")["cls_token"].shape)
        (1, 1, 384)
    """
    p = Path(path).expanduser()
    if p.is_dir():
        names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
        for name in names:
            if (p / name).is_file():
                return read_checkpoint(p / name)
        raise FileNotFoundError(f"{p} is a folder without {', '.join(names)}; pass the checkpoint file itself")
    if p.name.endswith(".index.json") and p.is_file():
        return _read_sharded(p)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint file {p} does not exist")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"{p} is empty (0 bytes): an interrupted download or copy; delete it and fetch it again")
    with open(p, "rb") as f:
        head = f.read(64)
    if head.lstrip()[:1] == b"<" or b"<html" in head.lower():
        text = head.lstrip()[:40].decode("ascii", "replace")
        raise CheckpointError(f"{p} is an HTML or XML page (starts with {text!r}), not a checkpoint: the server returned "
                              "an error or login page instead of the file; download it again from the right URL")
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch.save zip archive, or legacy pickle
        obj = _torch_load(p, mmap=head[:4] == b"PK\x03\x04")
    elif 0 < header_len < size and head[8:9] == b"{":  # safetensors: u64 header length, then JSON
        obj = _safetensors_load(p)
    else:
        raise CheckpointError(f"{p} is neither a PyTorch checkpoint (.pth, a zip or pickle file) nor a safetensors "
                              f"file (it starts with {head[:16]!r}); check that it is the file you meant")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
    return dict(obj)


def _read_sharded(index: Path) -> dict[str, Any]:
    """A sharded Hugging Face checkpoint: `*.index.json` maps every key to the shard file holding it
    (`save_pretrained(max_shard_size=...)` writes model-00001-of-0000N.safetensors and the index)."""
    import json

    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{index} is not a sharded-checkpoint index (a JSON object with a 'weight_map' of "
                              "key -> shard file)") from None
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        raise FileNotFoundError(f"{index} lists shard files that are not in {index.parent}: {_listing(missing)}")
    out: dict[str, Any] = {}
    for shard in shards:
        out.update(read_checkpoint(index.parent / shard))
    absent = [k for k in weight_map if k not in out]
    if absent:
        raise CheckpointError(f"{index}: {len(absent)} keys of its weight_map are in none of the shards "
                              f"({_listing(absent)}): a shard is from another checkpoint or incomplete")
    return out


def _torch_load(p: Path, mmap: bool) -> Any:
    try:
        # weights_only=True: only tensors and plain containers are rebuilt; any other pickled
        # object (a class, a function call) is refused before it can run. mmap avoids a copy.
        return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        detail = next((line.strip() for line in str(e).splitlines() if "Unsupported" in line), str(e).splitlines()[0])
        detail = detail.removeprefix("WeightsUnpickler error:").strip()
        raise UnsafeCheckpointError(
            f"refusing to load {p}: it is not a plain tensor checkpoint ({detail}). minidino only reads tensors "
            "(torch.load weights_only=True) and never unpickles other Python objects, which could run code. If the "
            "file comes from a trusted source, re-save its state dict (a dict of tensors) and load that."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{p} is truncated or corrupt ({first}); delete it and download it again") from None


def _safetensors_load(p: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{p} is a truncated or corrupt safetensors file ({e}); delete it and download it again") from None


def _read_source(source: Any, cache_dir: str | os.PathLike | None, progress: bool) -> tuple[dict[str, Any], str]:
    """A path, URL or in-memory mapping -> (its contents, a name for messages)."""
    if isinstance(source, Mapping):
        return dict(source), "the given state dict"
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text.startswith(("http://", "https://")):
            from .download import fetch_url

            path = fetch_url(text, cache_dir=cache_dir, progress=progress)
            return read_checkpoint(path), text
        return read_checkpoint(text), text
    raise TypeError(f"weights source must be a file path, an http(s) URL or a state dict, got {type(source).__name__}")


# ============================================================================ layouts
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
        >>> from minidino.heads.depth import Depther, depth_config
        >>> model = Depther(minidino.create_model("dinov2_vits14", depth=4, device="meta"),   # a 4-block DPT depther
        ...                 depth_config("dinov2_vits14", "dpt", 384).replace(out_index=(0, 1, 2, 3)), device="meta")
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
        >>> from minidino.heads.depth import Depther, depth_config
        >>> model = Depther(minidino.create_model("dinov2_vits14", depth=4, device="meta"),   # a 4-block DPT depther
        ...                 depth_config("dinov2_vits14", "dpt", 384).replace(out_index=(0, 1, 2, 3)), device="meta")
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


def _from_official(sd: StateDict) -> StateDict:
    """The torch.hub checkpoints (dinov2_*_pretrain.pth): minidino's own names, nothing to do."""
    return dict(sd)


def _from_dino_head(sd: StateDict) -> StateDict:
    """dino_head.* of the training checkpoints; newer torch saves weight norm as parametrizations."""
    renames = {"last_layer.parametrizations.weight.original0": "last_layer.weight_g",
               "last_layer.parametrizations.weight.original1": "last_layer.weight_v"}
    return {renames.get(k, k): v for k, v in sd.items()}


def detect_layout(sd: StateDict) -> str:
    """The layout of a backbone state dict (prefixes already removed).

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> detect_layout(sd), detect_layout(to_huggingface(sd))
        ('official', 'huggingface')
    """
    if _is_huggingface(sd):
        return "huggingface"
    if any(_CHUNKED.match(k) for k in sd):
        return "chunked"
    if _is_timm(sd):
        return "timm"
    return "official"


def to_official(sd: StateDict) -> tuple[StateDict, str]:
    """A backbone state dict in any layout -> (official keys, the layout's name).

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> hf = to_huggingface(sd)
        >>> back, layout = to_official(hf)
        >>> layout, sorted(back) == sorted(sd)
        ('huggingface', True)
    """
    layout = detect_layout(sd)
    if layout == "huggingface":
        return _from_huggingface(sd), layout
    if layout == "chunked":
        out = _from_chunked(sd)
        return (_from_timm(out), "chunked + timm") if _is_timm(out) else (out, layout)
    if layout == "timm":
        return _from_timm(sd), layout
    return _from_official(sd), layout


def to_huggingface(sd: StateDict, *, hub_names: bool = False) -> StateDict:
    """Official keys -> transformers' Dinov2Model keys (`hub_names=True`: the older names of the hub repos).

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> hf = to_huggingface(sd)
        >>> tuple(hf["embeddings.cls_token"].shape), "encoder.layer.0.attention.q_proj.weight" in hf
        ((1, 1, 384), True)
    """
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


# ============================================================================ checking and loading
def guess_hub_name(sd: StateDict) -> str:
    """Which hub model an official-layout backbone state dict looks like, for error messages.

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> guess_hub_name(sd)
        'dinov2_vits14 truncated to depth 1'
    """
    w = sd.get("patch_embed.proj.weight")
    D = w.shape[0] if w is not None else (sd["cls_token"].shape[-1] if "cls_token" in sd else None)
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    R = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
    swiglu = any(".mlp.w12." in k for k in sd)
    for name, cfg in PRESETS.items():
        if cfg.embed_dim == D and (cfg.num_register_tokens > 0) == (R > 0) and (cfg.ffn_layer == "swiglu") == swiglu:
            return name if depth in (cfg.depth, 0) else f"{name} truncated to depth {depth}"
    return f"no hub model (D={D}, depth {depth}, {R} registers, {'SwiGLU' if swiglu else 'GELU MLP'})"


def infer_config(sd: StateDict, num_heads: int | None = None) -> DinoConfig:
    """The architecture of an official-layout backbone state dict, read from its shapes.

    The head count is not in the weights: it is the look-alike hub model's, else `num_heads`,
    else D // 64 (every DINOv2 model has 64-wide heads).

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> c = infer_config(sd)
        >>> c.embed_dim, c.depth, c.num_heads
        (384, 1, 6)
    """
    D = sd["patch_embed.proj.weight"].shape[0]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    R = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
    w12 = sd.get("blocks.0.mlp.w12.weight")
    hidden = w12.shape[0] // 2 if w12 is not None else sd["blocks.0.mlp.fc1.weight"].shape[0]
    look = guess_hub_name(sd).split(" ")[0]
    if num_heads is None:
        num_heads = PRESETS[look].num_heads if look in PRESETS else max(D // 64, 1)
    base = PRESETS[look] if look in PRESETS else PRESETS["dinov2_vits14_reg" if R else "dinov2_vits14"]
    grid = int((sd["pos_embed"].shape[1] - 1) ** 0.5)
    return base.replace(embed_dim=D, depth=depth, num_heads=num_heads, ffn_hidden_dim=hidden, num_register_tokens=R,
                        ffn_layer="swiglu" if w12 is not None else "mlp", img_size=grid * base.patch_size)


def _listing(keys: list[str], n: int = 5) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > n else f" ({len(keys)})"
    return ", ".join(keys[:n]) + more


def _check_values(sd: StateDict, expected: StateDict, what: str) -> None:
    """Every weight the model takes must be floating point and finite: an integer or boolean tensor
    would be silently cast, and a NaN or Inf poisons every output. Said at load time, naming the keys."""
    wrong = [f"{k} ({v.dtype})" for k, v in sd.items()
             if k in expected and expected[k].is_floating_point() and not v.is_floating_point()]
    if wrong:
        raise CheckpointError(f"the {what} checkpoint holds non-floating tensors where the model has weights: "
                              f"{_listing(wrong)}; it is not a DINOv2 checkpoint, or it was converted wrongly")
    bad = [k for k, v in sd.items() if k in expected and v.is_floating_point() and not v.is_meta
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"the {what} checkpoint holds NaN or infinite values in {_listing(bad)}: it is corrupt "
                              "or comes from a diverged training run; use another checkpoint")


def _load_part(module: nn.Module, sd: StateDict, strict: bool, what: str, hint: str, report: LoadReport) -> None:
    """Load `sd` into `module` after checking keys and shapes; meta modules are materialised (assign)."""
    expected = module.state_dict()
    sd = dict(sd)
    if isinstance(module, DinoVisionTransformer):
        hint += f" and the model is {guess_hub_name(expected)}"
    if isinstance(module, DinoVisionTransformer):
        missing_mask = "mask_token" not in sd and "mask_token" in expected
        if missing_mask:  # timm: no mask token. Zeros (the official init), and masks= raises (model.py).
            sd["mask_token"] = torch.zeros(expected["mask_token"].shape)
            report.mask_token_missing = True
    _check_values(sd, expected, what)
    for key, value in sd.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            raise WeightsMismatchError(
                f"shape mismatch for {what} key {key!r}: checkpoint {tuple(value.shape)}, model {tuple(expected[key].shape)}; "
                f"this checkpoint looks like {hint}. Build the model that matches it (create_model(name, ...))."
            )
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if strict and (missing or unexpected):
        lines = [f"the {what} checkpoint does not fit the model (strict=True); it looks like {hint}."]
        if missing:
            lines.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            lines.append(f"unexpected keys: {_listing(unexpected)}")
        lines.append("Build the matching model, or pass strict=False to load the keys that fit.")
        raise WeightsMismatchError("\n".join(lines))
    report.missing += [f"{what}:{k}" for k in missing]
    report.unexpected += [f"{what}:{k}" for k in unexpected]
    meta = any(t.is_meta for t in expected.values())
    ready = {}
    for key, value in sd.items():
        if key in expected:
            target = expected[key]
            ready[key] = value.to(dtype=target.dtype) if value.is_floating_point() else value
    module.load_state_dict(ready, strict=False, assign=meta)
    if isinstance(module, DinoVisionTransformer):
        module.mask_token_missing = report.mask_token_missing  # read by prepare_tokens_with_masks
        module._pos_cache.clear()
    report.loaded.append(what)


def _prepare(source: Any, network: str, cache_dir: str | os.PathLike | None, progress: bool
             ) -> tuple[dict[str, StateDict], str, str]:
    """source -> (parts with the backbone in official keys, layout description, source name)."""
    obj, name = _read_source(source, cache_dir, progress)
    obj, notes = _unwrap_training(obj, network)
    if _is_huggingface_dpt(obj):
        obj, notes = _dpt_from_huggingface(obj), notes + ["Hugging Face DPT"]
    parts = _split_parts(obj)
    layouts = []
    if notes:
        layouts.append(f"training ({'/'.join(notes)})")
    if "backbone" in parts:
        parts["backbone"], layout = to_official(parts["backbone"])
        layouts.append(layout)
    if "dino_head" in parts:
        parts["dino_head"] = _from_dino_head(parts["dino_head"])
    layouts += [p.replace("_", " ") for p in ("linear_head", "dino_head", "decode_head") if p in parts and "backbone" not in parts]
    return parts, " + ".join(layouts), name


def load_weights(model: nn.Module, source: Any, *, strict: bool = True, network: str = "teacher",
                 cache_dir: str | os.PathLike | None = None, progress: bool = True) -> LoadReport:
    """Load weights in any known layout into a minidino model, in place.

    source: a file path (.pth, .bin, .safetensors, a Hugging Face folder), an http(s) URL
    (downloaded once into the cache), or an in-memory state dict. The layout is recognised
    from the keys. `network` picks the teacher or the student of a training checkpoint.
    A DinoVisionTransformer takes the backbone; a LinearClassifier takes the backbone and/or
    the linear head, whichever the file holds; a DINOHead takes the dino head; a Depther the
    backbone and/or the depth head (decode_head.*, e.g. the official *_nyu_dpt_head.pth). strict=True
    (default): every key of each part loaded must match the model, or WeightsMismatchError
    lists what differs. A model built on the meta device is materialised on the CPU.

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> load_weights(model, to_huggingface(sd)).layout          # any layout: a dict, a file, a folder, a URL
        'huggingface'
        >>> bool(torch.equal(model.cls_token, sd["cls_token"]))
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a minidino model (nn.Module), got {type(model).__name__}")
    from ..heads.dinotxt import DinoTxt

    if isinstance(model, DinoTxt):  # its three official files (or one whole state dict): text_weights.py
        from .dinotxt import PARTS, load_dinotxt_weights

        load_dinotxt_weights(model, source, cache_dir=cache_dir, progress=progress)
        parts = [p for p in PARTS if p in source] if isinstance(source, Mapping) and set(source) <= set(PARTS) else ["dinotxt"]
        return LoadReport(layout="official (dino.txt)", loaded=parts)
    parts, layout, name = _prepare(source, network, cache_dir, progress)
    report = LoadReport(layout=layout)
    hint = guess_hub_name(parts["backbone"]) if "backbone" in parts else "a head file"
    if isinstance(model, DinoVisionTransformer):
        wanted = {"backbone": model}
    elif isinstance(model, LinearClassifier):
        wanted = {"backbone": model.backbone, "linear_head": model.linear_head}
    elif isinstance(model, DINOHead):
        wanted = {"dino_head": model}
    elif isinstance(model, Depther):  # a depther takes the backbone and/or the official depth-head file
        wanted = {"backbone": model.backbone, "decode_head": model.decode_head}
    else:
        raise TypeError(f"load_weights loads DinoVisionTransformer, LinearClassifier, DINOHead or Depther models, got {type(model).__name__}")
    found = [p for p in wanted if p in parts]
    if not found:
        raise WeightsMismatchError(f"{name} holds {', '.join(sorted(parts)) or 'nothing'} ({layout}) but a "
                                   f"{type(model).__name__} needs {' or '.join(wanted)}")
    for part in found:
        _load_part(wanted[part], parts[part], strict, part, hint, report)
    report.ignored = sorted(set(parts) - set(found))
    return report


# ============================================================================ saving
def huggingface_config(config: DinoConfig) -> dict[str, Any]:
    """A transformers config.json for Dinov2Model / Dinov2WithRegistersModel of this architecture.

    Examples:
        >>> cfg = huggingface_config(minidino.get_config("dinov2_vits14_reg"))
        >>> cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_register_tokens"]
        (384, 6, 4)
    """
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


def save_weights(model: nn.Module | Mapping[str, Tensor], path: str | os.PathLike, layout: Layout = "official") -> Path:
    """Write a model's weights (or an official-layout state dict) as safetensors.

    layout="official": the torch.hub keys (a LinearClassifier keeps its backbone.* / linear_head.*).
    layout="huggingface": transformers' Dinov2Model / Dinov2WithRegistersModel keys of current
    releases (q/k/v/o_proj, gate/up/down_proj): loads there with strict=True.
    layout="huggingface_hub": the older names stored in the facebook/dinov2-* hub repos.
    A backbone loaded without a mask token (timm) is written without one in the official
    layout, and with zeros (transformers' own init) in the Hugging Face layouts.

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> save_weights(model, "vits14_hf.safetensors", layout="huggingface").name
        'vits14_hf.safetensors'
        >>> load_weights(minidino.create_model("dinov2_vits14", depth=1), "vits14_hf.safetensors").layout
        'huggingface'
    """
    from safetensors.torch import save_file

    if layout not in ("official", "huggingface", "huggingface_hub"):
        raise ValueError(f"layout must be 'official', 'huggingface' or 'huggingface_hub', got {layout!r}")
    if isinstance(model, nn.Module):
        if any(t.is_meta for t in model.state_dict().values()):
            raise ValueError("the model is on the meta device (no weights yet): load weights before saving")
        sd = dict(model.state_dict())
        if isinstance(model, DinoVisionTransformer) and getattr(model, "mask_token_missing", False) and layout == "official":
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
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


# ============================================================================ create_model(pretrained=...)
def load_pretrained(model: nn.Module, name: str, pretrained: Any, *, cache_dir: str | os.PathLike | None = None,
                    progress: bool = True) -> LoadReport:
    """What create_model(name, pretrained=...) does once the model is built.

    pretrained=True downloads the official file(s) of `name` into the cache (for `*_lc`, the
    backbone and the matching linear head) and verifies them against the pins; a path, URL
    or state dict is loaded with `load_weights`.

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> torch.save(sd, "vits14_depth1.pth")
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> load_pretrained(model, "dinov2_vits14", "vits14_depth1.pth", progress=False).loaded
        ['backbone']
    """
    from . import download as hub

    if pretrained is True and isinstance(model, Depther):
        return _load_pretrained_depther(model, name, cache_dir, progress)
    if pretrained is True:
        backbone_name, is_lc = split_model_name(name)
        path = hub.fetch(hub.backbone_pin(backbone_name), cache_dir=cache_dir, progress=progress)
        report = load_weights(model, path)
        if is_lc:
            assert isinstance(model, LinearClassifier)
            head = hub.fetch(hub.head_pin(backbone_name, model.layers), cache_dir=cache_dir, progress=progress)
            head_report = load_weights(model, head)
            report.loaded += head_report.loaded
        return report
    if isinstance(pretrained, (str, os.PathLike, Mapping)):
        return load_weights(model, pretrained, cache_dir=cache_dir, progress=progress)
    raise TypeError(f"pretrained must be True, False, a file path, an http(s) URL or a state dict; got {type(pretrained).__name__}")


def _load_pretrained_depther(model: Depther, name: str, cache_dir: str | os.PathLike | None, progress: bool) -> LoadReport:
    """The backbone's pretrain file (pinned, verified) and the official head file of `name`,
    `weights` and `layers` (no published checksums: unverified, loaded tensor-only)."""
    from . import download as hub
    from ..names import split_depth_name

    backbone_name, _ = split_depth_name(name)  # type: ignore[misc]
    report = load_weights(model, hub.fetch(hub.backbone_pin(backbone_name), cache_dir=cache_dir, progress=progress))
    head = hub.fetch(hub.depth_head_pin(name, model.config.weights, len(model.config.out_index)),
                     cache_dir=cache_dir, progress=progress)
    report.loaded += load_weights(model, head).loaded
    return report
