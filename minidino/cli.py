"""The `minidino` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def cmd_selftest(args: argparse.Namespace) -> int:
    """Run every golden case and print a parity table."""
    from . import golden

    index = golden.load_index(args.golden)
    tol = args.tol
    print(f"{'case':30s} {'tensors':>7s} {'max abs diff':>13s} {'time':>6s}  status")
    failed = 0
    for case in index["cases"]:
        t0 = time.perf_counter()
        results = golden.run_case(case, args.golden)
        worst = max(r.max_abs for r in results)
        ok = worst <= tol
        failed += not ok
        print(f"{golden.case_name(case):30s} {len(results):7d} {worst:13.3e} {time.perf_counter() - t0:5.1f}s  {'ok' if ok else 'FAIL'}")
    print(f"{len(index['cases']) - failed} passed, {failed} failed (tolerance {tol:g} max abs)")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minidino", description="A clean-room DINOv2 backbone.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("selftest", help="check parity with the official model on the golden vectors (offline)",
                       description="Rebuild every golden case (weights and inputs from the splitmix64 generator), "
                                   "run it and print the max abs difference to the official outputs.")
    p.add_argument("--golden", default=None, help="folder with index.json and the reference .safetensors "
                                                  "(default: tests/golden of the source checkout)")
    p.add_argument("--tol", type=float, default=1e-5, help="max abs difference allowed (default 1e-5)")
    p.set_defaults(func=cmd_selftest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
