"""Loading weights into a model: any source (path, URL, state dict), any layout, checked strictly.

A file is read safely (read.py), unwrapped from its training wrapper and split into the parts it
holds (backbone, linear head, DINO head, depth head), each part translated to the official keys
(layouts.py), then every part the model has is loaded after its keys, shapes and values are
checked. dino.txt's three official files load here too (`_load_dinotxt`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..heads import DINOHead, Depther, DinoTxt, LinearClassifier
from ..models.backbone import VisionTransformerBase
from ..models.config import Dinov3Config
from ..models.dinov2 import DinoVisionTransformer
from ..models.dinov3 import Dinov3VisionTransformer
from ..models.rope import rope_periods
from .download import fetch_url, verify_file
from .huggingface import _dpt_from_huggingface, _is_huggingface_dpt
from .layouts import FILLED_BY_LAYOUT, _from_dino_head, _split_parts, _unwrap_training, guess_hub_name, infer_config, to_official
from .read import CheckpointError, StateDict, _listing, read_checkpoint

__all__ = ["WeightsMismatchError", "LoadReport", "load_weights", "fill_dinov3", "DINOTXT_PARTS", "check_state_dict",
           "check_tensors", "check_backbone"]


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
    filled: list[str] = field(default_factory=list)  # keys a foreign DINOv3 layout lacks, filled with their defined values


def fill_dinov3(sd: StateDict, layout: str, model: Dinov3VisionTransformer | None = None) -> list[str]:
    """Complete, in place, a backbone state dict translated from a transformers or timm DINOv3 file
    (layouts.FILLED_BY_LAYOUT) with what the official model holds and the file lacks: the RoPE periods
    (recomputed in float32: docs/dinov3.md says what that costs against a file that stores them), the
    key-bias masks (1 q, 0 k, 1 v), local_cls_norm (1, 0; unused at inference) and, for timm's models
    without qkv bias, a zero qkv bias. `model`: the one it is for (default: built on the meta device
    from the keys' shapes). Returns the keys filled.

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov3_vits16", depth=1, device="meta"), 0)
        >>> hf, _ = minidino.weights.to_official(minidino.weights.to_huggingface(sd))
        >>> fill_dinov3(hf, "huggingface-dinov3")
        ['rope_embed.periods', 'blocks.0.attn.qkv.bias_mask']
    """
    if layout not in FILLED_BY_LAYOUT:
        return []
    if model is None:
        model = Dinov3VisionTransformer(infer_config(sd), device="meta")  # type: ignore[arg-type]
    c, kinds, filled = model.config, FILLED_BY_LAYOUT[layout], []
    for key, target in model.state_dict().items():
        if key in sd:
            continue
        if key == "rope_embed.periods":
            value = rope_periods(c.head_dim, c.rope_base)  # (hd/4,)
        elif key.endswith("attn.qkv.bias_mask"):
            value = torch.ones(target.shape)
            value[c.embed_dim : 2 * c.embed_dim] = 0.0  # the key rows
        elif key.startswith("local_cls_norm."):
            value = torch.ones(target.shape) if key.endswith("weight") else torch.zeros(target.shape)
        elif key.endswith("attn.qkv.bias") and "attn.qkv.bias" in kinds:
            value = torch.zeros(target.shape)
        else:
            continue
        sd[key] = value
        filled.append(key)
    return filled


def _read_source(source: Any, cache_dir: str | os.PathLike | None, progress: bool,
                 check_hash: bool = True) -> tuple[dict[str, Any], str]:
    """A path, URL or in-memory mapping -> (its contents, a name for messages). A file name that
    carries the start of its SHA-256 (`-08c60483.pth`) is checked against it (check_hash)."""
    if isinstance(source, Mapping):
        return dict(source), "the given state dict"
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text.startswith(("http://", "https://")):
            path = fetch_url(text, cache_dir=cache_dir, progress=progress, check_hash=check_hash)
            return read_checkpoint(path), text.split("?", 1)[0]  # a signed URL's query is a secret: not in messages
        verify_file(text, check_hash=check_hash)
        return read_checkpoint(text), text
    raise TypeError(f"weights source must be a file path, an http(s) URL or a state dict, got {type(source).__name__}")


def check_state_dict(sd: StateDict, expected: StateDict, what: str) -> None:
    """Every weight the model takes (the keys of `expected`, a model's state dict) must be floating point
    and finite: an integer or boolean tensor would be silently cast, and a NaN or Inf poisons every output.
    CheckpointError naming the keys. Run on every checkpoint minidino loads (backbones, heads, dino.txt's
    files) and, through `check_tensors` and `check_backbone`, on every one it writes.

    Examples:
        >>> check_state_dict({"w": torch.tensor([1.0, float("nan")])}, {"w": torch.zeros(2)}, "backbone")
        Traceback (most recent call last):
        ...
        minidino.weights.read.CheckpointError: the backbone checkpoint holds NaN or infinite values in w (1): ...
    """
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


_check_values = check_state_dict  # the name it had


def check_tensors(sd: Mapping[str, Any], what: str) -> None:
    """`check_state_dict` for weights without a model at hand (a file about to be written): every value a
    floating-point tensor, every value finite. minidino's models hold no integer weights or buffers.

    Examples:
        >>> check_tensors({"norm.weight": torch.ones(4, dtype=torch.int64)}, "state dict")
        Traceback (most recent call last):
        ...
        minidino.weights.read.CheckpointError: the state dict checkpoint holds non-floating tensors where ...
    """
    not_tensors = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise CheckpointError(f"the {what} holds values that are not tensors: {_listing(not_tensors)}")
    check_state_dict(dict(sd), {k: torch.empty(0, device="meta") for k in sd}, what)


def check_backbone(sd: StateDict, *, num_heads: int | None = None, what: str = "backbone") -> Any:
    """The DinoConfig of an official-layout backbone state dict, after loading it strictly into a model of
    that architecture built on the meta device: keys, shapes, dtypes and values are what `load_weights`
    accepts (CheckpointError or WeightsMismatchError otherwise). `minidino convert` runs it on what it is
    about to write, so it never writes a file that would not load.

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)
        >>> check_backbone(sd).depth
        1
        >>> check_backbone({"cls_token": sd["cls_token"]})
        Traceback (most recent call last):
        ...
        minidino.weights.read.CheckpointError: the backbone is not a complete DINOv2 backbone (no 'patch_embed.proj.weight'): ...
    """
    try:
        config = infer_config(sd, num_heads=num_heads)
    except KeyError as e:
        raise CheckpointError(f"the {what} is not a complete DINOv2 backbone (no {e}): a partial file, or not a "
                              "DINOv2 checkpoint") from None
    except (ValueError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"the {what} does not describe a DINOv2 backbone ({' '.join(str(e).split())})") from None
    model = _backbone_class(config)(config, device="meta")
    _load_part(model, sd, True, what, guess_hub_name(sd), LoadReport(layout="official"))
    return config


def _backbone_class(config: Any) -> type[nn.Module]:
    """The backbone class of a config `infer_config` returned (one per family; a new family adds its own, as
    minidino.factory.BACKBONES does by family name)."""
    return Dinov3VisionTransformer if isinstance(config, Dinov3Config) else DinoVisionTransformer


def _load_part(module: nn.Module, sd: StateDict, strict: bool, what: str, hint: str, report: LoadReport,
               layout: str = "official") -> None:
    """Load `sd` into `module` after checking keys and shapes; meta modules are materialised (assign)."""
    expected = module.state_dict()
    sd = dict(sd)
    if isinstance(module, Dinov3VisionTransformer):
        report.filled += fill_dinov3(sd, layout, module)
    if isinstance(module, VisionTransformerBase):
        hint += f" and the model is {guess_hub_name(expected)}"
        missing_mask = "mask_token" not in sd and "mask_token" in expected
        if missing_mask:  # timm: no mask token. Zeros (the official init), and masks= raises (model.py).
            sd["mask_token"] = torch.zeros(expected["mask_token"].shape)
            report.mask_token_missing = True
    check_state_dict(sd, expected, what)
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
    if isinstance(module, VisionTransformerBase):
        module.mask_token_missing = report.mask_token_missing  # read by prepare_tokens_with_masks
    if hasattr(module, "_pos_cache"):  # DINOv2: the resized position embeddings of the old weights
        module._pos_cache.clear()
    report.loaded.append(what)


def _prepare(source: Any, network: str, cache_dir: str | os.PathLike | None, progress: bool, check_hash: bool = True
             ) -> tuple[dict[str, StateDict], str, str, str]:
    """source -> (parts with the backbone in official keys, layout description, source name, backbone layout)."""
    obj, name = _read_source(source, cache_dir, progress, check_hash)
    obj, notes = _unwrap_training(obj, network)
    if _is_huggingface_dpt(obj):
        obj, notes = _dpt_from_huggingface(obj), notes + ["Hugging Face DPT"]
    parts = _split_parts(obj)
    layouts = []
    layout = "official"
    if notes:
        layouts.append(f"training ({'/'.join(notes)})")
    if "backbone" in parts:
        parts["backbone"], layout = to_official(parts["backbone"])
        layouts.append(layout)
    if "dino_head" in parts:
        parts["dino_head"] = _from_dino_head(parts["dino_head"])
    layouts += [p.replace("_", " ") for p in ("linear_head", "dino_head", "decode_head") if p in parts and "backbone" not in parts]
    return parts, " + ".join(layouts), name, layout


def load_weights(model: nn.Module, source: Any, *, strict: bool = True, network: str = "teacher",
                 cache_dir: str | os.PathLike | None = None, progress: bool = True, check_hash: bool = True) -> LoadReport:
    """Load weights in any known layout into a minidino model, in place.

    source: a file path (.pth, .bin, .safetensors, a Hugging Face folder), an http(s) URL
    (downloaded once into the cache), or an in-memory state dict. The layout is recognised
    from the keys (DINOv2's and DINOv3's). A file name ending in `-<8 hex>.pth` (torch.hub's
    naming, the DINOv3 files') must match the start of the file's SHA-256 (check_hash=False: not
    checked). A transformers or timm DINOv3 file lacks a few keys of the official one: they are
    filled with their defined values and listed in the report's `filled`. `network` picks the teacher or the student of a training checkpoint.
    A DinoVisionTransformer takes the backbone; a LinearClassifier takes the backbone and/or
    the linear head, whichever the file holds; a DINOHead takes the dino head; a Depther the
    backbone and/or the depth head (decode_head.*, e.g. the official *_nyu_dpt_head.pth). strict=True
    (default): every key of each part loaded must match the model, or WeightsMismatchError
    lists what differs. A model built on the meta device is materialised on the CPU.

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> model = minidino.create_model("dinov2_vits14", depth=1)
        >>> load_weights(model, minidino.weights.to_huggingface(sd)).layout          # any layout: a dict, a file, a folder, a URL
        'huggingface'
        >>> bool(torch.equal(model.cls_token, sd["cls_token"]))
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a minidino model (nn.Module), got {type(model).__name__}")
    if isinstance(model, DinoTxt):  # its three official files, or one whole state dict
        return _load_dinotxt(model, source, cache_dir=cache_dir, progress=progress)
    parts, layout, name, backbone_layout = _prepare(source, network, cache_dir, progress, check_hash)
    report = LoadReport(layout=layout)
    hint = guess_hub_name(parts["backbone"]) if "backbone" in parts else "a head file"
    if isinstance(model, VisionTransformerBase):
        wanted = {"backbone": model}
    elif isinstance(model, LinearClassifier):
        wanted = {"backbone": model.backbone, "linear_head": model.linear_head}
    elif isinstance(model, DINOHead):
        wanted = {"dino_head": model}
    elif isinstance(model, Depther):  # a depther takes the backbone and/or the official depth-head file
        wanted = {"backbone": model.backbone, "decode_head": model.decode_head}
    else:
        raise TypeError("load_weights loads DinoVisionTransformer, Dinov3VisionTransformer, LinearClassifier, DINOHead or "
                        f"Depther models, got {type(model).__name__}")
    found = [p for p in wanted if p in parts]
    if not found:
        raise WeightsMismatchError(f"{name} holds {', '.join(sorted(parts)) or 'nothing'} ({layout}) but a "
                                   f"{type(model).__name__} needs {' or '.join(wanted)}")
    for part in found:
        _load_part(wanted[part], parts[part], strict, part, hint, report, backbone_layout if part == "backbone" else "official")
    report.ignored = sorted(set(parts) - set(found))
    return report


# ---------------------------------------------------------------------------- dino.txt
# The published dino.txt is three files (minidino.catalogue): the frozen backbone (any layout
# load_weights reads), the vision head (keys ln_final.*, block_list.*) and the text encoder (keys
# backbone.*, head.linear_projection.weight). The files hold no `logit_scale`: the official model
# keeps its initial value log(1 / 0.07), and so does this one.
DINOTXT_PARTS = ("backbone", "vision_head", "text_encoder")  # the keys of a dict of sources, one per official file


def _load_strict(module: nn.Module, sd: Mapping[str, Any], what: str) -> None:
    """Every key present and of the right shape, nothing extra: else an error naming the differences."""
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: file {tuple(sd[k].shape)}, model {tuple(own[k].shape)}" for k in own
              if k in sd and isinstance(sd[k], Tensor) and sd[k].shape != own[k].shape]
    not_tensors = [k for k, v in sd.items() if not isinstance(v, Tensor)]
    if missing or unexpected or shapes or not_tensors:
        parts = [f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else "",
                 f"shapes differ: {shapes[:3]}" if shapes else "", f"not tensors: {not_tensors[:5]}" if not_tensors else ""]
        raise WeightsMismatchError(f"{what} does not fit the dino.txt model: " + "; ".join(p for p in parts if p))
    check_state_dict(dict(sd), own, what.removeprefix("the ").removesuffix(" file"))  # as every backbone file is
    module.load_state_dict(sd, strict=True, assign=next(iter(own.values())).device.type == "meta")


def _load_dinotxt(model: DinoTxt, source: Any, *, cache_dir: str | os.PathLike | None = None,
                  progress: bool = True) -> LoadReport:
    """dino.txt weights: a dict with any of the keys "backbone", "vision_head", "text_encoder", each a
    file path or a state dict (the official files as they are; the backbone in any layout), or one file
    / state dict of the whole model (keys visual_model.*, text_model.*, logit_scale).

    Examples:
        >>> tiny = dict(depth=1, vision_embed_dim=64, vision_num_heads=2, embed_dim=128,
        ...             text_width=64, text_num_heads=2, text_layers=1)
        >>> a, b = minidino.create_model("dinotxt", **tiny), minidino.create_model("dinotxt", **tiny)   # two random inits
        >>> ids = torch.tensor([[49406, 320, 1929, 49407, 0, 0]])        # (T, L)
        >>> load_weights(b, {"text_encoder": a.text_model.state_dict()}).loaded    # one part, official keys
        ['text_encoder']
        >>> torch.equal(a.encode_text(ids), b.encode_text(ids)), tuple(b.encode_text(ids).shape)  # (T, E)
        (True, (1, 128))
        >>> load_weights(b, {"vision_head": {}})
        Traceback (most recent call last):
        ...
        minidino.weights.load.WeightsMismatchError: the vision-head file does not fit the dino.txt model: missing [...]
    """
    def state_dict(src: Any) -> dict[str, Tensor]:
        return dict(src) if isinstance(src, Mapping) else read_checkpoint(src)

    if isinstance(source, Mapping) and source and set(source) <= set(DINOTXT_PARTS):
        if "backbone" in source:
            load_weights(model.visual_model.backbone.model, source["backbone"], cache_dir=cache_dir, progress=progress)
        if "vision_head" in source:
            _load_strict(model.visual_model.head, state_dict(source["vision_head"]), "the vision-head file")
        if "text_encoder" in source:
            _load_strict(model.text_model, state_dict(source["text_encoder"]), "the text-encoder file")
        return LoadReport(layout="official (dino.txt)", loaded=[p for p in DINOTXT_PARTS if p in source])
    if isinstance(source, (str, os.PathLike, Mapping)):
        _load_strict(model, state_dict(source), "the dino.txt state dict")
        return LoadReport(layout="official (dino.txt)", loaded=["dinotxt"])
    raise TypeError("dino.txt weights must be a file path or state dict of the whole model, or a dict with keys "
                    f"{', '.join(DINOTXT_PARTS)}; got {type(source).__name__}")
