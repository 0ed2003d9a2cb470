"""`minidino export NAME --to RUNTIME --out PATH`: the model for ONNX Runtime, OpenVINO, ExecuTorch or
CoreML, in the precision asked for, with its operator report, checked against eager PyTorch.

`--onnx OUT` (the first form of this command) is `--to onnx --out OUT`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ._common import HelpFormatter, add_weights_args, build_model, config_overrides, describe_weights, parse_hw, preflight_named, weights_spec

RUNTIMES = ("onnx", "openvino", "executorch", "coreml")
SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "executorch": ".pte", "coreml": ".mlpackage"}
PRECISIONS = ("float32", "float16", "bfloat16", "int8", "int8-dynamic", "int8-weights", "fp32", "fp16", "bf16")


def parse_size(text: str) -> tuple[int, int]:
    """'224x224' or '196X308' -> (H, W); argparse reports the error as a usage error."""
    try:
        return parse_hw(text, patch=1, square=False)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _target(args: argparse.Namespace) -> tuple[str, str]:
    """(runtime, output path) from --to / --out / --onnx, checked before anything is built."""
    if args.onnx and (args.out or args.to not in (None, "onnx")):
        raise SystemExit("minidino export: --onnx OUT is --to onnx --out OUT; give one or the other")
    out = args.onnx or args.out
    if not out:
        raise SystemExit("minidino export: give --out PATH (and --to RUNTIME, or a name ending in "
                         ".onnx, .xml, .pte or .mlpackage)")
    to = "onnx" if args.onnx else args.to
    if to is None:
        to = next((r for r, s in SUFFIX.items() if out.endswith(s)), None)
        if to is None:
            raise SystemExit(f"minidino export: cannot tell the runtime from {out!r}: give --to {'|'.join(RUNTIMES)}")
    if not out.endswith(SUFFIX[to]):
        flag = "--onnx" if args.onnx else "--out"
        raise SystemExit(f"minidino export: {flag} {out}: a {to} file name must end in {SUFFIX[to]}")
    return to, out


def _check_options(args: argparse.Namespace, to: str, patch: int) -> None:
    from ..export.targets import TARGETS, canonical_precision

    precision = canonical_precision(args.precision)
    if precision not in TARGETS[to].precisions:
        raise SystemExit(f"minidino export: --precision {args.precision}: {to} offers {', '.join(TARGETS[to].precisions)}")
    if precision == "int8" and not args.calibration:
        raise SystemExit("minidino export: --precision int8 is calibrated: give --calibration IMAGES... (8-32 images "
                         "like the ones the model will see)")
    if args.calibration and precision != "int8":
        raise SystemExit(f"minidino export: --calibration is for --precision int8, not {precision}")
    if args.static and (args.static[0] % patch or args.static[1] % patch):
        raise SystemExit(f"minidino export: --static {args.static[0]}x{args.static[1]}: both sides must be positive "
                         f"multiples of the patch size {patch}")
    if args.portable and to != "onnx":
        raise SystemExit("minidino export: --portable is the ONNX graph for NPU toolchains: use it with --to onnx")
    if to != "executorch" and (args.max_batch or args.max_side):
        raise SystemExit(f"minidino export: --max-batch and --max-side bound ExecuTorch's memory; {to} takes free "
                         "dimensions without bounds")
    if to == "coreml" and not args.static:
        raise SystemExit("minidino export: CoreML needs a static image size: give --static HxW (e.g. 224x224); "
                         "coremltools cannot convert the free-size graph (Unsupported fx node and_1, kind __and__)")
    if args.portable and not args.static:
        raise SystemExit("minidino export: --portable graphs are static: give --static HxW (e.g. 224x224)")


MIN_OPSET = 17  # portable graphs go down to 17 (minidino.export.portable); the exporter itself writes 18 and up


def check_exportable(args: argparse.Namespace, to: str) -> None:
    """What an export needs beyond its options, checked before the model is built or downloaded (status 2):
    a model family the exporter writes, a --static size a depther takes, an opset in range, the runtime's
    extra installed (with what the precision and the check against eager need: onnxruntime, nncf, torchao)."""
    from ..catalogue import task_of
    from ..export.extras import require, runtime_modules
    from ..export.program import DEPTH_MIN_SIDE
    from ..export.targets import canonical_precision

    task = task_of(args.name)
    if task not in ("backbone", "classifier", "depther"):
        raise SystemExit(f"minidino export: {args.name} is a {task} model: `minidino export` writes a backbone, a *_lc "
                         "classifier or a depther (dino.txt: minidino.export.dinotxt.export_dinotxt_onnx)")
    if task == "depther" and args.static is not None and min(args.static) < DEPTH_MIN_SIDE:
        raise SystemExit(f"minidino export: --static {args.static[0]}x{args.static[1]}: an exported depther takes "
                         f"sides of {DEPTH_MIN_SIDE} px or more")
    try:
        for module in runtime_modules(to, canonical_precision(args.precision), run=not args.no_check):
            require(module, f"export --to {to}" + (f" --precision {args.precision}" if args.precision != "float32" else ""))
        import onnx
    except ImportError as e:
        raise SystemExit(f"minidino export: {' '.join(str(e).split())}") from None
    newest = onnx.defs.onnx_opset_version()
    if args.opset is not None and not MIN_OPSET <= args.opset <= newest:
        raise SystemExit(f"minidino export: --opset {args.opset}: the exporter writes opsets {MIN_OPSET} to {newest}")


# Files an export writes beside its artifact (minidino.export: ONNX external data, OpenVINO's weights).
SIDE_FILES = {"onnx": (".data",), "openvino": (),  "executorch": (), "coreml": ()}


def run(args: argparse.Namespace) -> int:
    from ..export.report import report_path
    from ..utils.lock import lock_path
    from .inputs import expand_inputs
    from .outputs import input_files, locked, plan_outputs

    to, out_name = _target(args)
    config = preflight_named(args.name, args)  # name, --config, --weights, memory: one line, before any work
    _check_options(args, to, config.patch_size)
    flag = "--onnx" if args.onnx else "--out"
    outputs = [(out_name, flag)] + [(out_name + s, f"{flag}'s {s} file") for s in SIDE_FILES[to]]
    if to == "openvino":
        outputs.append((str(Path(out_name).with_suffix(".bin")), f"{flag}'s weights (.bin)"))
    folders = []
    if to == "coreml":  # a .mlpackage is a folder, replaced whole: it must be a package (or nothing) holding no input
        outputs, folders = [], [(out_name, flag)]
        _check_package(Path(out_name), flag)
    outputs += [(str(report_path(out_name)), f"{flag}'s report"), (lock_path(out_name), f"the lock of {flag}")]
    weights = weights_spec(args)
    inputs = [(f, "--weights") for f in input_files(weights)] if os.path.exists(weights) else []
    calibration = expand_inputs(args.calibration)[0] if args.calibration else []
    inputs += [(f, "--calibration") for f in calibration + [c for c in args.calibration or [] if c.lower().endswith(".txt")]]
    plan_outputs(outputs, inputs, folders=folders)
    check_exportable(args, to)
    with locked(out_name):
        return _export(args, to, Path(out_name))


def _check_package(path: Path, flag: str) -> None:
    """An existing --out NAME.mlpackage is replaced whole: refused unless it is a CoreML package (a
    Manifest.json inside), so that no folder of other files is ever removed."""
    from .errors import EXIT_USAGE, fail

    if path.is_dir() and not path.is_symlink() and not (path / "Manifest.json").is_file():
        fail(f"minidino: {flag} {path} is a folder that is not a CoreML package (no Manifest.json): it would be "
             "replaced whole; remove it or choose another name (nothing was written)", EXIT_USAGE)
    if path.exists() and not path.is_dir():
        fail(f"minidino: {flag} {path} exists and is not a folder (a CoreML package is one); remove it or choose "
             "another name", EXIT_USAGE)


def _export(args: argparse.Namespace, to: str, out: Any) -> int:
    from ..export.targets import export_model
    from .errors import EXIT_PARTIAL, EXIT_USAGE

    calibration, skipped = None, 0
    if args.calibration:
        from ._common import read_image_batch

        size = args.static or (224, 224)
        batch, _, skipped = read_image_batch(args.calibration, size, 1, "export --calibration")
        calibration = list(batch.split(1))
    model = build_model(args.name, weights_spec(args), config_overrides(args))
    print(f"{args.name}: {describe_weights(args)}", file=sys.stderr)
    dynamic = args.static is None
    size = args.static or (224, 224)
    t0 = time.perf_counter()
    try:
        report = export_model(model, out, to=to, precision=args.precision, calibration=calibration, dynamic=dynamic,
                              size=size, batch=args.batch, max_batch=args.max_batch, max_side=args.max_side,
                              opset=args.opset, portable=args.portable,
                              layer_norm="primitive" if args.primitive_layernorm else "op",
                              gelu="tanh" if args.tanh_gelu else "erf", check=not args.no_check)
    except ImportError as e:  # checked before the work (check_exportable): a module the runtime itself imports
        print(f"minidino: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_USAGE
    if to == "onnx" and dynamic and not args.portable:
        what = "any batch and any HxW with sides multiples of the patch size"
    elif to == "executorch" and dynamic:
        what = f"batch and HxW free up to the bounds ({', '.join(f'{k} {v}' for k, v in report.free.items())})"
    else:
        what = f"{size[0]}x{size[1]} only" + ("" if report.free.get("batch") else f", batch {args.batch or 1}") \
               + (" (any batch)" if report.free.get("batch") else "")
    print(report.summary())
    print(f"{args.name} -> {out} in {time.perf_counter() - t0:.0f}s: input x (B, 3, H, W) float32, {what}")
    if skipped:
        print(f"minidino export: calibrated on {len(calibration or [])} image(s); {skipped} could not be read "
              "(named above)", file=sys.stderr)
    return EXIT_PARTIAL if skipped else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a model for ONNX Runtime, OpenVINO, ExecuTorch or CoreML, with its operator report",
        description="Export a backbone (or a *_lc classifier) for a runtime: --to onnx (ONNX Runtime and every "
                    "ONNX consumer), openvino (an IR, .xml + .bin), executorch (XNNPACK, .pte) or coreml (.mlpackage; "
                    "converted here, runs on macOS only). By default the graph takes any batch and any image size with "
                    "sides multiples of the patch size: the bicubic position-embedding resize is written as plain tensor "
                    "ops that match PyTorch's own kernel. With --static HxW the graph is for that size only, the exact "
                    "position embedding baked in. Every export prints its operators with their counts, the opset and "
                    "the free dimensions (also written to OUT.report.json), and is checked against eager PyTorch on one "
                    "generated image where the runtime runs here. Input 'x' (B, 3, H, W) normalised RGB; outputs "
                    "'x_norm_clstoken' (B, D), 'x_norm_regtokens' (B, R, D) for *_reg models, 'x_norm_patchtokens' "
                    "(B, h*w, D); 'logits' for *_lc. Each runtime is an extra: pip install 'minidino[export]' (ONNX), "
                    "'minidino[openvino]', 'minidino[executorch]', 'minidino[coreml]'.\n\n"
                    "Precisions (--precision): float32 (all), float16 (onnx, openvino, executorch, coreml), bfloat16 "
                    "(openvino), int8 = static post-training quantization calibrated on --calibration IMAGES (onnx, "
                    "openvino, executorch with --static), int8-dynamic (onnx, executorch), int8-weights (openvino, "
                    "coreml). Measure any of them on your own images with `minidino accuracy`.",
        epilog="examples:\n"
               "  minidino export dinov2_vits14_reg --onnx vits14_reg.onnx                       # official weights\n"
               "  minidino export dinov2_vits14 --to openvino --out vits14.xml --precision int8 --calibration calib/\n"
               "  minidino export dinov2_vits14 --to executorch --out vits14.pte --max-batch 4 --max-side 448\n"
               "  minidino export dinov2_vits14 --to coreml --out vits14.mlpackage --static 224x224 --precision float16\n"
               "  minidino export dinov2_vits14 --to onnx --out npu.onnx --portable --static 224x224 --opset 17\n"
               "  minidino export dinov2_vitb14 --onnx vitb14_224.onnx --static 224x224 --weights vitb14.safetensors",
        formatter_class=HelpFormatter,
    )
    p.add_argument("name", metavar="NAME", help="model name, e.g. dinov2_vits14 or dinov2_vitb14_reg_lc (see minidino.list_models())")
    p.add_argument("--to", choices=RUNTIMES, help="the runtime (default: from the --out name's suffix)")
    p.add_argument("--out", metavar="PATH", help="the file to write: .onnx, .xml (OpenVINO), .pte (ExecuTorch), .mlpackage (CoreML)")
    p.add_argument("--onnx", metavar="OUT", help="shorthand for --to onnx --out OUT")
    add_weights_args(p)
    p.add_argument("--precision", default="float32", choices=PRECISIONS, metavar="PRECISION",
                   help="float32 (default), float16, bfloat16, int8 (static, needs --calibration), int8-dynamic, "
                        "int8-weights; which runtime offers which: see above")
    p.add_argument("--calibration", nargs="+", metavar="IMAGE", help="images (files, folders, .txt lists) to calibrate "
                   "--precision int8 on: 8-32 like the ones the model will see, resized to the export size")
    p.add_argument("--static", type=parse_size, metavar="HxW",
                   help="export for this one image size (e.g. 224x224) with the position embedding baked in; "
                        "default: dynamic batch and image size")
    p.add_argument("--batch", type=int, metavar="N", help="fix the batch to N (with --static: every dimension fixed)")
    p.add_argument("--max-batch", type=int, metavar="N", help="ExecuTorch: the largest batch (default 8)")
    p.add_argument("--max-side", type=int, metavar="PX", help="ExecuTorch: the largest image side in pixels (default 518)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset version (default: the exporter's; --portable: 18)")
    p.add_argument("--portable", action="store_true", help="ONNX for NPU toolchains: static shapes, attention as MatMul + "
                   "Softmax, tensors of rank <= 4, no fused or custom operators, opset 17+")
    p.add_argument("--primitive-layernorm", action="store_true", help="with --portable: LayerNorm written out "
                   "(ReduceMean, Sub, Mul, Sqrt, Div) for compilers without LayerNormalization")
    p.add_argument("--tanh-gelu", action="store_true", help="with --portable: GELU's tanh approximation for chips without "
                   "Erf; NOT the model's maths (max abs ~1e-3)")
    p.add_argument("--no-check", action="store_true", help="skip the run against eager PyTorch after the export")
    p.set_defaults(func=run)
