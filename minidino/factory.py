"""create_model: a catalogue row and the caller's keywords -> a built model, weights loaded if asked.

    spec = resolve("dinov2_vitb14_ld", layers=1, weights="KITTI", depth=4)   # checked, nothing built
    model = build(spec, device="meta")                                       # the modules, no memory
    model = create_model("dinov2_vitb14_ld", layers=1, weights="KITTI")      # both, initialised, eval mode

`resolve` splits the keywords into the entry point's own (`weights=`, `layers=`, `depth_range=`,
`cache_dir=`, `check_hash=`) and config overrides, and checks them all before anything is allocated; the command
line runs it alone to refuse bad options in milliseconds. `build` dispatches on the row's task to
one small builder per kind of model. Data flows one way: catalogue -> models, heads -> here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .catalogue import Entry, Weights, lookup
from .heads import Depther, DinoTxt, DinoTxtConfig, LinearClassifier
from .heads.depth_config import depth_config
from .models.backbone import VisionTransformerBase
from .models.config import BackboneConfig
from .models.dinov2 import DinoVisionTransformer
from .models.dinov3 import Dinov3VisionTransformer
from .weights.pretrained import load_pretrained

__all__ = ["Spec", "resolve", "build", "create_model", "vision_backbone", "BACKBONES"]

Model = DinoVisionTransformer | Dinov3VisionTransformer | LinearClassifier | Depther | DinoTxt

# The backbone class of each family (the `family` column of the catalogue).
BACKBONES: dict[str, type[VisionTransformerBase]] = {"dinov2": DinoVisionTransformer, "dinov3": Dinov3VisionTransformer}


@dataclass(frozen=True)
class Spec:
    """Everything create_model decided before building: the row, the backbone config after the
    overrides, the weight set, and the head's keywords.

    Examples:
        >>> spec = resolve("dinov2_vitb14_dd", weights="KITTI", depth=4)
        >>> spec.entry.name, spec.weights.name, spec.config.depth, spec.head
        ('dinov2_vitb14_dd', 'KITTI', 4, {'depth_range': None})
    """

    entry: Entry
    config: BackboneConfig  # the backbone's, overrides applied
    weights: Weights  # the published set named by `weights=` (the default one if not given)
    head: dict[str, Any] = field(default_factory=dict)  # layers=, depth_range=, dino.txt fields
    cache_dir: Any = None  # where pretrained=True downloads go (else $MINIDINO_HOME)
    source: str | None = None  # a file or URL given as `weights=`: what pretrained=True loads
    check_hash: bool = True  # check the SHA-256 prefix a file name carries (`-08c60483.pth`)


# Why a keyword the row does not take is refused, by task (the messages users have seen before).
_NO_LAYERS = {
    "backbone": "'layers' only applies to the *_lc classifiers; {name!r} is a backbone",
    "depther": "'layers' applies to the linear depthers (*_ld); {name!r} (DPT) always takes 4 layers",
    "dinotxt": "'layers' does not apply to dino.txt ({name!r})",
}


def resolve(name: str, **kwargs: Any) -> Spec:
    """Check a name and its keywords without building anything (see the module docstring).

    Examples:
        >>> spec = resolve("dinov2_vits14_lc", layers=1, depth=2)
        >>> spec.entry.task, spec.config.depth, spec.head
        ('classifier', 2, {'layers': 1})
        >>> resolve("dinov2_vits14", layers=1)
        Traceback (most recent call last):
        ...
        TypeError: 'layers' only applies to the *_lc classifiers; 'dinov2_vits14' is a backbone
    """
    entry = lookup(name)
    kwargs = dict(kwargs)
    cache_dir = kwargs.pop("cache_dir", None)
    check_hash = kwargs.pop("check_hash", True)
    if not isinstance(check_hash, bool):
        raise TypeError(f"check_hash must be True or False, got {check_hash!r}")
    weights, source = _weights(entry, kwargs.pop("weights", None))
    head: dict[str, Any] = {}
    for option, allowed in entry.options.items():
        value = kwargs.pop(option, allowed[0])
        if value not in allowed or isinstance(value, bool):
            raise ValueError(f"{option} must be {' or '.join(map(str, sorted(allowed)))} (the published heads), got {value!r}")
        head[option] = value
    if "layers" in kwargs:
        raise TypeError(_NO_LAYERS.get(entry.task, "{name!r} takes no 'layers'").format(name=name))
    if entry.task == "depther":
        head["depth_range"] = kwargs.pop("depth_range", None)
    if entry.task == "dinotxt":
        # DinoTxtConfig fields go to the dino.txt config (embed_dim there is the joint width E); other
        # names are backbone fields (depth=2), and "vision_" + a backbone field reaches one whose name
        # dino.txt also uses (vision_embed_dim=64 makes a narrow backbone; then give embed_dim=128 too).
        text_fields = {f.name for f in dataclasses.fields(DinoTxtConfig)}
        head = {k: kwargs.pop(k) for k in list(kwargs) if k in text_fields}
        kwargs = {k.removeprefix("vision_"): v for k, v in kwargs.items()}
    config = entry.config.replace(**{**weights.config, **kwargs})  # the weights' architecture, then the overrides
    spec = Spec(entry=entry, config=config, weights=weights, head=head, cache_dir=cache_dir, source=source,
                check_hash=check_hash)
    if entry.task == "depther":  # the head's own checks (range, layers), before anything is built
        _depth_config(spec)
    elif entry.task == "dinotxt":
        DinoTxtConfig().replace(**head)
    return spec


def _weights(entry: Entry, value: Any) -> tuple[Weights, str | None]:
    """`weights=`: a published set's name (or the official enum member), or a file path or URL (a
    string that is not a set's name), which also picks the set whose file name it carries (the
    satellite ViT-L: `-eadcf0ff.pth`). A bare word that is neither is an unknown set's name."""
    if value is None:
        return entry.default_weights, None
    names = {w.name for w in entry.weights}
    is_file = isinstance(value, os.PathLike) or (
        isinstance(value, str) and value.upper() not in names
        and (any(c in value for c in "/\\.") or os.path.exists(value)))
    if is_file:
        source = os.fspath(value)
        return entry.weights_of_file(source), source
    return entry.weights_named(value), None


def _depth_config(spec: Spec) -> Any:
    e = spec.entry
    return depth_config(e.head["blocks"], e.head["kind"], spec.config.embed_dim, layers=spec.head.get("layers", 4),
                        weights=spec.weights.name, depth_range=spec.head["depth_range"])


def _backbone(spec: Spec, **factory: Any) -> VisionTransformerBase:
    return BACKBONES[spec.entry.family](spec.config, **factory)


def _classifier(spec: Spec, **factory: Any) -> LinearClassifier:
    return LinearClassifier(_backbone(spec, **factory), layers=spec.head["layers"], **factory)


def _depther(spec: Spec, **factory: Any) -> Depther:
    return Depther(_backbone(spec, **factory), _depth_config(spec), **factory)


def _dinotxt(spec: Spec, **factory: Any) -> DinoTxt:
    return DinoTxt(DinoTxtConfig().replace(**spec.head), spec.config, **factory)


# One builder per task (the `task` column of the catalogue).
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "backbone": _backbone, "classifier": _classifier, "depther": _depther, "dinotxt": _dinotxt,
}


def build(spec: Spec, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Model:
    """The modules of a resolved spec with uninitialised memory (none at all on the meta device).

    Examples:
        >>> model = build(resolve("dinov2_vitg14_lc"), device="meta")     # ViT-g/14 and its head: no memory
        >>> type(model).__name__, model.layers, model.backbone.config.depth
        ('LinearClassifier', 4, 40)
    """
    return BUILDERS[spec.entry.task](spec, device=device, dtype=dtype)  # type: ignore[return-value]


def create_model(
    name: str,
    *,
    pretrained: bool | str | Any = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    **overrides: Any,
) -> Model:
    """Build a model by name: one of the 15 backbones (8 DINOv2, 7 DINOv3), a `*_lc` classifier (`layers=1|4`, default 4),
    a depther (`*_ld`: `layers=1|4`, default 4; `*_dd`), with `weights="NYU"|"KITTI"` (default
    NYU) and `depth_range=(min, max)` in metres as in the hub (see minidino.heads.depth), or
    dino.txt (`dinov2_vitl14_reg4_dinotxt_tet1280d20h24l`, short `dinotxt`; its overrides are
    DinoTxtConfig fields such as text_layers=2, or backbone fields such as depth=2). Every name
    and its keywords are rows of minidino.catalogue.

    overrides replace config fields (e.g. depth=4 builds the first 4 blocks); an unknown field
    is a TypeError. device="meta" builds without allocating memory (weights are then loaded
    with `load_state_dict(..., assign=True)`). pretrained=False gives the official random init;
    True downloads the published files of `weights=`; a path, URL or state dict loads that.
    `weights=` is a published set (e.g. "LVD142M"; DINOv3: "LVD1689M" or "SAT493M", whose
    satellite ViT-L has one more norm) or, as the official DINOv3 hub takes it, a file path or
    URL: pretrained=True then loads that file. A file name ending in `-<8 hex>.pth` must match
    the start of the file's SHA-256 (check_hash=False skips the check).

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=2)       # random init, first 2 blocks
        >>> tuple(model(torch.randn(1, 3, 224, 224)).shape)              # (B, D) class token
        (1, 384)
        >>> clf = minidino.create_model("dinov2_vits14_lc", layers=1, depth=1)
        >>> tuple(clf(torch.randn(1, 3, 28, 28)).shape)                  # (B, 1000) ImageNet logits
        (1, 1000)
        >>> big = minidino.create_model("dinov2_vitg14", device="meta")  # no memory allocated
    """
    if isinstance(pretrained, (str, os.PathLike)) and "weights" not in overrides:
        overrides["weights"] = pretrained  # a file picks its weight set (the satellite ViT-L's architecture) as weights= does
    spec = resolve(name, **overrides)
    model = build(spec, device=device, dtype=dtype)
    if device is None or torch.device(device).type != "meta":
        model.init_weights()  # type: ignore[operator]
    if pretrained is True and spec.source is not None:
        pretrained = spec.source  # weights=PATH|URL: the file to load
    if pretrained is not False and pretrained is not None:
        load_pretrained(model, spec.entry, spec.weights, pretrained, layers=spec.head.get("layers"), cache_dir=spec.cache_dir,
                        check_hash=spec.check_hash)
    return model.eval()


def vision_backbone(model: nn.Module) -> VisionTransformerBase:
    """The ViT backbone inside a model (either family's): itself, a head's `.backbone`, or dino.txt's vision trunk.

    Examples:
        >>> clf = minidino.create_model("dinov2_vits14_lc", depth=1, device="meta")
        >>> vision_backbone(clf) is clf.backbone
        True
    """
    if isinstance(model, VisionTransformerBase):
        return model
    inner = getattr(model, "backbone", None)
    if isinstance(inner, VisionTransformerBase):
        return inner
    return next(m for m in model.modules() if isinstance(m, VisionTransformerBase))
