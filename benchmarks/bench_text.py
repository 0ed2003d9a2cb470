"""dino.txt on the CPU: minidino against the official model, in the same run.

    python benchmarks/bench_text.py                          # full size (ViT-L/14 reg4 + 24-layer text encoder)
    python benchmarks/bench_text.py --depth 4 --text-layers 4 --repeats 3   # a quicker, reduced run

Both models hold the same weights (the official random init, copied into minidino by key).
encode_image (batch --image-batch at --size) and encode_text (batch --text-batch of 77 tokens)
run interleaved, minidino, official, minidino, official ... after one warm-up call each, so a
noisy machine slows both alike; throughput is items/s from the median call. Peak memory is the
growth of the peak RSS during one call, each implementation and call in a fresh process
(minidino.utils.memory.peak_growth). Outputs are compared too (max abs; 0.0 expected).
Writes benchmarks/results/cpu_<date>_dinotxt.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import minidino  # noqa: E402
from minidino.utils.memory import peak_growth, prefer_mmap  # noqa: E402
from minidino.conformance.reference import official_dinotxt  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench import device_name  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def build(which: str, args: argparse.Namespace) -> tuple[Any, Any]:
    """(official, minidino) with the same weights, or one of them ("official" / "minidino")."""
    sizes = {"text_layers": args.text_layers} | ({"depth": args.depth} if args.depth else {})
    official = official_dinotxt(depth=args.depth, text_layers=args.text_layers)
    if args.depth:  # a cut official backbone is uninitialised: give it values
        with torch.no_grad():
            for p in official.visual_model.backbone.model.parameters():
                p.normal_(0, 0.02)
    if which == "official":
        return official, None
    ours = minidino.create_model("dinotxt", device="meta", **sizes)
    ours.load_state_dict(official.state_dict(), strict=True, assign=True)
    ours.eval()
    if which == "minidino":
        del official
        return None, ours
    return official, ours


def inputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.image_batch, 3, args.size, args.size, generator=g)
    ids = torch.randint(1, 49406, (args.text_batch, 77), generator=g)
    for b in range(args.text_batch):
        n = 5 + (b * 7) % 70
        ids[b, 0], ids[b, n] = 49406, 49407
        ids[b, n + 1 :] = 0
    return images, ids


def peak_child(args: argparse.Namespace) -> None:
    which, what = args._peak.split(":")
    prefer_mmap()
    official, ours = build(which, args)
    model = official if which == "official" else ours
    images, ids = inputs(args)
    with torch.inference_mode():
        fn = (lambda: model.encode_image(images)) if what == "image" else (lambda: model.encode_text(ids))
        fn()  # warm-up: one-time allocations are not the call's
        print(json.dumps({"peak": peak_growth(fn, "cpu")}))


def peak(which: str, what: str, args: argparse.Namespace) -> int | None:
    cmd = [sys.executable, __file__, "--_peak", f"{which}:{what}", "--size", str(args.size),
           "--image-batch", str(args.image_batch), "--text-batch", str(args.text_batch), "--text-layers", str(args.text_layers)]
    if args.depth:
        cmd += ["--depth", str(args.depth)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if r.returncode:
        raise RuntimeError(f"peak-memory child failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])["peak"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--image-batch", type=int, default=4)
    p.add_argument("--text-batch", type=int, default=16)
    p.add_argument("--depth", type=int, default=None, help="backbone blocks (default: all 24)")
    p.add_argument("--text-layers", type=int, default=24)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--_peak", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._peak:
        return peak_child(args)
    official, ours = build("both", args)
    images, ids = inputs(args)
    calls = {
        ("minidino", "image"): lambda: ours.encode_image(images), ("official", "image"): lambda: official.encode_image(images),
        ("minidino", "text"): lambda: ours.encode_text(ids), ("official", "text"): lambda: official.encode_text(ids),
    }
    times: dict[tuple[str, str], list[float]] = {k: [] for k in calls}
    outs = {}
    with torch.inference_mode():
        for k, fn in calls.items():
            outs[k] = fn()  # warm-up, and the outputs to compare
        for r in range(args.repeats):
            order = list(calls)
            order = order[r % len(order):] + order[: r % len(order)]
            for k in order:
                t0 = time.perf_counter()
                calls[k]()
                times[k].append(time.perf_counter() - t0)
    diff = {what: float((outs[("minidino", what)] - outs[("official", what)]).abs().max()) for what in ("image", "text")}
    n = {"image": args.image_batch, "text": args.text_batch}
    rows = {}
    for what in ("image", "text"):
        row = {}
        for impl in ("minidino", "official"):
            med = statistics.median(times[(impl, what)])
            row[impl] = {"median_s": med, "items_per_s": n[what] / med,
                         "peak_bytes": None if args.no_memory else peak(impl, what, args)}
        row["speed_ratio"] = row["minidino"]["items_per_s"] / row["official"]["items_per_s"]
        pm, po = row["minidino"]["peak_bytes"], row["official"]["peak_bytes"]
        row["memory_ratio"] = pm / po if pm and po else None
        row["max_abs_vs_official"] = diff[what]
        rows[what] = row
    what_ran = (f"encode_image: batch {args.image_batch} at {args.size}x{args.size}; encode_text: batch {args.text_batch} "
                f"x 77 tokens; backbone {args.depth or 24} blocks, text {args.text_layers} layers; {args.repeats} interleaved rounds")
    result = {"device": device_name("cpu"), "torch": torch.__version__, "date": _dt.date.today().isoformat(),
              "setup": what_ran, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"cpu_{result['date']}_dinotxt"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# dino.txt on CPU: minidino vs official ({result['date']})", "", f"{result['device']}, torch {torch.__version__}.",
             what_ran + ".", "", "| call | minidino items/s | official items/s | speed ratio | minidino peak MiB | official peak MiB | memory ratio | max abs |",
             "|---|---|---|---|---|---|---|---|"]
    for what, row in rows.items():
        mib = [row[i]["peak_bytes"] / 2**20 if row[i]["peak_bytes"] else float("nan") for i in ("minidino", "official")]
        lines.append(f"| encode_{what} | {row['minidino']['items_per_s']:.2f} | {row['official']['items_per_s']:.2f} | "
                     f"{row['speed_ratio']:.3f}x | {mib[0]:.0f} | {mib[1]:.0f} | "
                     f"{row['memory_ratio'] if row['memory_ratio'] is None else format(row['memory_ratio'], '.3f')} | {row['max_abs_vs_official']:.1e} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
