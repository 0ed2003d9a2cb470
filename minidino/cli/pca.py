"""`minidino pca`: the classic DINOv2 picture, patch features' first 3 principal components as RGB."""

from __future__ import annotations

import argparse

from ._common import add_model_args


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import viz
    from ..transforms import IMAGENET_MEAN, IMAGENET_STD, dense_transform, load_image
    from ._common import model_from_args

    model = model_from_args(args)
    model = getattr(model, "backbone", model)  # a *_lc classifier: picture its backbone
    xs = [dense_transform(load_image(path), size=args.size, mode=args.mode, patch_size=model.patch_size)
          for path in args.images]
    with torch.no_grad():
        picture, info = viz.pca_figure(model, xs, mean=IMAGENET_MEAN, std=IMAGENET_STD, foreground=args.foreground,
                                       threshold=args.threshold, caption=weights_caption(args))
    picture.save(args.output)
    for path, (h, w), fg in zip(args.images, info["grids"], info["foreground"]):  # type: ignore[call-overload]
        extra = f", foreground {int(fg.sum())}/{h * w} patches" if args.foreground else ""
        print(f"{path}: {h}x{w} patches{extra}")
    print(f"wrote {args.output} ({picture.width}x{picture.height} px)")
    return 0


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
