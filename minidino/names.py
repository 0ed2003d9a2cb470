"""Model names: the torch.hub entry points minidino builds, and lookup with suggestions."""

from __future__ import annotations

from .config import PRESETS, DinoConfig, closest_names

__all__ = ["LC_SUFFIX", "list_models", "split_model_name", "get_config"]

LC_SUFFIX = "_lc"  # hub names of the ImageNet linear classifiers: backbone name + "_lc"


def list_models(include_classifiers: bool = True) -> list[str]:
    """The hub names minidino builds: 8 backbones, and their `*_lc` classifiers.

    Examples:
        >>> minidino.list_models()[:3]
        ['dinov2_vits14', 'dinov2_vitb14', 'dinov2_vitl14']
        >>> len(minidino.list_models()), len(minidino.list_models(include_classifiers=False))
        (16, 8)
    """
    names = list(PRESETS)
    if include_classifiers:
        names += [n + LC_SUFFIX for n in PRESETS]
    return names


def split_model_name(name: str) -> tuple[str, bool]:
    """'dinov2_vits14_lc' -> ('dinov2_vits14', True); unknown names raise ValueError with suggestions.

    Examples:
        >>> split_model_name("dinov2_vits14_reg_lc")
        ('dinov2_vits14_reg', True)
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name in PRESETS:
        return name, False
    if name.endswith(LC_SUFFIX) and name[: -len(LC_SUFFIX)] in PRESETS:
        return name[: -len(LC_SUFFIX)], True
    hint = closest_names(name, list_models())
    raise ValueError(
        f"unknown model name {name!r}"
        + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else "")
        + f" Known models: {', '.join(list_models())}"
    )


def get_config(name: str) -> DinoConfig:
    """The backbone config of a hub name (a `*_lc` name gives its backbone's config).

    Examples:
        >>> c = minidino.get_config("dinov2_vitb14_reg")
        >>> c.embed_dim, c.depth, c.num_heads, c.num_register_tokens
        (768, 12, 12, 4)
    """
    backbone, _ = split_model_name(name)
    return PRESETS[backbone]
