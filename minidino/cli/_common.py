"""Plumbing shared by the model-using subcommands: model options, building the model, progress.

    add_model_args(parser)       --model, --weights, --random-weights, --config, --device, --dtype
    model = model_from_args(args)
    describe_weights(args)       a one-line label of the weights, for logs and pictures
    args_preprocessing(args)     the mean and std those weights expect (the catalogue's, minidino.cli.weight_sets)
    ProgressBar(...)             (minidino.utils.progress) an images/s counter on stderr

--weights takes `official` (the published checkpoint, downloaded once and verified), a file
path or an http(s) URL, or `random[:SEED]`: weights from the golden-vector generator
(minidino.conformance.golden), random but identical on every machine and made without any download. Random
weights check a pipeline (decoding, shapes, speed, plumbing); they are not DINOv2 features, and
every label says so. Images are normalised with the weights' own mean and std (minidino.cli.weight_sets).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import os
import re
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "add_model_args", "model_from_args", "describe_weights", "weights_spec", "config_overrides", "parse_dtype",
    "resolve_device", "parse_hw", "build_model", "DTYPES", "HelpFormatter", "preflight_model", "estimate_memory", "check_memory",
    "resolve_model", "check_weights_file", "model_size", "ModelSize", "REPEATED", "require_finite", "NOT_FINITE",
    "memory_shortfall", "add_weights_args", "preflight_named", "read_image_batch", "args_preprocessing",
]

DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16", "half": "float16",
          "bfloat16": "bfloat16", "bf16": "bfloat16"}


class HelpFormatter(argparse.HelpFormatter):
    """Wraps description paragraphs (split by blank lines) to the terminal, but keeps paragraphs
    of indented lines (command examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for para in text.split("\n\n"):
            lines = para.splitlines()
            if len(lines) > 1 and all(line.startswith("  ") or line.endswith(":") for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(textwrap.fill(" ".join(para.split()), width, initial_indent=indent, subsequent_indent=indent))
        return "\n\n".join(out)


def add_model_args(parser: argparse.ArgumentParser, *, default_model: str | None = "dinov2_vits14",
                   default_weights: str | None = "official") -> None:
    """Add the model options. A default of None means 'decided by the command' (e.g. from an index file)."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=default_model, metavar="NAME",
                   help="hub name of the model: dinov2_vit{s,b,l,g}14, the same with _reg (registers), "
                        "dinov3_vit{s,s+,b,l,l+,h+,7b}16 (written dinov3_vits16plus, ...); "
                        + (f"default {default_model}" if default_model else "default: see above"))
    g.add_argument("--weights", default=default_weights, metavar="official|PATH|URL|random[:SEED]",
                   help="official: the published checkpoint (downloaded once, checksum-verified, cached in "
                        "$MINIDINO_HOME); PATH or URL: any DINOv2 checkpoint layout (official, Hugging Face, timm, "
                        "training); random[:SEED]: RANDOM weights from the golden-vector generator, offline, for "
                        "checking a pipeline only (not real features). "
                        + (f"Default: {default_weights}" if default_weights else "Default: see above"))
    g.add_argument("--random-weights", action="store_true",
                   help="shorthand for --weights random:0 (RANDOM weights, offline; checks the pipeline, not real features)")
    g.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --config depth=4 (repeatable; fields of minidino.DinoConfig); "
                        "weights=SET names the published set a --weights file holds (e.g. weights=SAT493M)")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps... or auto (CUDA when available; "
                   "under torchrun, the LOCAL_RANK-th GPU)")
    g.add_argument("--dtype", default="float32", choices=sorted(DTYPES), metavar="float32|float16|bfloat16",
                   help="compute dtype of the model and inputs (float16/bfloat16 halve the memory on GPUs)")


def weights_spec(args: argparse.Namespace) -> str:
    """The canonical weights choice: 'official', 'random:SEED', an absolute path or a URL."""
    w = "random:0" if getattr(args, "random_weights", False) else (args.weights or "official")
    if w == "random":
        return "random:0"
    if w.startswith("random:"):
        seed = w.split(":", 1)[1]
        if not seed.isdigit():
            raise SystemExit(f"minidino: --weights random:SEED needs an integer seed, got {w!r}")
        return f"random:{int(seed)}"
    if w == "official" or "://" in w:
        return w
    return os.path.abspath(w)


def args_preprocessing(args: argparse.Namespace, name: str | None = None) -> Any:
    """weight_sets.preprocessing_of the model options: --model (or `name`, a positional MODEL), --weights, --config."""
    from .weight_sets import preprocessing_of

    return preprocessing_of(name or args.model, weights_spec(args), config_overrides(args))


def describe_weights(args: argparse.Namespace) -> str:
    """A one-line label: 'official weights', 'weights: PATH' or a RANDOM WEIGHTS warning; weights that
    expect other statistics than ImageNet's say which set's they are normalised with ('(SAT493M normalisation)')."""
    from .weight_sets import normalisation_note

    spec = weights_spec(args)
    model = str(getattr(args, "model", None) or getattr(args, "name", None) or "")
    if spec.startswith("random:"):
        family = "DINOv3" if model.startswith("dinov3") else "DINOv2"
        label = (f"RANDOM WEIGHTS (golden-vector generator, seed {spec.split(':')[1]}): "
                 f"checks the pipeline, not real {family} features")
    else:
        label = "official weights" if spec == "official" else f"weights: {spec}"
    return label + normalisation_note(model, spec, config_overrides(args))


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word, e.g. ffn_layer=swiglu


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--config KEY=VALUE options as a dict (values parsed as Python literals when they are); or
    `args.overrides` where a command sets it (the config an index names)."""
    if isinstance(getattr(args, "overrides", None), dict):
        return dict(args.overrides)
    out: dict[str, Any] = {}
    for item in getattr(args, "config", None) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"minidino: --config expects KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = _literal(value.strip())
    return out


def parse_hw(text: str, patch: int = 14, *, square: bool = True) -> tuple[int, int]:
    """'224x448' -> (H, W) = (224, 448), both positive multiples of `patch`; with square=True a single
    number S means S x S. Raises ValueError with the message a user should see."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*]\s*(\d+)\s*)?", text)
    if not m or (m.group(2) is None and not square):
        form = "S or HxW (e.g. 224 or 224x448)" if square else "HxW in pixels, e.g. 224x224"
        raise ValueError(f"size must look like {form}; got {text!r}")
    H = int(m.group(1))
    W = int(m.group(2)) if m.group(2) is not None else H
    if H < patch or W < patch or H % patch or W % patch:
        raise ValueError(f"{H}x{W}: both sides must be positive multiples of the patch size {patch}")
    return H, W


def parse_dtype(name: str) -> Any:
    import torch

    try:
        return getattr(torch, DTYPES[name])
    except KeyError:
        raise SystemExit(f"minidino: unknown --dtype {name!r}; choose from {', '.join(sorted(DTYPES))}") from None


def resolve_device(name: str | None) -> Any:
    """--device as a torch.device; a device this machine does not have is a one-line error (status 6)."""
    import torch

    from .errors import EXIT_RESOURCES, EXIT_USAGE, fail

    if name in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        fail(f"minidino: --device {name!r} is not a device name; use cpu, cuda, cuda:N, mps or auto", EXIT_USAGE)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            fail(f"minidino: --device {name}: CUDA is not available on this machine (torch {torch.__version__}); "
                 "use --device cpu or auto", EXIT_RESOURCES)
        if device.index is not None and device.index >= torch.cuda.device_count():
            fail(f"minidino: --device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)", EXIT_RESOURCES)
    elif device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        fail(f"minidino: --device {name}: MPS is not available on this machine; use --device cpu or auto", EXIT_RESOURCES)
    return device


def preflight_model(args: argparse.Namespace) -> Any:
    """Check the model options before any work (no weights read, nothing allocated): the name, the --config
    overrides (their types and ranges), the --dtype, the --device, a --weights file, and that the model fits
    in memory (`check_memory`). Returns the backbone's DinoConfig. Nothing is built, not even on the meta
    device: a --config depth=100000000 is refused in milliseconds."""
    if not getattr(args, "model", None):
        raise SystemExit("minidino: --model is required")
    spec = resolve_model(args.model, config_overrides(args))
    if spec.entry.task == "depther":
        raise SystemExit(f"minidino: {args.model} is a depther: use `minidino depth IMAGES --model {args.model}`")
    parse_dtype(args.dtype)
    resolve_device(args.device)
    check_weights_file(weights_spec(args))
    check_memory(args)  # --config depth=100000 would be killed by the kernel while it is built
    return spec.config


def resolve_model(name: str, overrides: dict[str, Any]) -> Any:
    """minidino.factory.resolve(name, **overrides): every field's type and range checked, and the parts
    checked to fit each other on models of one or two blocks (`model_size`), never the model itself; a
    wrong one is one line (status 2) naming it. Images are RGB: a backbone must take 3 channels."""
    from ..factory import resolve

    try:
        spec = resolve(name, **overrides)
        model_size(name, overrides)  # the parts must fit each other (widths, the blocks a head reads): tiny builds
    except (ValueError, TypeError, KeyError) as e:
        raise SystemExit(f"minidino: {' '.join(str(e).split())}") from None
    if getattr(spec.config, "in_chans", 3) != 3:
        raise SystemExit(f"minidino: --config in_chans={spec.config.in_chans}: the commands read RGB images "
                         "(3 channels)")
    return spec


def check_weights_file(spec: str, option: str = "--weights") -> None:
    """A weights choice naming a local file: the file must exist (checked before any work)."""
    if not spec.startswith("random:") and spec != "official" and "://" not in spec and not os.path.exists(spec):
        raise SystemExit(f"minidino: {option} {spec}: no such file; give an existing checkpoint file, a URL, "
                         "'official' or random[:SEED]")


# Config fields that count identical blocks, and their smallest value: a model's size is linear in each
# of them, so it is measured on models with these at their smallest and one more (see `model_size`).
# A family with another repeated stack adds its field here.
REPEATED = {"depth": 1, "head_blocks": 0, "text_layers": 1}


@dataclass(frozen=True)
class ModelSize:
    """The size of a model from its config alone (see `model_size`)."""

    params: int  # the whole model
    backbone_params: int  # its vision backbone (DinoVisionTransformer)
    small: Any  # the model on the meta device with every repeated stack at its smallest: costs per block
    counts: dict[str, int]  # the real size of each repeated stack
    base: dict[str, int]  # their size in `small`


def model_size(name: str, overrides: dict[str, Any]) -> ModelSize:
    """See `_model_size`; the last few answers are kept (depth checks each image's memory with it)."""
    try:
        return _cached_size(name, tuple(sorted(overrides.items())))
    except TypeError:  # an unhashable --config value (a list): not kept
        return _model_size(name, overrides)


@functools.lru_cache(maxsize=8)
def _cached_size(name: str, overrides: tuple[tuple[str, Any], ...]) -> ModelSize:
    return _model_size(name, dict(overrides))


def _model_size(name: str, overrides: dict[str, Any]) -> ModelSize:
    """Parameters of model `name` with `overrides`, without ever building it: for every repeated stack
    (REPEATED), the model is built on the meta device with the stack at its smallest and with one block
    more, and the difference times the real count is added. A dino.txt of 24 + 24 layers is measured
    on models of 1; a --config depth=100000000 costs what depth=2 costs. Any family of the catalogue."""
    from ..factory import build, resolve, vision_backbone

    spec = resolve(name, **overrides)
    values = dataclasses.asdict(spec.config)  # any family's config dataclass
    if spec.entry.task == "dinotxt":
        from ..heads import DinoTxtConfig

        values.update(dataclasses.asdict(DinoTxtConfig().replace(**spec.head)))
    counts = {f: int(values[f]) for f in REPEATED if f in values}
    blocks = spec.entry.head.get("blocks", {}) if isinstance(spec.entry.head, Mapping) else {}
    base = dict.fromkeys(counts, 0)
    for f in counts:
        least = REPEATED[f]
        if f == "depth" and blocks:  # a head that reads block k needs k + 1 blocks
            least = max(least, 1 + max(max(v) for v in blocks.values()))
        base[f] = min(counts[f], least)
    kept = {k: v for k, v in overrides.items() if k.removeprefix("vision_") not in counts}

    def params(extra: dict[str, int]) -> tuple[int, int, Any]:  # (whole model, its backbone, the model)
        model = build(resolve(name, **{**kept, **base, **extra}), device="meta")
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return count(model), count(vision_backbone(model)), model

    p0, b0, small = params({})
    total, backbone = p0, b0
    for f in counts:
        if counts[f] > base[f]:
            p1, b1, _ = params({f: base[f] + 1})
            total += (counts[f] - base[f]) * (p1 - p0)
            backbone += (counts[f] - base[f]) * (b1 - b0)
    return ModelSize(total, backbone, small, counts, base)


def estimate_memory(args: argparse.Namespace, batch: int = 0, H: int = 224, W: int = 224, *,
                    attention: str = "fused") -> int:
    """Bytes a run of the model options needs, from the config alone (`model_size`, nothing allocated):
    the weights in float32 (built or loaded in float32, then cast), plus, for `batch` images of H x W,
    the inputs, the peak activations of one block and the outputs. attention="explicit" counts the
    attention maps a block materialises when they are asked for (`minidino attention`)."""
    import torch

    from ..factory import vision_backbone
    from ..models.cost import model_cost

    size = model_size(args.model, config_overrides(args))
    total = size.params * 4
    if batch:
        backbone = vision_backbone(size.small)
        cost = model_cost(backbone, H, W)  # the activation peak is that of one block, whatever the depth
        act = cost.act_values_explicit if attention == "explicit" else cost.act_values_fused
        per_value = torch.empty((), dtype=parse_dtype(args.dtype)).element_size()
        total += batch * (3 * H * W + act + 2 * cost.tokens * backbone.config.embed_dim) * per_value
    return int(total)


def memory_shortfall(args: argparse.Namespace, batch: int = 0, H: int = 224, W: int = 224, *,
                     attention: str = "fused") -> str | None:
    """Why a run of `estimate_memory` cannot fit in the memory available now, or None."""
    from ..utils import memory

    device = resolve_device(getattr(args, "device", "cpu"))
    have = memory.available_memory(device)
    if have is None:
        return None
    try:
        need = estimate_memory(args, batch, H, W, attention=attention)
    except (ValueError, TypeError, KeyError) as e:
        raise SystemExit(f"minidino: {' '.join(str(e).split())}") from None
    if need <= have:
        return None
    return (f"needs about {need / 2**30:,.2f} GiB (estimate from its config) but {device.type} has "
            f"{have / 2**30:,.2f} GiB available")


def check_memory(args: argparse.Namespace, batch: int = 0, H: int = 224, W: int = 224, *, what: str = "",
                 attention: str = "fused") -> None:
    """Exit with status 6 (one line, before any work) when `estimate_memory` exceeds the memory available."""
    from .errors import EXIT_RESOURCES, fail

    problem = memory_shortfall(args, batch, H, W, attention=attention)
    if problem:
        fail(f"minidino: {args.model}{' ' + what if what else ''} {problem}; use a smaller model, --config, "
             "--batch-size or --size", EXIT_RESOURCES)


def require_finite(values: Any, what: str) -> None:
    """Results that are not finite are never written or printed silently: minidino.utils.viz.NotFiniteError
    naming `what`, which a command reports with exit status 3 (the weights, the config or the dtype give
    them), nothing written (docs/cli-errors.md)."""
    from ..utils.viz import require_finite as check

    check(values, what)


NOT_FINITE = "the model gives NaN or infinite values for it (the weights, --config, or a --dtype float16 overflow)"


def build_model(name: str, weights: str, overrides: dict[str, Any] | None = None, *, device: Any = "cpu",
                dtype: Any = None) -> Any:
    """Model `name` with weights `weights` (a weights_spec string), in eval mode on device/dtype."""
    from ..conformance import golden
    from ..factory import create_model
    from .weight_sets import explain_mismatch, note_unnamed_set

    overrides = dict(overrides or {})
    note_unnamed_set(name, weights, overrides)
    try:
        if weights.startswith("random:"):
            model = golden.random_model(name, int(weights.split(":", 1)[1]), **overrides)
        else:
            model = create_model(name, pretrained=True if weights == "official" else weights, **overrides)
    except (ValueError, TypeError) as e:  # unknown name or config field, weights that do not fit
        from ..weights.load import CheckpointError, WeightsMismatchError

        if isinstance(e, (CheckpointError, WeightsMismatchError)):
            raise explain_mismatch(e, name) from e  # exit status 3 (minidino.cli.errors), not a usage error
        raise SystemExit(f"minidino: {e}") from e
    return model.to(device=device, dtype=dtype).eval()


def model_from_args(args: argparse.Namespace) -> Any:
    """The model the options of `add_model_args` describe (eval mode, on --device, in --dtype)."""
    if not args.model:
        raise SystemExit("minidino: --model is required")
    from ..utils.hardware import slow_dtype_message

    device, dtype = resolve_device(args.device), parse_dtype(args.dtype)
    slow = slow_dtype_message(dtype, device)
    if slow:
        print(f"minidino: warning: --dtype {args.dtype}: {slow}", file=sys.stderr)
    return build_model(args.model, weights_spec(args), config_overrides(args), device=device, dtype=dtype)




def add_weights_args(parser: argparse.ArgumentParser) -> None:
    """--weights and --config for the commands that take the model as a positional NAME (export, trace, accuracy)."""
    parser.add_argument("--weights", default="official", metavar="official|PATH|URL|random[:SEED]",
                        help="official (default): the published checkpoint, downloaded once and checksum-verified; "
                             "PATH or URL: any checkpoint layout minidino.load_weights reads; random[:SEED]: RANDOM "
                             "weights from the golden-vector generator, offline, to test a pipeline only")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --config depth=4 (repeatable; fields of minidino.DinoConfig); "
                             "weights=SET names the published set a --weights file holds (e.g. weights=SAT493M)")


def preflight_named(name: str, args: argparse.Namespace) -> Any:
    """The checks of preflight_model for a command with a positional model NAME and --weights / --config
    (export, accuracy, trace), before any work: the name and the --config fields (resolve_model), a
    --weights file, and the memory the model needs (exit status 2 or 6). Returns the backbone's config;
    nothing is built."""
    overrides = config_overrides(args)
    config = resolve_model(name, overrides).config
    check_weights_file(weights_spec(args))
    check_memory(argparse.Namespace(model=name, config=list(getattr(args, "config", None) or []), device="cpu",
                                    dtype="float32"))
    return config


def read_image_batch(paths: Any, size: tuple[int, int], patch: int, command: str, preprocessing: Any = None) -> Any:
    """The images at `paths`, each resized to exactly `size` = (H, W) and normalised with `preprocessing`'s
    mean and std (None: ImageNet's), as one (B, 3, H, W) batch; their paths; and the number that could not
    be read (each named on stderr). No readable image: a one-line error (exit status 2)."""
    import torch

    from .inputs import DENSE_LIMITS, dense_transform_checked, expand_inputs, read_images, report_failures

    files, missing = expand_inputs(paths)
    transform = dense_transform_checked(size, "resize", patch, preprocessing=preprocessing)
    items, failures = read_images(files, transform, limits=DENSE_LIMITS)  # type: ignore[arg-type]
    failures = list(missing) + list(failures)
    report_failures(failures)
    if not files and not missing:
        raise SystemExit(f"minidino {command}: no image files in {' '.join(map(str, paths))}")
    if not items:
        raise SystemExit(f"minidino {command}: none of the {len(files) + len(missing)} images could be read")
    return torch.stack([x for _, x in items]), [p for p, _ in items], len(failures)
