"""`minidino accuracy MODEL IMAGES... --to RUNTIME --precision P`: how far an exported path is from eager
float32, on your images and weights, per output and per block."""

from __future__ import annotations

import argparse
import sys

from ._common import HelpFormatter, add_weights_args, build_model, config_overrides, describe_weights, preflight_named, weights_spec
from .export import PRECISIONS, RUNTIMES, parse_size


def run(args: argparse.Namespace) -> int:
    from ..export.extras import require, runtime_modules
    from ..export.targets import TARGETS, canonical_precision

    config = preflight_named(args.name, args)
    precision = canonical_precision(args.precision)
    if precision not in TARGETS[args.to].precisions:
        raise SystemExit(f"minidino accuracy: --precision {args.precision}: {args.to} offers "
                         f"{', '.join(TARGETS[args.to].precisions)}")
    if not TARGETS[args.to].runs_here:
        raise SystemExit(f"minidino accuracy: {args.to} models run on macOS only; convert with `minidino export` and "
                         "compare a dump on the Mac with `minidino compare`")
    size = args.size or (224, 224)
    p = config.patch_size
    if size[0] % p or size[1] % p:
        raise SystemExit(f"minidino accuracy: --size {size[0]}x{size[1]}: both sides must be positive multiples of the "
                         f"patch size {p}")
    if args.calibration and precision != "int8":
        raise SystemExit(f"minidino accuracy: --calibration is for --precision int8, not {precision}")
    try:  # the runtime's extra (and what the precision needs), before the images are read or the model built
        for module in runtime_modules(args.to, precision):
            require(module, f"accuracy --to {args.to}" + (f" --precision {precision}" if precision != "float32" else ""))
    except ImportError as e:
        raise SystemExit(f"minidino accuracy: {' '.join(str(e).split())}") from None
    return _measure(args, precision, size)


def _measure(args: argparse.Namespace, precision: str, size: tuple[int, int]) -> int:
    from ..export.accuracy import measure_accuracy
    from ._common import args_preprocessing, read_image_batch
    from .errors import EXIT_MISMATCH, EXIT_PARTIAL, EXIT_USAGE

    stats = args_preprocessing(args, args.name)  # the weights' mean and std
    x, paths, failed = read_image_batch(args.images, size, 1, "accuracy", stats)
    calibration = None
    if args.calibration:
        batch, _, skipped = read_image_batch(args.calibration, size, 1, "accuracy --calibration", stats)
        calibration, failed = list(batch.split(1)), failed + skipped
    model = build_model(args.name, weights_spec(args), config_overrides(args))
    label = describe_weights(args)
    print(f"{args.name}: {label}", file=sys.stderr)
    try:
        report = measure_accuracy(model, x, to=args.to, precision=precision, calibration=calibration,
                                  per_block=not args.no_blocks, dynamic=False if args.static else None)
    except ImportError as e:  # checked before the work (run): a module the runtime itself imports
        print(f"minidino: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USAGE
    print(report.table())
    if label.startswith("RANDOM"):
        print("WARNING: RANDOM WEIGHTS. These figures say little about the real weights (no outlier tokens); rerun "
              "with --weights official or your checkpoint.")
    worst = min(r.worst_image_cosine for r in report.rows if not r.name.startswith("blocks."))
    if args.min_cosine is not None and not worst >= args.min_cosine:
        print(f"minidino: worst output cosine {worst:.6f} is below --min-cosine {args.min_cosine}", file=sys.stderr)
        return EXIT_MISMATCH
    return EXIT_PARTIAL if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "accuracy", help="measure an export path (runtime, precision) against eager float32 on your images",
        description="Export MODEL for --to RUNTIME in --precision (as `minidino export` does, with every block's output "
                    "as an extra graph output), run it on IMAGES (resized to --size, normalised with the weights' mean and std), and print per output "
                    "and per block the max abs difference, the cosine similarity and the worst per-image cosine against "
                    "eager float32 PyTorch. Figures on random weights say little about the real ones: DINOv2's trained "
                    "weights have high-norm outlier tokens that random weights lack, and those decide int8 and float16 "
                    "accuracy. Run it with the real weights (default: official) on your own images to choose a "
                    "precision. --min-cosine C: exit status 8 when an output's worst image cosine is below C.",
        epilog="examples:\n"
               "  minidino accuracy dinov2_vits14 photos/ --to openvino --precision int8 --calibration calib/\n"
               "  minidino accuracy dinov2_vits14 photos/ --to onnx --precision int8-dynamic --min-cosine 0.999\n"
               "  minidino accuracy dinov2_vitb14_reg photos/ --to executorch --precision float16 --size 448x448",
        formatter_class=HelpFormatter,
    )
    p.add_argument("name", metavar="MODEL", help="model name, e.g. dinov2_vits14")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="images to measure on (files, folders, .txt lists)")
    p.add_argument("--to", required=True, choices=RUNTIMES, help="the runtime")
    p.add_argument("--precision", default="float32", choices=PRECISIONS, metavar="PRECISION",
                   help="float32, float16, bfloat16, int8, int8-dynamic, int8-weights (see minidino export --help)")
    p.add_argument("--calibration", nargs="+", metavar="IMAGE", help="images to calibrate int8 on (default: IMAGES, "
                   "which flatters the figure)")
    p.add_argument("--size", type=parse_size, metavar="HxW", help="image size in pixels (default 224x224)")
    p.add_argument("--static", action="store_true", help="export for --size only (default: the runtime's free size)")
    p.add_argument("--no-blocks", action="store_true", help="compare the outputs only, not every block")
    p.add_argument("--min-cosine", type=float, help="exit status 8 when an output's worst image cosine is below this")
    add_weights_args(p)
    p.set_defaults(func=run)
