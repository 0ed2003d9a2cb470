"""The export paths on this CPU, side by side with eager minidino and the official code, in one run:
speed (interleaved rounds) and, beside each speed, the path's accuracy against eager float32.

    python benchmarks/bench_runtimes.py                         # ViT-S/14 and ViT-B/14, 224 px, batch 1 and 8
    python benchmarks/bench_runtimes.py --models vits14 --threads 1

Paths: eager minidino (float32), the official code (hub snapshot or PyPI dinov2==0.0.1.dev2, our
weights), ONNX Runtime float32 / float16 / int8-dynamic / int8 (static QDQ), OpenVINO float32 /
bfloat16 / int8 (NNCF) / int8-weights, ExecuTorch XNNPACK float32 / int8-dynamic / float16 (static
224, batch up to 8). Weights: random from the golden generator (LayerScale 0.5 +- 0.25, biases
set), so the accuracy figures are for random weights: they say little about real weights, whose
outlier tokens decide int8 (docs/porting.md; run `minidino accuracy` with the real weights).

Timing: every path pinned to --threads threads; OMP_WAIT_POLICY=PASSIVE (set here before torch
loads: with spinning OpenMP threads eager torch collapses on a shared 2-core machine, 1577 ms
instead of 133 ms); rounds interleaved, order reversed each round; ratio = eager time / path time
per round, median over rounds. The load average is recorded at the start and the end: only the
ratios of one run mean anything, and only on a quiet machine the absolute times.
Writes benchmarks/results/cpu_<date>_runtimes.{json,md}.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch and the runtimes load their OpenMP

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from minidino.conformance import golden  # noqa: E402
from minidino.conformance.compare import tensor_metrics  # noqa: E402
from minidino.export.runners import load_runner  # noqa: E402
from minidino.export.targets import export_model  # noqa: E402

RESULTS = Path(__file__).parent / "results"
KEYS = ("x_norm_clstoken", "x_norm_patchtokens")


def log(*a: Any) -> None:
    print(*a, flush=True)


def cpu_name() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name"))
        fl = set(next(l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")))
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if f in fl)
        return f"{name}, {os.cpu_count()} logical CPUs ({flags})"
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def build_paths(name: str, model: torch.nn.Module, calib: list[torch.Tensor], work: Path, threads: int,
                skip: set[str], sources: dict[str, str]) -> tuple[dict[str, Callable[[torch.Tensor], Any]], dict[str, float]]:
    """label -> a function of one (B, 3, 224, 224) batch; label -> build seconds."""
    paths: dict[str, Callable[[torch.Tensor], Any]] = {}
    built: dict[str, float] = {}

    def add(label: str, make: Callable[[], Callable[[torch.Tensor], Any]]) -> None:
        if any(label.startswith(s) for s in skip):
            return
        t0 = time.perf_counter()
        try:
            paths[label] = make()
            built[label] = round(time.perf_counter() - t0, 1)
            log(f"  built {label} in {built[label]}s")
        except Exception as e:  # a path that cannot be built here is reported, not fatal
            log(f"  {label}: not built ({type(e).__name__}: {' '.join(str(e).split())[:300]})")

    def runner(path: Path) -> Callable[[torch.Tensor], Any]:
        run = load_runner(path, threads=threads)
        return lambda x: run(x.numpy())

    add("minidino eager", lambda: (lambda x: model.forward_features(x)))
    try:
        from minidino.conformance.reference import official_model

        def official() -> Callable[[torch.Tensor], Any]:
            ref = official_model(name)
            sources[name] = ref.source  # the hub code beside the checkout, else the 2023 PyPI snapshot
            ref.module.load_state_dict(model.state_dict(), strict=False)
            return lambda x: ref.module.forward_features(x)
        add("official", official)
    except ImportError:
        pass
    onnx32 = work / "f32.onnx"
    add("onnx float32", lambda: (export_model(model, onnx32, check=False), runner(onnx32))[1])
    if onnx32.exists():
        from minidino.export.onnx_precision import convert_onnx

        for precision in ("float16", "int8-dynamic", "int8"):
            p = work / f"{precision}.onnx"
            add(f"onnx {precision}", lambda p=p, precision=precision: (convert_onnx(onnx32, p, precision, calib), runner(p))[1])
    ov32 = work / "f32.xml"
    add("openvino float32", lambda: (export_model(model, ov32, check=False), runner(ov32))[1])
    if ov32.exists():
        from minidino.export.openvino import quantize_openvino

        add("openvino bfloat16", lambda: (export_model(model, work / "bf16.xml", precision="bfloat16", check=False),
                                          runner(work / "bf16.xml"))[1])
        for precision in ("int8", "int8-weights"):
            p = work / f"{precision}.xml"
            add(f"openvino {precision}", lambda p=p, precision=precision: (quantize_openvino(ov32, p, precision, calib),
                                                                            runner(p))[1])
    for precision in ("float32", "int8-dynamic", "float16"):
        p = work / f"{precision}.pte"
        add(f"executorch {precision}", lambda p=p, precision=precision: (export_model(
            model, p, precision=precision, dynamic=False, size=(224, 224), max_batch=8, check=False), runner(p))[1])
    return paths, built


def accuracy(model: torch.nn.Module, fn: Callable[[torch.Tensor], Any], x: torch.Tensor) -> dict[str, list[float]]:
    with torch.no_grad():
        ref = model.forward_features(x)
        got = fn(x)
    out = {}
    for k in KEYS:
        g = got[k] if isinstance(got, dict) else got[k]
        g = g.numpy() if hasattr(g, "numpy") else np.asarray(g)
        diff, cos = tensor_metrics(ref[k].numpy(), g)
        out[k] = [float(f"{diff:.3g}"), round(cos, 7)]
    return out


def time_paths(paths: dict[str, Callable[[torch.Tensor], Any]], x: torch.Tensor, rounds: int, reps: int) -> dict[str, dict]:
    names = list(paths)
    with torch.no_grad():
        for n in names:
            paths[n](x)  # warm-up
        times: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            for n in (names if r % 2 == 0 else names[::-1]):
                t0 = time.perf_counter()
                for _ in range(reps):
                    paths[n](x)
                times[n].append((time.perf_counter() - t0) / reps)
    base = times[names[0]]
    return {n: {"median_ms": round(1000 * statistics.median(times[n]), 1),
                "ratio_vs_eager": round(statistics.median(b / t for b, t in zip(base, times[n])), 2),
                "ratio_quartiles": [round(float(q), 2) for q in np.percentile([b / t for b, t in zip(base, times[n])], [25, 75])]}
            for n in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["vits14", "vitb14"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, nargs=2, default=[7, 5], metavar=("B1", "B8"), help="rounds at batch 1, 8")
    ap.add_argument("--skip", nargs="*", default=[], help="labels (prefixes) of paths to leave out")
    ap.add_argument("--tag", default="runtimes")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__,
                              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "loadavg_start": os.getloadavg(),
                              "date": _dt.date.today().isoformat(), "models": {}}
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("onnxruntime", "openvino", "nncf", "executorch"):
        try:
            result[pkg] = version(pkg)
        except PackageNotFoundError:
            result[pkg] = None
    log(json.dumps({k: v for k, v in result.items() if k != "models"}))
    for short in args.models:
        name = f"dinov2_{short}"
        model = golden.random_model(name, 0)  # full depth, generated weights
        g = torch.Generator().manual_seed(1)
        calib = [torch.randn(1, 3, 224, 224, generator=g) for _ in range(8)]
        x8 = torch.randn(8, 3, 224, 224, generator=g)
        with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
            log(f"{name}: building the paths")
            sources: dict[str, str] = {}
            paths, built = build_paths(name, model, calib, Path(tmp), args.threads, set(args.skip), sources)
            acc = {n: accuracy(model, fn, x8) for n, fn in paths.items()}
            log(json.dumps(acc))
            entry: dict[str, Any] = {"build_s": built, "accuracy_b8": acc, "loadavg_before": os.getloadavg(),
                                     "official_source": sources.get(name)}
            for batch, rounds, reps in ((1, args.rounds[0], 3), (8, args.rounds[1], 1)):
                entry[f"b{batch}"] = time_paths(paths, x8[:batch].contiguous(), rounds, reps)
                log(f"{name} batch {batch}: {json.dumps(entry[f'b{batch}'])}")
            entry["loadavg_after"] = os.getloadavg()
        result["models"][name] = entry
    result["loadavg_end"] = os.getloadavg()
    stem = RESULTS / f"cpu_{result['date']}_{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    log(f"wrote {stem}.json and .md")


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Export paths on CPU ({r['date']})", "",
             f"{r['cpu']}; torch {r['torch']}, onnxruntime {r['onnxruntime']}, openvino {r['openvino']}, nncf {r['nncf']}, "
             f"executorch {r['executorch']}; {r['threads']} threads, OMP_WAIT_POLICY={r['omp_wait_policy']}. "
             f"Load average at the start {tuple(round(v, 2) for v in r['loadavg_start'])}, at the end "
             f"{tuple(round(v, 2) for v in r['loadavg_end'])} (a machine shared with other jobs: read the ratios, "
             "not the times). Random weights (golden generator): the accuracy columns say little about real weights.", "",
             "ratio = eager minidino time / path time, median of per-round ratios (interquartile range in brackets); "
             "accuracy against eager float32 on 8 images: max abs / cosine of the class token and of the patch tokens.", ""]
    for name, e in r["models"].items():
        lines += [f"## {name}, 224 px", "", f"official: {e.get('official_source') or 'the official hub code beside the checkout'}", "",
                  "| path | batch 1: ms | ratio | batch 8: ms | ratio | cls max abs / cosine | patch max abs / cosine | build s |",
                  "|---|---|---|---|---|---|---|---|"]
        for p in e["b1"]:
            b1, b8, a = e["b1"][p], e["b8"][p], e["accuracy_b8"][p]
            lines.append(f"| {p} | {b1['median_ms']} | {b1['ratio_vs_eager']}x {b1['ratio_quartiles']} | {b8['median_ms']} | "
                         f"{b8['ratio_vs_eager']}x {b8['ratio_quartiles']} | {a['x_norm_clstoken'][0]:.2g} / "
                         f"{a['x_norm_clstoken'][1]:.6f} | {a['x_norm_patchtokens'][0]:.2g} / {a['x_norm_patchtokens'][1]:.6f} "
                         f"| {e['build_s'].get(p, '')} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
