"""Architecture configuration: frozen dataclasses, the hub presets as plain data.

Every architectural choice of a backbone is a plain value here, so a config can be printed,
compared, hashed and written to JSON. `BackboneConfig` holds the fields both families share;
`DinoConfig` (DINOv2) and `Dinov3Config` (DINOv3) add their own. The presets, one per entry
point, are rows of minidino.catalogue (SPEC.md sections 1 and 8).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["BackboneConfig", "DinoConfig", "Dinov3Config", "closest_names", "swiglu_hidden_dim", "check_ranges",
           "check_range", "MAX_WIDTH"]


def swiglu_hidden_dim(embed_dim: int, ratio: float = 4.0, multiple: int = 8) -> int:
    """Hidden width of the official SwiGLU FFNs: 2/3 of int(D * ratio), rounded up to a multiple.

    DINOv2's ViT-g: ratio 4, multiple 8. DINOv3: ratio 6 (S+, L+, H+) with multiple 8, ratio 3
    with multiple 64 (7B, the official "swiglu64").

    Examples:
        >>> swiglu_hidden_dim(1536)          # ViT-g: int(4 * 1536 * 2 / 3) = 4096, already a multiple of 8
        4096
        >>> swiglu_hidden_dim(384, 6.0), swiglu_hidden_dim(4096, 3.0, 64)   # DINOv3 ViT-S+/16, ViT-7B/16
        (1536, 8192)
    """
    hidden = int(int(embed_dim * ratio) * 2 / 3)
    return -(-hidden // multiple) * multiple


@dataclass(frozen=True, kw_only=True)
class BackboneConfig:
    """The fields every ViT backbone of both families has (the command line, the cost and memory
    estimates and the weight converters read these, whatever the family).

    Examples:
        >>> isinstance(minidino.get_config("dinov3_vits16"), BackboneConfig)
        True
    """

    embed_dim: int  # D, the token width
    depth: int  # number of transformer blocks
    num_heads: int  # nh; head dim hd = D // nh
    ffn_layer: Literal["mlp", "swiglu"] = "mlp"  # GELU MLP (fc1, fc2) or SwiGLU (DINOv2: w12, w3; DINOv3: w1, w2, w3)
    ffn_hidden_dim: int  # hidden width of the FFN
    num_register_tokens: int = 0  # R: DINOv2's registers, DINOv3's storage tokens (the same thing, renamed)
    patch_size: int = 14
    in_chans: int = 3
    layer_norm_eps: float = 1e-6
    layerscale_init: float = 1.0
    qkv_bias: bool = True
    proj_bias: bool = True
    ffn_bias: bool = True
    drop_path_rate: float = 0.0  # stochastic depth for fine-tuning; rate grows linearly over the blocks

    def __post_init__(self) -> None:
        self._check_types()
        for field in ("embed_dim", "depth", "num_heads", "ffn_hidden_dim", "patch_size", "in_chans"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")
        if self.ffn_layer not in ("mlp", "swiglu"):
            raise ValueError(f"ffn_layer must be 'mlp' or 'swiglu', got {self.ffn_layer!r}")
        if self.num_register_tokens < 0:
            raise ValueError(f"num_register_tokens must be >= 0, got {self.num_register_tokens}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        check_ranges(self)

    def _check_types(self) -> None:
        """Plain values of the right type, so that depth='2' is a TypeError naming the field, not a
        "'<' not supported" from deep inside (bool is not an int here, an int is a fine float)."""
        kinds = {int: "an int", float: "a number", bool: "True or False", str: "a string"}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            want = {"int": int, "float": float, "bool": bool}.get(str(f.type), str)
            ok = isinstance(value, bool) if want is bool else isinstance(value, str) if want is str else \
                isinstance(value, numbers.Real if want is float else numbers.Integral) and not isinstance(value, bool)
            if not ok:
                raise TypeError(f"config field {f.name} must be {kinds[want]}, got {value!r} ({type(value).__name__})")
            if want is float and not math.isfinite(value):
                raise ValueError(f"config field {f.name} must be finite, got {value!r}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def replace(self, **overrides: Any) -> Any:
        """A copy with some fields changed; an unknown field is a TypeError naming it."""
        names = {f.name for f in dataclasses.fields(self)}
        for key in overrides:
            if key not in names:
                hint = closest_names(key, sorted(names))
                raise TypeError(
                    f"unknown config field {key!r}" + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else "")
                    + f" Valid fields: {', '.join(sorted(names))}"
                )
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class DinoConfig(BackboneConfig):
    """Every architectural choice of a DINOv2 ViT backbone, as plain values.

    Examples:
        >>> c = minidino.get_config("dinov2_vits14").replace(depth=4)   # a new config; the preset is unchanged
        >>> c.depth, c.head_dim, c.grid_size                             # hd = D / nh; M = 518 / 14
        (4, 64, 37)
    """

    img_size: int = 518  # pos_embed is stored for this square image: (img_size // patch_size) ** 2 + 1 positions
    interpolate_offset: float = 0.1  # see posembed.py: the scale-factor quirk of the plain models
    interpolate_antialias: bool = False  # see posembed.py: the register models resize with antialias

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.img_size < 1:
            raise ValueError(f"img_size must be >= 1, got {self.img_size}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size={self.img_size} is not a multiple of patch_size={self.patch_size}")

    @property
    def grid_size(self) -> int:
        """M: side of the stored position-embedding grid (37 for 518 px and patch 14)."""
        return self.img_size // self.patch_size


@dataclass(frozen=True, kw_only=True)
class Dinov3Config(BackboneConfig):
    """Every architectural choice of a DINOv3 ViT backbone, as plain values (SPEC.md section 8).

    What differs from DINOv2 is data here: patch 16, 4 storage tokens, LayerNorm eps 1e-5,
    LayerScale starting at 1e-5, rotary positions (`rope_base`) instead of a stored position
    embedding, the masked key bias, and the satellite models' extra `local_cls_norm`.

    Examples:
        >>> c = minidino.get_config("dinov3_vitl16")
        >>> c.patch_size, c.num_register_tokens, c.rope_base, c.mask_k_bias, c.local_cls_norm
        (16, 4, 100.0, True, False)
        >>> minidino.catalogue.lookup("dinov3_vitl16").weights_named("SAT493M").config   # the SAT weights add a norm
        {'local_cls_norm': True}
    """

    patch_size: int = 16
    num_register_tokens: int = 4  # the official "storage tokens"
    layer_norm_eps: float = 1e-5
    layerscale_init: float = 1e-5
    rope_base: float = 100.0  # RoPE periods: rope_base ** (2k / (hd / 2)), k = 0 .. hd/4 - 1 (see rope.py)
    mask_k_bias: bool = True  # qkv bias multiplied by the bias_mask buffer (1 for q, 0 for k, 1 for v)
    local_cls_norm: bool = False  # SAT ViT-L and every 7B: one more LayerNorm, used only in training

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head_dim % 4:
            raise ValueError(f"head dim {self.head_dim} (embed_dim / num_heads) must be a multiple of 4 for the "
                             "rotary position embedding (2 axes x 2 halves)")
        if not self.rope_base > 0:
            raise ValueError(f"rope_base must be > 0, got {self.rope_base}")


def closest_names(name: str, choices: list[str], n: int = 3) -> list[str]:
    """Up to n of `choices` that look like `name` (for "did you mean" in error messages).

    Examples:
        >>> closest_names("dinov2_vits14_rg", ["dinov2_vits14", "dinov2_vits14_reg", "dinov2_vitb14"])
        ['dinov2_vits14_reg', 'dinov2_vits14', 'dinov2_vitb14']
    """
    return difflib.get_close_matches(name, choices, n=n, cutoff=0.5)


# ---------------------------------------------------------------------------- value ranges
MAX_WIDTH = 2**20  # no width, patch or token count of a sane model comes near; beyond it sizes overflow


def check_ranges(config: Any) -> None:
    """The ranges of a backbone config's values (any family: a field the config lacks is skipped).
    Values that build a model but give NaN (an eps <= 0), a crash (a negative interpolation offset
    shrinks the resized grid to nothing) or petabytes (an offset of 1e6 grows it) are refused here,
    naming the field, for the API, --config and inferred configs alike. A count of blocks (depth) has
    no bound here: the memory estimate of the command line bounds it.

    Examples:
        >>> minidino.get_config("dinov2_vits14").replace(interpolate_offset=-20.0)
        Traceback (most recent call last):
        ...
        ValueError: config field interpolate_offset must be in [0, 1), got -20.0
    """
    check_range(config, "layer_norm_eps", 0.0, 1.0, low_open=True)
    if hasattr(config, "interpolate_offset"):
        check_range(config, "interpolate_offset", 0.0, 1.0, high_open=True)
    for field in ("embed_dim", "num_heads", "ffn_hidden_dim", "patch_size", "in_chans", "img_size",
                  "num_register_tokens"):
        if hasattr(config, field):
            check_range(config, field, high=MAX_WIDTH)
    if getattr(config, "img_size", config.patch_size) < config.patch_size:
        raise ValueError(f"config field patch_size={config.patch_size} is larger than img_size={config.img_size}")


def check_range(config: Any, field: str, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> None:
    """ValueError naming `field` unless low <= value <= high (strict where `low_open` / `high_open`).

    Examples:
        >>> minidino.get_config("dinov2_vits14").replace(layer_norm_eps=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: config field layer_norm_eps must be in (0, 1], got -1.0
    """
    value = getattr(config, field)
    if (low is not None and (value <= low if low_open else value < low)) or \
            (high is not None and (value >= high if high_open else value > high)):
        lo, hi = (f"{v:g}" if isinstance(v, float) else str(v) for v in (low, high))
        if low is not None and high is not None:
            span = f"in {'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"
        elif low is not None:
            span = f"{'>' if low_open else '>='} {lo}"
        else:
            span = f"{'<' if high_open else '<='} {hi}"
        raise ValueError(f"config field {field} must be {span}, got {value!r}")
