"""The depthers: minidino against the official hub depthers, side by side, CPU, in one run.

Both get the same generated weights (minidino.conformance.golden) and the same images; the script checks the
outputs are identical (max abs), times eager inference interleaved (rounds alternate the two
implementations, median per implementation) and measures the peak memory growth of one forward
in a fresh process per implementation (minidino.utils.memory: VmHWM over the call, mmap-backed
allocations). Writes benchmarks/results/<tag>.json and .md.

    PYTHONPATH=. python benchmarks/bench_depth.py                     # ViT-S/B, DPT and linear, 266x350
    PYTHONPATH=. python benchmarks/bench_depth.py --models dinov2_vits14_dd --size 98x140 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import minidino  # noqa: E402
from minidino.conformance import golden
from minidino.utils.memory import peak_growth, prefer_mmap  # noqa: E402
from minidino.conformance.reference import official_model, official_repo  # noqa: E402

DEFAULT_MODELS = ["dinov2_vits14_dd", "dinov2_vits14_ld", "dinov2_vitb14_dd", "dinov2_vitb14_ld"]


def build(impl: str, name: str, seed: int = 0) -> tuple[torch.nn.Module, Any]:
    """(model, forward) with the generated weights: 'minidino' or 'official' (whole_inference)."""
    if impl == "minidino":
        model = golden.random_model(name, seed)
        return model, model
    ref = official_model(name, meta=True).module
    ref.load_state_dict(golden.generate_for(ref, seed), strict=True, assign=True)
    ref.eval()
    return ref, lambda x: ref.whole_inference(x, img_meta=None, rescale=True)


def images(size: tuple[int, int], batch: int) -> torch.Tensor:
    return golden.generate_images(1, 1000, (batch, 3, *size))


def probe(impl: str, name: str, size: tuple[int, int], batch: int) -> None:
    """Child process: build, then the peak memory growth of one forward (MiB) on stdout."""
    prefer_mmap()
    _, fn = build(impl, name)
    x = images(size, batch)
    with torch.inference_mode():
        fn(x)  # warm-up
        peak = peak_growth(lambda: fn(x), "cpu")
    print(f"PEAK_MIB {peak / 2**20:.1f}" if peak is not None else "PEAK_MIB nan")


def memory(impl: str, name: str, size: tuple[int, int], batch: int) -> float | None:
    cmd = [sys.executable, __file__, "--_probe", f"{impl}:{name}:{size[0]}x{size[1]}:{batch}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
    lines = [line for line in r.stdout.splitlines() if line.startswith("PEAK_MIB ")]
    value = float(lines[-1].split()[1]) if lines else float("nan")
    return None if value != value else value


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w or h)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--size", default="266x350", help="HxW of the images (any size; default 266x350)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per implementation (interleaved)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tag", default=None, help="result file name (default cpu_<date>_depth)")
    p.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._probe:
        impl, name, size, batch = args._probe.split(":")
        probe(impl, name, parse_size(size), int(batch))
        return 0
    if official_repo() is None:
        print("no official hub code (../shared/official or $MINIDINO_OFFICIAL_REPO): nothing to compare with", file=sys.stderr)
        return 1
    torch.set_num_threads(max(1, torch.get_num_threads()))
    size = parse_size(args.size)
    x = images(size, args.batch)
    rows = []
    for name in [n for n in args.models.split(",") if n]:
        built = {impl: build(impl, name) for impl in ("minidino", "official")}
        times: dict[str, list[float]] = {impl: [] for impl in built}
        with torch.inference_mode():
            outs = {impl: fn(x) for impl, (_, fn) in built.items()}  # also the warm-up
            for _ in range(args.rounds):
                for impl, (_, fn) in built.items():
                    t0 = time.perf_counter()
                    fn(x)
                    times[impl].append(time.perf_counter() - t0)
        max_abs = float((outs["minidino"] - outs["official"]).abs().max())
        del built, outs
        row: dict[str, Any] = {"model": name, "size": list(size), "batch": args.batch, "max_abs": max_abs,
                               "seconds": {k: statistics.median(v) for k, v in times.items()}, "all_s": times}
        row["speedup"] = row["seconds"]["official"] / row["seconds"]["minidino"]
        if not args.no_memory:
            row["peak_mib"] = {impl: memory(impl, name, size, args.batch) for impl in ("minidino", "official")}
            m, o = row["peak_mib"]["minidino"], row["peak_mib"]["official"]
            row["memory_ratio"] = m / o if m and o else None
        rows.append(row)
        mem = f", peak {row['peak_mib']['minidino']} vs {row['peak_mib']['official']} MiB" if "peak_mib" in row else ""
        print(f"{name} {size[0]}x{size[1]} b{args.batch}: minidino {row['seconds']['minidino'] * 1e3:.1f} ms, official "
              f"{row['seconds']['official'] * 1e3:.1f} ms ({row['speedup']:.2f}x){mem}, max abs {max_abs}")
    tag = args.tag or f"cpu_{_dt.date.today().isoformat()}_depth"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load = [round(v, 2) for v in os.getloadavg()]  # a busy machine makes the timings noisy: recorded with them
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "rounds": args.rounds, "rows": rows,
              "load_avg_after": load,
              "reference": "official hub depthers (../shared/official snapshot, b8931f7), whole_inference"}
    (out / f"{tag}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Depthers, CPU eager: minidino vs the official hub code ({tag})", "",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds, "
             "same generated weights and images; peak = growth of the process's peak RSS over one forward, fresh "
             f"process per implementation. Load average after the run: {load} (1, 5, 15 min).", "",
             "| model | image | minidino ms | official ms | speed ratio (official / minidino) | peak MiB minidino / official | max abs |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        mem = f"{r['peak_mib']['minidino']} / {r['peak_mib']['official']}" if "peak_mib" in r else "-"
        lines.append(f"| {r['model']} | {r['batch']}x{r['size'][0]}x{r['size'][1]} | {r['seconds']['minidino'] * 1e3:.1f} | "
                     f"{r['seconds']['official'] * 1e3:.1f} | {r['speedup']:.2f}x | {mem} | {r['max_abs']} |")
    (out / f"{tag}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
