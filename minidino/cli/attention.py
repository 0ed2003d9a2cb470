"""`minidino attention`: the class token's attention per head, as heatmaps next to the image."""

from __future__ import annotations

import argparse

from ._common import add_model_args


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import viz
    from ..transforms import IMAGENET_MEAN, IMAGENET_STD, dense_transform, load_image
    from ._common import model_from_args
    from .pca import weights_caption

    model = model_from_args(args)
    model = getattr(model, "backbone", model)  # a *_lc classifier: picture its backbone
    x = dense_transform(load_image(args.image), size=args.size, mode=args.mode, patch_size=model.patch_size)
    depth = len(model.blocks)
    if not -depth <= args.block < depth:
        raise SystemExit(f"minidino attention: --block {args.block} is out of range for a {depth}-block model")
    with torch.no_grad():
        picture, cls = viz.attention_figure(model, x, mean=IMAGENET_MEAN, std=IMAGENET_STD, block=args.block,
                                            columns=args.columns, overlay=args.overlay, caption=weights_caption(args))
    picture.save(args.output)
    nh, h, w = cls.shape
    regs = f", {model.num_register_tokens} registers skipped" if model.num_register_tokens else ""
    print(f"{args.image}: {h}x{w} patches, {nh} heads of block {args.block % depth}{regs}")
    print(f"wrote {args.output} ({picture.width}x{picture.height} px)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention", help="picture where the class token looks: one attention heatmap per head, next to the image",
        description="Run one image through the model and show, for every head of one block (the last by default), "
                    "the class token's softmax attention to each patch as a heatmap (bright = attended; each head "
                    "scaled on its own), plus the mean over heads. Register tokens are skipped: the maps cover the "
                    "patches only.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("image", metavar="IMAGE", help="an image file (any format Pillow reads)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png", help="where to write the picture")
    p.add_argument("--size", type=int, default=448, help="target size in pixels, rounded to a multiple of 14")
    p.add_argument("--mode", choices=["resize", "pad"], default="resize",
                   help="how the image is brought to multiples of 14: resize it, or pad it")
    p.add_argument("--block", type=int, default=-1, help="which block's attention (0-based; negative counts from the end)")
    p.add_argument("--columns", type=int, default=4, help="panels per row in the picture")
    p.add_argument("--overlay", action="store_true", help="blend each heatmap over the image instead of showing it alone")
    add_model_args(p)
    p.set_defaults(func=run)
