"""Every entry point minidino builds, as data: one row per name.

A row (`Entry`) says everything about a name that is not code: its family, what it is (a
backbone, a classifier, a depther, dino.txt), the backbone architecture it is built on (a
`DinoConfig` or `Dinov3Config`), which builder of minidino.factory assembles it, the head's fixed choices, the
keyword arguments its entry point takes, the published weights (the hub's `weights=` names,
each naming its files under the family's base URL) and the preprocessing those weights expect.

`create_model`, `list_models`, hubconf.py, the pretrained-weights loader and the command line
all read this table and nothing else: adding an entry point is one row here (plus, for a new
architecture, its module under models/ or heads/). The SHA-256 pins of the files live beside
the downloader (weights/checkpoints.json), keyed by the paths named here.

    entry = lookup("dinov2_vitb14_reg_lc")
    entry.family, entry.task, entry.backbone      # ('dinov2', 'classifier', 'dinov2_vitb14_reg')
    entry.weights[0].files                        # {'backbone': '...reg4_pretrain.pth', 'linear_head': '...'}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from .models.config import BackboneConfig, DinoConfig, Dinov3Config, closest_names, swiglu_hidden_dim

__all__ = [
    "Entry", "Weights", "Preprocessing", "Family", "FAMILIES", "CATALOGUE", "lookup", "list_models", "get_config",
    "backbone_entries", "task_of", "IMAGENET", "SATELLITE", "DINOTXT", "file_hash",
]

Task = Literal["backbone", "classifier", "depther", "dinotxt"]


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """How images were prepared for these weights: RGB in [0, 1], minus `mean`, over `std`; for
    classification, the shorter side resized to `resize` (bicubic) and a centre crop of `crop`.

    Examples:
        >>> p = lookup("dinov2_vits14").default_weights.preprocessing
        >>> p.mean, p.resize, p.crop
        ((0.485, 0.456, 0.406), 256, 224)
    """

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize: int = 256
    crop: int = 224


IMAGENET = Preprocessing()  # every DINOv2 weight set, and DINOv3's LVD-1689M
# DINOv3's SAT-493M (satellite) weights: their own statistics (the official README's transform).
SATELLITE = Preprocessing(mean=(0.430, 0.411, 0.296), std=(0.213, 0.156, 0.143))


@dataclass(frozen=True, kw_only=True)
class Weights:
    """One published set of weights of an entry point: the hub's `weights=` value and its files.

    `files` maps each part of the model to its file's path under the family's base URL. In a
    linear head's path, `{layers}` stands for "4" with layers=4 and "" with layers=1, as the
    official file names have it (..._linear4_head.pth, ..._linear_head.pth).

    Examples:
        >>> [(w.name, w.files["decode_head"]) for w in lookup("dinov2_vitb14_dd").weights]
        [('NYU', 'dinov2_vitb14/dinov2_vitb14_nyu_dpt_head.pth'), ('KITTI', 'dinov2_vitb14/dinov2_vitb14_kitti_dpt_head.pth')]
    """

    name: str  # e.g. "LVD142M", "IMAGENET1K", "NYU", "SAT493M"
    files: Mapping[str, str]  # part -> path: "backbone", "linear_head", "decode_head", "vision_head", "text_encoder", "vocabulary"
    preprocessing: Preprocessing = IMAGENET
    config: Mapping[str, Any] = field(default_factory=dict)  # the architecture these weights need (config overrides)


@dataclass(frozen=True, kw_only=True)
class Family:
    """What the entry points of one family share: where their files are and under which licence.

    Examples:
        >>> FAMILIES["dinov2"].base_url, FAMILIES["dinov2"].weights_license
        ('https://dl.fbaipublicfiles.com/dinov2', 'Apache-2.0')
        >>> FAMILIES["dinov3"].base_url is None, FAMILIES["dinov3"].weights_license
        (True, 'DINOv3 License')
    """

    base_url: str | None  # None: no public URL (gated weights); `access` says how to get them
    weights_license: str
    access: str = ""


FAMILIES: Mapping[str, Family] = MappingProxyType({
    "dinov2": Family(base_url="https://dl.fbaipublicfiles.com/dinov2", weights_license="Apache-2.0"),
    # The DINOv3 weights are gated: a request form, then an e-mail with signed URLs that expire.
    "dinov3": Family(
        base_url=None, weights_license="DINOv3 License",
        access="Request access at https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/ (the DINOv3 "
               "License), then pass the signed URL or the downloaded file: create_model(name, pretrained=True, "
               "weights=URL) or create_model(name, pretrained=PATH); on the command line, --weights URL or PATH."),
})


def file_hash(filename: str) -> str | None:
    """The 8 hex digits a file name carries before `.pth` (`...-08c60483.pth`): the start of the file's
    SHA-256, as torch.hub names files; None when the name carries none.

    Examples:
        >>> file_hash("dinov3_vits16_pretrain_lvd1689m-08c60483.pth"), file_hash("dinov2_vits14_pretrain.pth")
        ('08c60483', None)
    """
    m = re.search(r"-([0-9a-f]{8})\.pth$", filename.rsplit("/", 1)[-1])
    return m.group(1) if m else None


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One entry point: everything about a name that is data, not code.

    Examples:
        >>> e = lookup("dinov2_vits14_ld")
        >>> e.family, e.task, e.backbone, e.options, e.head["blocks"][4]
        ('dinov2', 'depther', 'dinov2_vits14', {'layers': (4, 1)}, (2, 5, 8, 11))
        >>> e.weights_named("kitti").name, e.config.embed_dim
        ('KITTI', 384)
    """

    name: str
    family: str  # a key of FAMILIES
    task: Task  # also the builder of minidino.factory that assembles it
    backbone: str  # the backbone entry this one is built on (its own name for a backbone)
    config: BackboneConfig  # the backbone's architecture (DinoConfig, Dinov3Config); overrides replace its fields
    summary: str  # one line, for list_models' users, hubconf's docstrings and `minidino info`
    weights: tuple[Weights, ...]  # the published weights; the first is the default of `weights=`
    head: Mapping[str, Any] = field(default_factory=dict)  # the head's fixed choices (kind, blocks per `layers`, ...)
    options: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # entry-point keywords -> allowed values, default first
    aliases: tuple[str, ...] = ()  # other names that build the same thing
    hub_weights: bool = True  # whether the official entry point takes `weights=` (dino.txt's does not)

    @property
    def default_weights(self) -> Weights:
        return self.weights[0]

    def weights_named(self, name: Any) -> Weights:
        """The weight set called `name` (a string or an official enum member, any case).

        Examples:
            >>> lookup("dinov3_vitl16").weights_named("sat493m").preprocessing.mean
            (0.43, 0.411, 0.296)
        """
        key = str(getattr(name, "name", name)).upper()
        for w in self.weights:
            if w.name == key:
                return w
        what = ("depth weights", "heads") if self.task == "depther" else ("weights", "ones")
        raise ValueError(f"unknown {what[0]} {name!r} for {self.name}; the published {what[1]} are "
                         f"{', '.join(w.name for w in self.weights)}")

    def weights_of_file(self, source: str) -> Weights:
        """The weight set a file or URL holds, by the SHA-256 prefix its name carries (`-eadcf0ff.pth`
        is the satellite ViT-L, as the official hub decides); the default set when it names none.

        Examples:
            >>> e = lookup("dinov3_vitl16")
            >>> e.weights_of_file("/data/dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth").name
            'SAT493M'
            >>> e.weights_of_file("https://example.org/my_finetune.pth?sig=abc").name
            'LVD1689M'
        """
        digest = file_hash(source.split("?", 1)[0])
        for w in self.weights:
            if digest is not None and any(file_hash(path) == digest for path in w.files.values()):
                return w
        return self.default_weights


# ---------------------------------------------------------------------------------------------- DINOv2
def _dinov2(embed_dim: int, depth: int, num_heads: int, registers: bool, ffn_layer: str = "mlp") -> DinoConfig:
    """A DINOv2 backbone (SPEC.md section 1): the register models also switch the position-embedding
    resize to a plain antialiased one (offset 0)."""
    hidden = swiglu_hidden_dim(embed_dim) if ffn_layer == "swiglu" else 4 * embed_dim
    return DinoConfig(
        embed_dim=embed_dim, depth=depth, num_heads=num_heads, ffn_layer=ffn_layer,  # type: ignore[arg-type]
        ffn_hidden_dim=hidden, num_register_tokens=4 if registers else 0,
        interpolate_offset=0.0 if registers else 0.1, interpolate_antialias=registers,
    )


def _pretrain(name: str) -> str:
    """Path of a DINOv2 backbone's pretrain file: dinov2_vitb14_reg -> dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth."""
    base = name.removesuffix("_reg")
    return f"{base}/{_full(name)}_pretrain.pth"


def _full(name: str) -> str:
    """The official files' stem: the hub name, with `_reg` spelled `_reg4`."""
    return name.removesuffix("_reg") + ("_reg4" if name.endswith("_reg") else "")


def _backbone(name: str, config: DinoConfig, summary: str) -> Entry:
    return Entry(name=name, family="dinov2", task="backbone", backbone=name, config=config, summary=summary,
                 weights=(Weights(name="LVD142M", files={"backbone": _pretrain(name)}),))


def _architecture(backbone: Entry) -> str:
    """'DINOv2 ViT-S/14 with 4 registers' from its summary (without the size and the training set)."""
    return backbone.summary.split(", pretrained")[0].split(" (")[0]


def _classifier(backbone: Entry) -> Entry:
    """The hub's `*_lc`: the backbone with its ImageNet-1k linear head (layers=4 by default)."""
    b = backbone.name
    head = f"{b.removesuffix('_reg')}/{_full(b)}_linear{{layers}}_head.pth"
    return Entry(name=b + "_lc", family="dinov2", task="classifier", backbone=b, config=backbone.config,
                 summary=f"{_architecture(backbone)} with its ImageNet-1k linear classifier",
                 weights=(Weights(name="IMAGENET1K", files={"backbone": _pretrain(b), "linear_head": head}),),
                 options={"layers": (4, 1)})


# Which blocks feed a depth head, per `layers` (the hub's choice: 4 evenly spaced blocks ending with the
# last, or the last alone). The DPT heads always take the 4.
_DEPTH_BLOCKS = {"dinov2_vits14": {1: (11,), 4: (2, 5, 8, 11)}, "dinov2_vitb14": {1: (11,), 4: (2, 5, 8, 11)},
                 "dinov2_vitl14": {1: (23,), 4: (4, 11, 17, 23)}, "dinov2_vitg14": {1: (39,), 4: (9, 19, 29, 39)}}


def _depther(backbone: Entry, kind: Literal["linear", "dpt"]) -> Entry:
    """The hub's `*_ld` (linear bins head, layers=4|1) and `*_dd` (DPT head), NYU or KITTI weights."""
    b = backbone.name
    head = "linear{layers}" if kind == "linear" else "dpt"
    weights = tuple(Weights(name=w, files={"backbone": _pretrain(b), "decode_head": f"{b}/{b}_{w.lower()}_{head}_head.pth"})
                    for w in ("NYU", "KITTI"))
    what = "a linear depth head (bins) on 4 layers (or 1)" if kind == "linear" else "a DPT depth head on 4 layers"
    return Entry(name=b + ("_ld" if kind == "linear" else "_dd"), family="dinov2", task="depther", backbone=b,
                 config=backbone.config, summary=f"{_architecture(backbone)} with {what}, NYU Depth v2 or KITTI",
                 weights=weights, head={"kind": kind, "blocks": _DEPTH_BLOCKS[b]},
                 options={"layers": (4, 1)} if kind == "linear" else {})


_DINOV2 = [
    _backbone("dinov2_vits14", _dinov2(384, 12, 6, False), "DINOv2 ViT-S/14 (21M parameters), pretrained on LVD-142M"),
    _backbone("dinov2_vitb14", _dinov2(768, 12, 12, False), "DINOv2 ViT-B/14 (86M parameters), pretrained on LVD-142M"),
    _backbone("dinov2_vitl14", _dinov2(1024, 24, 16, False), "DINOv2 ViT-L/14 (300M parameters), pretrained on LVD-142M"),
    _backbone("dinov2_vitg14", _dinov2(1536, 40, 24, False, "swiglu"),
              "DINOv2 ViT-g/14 (1.1B parameters), pretrained on LVD-142M"),
    _backbone("dinov2_vits14_reg", _dinov2(384, 12, 6, True), "DINOv2 ViT-S/14 with 4 registers, pretrained on LVD-142M"),
    _backbone("dinov2_vitb14_reg", _dinov2(768, 12, 12, True), "DINOv2 ViT-B/14 with 4 registers, pretrained on LVD-142M"),
    _backbone("dinov2_vitl14_reg", _dinov2(1024, 24, 16, True), "DINOv2 ViT-L/14 with 4 registers, pretrained on LVD-142M"),
    _backbone("dinov2_vitg14_reg", _dinov2(1536, 40, 24, True, "swiglu"),
              "DINOv2 ViT-g/14 with 4 registers, pretrained on LVD-142M"),
]
_BY_NAME = {e.name: e for e in _DINOV2}


# ---------------------------------------------------------------------------------------------- DINOv3
def _dinov3(embed_dim: int, depth: int, num_heads: int, ffn_ratio: float, swiglu: bool, multiple: int = 8,
            qkv_bias: bool = True, local_cls_norm: bool = False) -> Dinov3Config:
    """A DINOv3 ViT (SPEC.md section 8): GELU MLP of width ratio * D, or SwiGLU of 2/3 of it rounded up."""
    hidden = swiglu_hidden_dim(embed_dim, ffn_ratio, multiple) if swiglu else int(embed_dim * ffn_ratio)
    return Dinov3Config(embed_dim=embed_dim, depth=depth, num_heads=num_heads, ffn_layer="swiglu" if swiglu else "mlp",
                        ffn_hidden_dim=hidden, qkv_bias=qkv_bias, local_cls_norm=local_cls_norm)


def _dinov3_backbone(name: str, config: Dinov3Config, summary: str, lvd: str, sat: str | None = None) -> Entry:
    """A DINOv3 ViT row: its LVD-1689M file and, for ViT-L and 7B, its SAT-493M one, as the official hub
    names them (the 8 hex digits start the file's SHA-256). The satellite ViT-L adds local_cls_norm
    (the 7B always has it), also with pretrained=False, as the official hub builds it."""
    weights = [Weights(name="LVD1689M", files={"backbone": f"{name}/{name}_pretrain_lvd1689m-{lvd}.pth"})]
    if sat is not None:
        weights.append(Weights(name="SAT493M", files={"backbone": f"{name}/{name}_pretrain_sat493m-{sat}.pth"},
                               preprocessing=SATELLITE, config={"local_cls_norm": True}))
    return Entry(name=name, family="dinov3", task="backbone", backbone=name, config=config, summary=summary,
                 weights=tuple(weights))


_DINOV3 = [
    _dinov3_backbone("dinov3_vits16", _dinov3(384, 12, 6, 4.0, False),
                     "DINOv3 ViT-S/16 distilled (21M parameters), pretrained on LVD-1689M", "08c60483"),
    _dinov3_backbone("dinov3_vits16plus", _dinov3(384, 12, 6, 6.0, True),
                     "DINOv3 ViT-S+/16 distilled (29M parameters, SwiGLU), pretrained on LVD-1689M", "4057cbaa"),
    _dinov3_backbone("dinov3_vitb16", _dinov3(768, 12, 12, 4.0, False),
                     "DINOv3 ViT-B/16 distilled (86M parameters), pretrained on LVD-1689M", "73cec8be"),
    _dinov3_backbone("dinov3_vitl16", _dinov3(1024, 24, 16, 4.0, False),
                     "DINOv3 ViT-L/16 distilled (300M parameters), pretrained on LVD-1689M or SAT-493M", "8aa4cbdd",
                     sat="eadcf0ff"),
    _dinov3_backbone("dinov3_vitl16plus", _dinov3(1024, 24, 16, 6.0, True),
                     "DINOv3 ViT-L+/16 distilled (404M parameters, SwiGLU), pretrained on LVD-1689M", "46503df0"),
    _dinov3_backbone("dinov3_vith16plus", _dinov3(1280, 32, 20, 6.0, True),
                     "DINOv3 ViT-H+/16 distilled (841M parameters, SwiGLU), pretrained on LVD-1689M", "7c1da9a5"),
    _dinov3_backbone("dinov3_vit7b16", _dinov3(4096, 40, 32, 3.0, True, multiple=64, qkv_bias=False, local_cls_norm=True),
                     "DINOv3 ViT-7B/16 (6.7B parameters, SwiGLU, no qkv bias), pretrained on LVD-1689M or SAT-493M",
                     "a955f4ea", sat="a6675841"),
]

DINOTXT = "dinov2_vitl14_reg4_dinotxt_tet1280d20h24l"  # dino.txt: ViT-L/14 reg4 (frozen) + a 24-layer text encoder

# The table, in the order list_models() gives it.
CATALOGUE: Mapping[str, Entry] = MappingProxyType({e.name: e for e in [
    *_DINOV2,
    *_DINOV3,
    *(_classifier(b) for b in _DINOV2),
    Entry(name=DINOTXT, family="dinov2", task="dinotxt", backbone="dinov2_vitl14_reg",
          config=_BY_NAME["dinov2_vitl14_reg"].config, aliases=("dinotxt", "dinov2_dinotxt"), hub_weights=False,
          summary="dino.txt: ViT-L/14 with registers (frozen) + vision head, aligned with a 24-layer text encoder",
          weights=(Weights(name="LVD142M", files={
              "backbone": _pretrain("dinov2_vitl14_reg"),
              "vision_head": f"dinov2_vitl14/{DINOTXT}_vision_head.pth",
              "text_encoder": f"dinov2_vitl14/{DINOTXT}_text_encoder.pth",
              "vocabulary": "thirdparty/bpe_simple_vocab_16e6.txt.gz",  # CLIP's, for minidino.tokenize
          }),)),
    *(_depther(_BY_NAME[b], "linear") for b in _DEPTH_BLOCKS),
    *(_depther(_BY_NAME[b], "dpt") for b in _DEPTH_BLOCKS),
]})
_ALIASES = {alias: e.name for e in CATALOGUE.values() for alias in e.aliases}


def lookup(name: str) -> Entry:
    """The row of a name or alias; an unknown name is a ValueError with the closest names.

    Examples:
        >>> lookup("dinotxt").name
        'dinov2_vitl14_reg4_dinotxt_tet1280d20h24l'
        >>> lookup("dinov2_vitb14_dd").head["kind"], lookup("dinov2_vitb14_dd").backbone
        ('dpt', 'dinov2_vitb14')
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    name = _ALIASES.get(name, name)
    if name in CATALOGUE:
        return CATALOGUE[name]
    hint = closest_names(name, list(CATALOGUE) + list(_ALIASES))
    raise ValueError(
        f"unknown model name {name!r}"
        + (f"; did you mean {', '.join(map(repr, hint))}?" if hint else "")
        + f" Known models: {', '.join(CATALOGUE)}"
    )


def list_models(include_classifiers: bool = True, include_depthers: bool = True, *, family: str | None = None) -> list[str]:
    """The names minidino builds: the backbones (DINOv2's, then DINOv3's), then (unless
    include_classifiers=False) the models with heads: the `*_lc` classifiers and dino.txt; then the
    `*_ld`/`*_dd` depthers. `family` keeps one family ("dinov2" or "dinov3").

    Examples:
        >>> minidino.list_models()[:3]
        ['dinov2_vits14', 'dinov2_vitb14', 'dinov2_vitl14']
        >>> len(minidino.list_models()), len(minidino.list_models(include_depthers=False))
        (32, 24)
        >>> len(minidino.list_models(False, False)), minidino.list_models(family="dinov3")[-1]
        (15, 'dinov3_vit7b16')
    """
    keep = {"backbone"} | ({"classifier", "dinotxt"} if include_classifiers else set()) | ({"depther"} if include_depthers else set())
    return [e.name for e in CATALOGUE.values() if e.task in keep and (family is None or e.family == family)]


def task_of(name: str) -> str | None:
    """The task of a name ("backbone", "classifier", "depther", "dinotxt"), None for an unknown name.

    Examples:
        >>> task_of("dinotxt"), task_of("dinov2_vitb14_ld"), task_of("no_such_model")
        ('dinotxt', 'depther', None)
    """
    name = _ALIASES.get(name, name) if isinstance(name, str) else name
    entry = CATALOGUE.get(name) if isinstance(name, str) else None
    return entry.task if entry is not None else None


def backbone_entries(family: str | None = None) -> list[Entry]:
    """The rows of the backbones (of one family, if given), in catalogue order.

    Examples:
        >>> [e.name for e in backbone_entries("dinov2")][:2]
        ['dinov2_vits14', 'dinov2_vitb14']
    """
    return [e for e in CATALOGUE.values() if e.task == "backbone" and (family is None or e.family == family)]


def get_config(name: str) -> BackboneConfig:
    """The backbone config of a name (a classifier, depther or dino.txt gives its backbone's): a
    DinoConfig for DINOv2, a Dinov3Config for DINOv3.

    Examples:
        >>> c = minidino.get_config("dinov2_vitb14_reg")
        >>> c.embed_dim, c.depth, c.num_heads, c.num_register_tokens
        (768, 12, 12, 4)
    """
    return lookup(name).config
