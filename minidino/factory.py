"""create_model: a catalogue row and the caller's keywords -> a built model, weights loaded if asked.

    spec = resolve("dinov2_vitb14_ld", layers=1, weights="KITTI", depth=4)   # checked, nothing built
    model = build(spec, device="meta")                                       # the modules, no memory
    model = create_model("dinov2_vitb14_ld", layers=1, weights="KITTI")      # both, initialised, eval mode

`resolve` splits the keywords into the entry point's own (`weights=`, `layers=`, `depth_range=`,
`cache_dir=`) and config overrides, and checks them all before anything is allocated; the command
line runs it alone to refuse bad options in milliseconds. `build` dispatches on the row's task to
one small builder per kind of model. Data flows one way: catalogue -> models, heads -> here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .catalogue import Entry, Weights, lookup
from .heads import Depther, DinoTxt, DinoTxtConfig, LinearClassifier
from .heads.depth_config import depth_config
from .models.config import DinoConfig
from .models.dinov2 import DinoVisionTransformer
from .weights.pretrained import load_pretrained

__all__ = ["Spec", "resolve", "build", "create_model", "vision_backbone"]

Model = DinoVisionTransformer | LinearClassifier | Depther | DinoTxt


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
    config: DinoConfig  # the backbone's, overrides applied
    weights: Weights  # the published set named by `weights=` (the default one if not given)
    head: dict[str, Any] = field(default_factory=dict)  # layers=, depth_range=, dino.txt fields
    cache_dir: Any = None  # where pretrained=True downloads go (else $MINIDINO_HOME)


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
    weights = entry.weights_named(kwargs.pop("weights")) if "weights" in kwargs else entry.default_weights
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
    config = entry.config.replace(**kwargs)
    spec = Spec(entry=entry, config=config, weights=weights, head=head, cache_dir=cache_dir)
    if entry.task == "depther":  # the head's own checks (range, layers), before anything is built
        _depth_config(spec)
    elif entry.task == "dinotxt":
        DinoTxtConfig().replace(**head)
    return spec


def _depth_config(spec: Spec) -> Any:
    e = spec.entry
    return depth_config(e.head["blocks"], e.head["kind"], spec.config.embed_dim, layers=spec.head.get("layers", 4),
                        weights=spec.weights.name, depth_range=spec.head["depth_range"])


def _backbone(spec: Spec, **factory: Any) -> DinoVisionTransformer:
    return DinoVisionTransformer(spec.config, **factory)


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
    """Build a model by name: one of the 8 backbones, a `*_lc` classifier (`layers=1|4`, default 4),
    a depther (`*_ld`: `layers=1|4`, default 4; `*_dd`), with `weights="NYU"|"KITTI"` (default
    NYU) and `depth_range=(min, max)` in metres as in the hub (see minidino.heads.depth), or
    dino.txt (`dinov2_vitl14_reg4_dinotxt_tet1280d20h24l`, short `dinotxt`; its overrides are
    DinoTxtConfig fields such as text_layers=2, or backbone fields such as depth=2). Every name
    and its keywords are rows of minidino.catalogue.

    overrides replace config fields (e.g. depth=4 builds the first 4 blocks); an unknown field
    is a TypeError. device="meta" builds without allocating memory (weights are then loaded
    with `load_state_dict(..., assign=True)`). pretrained=False gives the official random init;
    True downloads the published files of `weights=`; a path, URL or state dict loads that.

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=2)       # random init, first 2 blocks
        >>> tuple(model(torch.randn(1, 3, 224, 224)).shape)              # (B, D) class token
        (1, 384)
        >>> clf = minidino.create_model("dinov2_vits14_lc", layers=1, depth=1)
        >>> tuple(clf(torch.randn(1, 3, 28, 28)).shape)                  # (B, 1000) ImageNet logits
        (1, 1000)
        >>> big = minidino.create_model("dinov2_vitg14", device="meta")  # no memory allocated
    """
    spec = resolve(name, **overrides)
    model = build(spec, device=device, dtype=dtype)
    if device is None or torch.device(device).type != "meta":
        model.init_weights()  # type: ignore[operator]
    if pretrained is not False and pretrained is not None:
        load_pretrained(model, spec.entry, spec.weights, pretrained, layers=spec.head.get("layers"), cache_dir=spec.cache_dir)
    return model.eval()


def vision_backbone(model: nn.Module) -> DinoVisionTransformer:
    """The DinoVisionTransformer inside a model: itself, a head's `.backbone`, or dino.txt's vision trunk.

    Examples:
        >>> clf = minidino.create_model("dinov2_vits14_lc", depth=1, device="meta")
        >>> vision_backbone(clf) is clf.backbone
        True
    """
    if isinstance(model, DinoVisionTransformer):
        return model
    inner = getattr(model, "backbone", None)
    if isinstance(inner, DinoVisionTransformer):
        return inner
    return next(m for m in model.modules() if isinstance(m, DinoVisionTransformer))
