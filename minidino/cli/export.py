"""`minidino export NAME --onnx OUT`: write a model as ONNX, for any image size or for one."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ._common import build_model, describe_weights, parse_hw, weights_spec


def parse_size(text: str) -> tuple[int, int]:
    """'224x224' or '196X308' -> (H, W); argparse reports the error as a usage error."""
    try:
        return parse_hw(text, square=False)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


MIN_OPSET = 18  # the opsets torch's ONNX exporter writes; older ones go through a lossy converter


def check_exportable(args: argparse.Namespace) -> None:
    """Everything an export needs, checked before the model is built or downloaded (status 2): a model
    family the exporter writes, a --static size it takes, an opset in range, the export extra installed."""
    from ..catalogue import task_of
    from ..export.program import DEPTH_MIN_SIDE

    task = task_of(args.name)
    if task not in ("backbone", "classifier", "depther"):
        raise SystemExit(f"minidino export: {args.name} is a {task} model: `minidino export` writes a backbone, a *_lc "
                         "classifier or a depther (dino.txt: minidino.export.dinotxt.export_dinotxt_onnx)")
    if task == "depther" and args.static is not None and min(args.static) < DEPTH_MIN_SIDE:
        raise SystemExit(f"minidino export: --static {args.static[0]}x{args.static[1]}: an exported depther takes "
                         f"sides of {DEPTH_MIN_SIDE} px or more")
    try:
        import onnx
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"minidino export: needs the export extra: pip install 'minidino[export]' ({e})") from None
    newest = onnx.defs.onnx_opset_version()
    if args.opset is not None and not MIN_OPSET <= args.opset <= newest:
        raise SystemExit(f"minidino export: --opset {args.opset}: the exporter writes opsets {MIN_OPSET} to {newest}")


def run(args: argparse.Namespace) -> int:
    from ..utils.lock import lock_path
    from ._common import check_memory, check_weights_file, resolve_model
    from .outputs import input_files, locked, plan_outputs

    if not args.onnx.endswith(".onnx"):
        raise SystemExit(f"minidino export: --onnx {args.onnx}: the file name must end in .onnx")
    check_exportable(args)
    resolve_model(args.name, {})
    weights = weights_spec(args)
    check_weights_file(weights)
    check_memory(argparse.Namespace(model=args.name, config=[], device="cpu", dtype="float32"), what="to export")
    out, _ = plan_outputs([(args.onnx, "--onnx"), (args.onnx + ".data", "--onnx's weights file"),
                           (lock_path(args.onnx), "the lock of --onnx")],
                          [(f, "--weights") for f in input_files(weights)] if os.path.exists(weights) else [])[:2]
    with locked(out):
        return _export(args)


def _export(args: argparse.Namespace) -> int:
    import minidino

    model = build_model(args.name, weights_spec(args))
    print(f"{args.name}: {describe_weights(args)}", file=sys.stderr)
    dynamic = args.static is None
    size = args.static or (224, 224)
    t0 = time.perf_counter()
    path = minidino.export_onnx(model, args.onnx, dynamic=dynamic, opset=args.opset, size=size)
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
