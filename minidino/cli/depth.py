"""`minidino depth`: depth maps of images with the official DINOv2 depthers (`*_dd`, `*_ld`).

Per image, in --out: NAME.depth.png (16-bit PNG, depth in millimetres, lossless up to 65.535 m),
NAME.preview.png (colour map with a scale bar in metres) and, with --npy, NAME.depth.npy (float32
metres). Read the PNG back with

    depth_m = numpy.asarray(PIL.Image.open("NAME.depth.png"), dtype=numpy.float32) / 1000

Like every command (docs/cli-errors.md), it checks all its arguments and --out before any work
(`check_args`), holds a lock on --out while it writes, and reads images with the shared reader
(minidino.cli.inputs, dense limits): an image that cannot be read, or that would go through the
model at more than 2048x2048 pixels, is named on stderr and skipped, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ._common import HelpFormatter, parse_dtype, resolve_device

MM_MAX = 65535  # the largest depth a 16-bit PNG holds, in millimetres (65.535 m; KITTI reaches 80 m: use --npy)


def log(msg: str) -> None:
    print(f"minidino: {msg}", file=sys.stderr, flush=True)


def model_size(W0: int, H0: int, size: int | None) -> tuple[int, int]:
    """(W, H) an image of W0 x H0 pixels goes through the model at: the shorter side `size`, or as it is."""
    if size is None:
        return W0, H0
    s = size / min(W0, H0)
    return max(1, round(W0 * s)), max(1, round(H0 * s))


def preprocess(img: Any, size: int | None, preprocessing: Any = None) -> Any:
    """PIL image -> (3, H, W) normalised with `preprocessing`'s mean and std (None: ImageNet's, those of every
    depther's weights): shorter side resized to `size` (bicubic; None keeps the size).
    Any H and W work: the depther pads to whole patches itself."""
    from ..catalogue import IMAGENET
    from ..utils.transforms import _resize, normalize, to_tensor

    stats = preprocessing or IMAGENET
    if size is not None:
        img = _resize(img, model_size(*img.size, size))
    return normalize(to_tensor(img), stats.mean, stats.std)


def depth_transform(size: int | None, limits: Any = None, preprocessing: Any = None) -> Any:
    """`preprocess` as a transform for minidino.cli.inputs.read_one, returning ((3, H, W), (H0, W0)); an
    image that would reach the model at more than `limits.max_output_pixels` (DENSE_LIMITS: 2048x2048)
    is refused BEFORE it is resized."""
    from .inputs import DENSE_LIMITS, InputError

    limits = limits or DENSE_LIMITS

    def transform(img: Any) -> tuple[Any, tuple[int, int]]:
        W0, H0 = img.size
        W, H = model_size(W0, H0, size)
        if limits.max_output_pixels is not None and W * H > limits.max_output_pixels:
            what = f"would be resized to {W}x{H}" if size is not None else "would go through the model as it is"
            hint = "choose a smaller --size" if size is not None else "give --size (e.g. --size 518)"
            raise InputError(getattr(img, "filename", "") or "image",
                             f"{W0}x{H0} {what}: {W * H / 1e6:.1f} Mpx, more than {limits.max_output_pixels / 1e6:.1f} "
                             f"Mpx; {hint}")
        return preprocess(img, size, preprocessing), (H0, W0)
    return transform


OUTPUTS = (".depth.png", ".preview.png", ".depth.npy")  # per input, in --out (the .npy with --npy)


def check_args(args: argparse.Namespace) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """Check every argument, the inputs and every output before any work (nothing is read, built or written).
    Returns the input paths, the inputs that could not be listed (minidino.cli.inputs.expand_inputs) and
    the output stem of each input (`_out_names`)."""
    from ..catalogue import task_of
    from ..utils.transforms import IMAGE_EXTENSIONS
    from ._common import check_memory, config_overrides, resolve_model
    from .inputs import display_name, expand_inputs
    from .outputs import check_output_dir, input_files, plan_outputs
    from .pca import check_dense_size

    if task_of(args.model) != "depther":
        raise SystemExit(f"minidino: --model {args.model!r} is not a depther; choose one of dinov2_vit{{s,b,l,g}}14_{{dd,ld}}")
    resolve_model(args.model, config_overrides(args))  # every --config field's type and range; nothing built
    if args.size is not None:
        check_dense_size(args.size, 14, "depth")
    parse_dtype(args.dtype)
    resolve_device(args.device)
    w = args.weights
    if w == "random" or w.startswith("random:"):
        if not (w.partition(":")[2] or "0").isdigit():
            raise SystemExit(f"minidino: --weights random:SEED needs an integer seed, got {w!r}")
    elif w.upper() not in ("NYU", "KITTI") and "://" not in w and not os.path.isfile(w):
        raise SystemExit(f"minidino depth: --weights {w}: no such file; give NYU, KITTI, a checkpoint file, a URL "
                         "or random[:SEED]")
    check_memory(args)  # the weights of the depther, from its config alone
    out = check_output_dir(args.out)
    paths, failures = expand_inputs(args.inputs, exclude=[out])  # a rerun never reads --out/ as inputs
    if not paths:
        raise SystemExit(f"minidino depth: no image files in {', '.join(map(display_name, args.inputs))} (folders are "
                         f"searched for {' '.join(IMAGE_EXTENSIONS)}; .txt files list paths); nothing was written")
    stems = _out_names(paths)
    suffixes = OUTPUTS if args.npy else OUTPUTS[:2]
    outputs = [(out / f"{stem}{suffix}", f"the output of {display_name(path)}")
               for path, stem in zip(paths, stems) for suffix in suffixes]
    inputs = [(p, "input") for p in [*args.inputs, *paths]]
    if os.path.isfile(w):
        inputs += [(f, "--weights") for f in input_files(w)]
    plan_outputs(outputs + [(out / ".depth.lock", "the lock of --out")], inputs)
    return paths, failures, stems


def build_depther(name: str, weights: str, device: Any, dtype: Any, overrides: dict[str, Any] | None = None
                  ) -> tuple[Any, str]:
    """The depther and a label of its weights. weights: NYU | KITTI (official files) | random[:SEED] | PATH | URL;
    overrides: config fields (--config), e.g. embed_dim=48 for a tiny random depther."""
    overrides = dict(overrides or {})
    from .. import create_model, load_weights; from ..conformance import golden
    from ..catalogue import task_of

    if task_of(name) != "depther":
        raise SystemExit(f"minidino: --model {name!r} is not a depther; choose one of dinov2_vit{{s,b,l,g}}14_{{dd,ld}}")
    try:
        if weights.upper() in ("NYU", "KITTI"):
            model, label = create_model(name, pretrained=True, weights=weights.upper(), **overrides), f"official {weights.upper()} weights"
        elif weights == "random" or weights.startswith("random:"):
            seed = weights.partition(":")[2] or "0"
            if not seed.isdigit():
                raise SystemExit(f"minidino: --weights random:SEED needs an integer seed, got {weights!r}")
            model = golden.random_model(name, int(seed), **overrides)
            label = f"RANDOM WEIGHTS (seed {seed}): checks the pipeline, not real depth"
        else:
            model = create_model(name, **overrides)
            report = load_weights(model, weights)
            if "backbone" not in report.loaded or "decode_head" not in report.loaded:
                raise SystemExit(f"minidino: {weights} holds only {', '.join(report.loaded)}; a depther needs the "
                                 "backbone and the depth head (backbone.* and decode_head.* keys) in one file")
            label = f"weights: {weights}"
    except (ValueError, TypeError, OSError) as e:
        from ..weights.load import CheckpointError, WeightsMismatchError

        if isinstance(e, (CheckpointError, WeightsMismatchError)):
            raise  # exit status 3 (minidino.cli.errors), not a usage error
        raise SystemExit(f"minidino: {e}") from e
    return model.to(device=device, dtype=dtype).eval(), label


def _out_names(paths: list[str]) -> list[str]:
    """A distinct file stem per input: the file's stem; an input whose stem an earlier input already has gets
    the smallest -2, -3... that no input's own stem is (a.png a.jpg a-2.png -> a, a-3, a-2)."""
    natural = [Path(p).stem for p in paths]
    taken = set(natural)
    seen: set[str] = set()
    out = []
    for stem in natural:
        if stem in seen:
            n = 2
            while f"{stem}-{n}" in taken:
                n += 1
            stem = f"{stem}-{n}"
            taken.add(stem)
        seen.add(stem)
        out.append(stem)
    return out


def write_outputs(out: Path, stem: str, depth: Any, *, npy: bool, caption: str) -> list[Path]:
    """Write the 16-bit PNG, the preview and maybe the .npy for one depth map (H, W) in metres, together:
    all are written completely (minidino.utils.atomic) before the first is moved into place."""
    import numpy as np
    from PIL import Image

    from ..utils.atomic import atomic_write_all, save_npy
    from ..utils.figures import depth_preview

    d = depth.detach().float().cpu().numpy()
    mm = np.clip(np.round(d * 1000.0), 0, MM_MAX).astype(np.uint16)
    targets = {out / f"{stem}.depth.png": lambda p: Image.fromarray(mm).save(p, format="PNG"),
               out / f"{stem}.preview.png": lambda p: depth_preview(d, caption=caption).save(p, format="PNG")}
    if npy:
        targets[out / f"{stem}.depth.npy"] = lambda p: save_npy(p, d.astype(np.float32))
    return atomic_write_all(targets)


def run(args: argparse.Namespace) -> int:
    """Check every argument and --out, then compute under the lock of --out, one image at a time."""
    from .outputs import locked

    paths, failures, stems = check_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with locked(out / "depth"):  # the lock file .depth.lock lives inside --out
        return _run_locked(args, out, paths, failures, stems)


def _run_locked(args: argparse.Namespace, out: Path, paths: list[str], failures: list[tuple[str, str]],
                stems: list[str]) -> int:
    import torch
    import torch.nn.functional as F

    from ..utils.progress import ProgressBar
    from ._common import NOT_FINITE, config_overrides, memory_shortfall
    from .errors import EXIT_PARTIAL, EXIT_WEIGHTS, fail
    from .inputs import DENSE_LIMITS, display_name, read_one, report_failures
    from .weight_sets import preprocessing_of

    report_failures(failures)  # inputs that could not even be listed (a folder that cannot be read)
    device, dtype = resolve_device(args.device), parse_dtype(args.dtype)
    model, label = build_depther(args.model, args.weights, device, dtype, config_overrides(args))
    lo, hi = model.depth_range
    log(f"{args.model} ({label}), depth range {lo:g}..{hi:g} m, {len(paths)} images -> {out}")
    if hi * 1000 > MM_MAX:
        log(f"note: depths above {MM_MAX / 1000:g} m are saturated in the 16-bit PNGs; --npy keeps them")
    bar = ProgressBar("depth", len(paths), unit="images", enabled=not args.quiet)
    transform = depth_transform(args.size, preprocessing=preprocessing_of(args.model, args.weights, config_overrides(args)))
    failed = len(failures)
    not_finite = 0
    for path, stem in zip(paths, stems):  # one at a time: any number of images in constant memory
        value, reason = read_one(path, transform, DENSE_LIMITS)
        if value is None:
            failed += report_failures([(path, reason)])
            bar.update(1)
            continue
        x, (H0, W0) = value
        short = memory_shortfall(args, 1, x.shape[-2], x.shape[-1])  # before its forward, at its own size
        if short:
            failed += report_failures([(path, f"at {x.shape[-1]}x{x.shape[-2]} px the model {short}; give a smaller --size")])
            bar.update(1)
            continue
        x = x.unsqueeze(0).to(device=device, dtype=dtype)  # (1, 3, H, W)
        with torch.no_grad():
            y = model(x)  # (1, 1, H, W) metres
            y = F.interpolate(y.float(), size=(H0, W0), mode="bilinear", align_corners=False)[0, 0]  # (H0, W0)
        if not bool(torch.isfinite(y).all()):  # never written: named and skipped like an unreadable input
            failed += report_failures([(path, NOT_FINITE)])
            not_finite += 1
            bar.update(1)
            continue
        write_outputs(out, stem, y, npy=args.npy, caption=f"{display_name(Path(path).name)}: {args.model}, {label}")
        bar.update(1)
    bar.close()
    if not_finite and not_finite == len(paths):
        fail(f"minidino depth: the model gives NaN or infinite values for {'all ' if not_finite > 1 else ''}"
             f"{not_finite} image(s) (the weights, --config, or a --dtype float16 overflow); nothing was written",
             EXIT_WEIGHTS)
    if failed:
        log(f"{failed} of {len(paths) + len(failures)} inputs could not be read (named above); the others were written")
    return EXIT_PARTIAL if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "depth", help="depth maps (metres) with the official DINOv2 depthers", formatter_class=HelpFormatter,
        description=__doc__.split("\n\n", 1)[1] + "\n\nExamples:\n\n"
        "  minidino depth photo.jpg --out depth/\n"
        "  minidino depth photos/ list.txt --out depth/ --model dinov2_vitb14_dd --weights KITTI --npy\n"
        "  minidino depth photo.jpg --out /tmp/d --weights random:0      (offline; random weights)",
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGES", help="image files, folders (recursive) or .txt lists of paths")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (created if needed; locked while a run writes it)")
    p.add_argument("--model", default="dinov2_vits14_dd", metavar="NAME",
                   help="dinov2_vit{s,b,l,g}14_dd (DPT head) or _ld (linear head); default dinov2_vits14_dd")
    p.add_argument("--weights", default="NYU", metavar="NYU|KITTI|PATH|URL|random:SEED",
                   help="NYU (indoor, 0-10 m) or KITTI (driving, 0-80 m): the official backbone and head, downloaded "
                        "once; PATH/URL: one file with backbone.* and decode_head.*; random[:SEED]: RANDOM weights, "
                        "offline, checks the pipeline only. Default NYU")
    p.add_argument("--size", type=int, default=None, metavar="PIXELS",
                   help="resize so the shorter side is PIXELS (14..2044) before the model (the maps are written at "
                        "the image's own size); default: the image's own size (at most 2048x2048 pixels = 4.2 Mpx; "
                        "larger images are skipped: give --size)")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of the depther, e.g. --config embed_dim=48 (repeatable; with "
                        "random weights, for quick checks; the official weights fit only the unchanged config)")
    p.add_argument("--npy", action="store_true", help="also write NAME.depth.npy (float32 metres, full range)")
    p.add_argument("--device", default="auto", help="cpu, cuda, mps... or auto")
    p.add_argument("--dtype", default="float32", metavar="float32|float16|bfloat16", help="compute dtype")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
