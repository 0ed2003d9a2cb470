"""dino.txt weights: building the model and loading its three official files.

The published dino.txt is three files under the official base URL (no checksums are
published, so only what the download itself reports is checked):

    dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth                        the frozen backbone (pinned, as for ViT-L/14 reg)
    dinov2_vitl14/dinov2_vitl14_reg4_dinotxt_tet1280d20h24l_vision_head.pth   keys ln_final.*, block_list.*
    dinov2_vitl14/dinov2_vitl14_reg4_dinotxt_tet1280d20h24l_text_encoder.pth  keys backbone.*, head.linear_projection.weight

Each is a plain state dict of tensors, read without running code (weights.read_checkpoint).
The files hold no `logit_scale`: the official model keeps its initial value log(1 / 0.07),
and so does this one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..heads.dinotxt import DINOTXT_BACKBONE, DINOTXT_PRESET, DinoTxt, DinoTxtConfig
from .download import Pin
from ..names import DINOTXT_NAME, get_config
from .load import WeightsMismatchError, load_weights, read_checkpoint

__all__ = ["create_dinotxt", "load_dinotxt_weights", "VISION_HEAD_PIN", "TEXT_ENCODER_PIN", "PARTS"]

VISION_HEAD_PIN = Pin(path=f"dinov2_vitl14/{DINOTXT_NAME}_vision_head.pth")
TEXT_ENCODER_PIN = Pin(path=f"dinov2_vitl14/{DINOTXT_NAME}_text_encoder.pth")
PARTS = ("backbone", "vision_head", "text_encoder")  # the keys of a dict of sources, one per official file


def create_dinotxt(*, pretrained: Any = False, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                   **overrides: Any) -> DinoTxt:
    """What create_model("dinotxt", ...) does: overrides are DinoTxtConfig fields or backbone fields (depth=...).

    Examples:
        >>> model = create_dinotxt(depth=1, vision_embed_dim=64, vision_num_heads=2, embed_dim=128,
        ...                        text_width=64, text_num_heads=2, text_layers=1)   # random weights
        >>> model.vision_config.depth, model.vision_config.embed_dim, model.config.embed_dim   # backbone D, joint E
        (1, 64, 128)
        >>> shapes = create_dinotxt(device="meta")           # the full-size model, shapes only (no memory)
        >>> tuple(shapes.text_model.backbone.token_embedding.weight.shape)                       # (V, D_text)
        (49408, 1280)
        >>> model = create_dinotxt(pretrained=True)          # the three official files  # doctest: +SKIP
    """
    cache_dir = overrides.pop("cache_dir", None)
    # DinoTxtConfig fields go to the dino.txt config (embed_dim there is the joint width E); other
    # names are backbone fields (depth=2), and "vision_" + a backbone field reaches one whose name
    # dino.txt also uses (vision_embed_dim=64 makes a narrow backbone; then give embed_dim=128 too).
    txt_fields = set(DinoTxtConfig.__dataclass_fields__)
    config = DINOTXT_PRESET.replace(**{k: v for k, v in overrides.items() if k in txt_fields})
    vision = get_config(DINOTXT_BACKBONE).replace(**{k.removeprefix("vision_"): v for k, v in overrides.items()
                                                     if k not in txt_fields})
    model = DinoTxt(config, vision, device=device, dtype=dtype)
    meta = device is not None and torch.device(device).type == "meta"
    if not meta:
        model.init_weights()
    if pretrained is not False and pretrained is not None:
        load_dinotxt_weights(model, pretrained, cache_dir=cache_dir)
    return model.eval()


def _state_dict(source: Any) -> dict[str, Tensor]:
    return dict(source) if isinstance(source, Mapping) else read_checkpoint(source)


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
    module.load_state_dict(sd, strict=True, assign=next(iter(own.values())).device.type == "meta")


def load_dinotxt_weights(model: DinoTxt, source: Any, *, cache_dir: str | os.PathLike | None = None,
                         progress: bool = True) -> None:
    """Load dino.txt weights in place.

    source: True (download the three official files once into the cache); a dict with any of
    the keys "backbone", "vision_head", "text_encoder", each a file path or a state dict (the
    official files as they are; the backbone in any layout load_weights reads); or one file /
    state dict of the whole model (keys visual_model.*, text_model.*, logit_scale).

    Examples:
        >>> tiny = dict(depth=1, vision_embed_dim=64, vision_num_heads=2, embed_dim=128,
        ...             text_width=64, text_num_heads=2, text_layers=1)
        >>> a, b = create_dinotxt(**tiny), create_dinotxt(**tiny)         # two different random inits
        >>> ids = torch.tensor([[49406, 320, 1929, 49407, 0, 0]])        # (T, L)
        >>> load_dinotxt_weights(b, {"text_encoder": a.text_model.state_dict()})   # one part, official keys
        >>> torch.equal(a.encode_text(ids), b.encode_text(ids)), tuple(b.encode_text(ids).shape)  # (T, E)
        (True, (1, 128))
        >>> load_dinotxt_weights(b, {"vision_head": {}})
        Traceback (most recent call last):
        ...
        minidino.weights.load.WeightsMismatchError: the vision-head file does not fit the dino.txt model: missing [...]
        >>> load_dinotxt_weights(b, True)      # downloads the three official files once  # doctest: +SKIP
    """
    if not isinstance(model, DinoTxt):
        raise TypeError(f"expected a DinoTxt model, got {type(model).__name__}")
    if source is True:
        from . import download as hub

        source = {
            "backbone": hub.fetch(hub.backbone_pin(DINOTXT_BACKBONE), cache_dir=cache_dir, progress=progress),
            "vision_head": hub.fetch(VISION_HEAD_PIN, cache_dir=cache_dir, progress=progress),
            "text_encoder": hub.fetch(TEXT_ENCODER_PIN, cache_dir=cache_dir, progress=progress),
        }
    if isinstance(source, Mapping) and source and set(source) <= set(PARTS):
        if "backbone" in source:
            load_weights(model.visual_model.backbone.model, source["backbone"], cache_dir=cache_dir, progress=progress)
        if "vision_head" in source:
            _load_strict(model.visual_model.head, _state_dict(source["vision_head"]), "the vision-head file")
        if "text_encoder" in source:
            _load_strict(model.text_model, _state_dict(source["text_encoder"]), "the text-encoder file")
        return
    if isinstance(source, (str, os.PathLike, Mapping)):
        _load_strict(model, _state_dict(source), "the dino.txt state dict")
        return
    raise TypeError("pretrained must be True, a file path or state dict of the whole model, or a dict with keys "
                    f"{', '.join(PARTS)}; got {type(source).__name__}")
