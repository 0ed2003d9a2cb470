"""Where the time of one eager forward goes: torch.profiler, grouped by operator and shape.

    python benchmarks/profile_cpu.py                    # ViT-S/14, 224 px, batch 8 (the standard CPU row)
    python benchmarks/profile_cpu.py --res 518 --batch 2 --attn explicit

Prints a markdown table (self time per operator and input shape, summed over --repeats calls
after one warm-up call) and writes it to benchmarks/results/profile_<device>_<model>_<res>_b<batch>.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import minidino

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="dinov2_vits14")
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--attn", default="fused", choices=["fused", "explicit"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rows", type=int, default=12, help="operator rows to show")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)

    model = minidino.create_model(args.model).eval()
    model.attn_impl = args.attn
    x = torch.randn(args.batch, 3, args.res, args.res)
    with torch.inference_mode():
        model.forward_features(x)  # warm-up: first-call allocations, oneDNN primitive caches
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(args.repeats):
                model.forward_features(x)
    rows: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for e in prof.key_averages(group_by_input_shape=True):
        if e.self_cpu_time_total > 0:
            r = rows[(e.key, str(e.input_shapes))]
            r[0] += e.self_cpu_time_total / 1000 / args.repeats  # ms per forward
            r[1] += e.count // args.repeats
    total = sum(v[0] for v in rows.values())
    ranked = sorted(rows.items(), key=lambda kv: -kv[1][0])
    by_op: dict[str, float] = defaultdict(float)
    for (op, _), (ms, _) in rows.items():
        by_op[op] += ms
    title = (f"{args.model} {args.res}px batch {args.batch}, attn_impl={args.attn}, {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}, {_dt.datetime.now():%Y-%m-%d %H:%M}")
    lines = [f"# Profile: {title}", "", f"Self CPU time per forward: {total:.1f} ms (profiler overhead included).", "",
             "| operator | ms / forward | share |", "|---|---|---|"]
    lines += [f"| {op} | {ms:.1f} | {100 * ms / total:.1f}% |" for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])[:8]]
    lines += ["", "| operator | input shapes | calls / forward | ms / forward | share |", "|---|---|---|---|---|"]
    lines += [f"| {op} | {shapes} | {n} | {ms:.1f} | {100 * ms / total:.1f}% |" for (op, shapes), (ms, n) in ranked[: args.rows]]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"profile_cpu_{args.model}_{args.res}_b{args.batch}_{args.attn}.md"
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
