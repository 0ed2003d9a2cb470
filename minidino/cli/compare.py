"""`minidino compare REFERENCE PORT`: a port's tensor dump against a reference, tensor by tensor,
naming the first one past the tolerance (exit status 8 when there is one, 0 when all are within)."""

from __future__ import annotations

import argparse
import math


def run(args: argparse.Namespace) -> int:
    from ..conformance.dumps import DEFAULT_TOL, compare_dumps, first_failure, format_comparison, load_dump, non_finite
    from ..utils.files import display_name
    from .errors import EXIT_IO, EXIT_MISMATCH, EXIT_USAGE, fail

    if not (math.isfinite(args.tol) and args.tol >= 0):
        fail(f"minidino compare: --tol {args.tol}: give a tolerance >= 0 (default {DEFAULT_TOL:g})", EXIT_USAGE)
    if args.min_cosine is not None and not -1.0 <= args.min_cosine <= 1.0:
        fail(f"minidino compare: --min-cosine {args.min_cosine}: a cosine is between -1 and 1 (e.g. 0.999)", EXIT_USAGE)
    dumps = []
    for what, path in (("REFERENCE", args.reference), ("PORT", args.port)):
        try:
            dumps.append(load_dump(path))
        except PermissionError as e:
            fail(f"minidino compare: {what} {display_name(path)}: {e.strerror or e}", EXIT_IO)
        except (ValueError, OSError) as e:  # every malformed dump is a ValueError naming its problem
            fail(f"minidino compare: {what} {display_name(path)}: {e}", EXIT_USAGE)
    reference, port = dumps
    for name, t in reference.items():  # a reference that is not finite cannot tell a port right from wrong
        bad = non_finite(t)
        if bad:
            fail(f"minidino compare: REFERENCE {display_name(args.reference)}: tensor {name!r} holds {bad} values: a "
                 "reference must be finite (trace it again, in float32)", EXIT_USAGE)
    rows = compare_dumps(reference, port, tol=args.tol, min_cosine=args.min_cosine)
    print(format_comparison(rows, tol=args.tol, min_cosine=args.min_cosine))
    extra = [k for k in port if k not in reference]
    if extra:
        shown = ", ".join(extra[:10]) + (f", ... ({len(extra)} in all)" if len(extra) > 10 else "")
        print(f"{len(extra)} tensor(s) of the port not in the reference: {shown} (not compared)")
    if not any(r.status in ("ok", "over") for r in rows):
        fail(f"minidino compare: no tensor of {args.port} has a name of {args.reference}: nothing compared", EXIT_USAGE)
    return EXIT_MISMATCH if first_failure(rows) is not None else 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..conformance.dumps import DEFAULT_TOL

    p = sub.add_parser(
        "compare", help="compare a port's tensor dump with a reference trace; name the first tensor that differs",
        description="Read two dumps of named tensors (a .safetensors file, an .npz file, or a folder of raw float32 "
                    "files with manifest.json: docs/porting.md), and print, in the reference's order, each tensor's "
                    "max abs difference and cosine similarity, then the first tensor past the tolerance: where the port "
                    "goes wrong. A tensor passes when max abs <= TOL * max(1, max |reference|) (and cosine >= "
                    "--min-cosine if given). Names missing from the port are listed and skipped, names only in the port "
                    "are listed. Exit status 0: every compared tensor within the tolerance; 8: one is past it, of "
                    "another shape, or holds NaN or infinite values; 2: a dump cannot be read (malformed, not "
                    "floating-point, a manifest naming files outside its folder), a reference that is not finite, "
                    "or no name in common.",
        epilog="examples:\n"
               "  minidino trace dinov2_vits14 cat.jpg --out ref.safetensors\n"
               "  minidino compare ref.safetensors my_port_dump/                 # a folder with manifest.json\n"
               "  minidino compare ref.safetensors npu.npz --tol 1e-2 --min-cosine 0.999   # a reduced-precision port",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("reference", metavar="REFERENCE", help="the reference dump (e.g. from minidino trace)")
    p.add_argument("port", metavar="PORT", help="the port's dump, same names")
    p.add_argument("--tol", type=float, default=DEFAULT_TOL,
                   help=f"max abs tolerance, in units of max(1, max |reference|) per tensor (default {DEFAULT_TOL:g}: "
                        "float32 ports measure 1e-6 to 1e-5)")
    p.add_argument("--min-cosine", type=float, default=None, help="also require this cosine similarity (reduced precision)")
    p.set_defaults(func=run)
