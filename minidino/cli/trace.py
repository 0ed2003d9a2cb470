"""`minidino trace MODEL IMAGE --out trace.safetensors`: every named intermediate of one forward pass,
the reference a port's own dump is compared with (`minidino compare`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ._common import HelpFormatter, add_weights_args, build_model, config_overrides, describe_weights, preflight_named, weights_spec
from .export import parse_size


def run(args: argparse.Namespace) -> int:
    from ..conformance.dumps import dump_files
    from ..conformance.trace import trace_names
    from ..utils.lock import lock_path
    from .inputs import expand_inputs
    from .outputs import check_output_dir, input_files, locked, plan_outputs

    config = preflight_named(args.name, args)
    size = args.size or (224, 224)
    p = config.patch_size
    if size[0] % p or size[1] % p:
        raise SystemExit(f"minidino trace: --size {size[0]}x{size[1]}: both sides must be positive multiples of the "
                         f"patch size {p}")
    try:  # every file the dump will be, before any work: a name that is no dump is refused now, not after the forward
        files = dump_files(args.out, trace_names(config.depth))
    except ValueError as e:
        raise SystemExit(f"minidino trace: --out {e}") from None
    out = Path(args.out)
    if files != [out]:
        check_output_dir(out)
    images, _ = expand_inputs(args.image)
    weights = weights_spec(args)
    inputs = [(f, "IMAGE") for f in images] + [(f, "IMAGE list") for f in args.image if f.lower().endswith(".txt")] \
        + ([(f, "--weights") for f in input_files(weights)] if os.path.exists(weights) else [])
    what = "--out" if files == [out] else "a file of --out"
    plan_outputs([(f, what) for f in files] + [(lock_path(out), "the lock of --out")], inputs)
    with locked(out):
        return _trace(args, size, out)


def _trace(args: argparse.Namespace, size: tuple[int, int], out: Path) -> int:
    from ..conformance.dumps import save_dump
    from ..conformance.trace import trace_model
    from ._common import args_preprocessing, read_image_batch, require_finite
    from .errors import EXIT_PARTIAL

    x, paths, failed = read_image_batch(args.image, size, 1, "trace", args_preprocessing(args, args.name))
    model = build_model(args.name, weights_spec(args), config_overrides(args))
    print(f"{args.name}: {describe_weights(args)}", file=sys.stderr)
    trace = trace_model(model, x)
    for name, t in trace.items():  # a reference that is not finite is no reference: nothing is written
        require_finite(t, f"the trace's {name}")
    save_dump(trace, out)
    print(f"{len(trace)} tensors of {args.name} on {len(paths)} image(s) at {size[0]}x{size[1]} -> {out}")
    for name, t in trace.items():
        print(f"  {name:24s} {tuple(t.shape)}")
    return EXIT_PARTIAL if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trace", help="write every named intermediate of one forward pass (the reference for a port)",
        description="Run one forward pass of MODEL on IMAGE (resized to --size, normalised with the mean and "
                    "std of the weights: ImageNet's; DINOv3's SAT-493M: their own) and write every named intermediate, in order: input (the exact preprocessed batch: feed it "
                    "to your port), patch_embed, tokens, and per block blocks.{i}.norm1, .attn, .residual1, .norm2, "
                    ".mlp, .residual2, then norm. The names are the numpy reference's "
                    "(minidino/conformance/numpy_reference.py). Dump the same names from your port and run "
                    "`minidino compare TRACE PORT_DUMP`: it names the first tensor where the port goes wrong. "
                    "--out NAME.safetensors, NAME.npz, or a folder (raw float32 files plus manifest.json; "
                    "docs/porting.md).",
        epilog="examples:\n"
               "  minidino trace dinov2_vits14 cat.jpg --out trace.safetensors\n"
               "  minidino trace dinov2_vits14_reg cat.jpg --out trace_dir --size 448x448 --weights vits14_reg.pth\n"
               "  minidino trace dinov2_vitb14 cat.jpg --out small.npz --config depth=2 --weights random:0",
        formatter_class=HelpFormatter,
    )
    p.add_argument("name", metavar="MODEL", help="model name, e.g. dinov2_vits14 (a *_lc classifier: its backbone)")
    p.add_argument("image", nargs="+", metavar="IMAGE", help="one image (or several: one batch)")
    p.add_argument("--out", required=True, metavar="PATH", help="NAME.safetensors, NAME.npz, or a folder")
    p.add_argument("--size", type=parse_size, metavar="HxW", help="the image size in pixels (default 224x224)")
    add_weights_args(p)
    p.set_defaults(func=run)
