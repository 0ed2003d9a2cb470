"""`minidino attention`: the class token's attention per head, as heatmaps next to the image."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

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
    from .pca import check_dense_size, model_inputs, picture_format, weights_caption

    config = preflight_model(args)
    check_dense_size(args.size, config.patch_size, "attention")
    depth = config.depth
    if not -depth <= args.block < depth:
        raise SystemExit(f"minidino attention: --block {args.block} is out of range for a {depth}-block model")
    if args.columns < 1:
        raise SystemExit(f"minidino attention: --columns must be >= 1, got {args.columns}")
    out = Path(args.output)
    fmt = picture_format(out)
    plan_outputs([(out, "--output"), (lock_path(out), "the lock of --output")], model_inputs(args, [args.image]))
    stats = args_preprocessing(args)  # the weights' mean and std, to normalise and to show the image
    with locked(out):
        items, failures = read_images([args.image], dense_transform_checked(args.size, args.mode, config.patch_size,
                                                                            preprocessing=stats), limits=DENSE_LIMITS)
        if failures:
            report_failures(failures, what="cannot read")
            print("minidino attention: nothing written", file=sys.stderr)
            return EXIT_PARTIAL
        x = items[0][1]
        H, W = x.shape[-2:]
        # the maps are materialised: (heads, N, N) softmax weights, 11 GB at 2044x2044 px for ViT-S
        check_memory(args, 1, H, W, what=f"with its attention maps at {W}x{H} px", attention="explicit")
        model = model_from_args(args)
        model = getattr(model, "backbone", model)  # a *_lc classifier: picture its backbone
        with torch.no_grad():
            picture, cls = figures.attention_figure(model, x, mean=stats.mean, std=stats.std, block=args.block,
                                                columns=args.columns, overlay=args.overlay,
                                                caption=weights_caption(args), names=[display_name(os.path.basename(items[0][0]))])
        atomic_write(out, lambda tmp: picture.save(tmp, format=fmt))
    nh, h, w = cls.shape
    extra = "storage tokens" if getattr(model, "extra_tokens_key", "") == "x_storage_tokens" else "registers"
    regs = f", {model.num_register_tokens} {extra} skipped" if model.num_register_tokens else ""
    print(f"{args.image}: {h}x{w} patches, {nh} heads of block {args.block % depth}{regs}")
    print(f"wrote {args.output} ({picture.width}x{picture.height} px)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention", help="picture where the class token looks: one attention heatmap per head, next to the image",
        description="Run one image through the model and show, for every head of one block (the last by default), "
                    "the class token's softmax attention to each patch as a heatmap (dark 0, bright the panel's maximum, "
                    "which its label gives in percent; a colour bar says so), plus the mean over heads. Register tokens are skipped: the maps cover the "
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
