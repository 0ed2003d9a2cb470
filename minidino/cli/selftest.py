"""`minidino selftest`: the golden vectors of every model, as a parity table.

By default a quick pass that a new install can trust in well under a minute: every golden case
(every family, head and layout of the table), each on its first stored input. `--full` runs every
stored input and then the official code side by side on this machine (minutes).
"""

from __future__ import annotations

import argparse
import time


def run(args: argparse.Namespace) -> int:
    from ..conformance import golden

    index = golden.load_index(args.golden)
    full = args.full or args.official is not None
    start = time.perf_counter()
    print(f"{'case':30s} {'tensors':>7s} {'max abs diff':>13s} {'time':>6s}  status")
    failed = 0
    for case in index["cases"]:
        t0 = time.perf_counter()
        results = golden.run_case(case, args.golden, inputs=None if full else 1)
        worst = max(r.max_abs for r in results)
        ok = all(r.ok(args.tol) for r in results)  # depth maps: tol relative to their metres (CaseResult.scale)
        failed += not ok
        print(f"{golden.case_name(case):30s} {len(results):7d} {worst:13.3e} {time.perf_counter() - t0:5.1f}s  {'ok' if ok else 'FAIL'}")
    print(f"{len(index['cases']) - failed} passed, {failed} failed (tolerance {args.tol:g} max abs; depth in metres: relative)"
          f" in {time.perf_counter() - start:.0f} s")
    if not full:
        print("quick pass: the first stored input of every case. `minidino selftest --full` checks every input, then "
              "runs the official code side by side when it is on this machine (a few minutes).")
        return 1 if failed else 0
    return 1 if (failed or live(args) or live_dinov3()) else 0


def live_dinov3() -> int:
    """The official DINOv3 code side by side, when ../shared/official (or $MINIDINO_OFFICIAL_DINOV3) has it."""
    from ..conformance.reference_v3 import official_dinov3_repo
    from ..conformance.side_by_side import side_by_side_dinov3

    repo = official_dinov3_repo()
    if repo is None:
        print("\nofficial DINOv3 code side by side: skipped (set MINIDINO_OFFICIAL_DINOV3 to a folder of "
              "facebookresearch/dinov3 or its .tar.gz)")
        return 0
    print(f"\nofficial DINOv3 code side by side on this machine (code at {repo}; must be identical):")
    runs = [("dinov3_vits16", None, None), ("dinov3_vits16plus", None, 2), ("dinov3_vitb16", None, 2),
            ("dinov3_vitl16", "SAT493M", 1), ("dinov3_vitl16plus", None, 1), ("dinov3_vith16plus", None, 1),
            ("dinov3_vit7b16", None, 1)]
    failed = 0
    for name, weights, depth in runs:
        rows = side_by_side_dinov3(name, repo, weights=weights, depth=depth)
        worst = max(d for _, d in rows)
        failed += worst != 0.0
        what = name + (f" {weights}" if weights else "") + (f" (first {depth} block{'s' * (depth > 1)})" if depth else "")
        print(f"  {what:38s} {len(rows)} inputs, max abs {worst:.3e}  {'ok' if worst == 0.0 else 'FAIL'}")
    return failed


def live(args: argparse.Namespace) -> int:
    """The official code itself, side by side on this machine, when it is available: must be 0.0."""
    from ..conformance.reference import ReferenceUnavailable, official_repo, snapshot_available
    from ..conformance.side_by_side import side_by_side, side_by_side_depth

    try:
        repo = official_repo(args.official)  # --official, $MINIDINO_OFFICIAL_REPO or ../shared/official
    except ReferenceUnavailable as e:
        print(f"\nofficial code side by side: {e}")
        return 1
    if repo is not None:
        runs = [(n, {}) for n in ("dinov2_vits14", "dinov2_vits14_reg", "dinov2_vitb14", "dinov2_vitb14_reg")]
        runs += [(n, {"depth": 2}) for n in ("dinov2_vitl14_reg", "dinov2_vitg14")]
    elif snapshot_available():
        runs = [("dinov2_vits14", {})] + [(n, {"depth": 2}) for n in ("dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14")]
    else:
        print("\nofficial code side by side: skipped (pass --official PATH to the official hub code, a folder or "
              "its .tar.gz, or pip install --no-deps dinov2==0.0.1.dev2)")
        return 0
    if repo is not None:  # the depthers exist only in the hub code
        runs += [("dinov2_vits14_ld", {"layers": 1}), ("dinov2_vits14_ld", {"layers": 4}), ("dinov2_vits14_dd", {})]
    print(f"\nofficial code side by side on this machine ({'hub code at ' + repo if repo else 'PyPI snapshot'}; "
          "same generated weights and inputs; must be identical):")
    failed = 0
    for name, kw in runs:
        try:
            if name.endswith(("_ld", "_dd")):
                rows = side_by_side_depth(name, repo=repo, **kw)
            else:
                rows = side_by_side(name, repo=repo, pypi=repo is None, **kw)
        except ReferenceUnavailable as e:
            print(f"  {name}: skipped ({e})")
            continue
        worst = max(d for _, d in rows)
        failed += worst != 0.0
        what = name + (f" (first {kw['depth']} blocks)" if "depth" in kw else f" layers={kw['layers']}" if kw else "")
        print(f"  {what:38s} {len(rows)} inputs, max abs {worst:.3e}  {'ok' if worst == 0.0 else 'FAIL'}")
    if repo is not None:  # dino.txt: built from the hub code's own classes (its entry point always downloads)
        from ..conformance.golden_text import side_by_side as dinotxt_side_by_side

        rows = dinotxt_side_by_side(repo)
        worst = max(d for _, d in rows)
        failed += worst != 0.0
        print(f"  {'dino.txt (2 blocks, text 2x128)':36s} {len(rows)} outputs, max abs {worst:.3e}  {'ok' if worst == 0.0 else 'FAIL'}")
    return failed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "selftest", help="check parity with the official model on the golden vectors (offline, under a minute)",
        description="Rebuild every golden case (weights and inputs from the splitmix64 generator), run it on its "
                    "first stored input and print the max abs difference to the official outputs (under a minute). "
                    "--full checks every stored input and then, when the official code is available here, runs it "
                    "side by side. Exits non-zero if any check fails.",
    )
    p.add_argument("--full", action="store_true",
                   help="every stored input of every case, then the official code side by side (a few minutes)")
    p.add_argument("--golden", default=None, metavar="DIR",
                   help="folder with index.json and the reference .safetensors (default: tests/golden of the source checkout)")
    p.add_argument("--tol", type=float, default=1e-5, help="max abs difference allowed (default 1e-5)")
    p.add_argument("--official", default=None, metavar="PATH",
                   help="the official hub code to run side by side (implies --full), a folder or its .tar.gz (default: "
                        "$MINIDINO_OFFICIAL_REPO, ../shared/official/dinov2-*.tar.gz beside the checkout, else the "
                        "PyPI dinov2 snapshot when installed); its outputs must equal ours exactly")
    p.set_defaults(func=run)
