"""DINOv3 backbones on the CPU: minidino against the official DINOv3 code and transformers' DINOv3ViTModel, in one run.

All three get the same generated weights (minidino.conformance.generator, with the RoPE periods of the
official formula, which transformers recomputes whatever a file stores) and the same images; the
script reports each one's max abs difference to minidino (official: must be 0.0), times eager
float32 inference interleaved (each round runs the three in turn; median per implementation) and
measures the peak memory growth of one forward in a fresh process per implementation
(minidino.utils.memory: VmHWM over the call, mmap-backed allocations). The load average before and
after is recorded with the figures: on a shared machine they are noisy. Writes
benchmarks/results/<tag>.json and .md. Timings are reported, never tested.

    PYTHONPATH=. python benchmarks/bench_dinov3.py                        # ViT-S/16, ViT-B/16 at 224 and 512, batch 8 and 1
    PYTHONPATH=. python benchmarks/bench_dinov3.py --rows dinov3_vits16:224:1 --rounds 3 --no-memory
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
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import minidino  # noqa: E402
from minidino.conformance.generator import generate_for, generate_images  # noqa: E402
from minidino.conformance.reference_v3 import official_dinov3, official_dinov3_repo  # noqa: E402
from minidino.models.rope import rope_periods  # noqa: E402
from minidino.utils.memory import peak_growth, prefer_mmap  # noqa: E402

DEFAULT_ROWS = [f"{m}:{s}:{b}" for m in ("dinov3_vits16", "dinov3_vitb16") for s in (224, 512) for b in (8, 1)]
IMPLS = ("minidino", "official", "transformers")


def weights(name: str, depth: int | None) -> dict[str, torch.Tensor]:
    model = minidino.create_model(name, device="meta", **({"depth": depth} if depth else {}))
    sd = generate_for(model, 0)
    sd["rope_embed.periods"] = rope_periods(model.config.head_dim, model.config.rope_base)  # what transformers computes
    return sd


def build(impl: str, name: str, depth: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function images -> (B, N, D) normalised tokens [cls, storage, patches] of one implementation."""
    sd = weights(name, depth)
    if impl == "minidino":
        model = minidino.create_model(name, device="meta", **({"depth": depth} if depth else {}))
        model.load_state_dict(sd, strict=True, assign=True)
        model.eval()
        return lambda x: model.norm(model.forward_features(x)["x_prenorm"])
    if impl == "official":
        ref = official_dinov3(name, depth=depth, meta=True).module
        ref.load_state_dict(sd, strict=True, assign=True)
        ref.eval()
        return lambda x: ref.norm(ref.forward_features(x)["x_prenorm"])
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    config = minidino.weights.huggingface_config(minidino.get_config(name).replace(**({"depth": depth} if depth else {})))
    hf = DINOv3ViTModel(DINOv3ViTConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")}))
    hf_sd = minidino.weights.to_huggingface(sd)
    hf.load_state_dict({("model." + k if k.startswith("layer.") else k): v for k, v in hf_sd.items()}, strict=True)
    hf.eval()
    return lambda x: hf(pixel_values=x).last_hidden_state


def images(size: int, batch: int) -> torch.Tensor:
    return generate_images(1, 1000, (batch, 3, size, size))


def probe(impl: str, name: str, size: int, batch: int, depth: int | None) -> None:
    """Child process: build, then the peak memory growth of one forward (MiB) on stdout."""
    prefer_mmap()
    fn = build(impl, name, depth)
    x = images(size, batch)
    with torch.inference_mode():
        fn(x)  # warm-up
        peak = peak_growth(lambda: fn(x), "cpu")
    print(f"PEAK_MIB {peak / 2**20:.1f}" if peak is not None else "PEAK_MIB nan")


def memory(impl: str, name: str, size: int, batch: int, depth: int | None) -> float | None:
    cmd = [sys.executable, __file__, "--_probe", f"{impl}:{name}:{size}:{batch}:{depth or 0}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=ROOT)
    lines = [line for line in r.stdout.splitlines() if line.startswith("PEAK_MIB ")]
    value = float(lines[-1].split()[1]) if lines else float("nan")
    return None if value != value else value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), help="MODEL:SIZE:BATCH,... (square images)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per implementation (interleaved)")
    p.add_argument("--depth", type=int, default=None, help="first blocks only (for a quick check of the script)")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--tag", default=None, help="result file name (default cpu_<date>_dinov3)")
    p.add_argument("--_probe", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    if args._probe:
        impl, name, size, batch, depth = args._probe.split(":")
        probe(impl, name, int(size), int(batch), int(depth) or None)
        return 0
    if official_dinov3_repo() is None:
        print("no official DINOv3 code (../shared/official or $MINIDINO_OFFICIAL_DINOV3): nothing to compare with",
              file=sys.stderr)
        return 1
    load_before = [round(v, 2) for v in os.getloadavg()]
    rows = []
    for spec in [r for r in args.rows.split(",") if r]:
        name, size, batch = spec.split(":")
        size, batch = int(size), int(batch)
        x = images(size, batch)
        fns = {impl: build(impl, name, args.depth) for impl in IMPLS}
        times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
        with torch.inference_mode():
            outs = {impl: fn(x) for impl, fn in fns.items()}  # also the warm-up
            for _ in range(args.rounds):
                for impl, fn in fns.items():
                    t0 = time.perf_counter()
                    fn(x)
                    times[impl].append(time.perf_counter() - t0)
        max_abs = {impl: float((outs[impl] - outs["minidino"]).abs().max()) for impl in IMPLS}
        del fns, outs
        row: dict[str, Any] = {"model": name, "size": size, "batch": batch, "max_abs_vs_minidino": max_abs,
                               "seconds": {k: statistics.median(v) for k, v in times.items()}, "all_s": times}
        row["speed_ratio"] = {k: row["seconds"][k] / row["seconds"]["minidino"] for k in ("official", "transformers")}
        if not args.no_memory:
            row["peak_mib"] = {impl: memory(impl, name, size, batch, args.depth) for impl in IMPLS}
        rows.append(row)
        s = row["seconds"]
        print(f"{name} {batch}x{size}x{size}: minidino {s['minidino'] * 1e3:.0f} ms, official {s['official'] * 1e3:.0f} ms "
              f"({row['speed_ratio']['official']:.2f}x), transformers {s['transformers'] * 1e3:.0f} ms "
              f"({row['speed_ratio']['transformers']:.2f}x); max abs vs minidino: official {max_abs['official']}, "
              f"transformers {max_abs['transformers']:.1e}" + (f"; peak MiB {row['peak_mib']}" if "peak_mib" in row else ""))
    load_after = [round(v, 2) for v in os.getloadavg()]
    tag = args.tag or f"cpu_{_dt.date.today().isoformat()}_dinov3"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "rounds": args.rounds, "depth": args.depth,
              "load_avg_before": load_before, "load_avg_after": load_after, "rows": rows,
              "reference": "official DINOv3 code (../shared/official snapshot, 6876159), forward_features; transformers "
                           "DINOv3ViTModel (its installed version), last_hidden_state"}
    (out / f"{tag}.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# DINOv3 backbones, CPU eager float32: minidino vs the official code vs transformers ({tag})", "",
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.rounds} interleaved rounds "
             f"(each round runs the three in turn), same generated weights and images"
             + (f", first {args.depth} blocks" if args.depth else "") + "; ratios are the other's time over minidino's "
             "(above 1: minidino faster); peak = growth of the process's peak RSS over one forward, fresh process per "
             f"implementation. Load average (1, 5, 15 min): {load_before} before, {load_after} after: the machine is "
             "shared, so the timings are noisy.", "",
             "| model | images | minidino ms | official ms | transformers ms | official / minidino | transformers / minidino "
             "| peak MiB minidino / official / transformers | max abs official, transformers |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s, m = r["seconds"], r["max_abs_vs_minidino"]
        mem = " / ".join(f"{r['peak_mib'][i]}" for i in IMPLS) if "peak_mib" in r else "-"
        lines.append(f"| {r['model']} | {r['batch']}x{r['size']}x{r['size']} | {s['minidino'] * 1e3:.0f} | "
                     f"{s['official'] * 1e3:.0f} | {s['transformers'] * 1e3:.0f} | {r['speed_ratio']['official']:.2f}x | "
                     f"{r['speed_ratio']['transformers']:.2f}x | {mem} | {m['official']}, {m['transformers']:.1e} |")
    (out / f"{tag}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
