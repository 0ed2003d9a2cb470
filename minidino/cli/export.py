"""`minidino export NAME --onnx OUT`: write a model as ONNX, for any image size or for one."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ._common import build_model, describe_weights, parse_hw, weights_spec


def parse_size(text: str) -> tuple[int, int]:
    """'224x224' or '196X308' -> (H, W); argparse reports the error as a usage error."""
    try:
        return parse_hw(text, square=False)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    import minidino

    from .outputs import check_output, locked

    if not args.onnx.endswith(".onnx"):
        raise SystemExit(f"minidino export: --onnx {args.onnx}: the file name must end in .onnx")
    out = check_output(args.onnx, "--onnx")  # before the model is built or downloaded
    with locked(out):
        return _export(args, minidino)


def _export(args: argparse.Namespace, minidino: Any) -> int:
    model = build_model(args.name, weights_spec(args))
    print(f"{args.name}: {describe_weights(args)}", file=sys.stderr)
    dynamic = args.static is None
    size = args.static or (224, 224)
    t0 = time.perf_counter()
    try:
        path = minidino.export_onnx(model, args.onnx, dynamic=dynamic, opset=args.opset, size=size)
    except ImportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    p = minidino.factory.vision_backbone(model).patch_size
    what = f"any batch and any HxW with sides multiples of {p}" if dynamic else f"{size[0]}x{size[1]} only (any batch)"
    print(f"{args.name} -> {path} in {time.perf_counter() - t0:.0f}s: input x (B, 3, H, W) float32, {what}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a model to ONNX (dynamic image size, exact position embedding)",
        description="Export a DINOv2 backbone (or a *_lc classifier) to ONNX. By default the graph takes any batch "
                    "and any image size with sides multiples of 14: the bicubic position-embedding resize is written "
                    "as plain tensor ops that match PyTorch's own kernel, so the ONNX model agrees with eager PyTorch "
                    "at every size. With --static HxW the graph is for that size only and the exact position "
                    "embedding of that size is baked in. Input 'x' (B, 3, H, W) normalised RGB; outputs "
                    "'x_norm_clstoken' (B, D), 'x_norm_regtokens' (B, R, D) for *_reg models, "
                    "'x_norm_patchtokens' (B, h*w, D); 'logits' for *_lc. Needs pip install 'minidino[export]'.",
        epilog="examples:\n  minidino export dinov2_vits14_reg --onnx vits14_reg.onnx                       # official weights\n"
               "  minidino export dinov2_vits14_reg --onnx vits14_reg.onnx --weights dinov2_vits14_reg4_pretrain.pth\n"
               "  minidino export dinov2_vitb14 --onnx vitb14_224.onnx --static 224x224 --weights vitb14.safetensors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("name", metavar="NAME", help="model name, e.g. dinov2_vits14 or dinov2_vitb14_reg_lc (see minidino.list_models())")
    p.add_argument("--onnx", required=True, metavar="OUT", help="the .onnx file to write")
    p.add_argument("--weights", default="official", metavar="official|PATH|URL|random[:SEED]",
                   help="official (default): the published checkpoint, downloaded once and checksum-verified; "
                        "PATH or URL: any checkpoint layout minidino.load_weights reads; random[:SEED]: RANDOM "
                        "weights from the golden-vector generator, offline, to test a pipeline only")
    p.add_argument("--static", type=parse_size, metavar="HxW",
                   help="export for this one image size (e.g. 224x224) with the position embedding baked in; "
                        "default: dynamic batch and image size")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset version (default: the exporter's)")
    p.set_defaults(func=run)
