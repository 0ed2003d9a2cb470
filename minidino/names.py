"""Model names: the torch.hub entry points minidino builds, and lookup with suggestions."""

from __future__ import annotations

from .config import PRESETS, DinoConfig, closest_names

__all__ = ["LC_SUFFIX", "DINOTXT_NAME", "DINOTXT_ALIASES", "list_models", "split_model_name", "get_config", "is_dinotxt"]

LC_SUFFIX = "_lc"  # hub names of the ImageNet linear classifiers: backbone name + "_lc"
DINOTXT_NAME = "dinov2_vitl14_reg4_dinotxt_tet1280d20h24l"  # dino.txt: ViT-L/14 reg4 + a text encoder
DINOTXT_ALIASES = ("dinotxt", "dinov2_dinotxt")  # short names users type for it


def is_dinotxt(name: str) -> bool:
    return name == DINOTXT_NAME or name in DINOTXT_ALIASES


def list_models(include_classifiers: bool = True) -> list[str]:
    """The hub names minidino builds: 8 backbones, then (unless include_classifiers=False) the
    models with heads: their `*_lc` classifiers and dino.txt."""
    names = list(PRESETS)
    if include_classifiers:
        names += [n + LC_SUFFIX for n in PRESETS] + [DINOTXT_NAME]
    return names


def split_model_name(name: str) -> tuple[str, bool]:
    """'dinov2_vits14_lc' -> ('dinov2_vits14', True); unknown names raise ValueError with suggestions."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name in PRESETS:
        return name, False
    if is_dinotxt(name):
        raise ValueError(f"{name!r} is dino.txt, not a backbone: build it with minidino.create_model({name!r})")
    if name.endswith(LC_SUFFIX) and name[: -len(LC_SUFFIX)] in PRESETS:
        return name[: -len(LC_SUFFIX)], True
    hint = closest_names(name, list_models())
    raise ValueError(
        f"unknown model name {name!r}"
        + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else "")
        + f" Known models: {', '.join(list_models())}"
    )


def get_config(name: str) -> DinoConfig:
    """The backbone config of a hub name (a `*_lc` name gives its backbone's config)."""
    backbone, _ = split_model_name(name)
    return PRESETS[backbone]
