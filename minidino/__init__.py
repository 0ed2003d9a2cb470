"""minidino: a clean-room DINOv2 backbone, bit-identical to the official torch.hub model.

    import minidino
    model = minidino.create_model("dinov2_vits14")          # random init; pretrained=True downloads
    feats = model.forward_features(images)                    # dict of cls / register / patch tokens
"""

from __future__ import annotations

from typing import Any

import torch

from .models.config import DinoConfig
from .names import get_config, is_dinotxt, list_models, split_depth_name, split_model_name
from .heads import DINOHead, Depther, DinoTxt, LinearClassifier
from .heads.tokenizer import tokenize
from .export.program import export_onnx, export_program  # onnx itself is imported only inside them
from .models.dinov2 import DinoVisionTransformer
from .weights.load import load_weights, save_weights
from .export.optimize import optimize

__all__ = [
    "create_model", "list_models", "get_config", "DinoConfig", "DinoVisionTransformer", "LinearClassifier", "DINOHead", "Depther", "optimize",
    "DinoTxt", "tokenize",
    "load_weights", "save_weights", "export_onnx", "export_program",
]
__version__ = "0.1.0"


def create_model(
    name: str,
    *,
    pretrained: bool | str | Any = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> DinoVisionTransformer | LinearClassifier | Depther | DinoTxt:
    """Build a hub model by name: one of the 8 backbones, a `*_lc` classifier (`layers=1|4`, default 4),
    a depther (`*_ld`: `layers=1|4`, default 4; `*_dd`), with `weights="NYU"|"KITTI"` (default
    NYU) and `depth_range=(min, max)` in metres as in the hub (see minidino.heads.depth), or
    dino.txt (`dinov2_vitl14_reg4_dinotxt_tet1280d20h24l`, short `dinotxt`; its overrides are
    DinoTxtConfig fields such as text_layers=2, or backbone fields such as depth=2).

    overrides replace config fields (e.g. depth=4 builds the first 4 blocks); an unknown field
    is a TypeError. device="meta" builds without allocating memory (weights are then loaded
    with `load_state_dict(..., assign=True)`). pretrained=False gives the official random init.

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=2)       # random init, first 2 blocks
        >>> tuple(model(torch.randn(1, 3, 224, 224)).shape)              # (B, D) class token
        (1, 384)
        >>> clf = minidino.create_model("dinov2_vits14_lc", layers=1, depth=1)
        >>> tuple(clf(torch.randn(1, 3, 28, 28)).shape)                  # (B, 1000) ImageNet logits
        (1, 1000)
        >>> big = minidino.create_model("dinov2_vitg14", device="meta")  # no memory allocated
    """
    if split_depth_name(name) is not None:
        return _create_depther(name, pretrained=pretrained, device=device, dtype=dtype, **overrides)
    if isinstance(name, str) and is_dinotxt(name):
        from .weights.dinotxt import create_dinotxt

        return create_dinotxt(pretrained=pretrained, device=device, dtype=dtype, **overrides)
    backbone_name, is_lc = split_model_name(name)
    cache_dir = overrides.pop("cache_dir", None)  # where pretrained=True downloads go (else $MINIDINO_HOME)
    layers = overrides.pop("layers", 4) if is_lc else None
    if not is_lc and "layers" in overrides:
        raise TypeError(f"'layers' only applies to the *_lc classifiers; {name!r} is a backbone")
    config = get_config(backbone_name).replace(**overrides)
    meta = torch.device(device).type == "meta" if device is not None else False
    model: DinoVisionTransformer | LinearClassifier
    model = DinoVisionTransformer(config, device=device, dtype=dtype)
    if is_lc:
        model = LinearClassifier(model, layers=layers, device=device, dtype=dtype)  # type: ignore[arg-type]
    if not meta:
        if isinstance(model, LinearClassifier):
            model.backbone.init_weights()
        model.init_weights()
    if pretrained is not False and pretrained is not None:
        from .weights.load import load_pretrained  # weights reads the model, never the other way round

        load_pretrained(model, name, pretrained, cache_dir=cache_dir)
    return model.eval()


def _create_depther(name: str, *, pretrained: Any, device: Any, dtype: torch.dtype | None, **overrides: Any) -> Depther:
    from .heads.depth import depth_config

    backbone_name, head = split_depth_name(name)  # type: ignore[misc]
    cache_dir = overrides.pop("cache_dir", None)
    if head == "dpt" and "layers" in overrides:
        raise TypeError(f"'layers' applies to the linear depthers (*_ld); {name!r} (DPT) always takes 4 layers")
    layers = overrides.pop("layers", 4)
    weights = overrides.pop("weights", "NYU")
    depth_range = overrides.pop("depth_range", None)
    config = get_config(backbone_name).replace(**overrides)
    head_config = depth_config(backbone_name, head, config.embed_dim, layers=layers, weights=weights, depth_range=depth_range)
    meta = torch.device(device).type == "meta" if device is not None else False
    model = Depther(DinoVisionTransformer(config, device=device, dtype=dtype), head_config, device=device, dtype=dtype)
    if not meta:
        model.init_weights()
    if pretrained is not False and pretrained is not None:
        from .weights.load import load_pretrained

        load_pretrained(model, name, pretrained, cache_dir=cache_dir)
    return model.eval()
