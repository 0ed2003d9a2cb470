"""`minidino selftest`: the golden vectors of every model, as a parity table."""

from __future__ import annotations

import argparse
import time


def run(args: argparse.Namespace) -> int:
    from .. import golden

    index = golden.load_index(args.golden)
    print(f"{'case':30s} {'tensors':>7s} {'max abs diff':>13s} {'time':>6s}  status")
    failed = 0
    for case in index["cases"]:
        t0 = time.perf_counter()
        results = golden.run_case(case, args.golden)
        worst = max(r.max_abs for r in results)
        ok = worst <= args.tol
        failed += not ok
        print(f"{golden.case_name(case):30s} {len(results):7d} {worst:13.3e} {time.perf_counter() - t0:5.1f}s  {'ok' if ok else 'FAIL'}")
    print(f"{len(index['cases']) - failed} passed, {failed} failed (tolerance {args.tol:g} max abs)")
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "selftest", help="check parity with the official model on the golden vectors (offline)",
        description="Rebuild every golden case (weights and inputs from the splitmix64 generator), run it and "
                    "print the max abs difference to the official outputs. Exits non-zero if any case fails.",
    )
    p.add_argument("--golden", default=None, metavar="DIR",
                   help="folder with index.json and the reference .safetensors (default: tests/golden of the source checkout)")
    p.add_argument("--tol", type=float, default=1e-5, help="max abs difference allowed (default 1e-5)")
    p.set_defaults(func=run)
