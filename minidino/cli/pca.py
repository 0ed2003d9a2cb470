"""`minidino pca`: the classic DINOv2 picture, patch features' first 3 principal components as RGB."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ._common import add_model_args


def run(args: argparse.Namespace) -> int:
    import torch

    from ..utils import figures
    from ..utils.atomic import atomic_write
    from ..utils.lock import lock_path
    from ._common import args_preprocessing, check_memory, model_from_args, preflight_model
    from .errors import EXIT_PARTIAL
    from .inputs import DENSE_LIMITS, dense_transform_checked, display_name, read_images, report_failures
    from .outputs import locked, plan_outputs

    patch = preflight_model(args).patch_size
    check_dense_size(args.size, patch, "pca")
    out = Path(args.output)
    fmt = picture_format(out)
    plan_outputs([(out, "--output"), (lock_path(out), "the lock of --output")], model_inputs(args, args.images))
    stats = args_preprocessing(args)  # the weights' mean and std, to normalise and to show the images
    with locked(out):
        items, failures = read_images(args.images, dense_transform_checked(args.size, args.mode, patch, preprocessing=stats),
                                      limits=DENSE_LIMITS)
        report_failures(failures)
        if not items:
            print(f"minidino pca: nothing written: none of the {len(args.images)} images could be read", file=sys.stderr)
            return EXIT_PARTIAL
        # one forward per image; the patch tokens of all of them are kept for the joint PCA
        H, W = max((tuple(x.shape[-2:]) for _, x in items), key=lambda hw: hw[0] * hw[1])
        check_memory(args, 1, H, W, what=f"for {len(items)} images at --size {args.size}")
        model = model_from_args(args)
        model = getattr(model, "backbone", model)  # a *_lc classifier: picture its backbone
        with torch.no_grad():
            picture, info = figures.pca_figure(model, [x for _, x in items], mean=stats.mean, std=stats.std,
                                           foreground=args.foreground, threshold=args.threshold,
                                           caption=weights_caption(args), names=[display_name(os.path.basename(p)) for p, _ in items])
        atomic_write(out, lambda tmp: picture.save(tmp, format=fmt))
    for (path, _), (h, w), fg in zip(items, info["grids"], info["foreground"]):  # type: ignore[call-overload]
        extra = f", foreground {int(fg.sum())}/{h * w} patches" if args.foreground else ""
        print(f"{display_name(path)}: {h}x{w} patches{extra}")
    print(f"wrote {out} ({picture.width}x{picture.height} px)"
          + (f"; {len(failures)} unreadable file(s) skipped" if failures else ""))
    return EXIT_PARTIAL if failures else 0


def model_inputs(args: argparse.Namespace, images: list[str]) -> list[tuple[str, str]]:
    """What a picture command reads, for the output planner: its images and a --weights file."""
    from ._common import weights_spec
    from .outputs import input_files

    weights = weights_spec(args)
    return [(p, "input image") for p in images] + ([(f, "--weights") for f in input_files(weights)]
                                                    if os.path.exists(weights) else [])


def check_dense_size(size: int, patch: int, command: str) -> None:
    """--size of the commands that run whole images (pca, attention): a shorter side of patch..2044 pixels."""
    if not patch <= size <= 2044:  # DENSE_LIMITS: at most 2048x2048 pixels after the resize
        raise SystemExit(f"minidino {command}: --size {size} must be between {patch} (one patch) and 2044 pixels")


def picture_format(path: Any) -> str:
    """The Pillow format of an output picture's suffix (PNG when there is none); an unknown one is an error."""
    from PIL import Image

    suffix = str(path).rsplit(".", 1)[-1].lower() if "." in os.path.basename(str(path)) else "png"
    fmt = Image.registered_extensions().get("." + suffix)
    if fmt is None:
        raise SystemExit(f"minidino: {path}: unknown picture format .{suffix}; use .png (or .jpg, .webp)")
    return fmt


def weights_caption(args: argparse.Namespace) -> str:
    """The first line of every picture: which model and which weights made it."""
    from ._common import describe_weights

    return f"{args.model}, {describe_weights(args)}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pca", help="picture patch features: their first 3 principal components as RGB, next to each image",
        description="The classic DINOv2 picture. Every image is resized (sides multiples of 14), its patch tokens "
                    "are computed, and the first three principal components of the patch features - fitted jointly "
                    "over all the images, so equal colours mean similar features across images - are shown as red, "
                    "green and blue next to the image (one row per image). With --foreground, the first component "
                    "(oriented so that the image border is negative) above --threshold marks the foreground; the "
                    "colours are refitted on the foreground patches and the background is black.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", help="where to write the picture")
    p.add_argument("--size", type=int, default=448, help="target size in pixels, rounded to a multiple of 14 "
                   "(larger = more patches, finer picture, slower)")
    p.add_argument("--mode", choices=["resize", "pad"], default="resize",
                   help="how the image is brought to multiples of 14: resize it, or pad it")
    p.add_argument("--foreground", action="store_true", help="black out the background (first component <= threshold)")
    p.add_argument("--threshold", type=float, default=0.0,
                   help="foreground threshold on the first component, in standard deviations (higher keeps less)")
    add_model_args(p)
    p.set_defaults(func=run)
