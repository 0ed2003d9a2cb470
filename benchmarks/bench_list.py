"""Packed variable-size batches vs a per-image loop: `model.forward_features([x1, x2, ...])`.

The packed call runs the blocks once over the token rows of all images (minidino/models/packing.py:
no padding, except inside attention, which pads to the longest sequence with a key mask); the
loop runs each image alone. Same images, same model (ViT-S/14, 12
blocks, random weights), warm-up first, then interleaved repeats (loop, packed, loop, ...)
so both see the same machine load. Prints img/s of each and their ratio, and writes a short
markdown result.

    python benchmarks/bench_list.py                       # writes benchmarks/results/list_batching_cpu.md
    python benchmarks/bench_list.py --repeats 10 --out -  # print only
    python benchmarks/bench_list.py --device cuda          # bf16 on the GPU: list_batching_cuda.md
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

import minidino

sys.path.insert(0, str(Path(__file__).parent))  # the sibling bench.py, also when loaded by path (tests)
from bench import device_name  # noqa: E402

# A handful of mixed sizes (H, W), as a dataset without resizing would give.
SIZES = [(224, 224), (224, 308), (308, 224), (168, 252), (280, 196), (196, 196), (252, 336), (336, 252)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="dinov2_vits14")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats of each variant, interleaved")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (bf16 weights and inputs on cuda)")
    ap.add_argument("--out", default=None, help="markdown file to write (default results/list_batching_<device>.md), or - for none")
    args = ap.parse_args()
    args.out = args.out or str(Path(__file__).parent / "results" / f"list_batching_{args.device}.md")
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    dtype = torch.bfloat16 if kind == "cuda" else torch.float32
    sync = torch.cuda.synchronize if kind == "cuda" else (lambda: None)

    torch.manual_seed(0)
    model = minidino.create_model(args.model).eval().to(args.device, dtype)
    xs = [torch.randn(1, 3, H, W).to(args.device, dtype) for H, W in SIZES]
    n = len(xs)

    def loop() -> None:
        for x in xs:
            model.forward_features(x)
        sync()

    def packed() -> None:
        model.forward_features(xs)
        sync()

    with torch.inference_mode():
        ref = [model.forward_features(x)["x_norm_clstoken"] for x in xs]
        got = [f["x_norm_clstoken"] for f in model.forward_features(xs)]
        worst = max((a.float() - b.float()).abs().max().item() for a, b in zip(ref, got))
        loop(), packed()  # warm-up (allocator, kernels, position-embedding cache)
        times: dict[str, list[float]] = {"loop": [], "packed": []}
        for _ in range(args.repeats):
            for name, fn in (("loop", loop), ("packed", packed)):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    ips = {k: n / v for k, v in med.items()}
    ratio = ips["packed"] / ips["loop"]
    tokens = [(H // 14) * (W // 14) + 1 for H, W in SIZES]
    pad_share = 1 - sum(tokens) / (len(tokens) * max(tokens))
    lines = [
        f"# Packed list call vs per-image loop ({args.model}, {args.device}, {str(dtype).removeprefix('torch.')})",
        "",
        f"- date: {datetime.date.today().isoformat()}, torch {torch.__version__}, "
        f"{kind.upper()}: {device_name(kind)}",
        f"- images: {n}, one each of {', '.join(f'{H}x{W}' for H, W in SIZES)} "
        f"({min(tokens)}..{max(tokens)} tokens; attention pads them, and padding is {pad_share:.0%} of its rows)",
        f"- {args.repeats} interleaved repeats after a warm-up; medians; random weights, 12 blocks",
        f"- max abs diff of the class token, packed vs alone: {worst:.1e}",
        "",
        "| variant | median time (s) | img/s |",
        "|---|---|---|",
        f"| per-image loop | {med['loop']:.3f} | {ips['loop']:.2f} |",
        f"| packed list call | {med['packed']:.3f} | {ips['packed']:.2f} |",
        "",
        f"Packed / loop throughput: **{ratio:.2f}x**.",
    ]
    if ratio < 1 and kind == "cpu":
        lines += ["", "On this CPU the packed call is not faster: two threads are already busy with one image, so "
                      "batching gains little, while attention pays for its padded rows and the key mask. Packing is for "
                      "accelerators, where one image leaves the device mostly idle; not measured here."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out != "-":
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
