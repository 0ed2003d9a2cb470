"""torch.hub entry points with the official names and defaults, as thin wrappers over create_model.

    model = torch.hub.load("path/to/minidino", "dinov2_vits14", source="local")   # official weights
    model = torch.hub.load("path/to/minidino", "dinov2_vitb14_lc", source="local", layers=1)

As in facebookresearch/dinov2's hubconf: pretrained=True by default (the published checkpoint,
downloaded once and checksum-verified), `weights="LVD142M"` for the backbones and
`weights="IMAGENET1K"` for the `_lc` classifiers (the only published ones), `layers=4` by
default for the classifiers; the depthers (`_ld` linear, `_dd` DPT) take `weights="NYU"|"KITTI"`
(default NYU), `depth_range=(min, max)` and, for `_ld`, `layers=4|1`. Other keyword arguments are config overrides of create_model
(e.g. depth=4, device="meta").
"""

from __future__ import annotations

from typing import Any

dependencies = ["torch"]

_BACKBONE_WEIGHTS = "LVD142M"  # the pretraining set of every published backbone
_CLASSIFIER_WEIGHTS = "IMAGENET1K"  # the training set of every published linear head


def _weights_name(weights: Any) -> str:
    return str(getattr(weights, "name", weights)).upper()  # an enum member (official) or its name


def _backbone(name: str, pretrained: bool, weights: Any, kwargs: dict[str, Any]) -> Any:
    import minidino

    if _weights_name(weights) != _BACKBONE_WEIGHTS:
        raise ValueError(f"{name}: unsupported weights {weights!r}; the published backbones are {_BACKBONE_WEIGHTS}")
    return minidino.create_model(name, pretrained=pretrained, **kwargs)


def _classifier(name: str, layers: int, pretrained: bool, weights: Any, kwargs: dict[str, Any]) -> Any:
    import minidino

    if _weights_name(weights) != _CLASSIFIER_WEIGHTS:
        raise ValueError(f"{name}: unsupported weights {weights!r}; the published heads are {_CLASSIFIER_WEIGHTS}")
    return minidino.create_model(name, pretrained=pretrained, layers=layers, **kwargs)


def dinov2_vits14(*, pretrained: bool = True, weights: Any = _BACKBONE_WEIGHTS, **kwargs: Any) -> Any:
    """DINOv2 ViT-S/14 (21M parameters), pretrained on LVD-142M."""
    return _backbone("dinov2_vits14", pretrained, weights, kwargs)


def dinov2_vitb14(*, pretrained: bool = True, weights: Any = _BACKBONE_WEIGHTS, **kwargs: Any) -> Any:
    """DINOv2 ViT-B/14 (86M parameters), pretrained on LVD-142M."""
    return _backbone("dinov2_vitb14", pretrained, weights, kwargs)


def dinov2_vitl14(*, pretrained: bool = True, weights: Any = _BACKBONE_WEIGHTS, **kwargs: Any) -> Any:
    """DINOv2 ViT-L/14 (300M parameters), pretrained on LVD-142M."""
    return _backbone("dinov2_vitl14", pretrained, weights, kwargs)


def dinov2_vitg14(*, pretrained: bool = True, weights: Any = _BACKBONE_WEIGHTS, **kwargs: Any) -> Any:
    """DINOv2 ViT-g/14 (1.1B parameters), pretrained on LVD-142M."""
    return _backbone("dinov2_vitg14", pretrained, weights, kwargs)


def dinov2_vits14_reg(*, pretrained: bool = True, weights: Any = _BACKBONE_WEIGHTS, **kwargs: Any) -> Any:
    """DINOv2 ViT-S/14 with 4 registers, pretrained on LVD-142M."""
    return _backbone("dinov2_vits14_reg", pretrained, weights, kwargs)


def dinov2_vitb14_reg(*, pretrained: bool = True, weights: Any = _BACKBONE_WEIGHTS, **kwargs: Any) -> Any:
    """DINOv2 ViT-B/14 with 4 registers, pretrained on LVD-142M."""
    return _backbone("dinov2_vitb14_reg", pretrained, weights, kwargs)


def dinov2_vitl14_reg(*, pretrained: bool = True, weights: Any = _BACKBONE_WEIGHTS, **kwargs: Any) -> Any:
    """DINOv2 ViT-L/14 with 4 registers, pretrained on LVD-142M."""
    return _backbone("dinov2_vitl14_reg", pretrained, weights, kwargs)


def dinov2_vitg14_reg(*, pretrained: bool = True, weights: Any = _BACKBONE_WEIGHTS, **kwargs: Any) -> Any:
    """DINOv2 ViT-g/14 with 4 registers, pretrained on LVD-142M."""
    return _backbone("dinov2_vitg14_reg", pretrained, weights, kwargs)


def dinov2_vits14_lc(*, layers: int = 4, pretrained: bool = True, weights: Any = _CLASSIFIER_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-S/14 with its ImageNet-1k linear classifier (layers=4: last 4 class tokens + mean patch; 1: last only)."""
    return _classifier("dinov2_vits14_lc", layers, pretrained, weights, kwargs)


def dinov2_vitb14_lc(*, layers: int = 4, pretrained: bool = True, weights: Any = _CLASSIFIER_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-B/14 with its ImageNet-1k linear classifier."""
    return _classifier("dinov2_vitb14_lc", layers, pretrained, weights, kwargs)


def dinov2_vitl14_lc(*, layers: int = 4, pretrained: bool = True, weights: Any = _CLASSIFIER_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-L/14 with its ImageNet-1k linear classifier."""
    return _classifier("dinov2_vitl14_lc", layers, pretrained, weights, kwargs)


def dinov2_vitg14_lc(*, layers: int = 4, pretrained: bool = True, weights: Any = _CLASSIFIER_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-g/14 with its ImageNet-1k linear classifier."""
    return _classifier("dinov2_vitg14_lc", layers, pretrained, weights, kwargs)


def dinov2_vits14_reg_lc(*, layers: int = 4, pretrained: bool = True, weights: Any = _CLASSIFIER_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-S/14 with registers and its ImageNet-1k linear classifier."""
    return _classifier("dinov2_vits14_reg_lc", layers, pretrained, weights, kwargs)


def dinov2_vitb14_reg_lc(*, layers: int = 4, pretrained: bool = True, weights: Any = _CLASSIFIER_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-B/14 with registers and its ImageNet-1k linear classifier."""
    return _classifier("dinov2_vitb14_reg_lc", layers, pretrained, weights, kwargs)


def dinov2_vitl14_reg_lc(*, layers: int = 4, pretrained: bool = True, weights: Any = _CLASSIFIER_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-L/14 with registers and its ImageNet-1k linear classifier."""
    return _classifier("dinov2_vitl14_reg_lc", layers, pretrained, weights, kwargs)


def dinov2_vitg14_reg_lc(*, layers: int = 4, pretrained: bool = True, weights: Any = _CLASSIFIER_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-g/14 with registers and its ImageNet-1k linear classifier."""
    return _classifier("dinov2_vitg14_reg_lc", layers, pretrained, weights, kwargs)


_DEPTH_WEIGHTS = "NYU"  # the hub's default training set of the depth heads (the other: KITTI)


def _depther(name: str, layers: int | None, pretrained: bool, weights: Any, kwargs: dict[str, Any]) -> Any:
    import minidino

    kw = {"layers": layers} if layers is not None else {}
    return minidino.create_model(name, pretrained=pretrained, weights=_weights_name(weights), **kw, **kwargs)


def dinov2_vits14_ld(*, layers: int = 4, pretrained: bool = True, weights: Any = _DEPTH_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-S/14 with a linear depth head (bins) on 4 layers (or 1), trained on NYU Depth v2 or KITTI."""
    return _depther("dinov2_vits14_ld", layers, pretrained, weights, kwargs)


def dinov2_vitb14_ld(*, layers: int = 4, pretrained: bool = True, weights: Any = _DEPTH_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-B/14 with a linear depth head (bins)."""
    return _depther("dinov2_vitb14_ld", layers, pretrained, weights, kwargs)


def dinov2_vitl14_ld(*, layers: int = 4, pretrained: bool = True, weights: Any = _DEPTH_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-L/14 with a linear depth head (bins)."""
    return _depther("dinov2_vitl14_ld", layers, pretrained, weights, kwargs)


def dinov2_vitg14_ld(*, layers: int = 4, pretrained: bool = True, weights: Any = _DEPTH_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-g/14 with a linear depth head (bins)."""
    return _depther("dinov2_vitg14_ld", layers, pretrained, weights, kwargs)


def dinov2_vits14_dd(*, pretrained: bool = True, weights: Any = _DEPTH_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-S/14 with a DPT depth head on 4 layers, trained on NYU Depth v2 or KITTI."""
    return _depther("dinov2_vits14_dd", None, pretrained, weights, kwargs)


def dinov2_vitb14_dd(*, pretrained: bool = True, weights: Any = _DEPTH_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-B/14 with a DPT depth head."""
    return _depther("dinov2_vitb14_dd", None, pretrained, weights, kwargs)


def dinov2_vitl14_dd(*, pretrained: bool = True, weights: Any = _DEPTH_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-L/14 with a DPT depth head."""
    return _depther("dinov2_vitl14_dd", None, pretrained, weights, kwargs)


def dinov2_vitg14_dd(*, pretrained: bool = True, weights: Any = _DEPTH_WEIGHTS, **kwargs: Any) -> Any:
    """ViT-g/14 with a DPT depth head."""
    return _depther("dinov2_vitg14_dd", None, pretrained, weights, kwargs)
def dinov2_vitl14_reg4_dinotxt_tet1280d20h24l(*, pretrained: bool = True, **kwargs: Any) -> Any:
    """dino.txt: ViT-L/14 with registers (frozen) + vision head, aligned with a 24-layer text encoder.

    Tokenize texts with `minidino.tokenize` (the official `get_tokenizer().tokenize`).
    """
    import minidino

    return minidino.create_model("dinov2_vitl14_reg4_dinotxt_tet1280d20h24l", pretrained=pretrained, **kwargs)
