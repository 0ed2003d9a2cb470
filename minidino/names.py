"""Model names: the torch.hub entry points minidino builds, and lookup with suggestions."""

from __future__ import annotations

from .models.config import PRESETS, DinoConfig, closest_names

__all__ = ["LC_SUFFIX", "DEPTH_HEADS", "DINOTXT_NAME", "DINOTXT_ALIASES", "list_models", "split_model_name",
           "split_depth_name", "get_config", "is_dinotxt"]

LC_SUFFIX = "_lc"  # hub names of the ImageNet linear classifiers: backbone name + "_lc"
# hub names of the depth estimators: plain backbone name + suffix (the hub has none with registers)
DEPTH_HEADS = {"_ld": "linear", "_dd": "dpt"}
DEPTH_BACKBONES = ("dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14")
DINOTXT_NAME = "dinov2_vitl14_reg4_dinotxt_tet1280d20h24l"  # dino.txt: ViT-L/14 reg4 + a text encoder
DINOTXT_ALIASES = ("dinotxt", "dinov2_dinotxt")  # short names users type for it


def is_dinotxt(name: str) -> bool:
    """True for dino.txt's hub name and its short aliases.

    Examples:
        >>> is_dinotxt("dinotxt"), is_dinotxt("dinov2_vitl14_reg")
        (True, False)
    """
    return name == DINOTXT_NAME or name in DINOTXT_ALIASES


def list_models(include_classifiers: bool = True, include_depthers: bool = True) -> list[str]:
    """The hub names minidino builds: 8 backbones, then (unless include_classifiers=False) the
    models with heads: their `*_lc` classifiers and dino.txt; then the `*_ld`/`*_dd` depthers.

    Examples:
        >>> minidino.list_models()[:3]
        ['dinov2_vits14', 'dinov2_vitb14', 'dinov2_vitl14']
        >>> len(minidino.list_models()), len(minidino.list_models(include_depthers=False))
        (25, 17)
        >>> len(minidino.list_models(False, False))
        8
    """
    names = list(PRESETS)
    if include_classifiers:
        names += [n + LC_SUFFIX for n in PRESETS] + [DINOTXT_NAME]
    if include_depthers:
        names += [n + s for s in DEPTH_HEADS for n in DEPTH_BACKBONES]
    return names


def split_depth_name(name: str) -> tuple[str, str] | None:
    """'dinov2_vitb14_dd' -> ('dinov2_vitb14', 'dpt'); None for a name that is not a depther.

    Examples:
        >>> split_depth_name("dinov2_vitb14_dd"), split_depth_name("dinov2_vitb14")
        (('dinov2_vitb14', 'dpt'), None)
    """
    if isinstance(name, str):
        for suffix, head in DEPTH_HEADS.items():
            if name.endswith(suffix) and name[: -len(suffix)] in DEPTH_BACKBONES:
                return name[: -len(suffix)], head
    return None


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
    """The backbone config of a hub name (a `*_lc`, `*_ld` or `*_dd` name gives its backbone's config).

    Examples:
        >>> c = minidino.get_config("dinov2_vitb14_reg")
        >>> c.embed_dim, c.depth, c.num_heads, c.num_register_tokens
        (768, 12, 12, 4)
    """
    depth = split_depth_name(name)
    if depth is not None:
        return PRESETS[depth[0]]
    backbone, _ = split_model_name(name)
    return PRESETS[backbone]
