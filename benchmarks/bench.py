"""minidino against every peer importable here, side by side, in one run.

    python benchmarks/bench.py                       # CPU: the standard CPU rows (about 5 min on 2 cores)
    python benchmarks/bench.py --device cuda         # GPU: the standard GPU rows, bf16, compiled modes included
    python benchmarks/bench.py --official /tmp/dinov2 --compile --rows vits14:224:8 --repeats 9
    python benchmarks/bench.py --load-test dinov2_vitg14   # build on meta + safetensors load, time and peak RSS

Implementations (a row runs every one that is available, interleaved A, B, C, A, B, C ...
after warm-up, the order rotated each round, so a noisy machine slows all of them alike):
  minidino           eager, default settings (float32 on CPU; bf16 weights on CUDA)
  minidino-explicit  eager, attn_impl="explicit" (the readable path; the 2023 official operation order)
  minidino-fold      optimize(compile=False): LayerScale folded (float32, near-exact)
  minidino-bf16      optimize(dtype=bf16, compile=False) on CPU (AMX / AVX512_BF16), not exact
  minidino-int8      torch.ao dynamic int8 quantisation of every Linear (CPU), not exact
  minidino-compile   optimize(compile=True [, dtype=bf16 on CUDA], cuda_graphs="auto")   with --compile
  transformers       Dinov2Model / Dinov2WithRegistersModel built from a config; our weights,
                     converted by a small local key mapping (random init if that fails: said in the JSON)
  timm               timm.create_model(vit_*_patch14[_reg4]_dinov2, pretrained=False): random init
  official           minidino.conformance.reference.official_model: torch.hub.load(PATH, name, source="local",
                     pretrained=False) with --official PATH, else the PyPI snapshot dinov2==0.0.1.dev2
                     (April-2023 official code, plain backbones) when installed; our state dict
  <peer>-compile     torch.compile(peer) with --compile

Throughput is images/s at the row's batch (median over rounds), latency the median time of
one batch-1 call. Peak memory: on CPU the peak-RSS growth of one forward in a fresh process per
implementation (VmHWM reset through /proc/self/clear_refs); on CUDA torch.cuda.max_memory_allocated
growth. Writes benchmarks/results/<device>_<date>.{json,md} and prints ratios against each peer.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

import minidino
from minidino.utils.memory import peak_growth, prefer_mmap, proc_status_kib
from minidino.conformance.reference import ReferenceUnavailable, official_model
from minidino.weights import huggingface_config, to_huggingface

RESULTS = Path(__file__).parent / "results"
CPU_ROWS = ["vits14:224:8", "vitb14:224:8", "vits14:518:2"]
CPU_LATENCY = ["vits14:224"]
GPU_ROWS = ["vits14:224:512", "vitl14:518:32", "vitg14:518:16"]
GPU_LATENCY = ["vits14:224", "vitl14:518"]
TIMM_NAMES = {"vits14": "vit_small_patch14", "vitb14": "vit_base_patch14", "vitl14": "vit_large_patch14",
              "vitg14": "vit_giant_patch14"}


# ------------------------------------------------------------------------------------------ machine
def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    name, flags = platform.processor() or "cpu", ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name"))
        fl = set(next(l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")))
        flags = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8") if f in fl)
    except (OSError, StopIteration):
        pass
    return f"{name}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}" + (f" ({flags})" if flags else "")


def load_avg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def wait_quiet(limit_s: float, threshold: float) -> list[float]:
    """Wait (up to limit_s) for the 1-minute load average to drop below threshold."""
    t0 = time.time()
    while load_avg() and load_avg()[0] > threshold and time.time() - t0 < limit_s:
        print(f"  load {load_avg()}: waiting for a quiet machine ...", flush=True)
        time.sleep(30)
    return load_avg()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ models
def hub_name(model: str) -> str:
    return model if model.startswith("dinov2_") else f"dinov2_{model}"


def minidino_state(name: str, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """The random weights every implementation gets: the official init, seeded, except LayerScale
    gammas drawn from U(0.1, 1) (the init's 1.0 would make folding them trivially exact)."""
    torch.manual_seed(seed)
    sd = minidino.create_model(name).state_dict()
    for k, v in sd.items():
        if k.endswith(".gamma"):
            v.uniform_(0.1, 1.0)
    return sd


class Impl:
    """One implementation of one model: fn(x) -> a tensor; built lazily; notes say what it is."""

    def __init__(self, label: str, fn: Callable[[torch.Tensor], Any], dtype: torch.dtype, notes: str = "") -> None:
        self.label, self.fn, self.dtype, self.notes = label, fn, dtype, notes


def _tokens(out: Any) -> torch.Tensor:
    """The (B, N, D) normed tokens of any implementation's output."""
    if hasattr(out, "last_hidden_state"):  # transformers (a ModelOutput is also a dict)
        return out.last_hidden_state
    if isinstance(out, dict):  # minidino, official
        regs = out.get("x_norm_regtokens")  # absent in the 2023 official code (no registers)
        parts = (out["x_norm_clstoken"][:, None],) + ((regs,) if regs is not None else ()) + (out["x_norm_patchtokens"],)
        return torch.cat(parts, 1)
    return out


def _compile_kw(args: argparse.Namespace) -> dict[str, Any] | None:
    """torch.compile arguments shared by minidino and the peers (--compile-mode)."""
    return {"mode": args.compile_mode} if getattr(args, "compile_mode", None) else None


def build(label: str, name: str, device: str, sd: dict[str, torch.Tensor], args: argparse.Namespace) -> Impl | None:
    """Build one implementation by label, or None when it is not available here."""
    gpu = device == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    base = label.removesuffix("-compile") if label not in ("minidino-compile",) else label
    compiled = label.endswith("-compile")
    if label.startswith("minidino"):
        m = minidino.create_model(name, device="meta")
        # assign=True makes the given tensors the parameters: clone, so that folding (in place)
        # cannot reach the shared state dict the other implementations are built from.
        m.load_state_dict({k: v.clone() for k, v in sd.items()}, assign=True)
        m = m.to(device).eval()
        if label == "minidino":
            m = m.to(dtype)
            return Impl(label, lambda x: m.forward_features(x), dtype, "eager, default settings")
        if label == "minidino-explicit":  # the operation order of the April-2023 official code
            m = m.to(dtype)
            m.attn_impl = "explicit"
            return Impl(label, lambda x: m.forward_features(x), dtype, "eager, attn_impl='explicit' (bit-exact, readable path)")
        if label == "minidino-fold":
            o = minidino.optimize(m, compile=False, copy=False, dtype=dtype)
            return Impl(label, o.forward_features, dtype, "optimize(compile=False): LayerScale folded")
        if label == "minidino-bf16":
            o = minidino.optimize(m, compile=False, copy=False, dtype=torch.bfloat16)
            return Impl(label, o.forward_features, torch.bfloat16, "optimize(dtype=bf16, compile=False), not exact")
        if label == "minidino-int8":  # measured so that docs/speed.md can say why there is no int8 mode
            import copy

            q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(m.to(dtype)), {torch.nn.Linear}, dtype=torch.qint8)
            return Impl(label, q.forward_features, dtype,
                        f"torch.ao dynamic int8 Linear ({torch.backends.quantized.engine} engine), not exact")
        if label == "minidino-compile":
            o = minidino.optimize(m, compile=True, copy=False, dtype=dtype, compile_options=_compile_kw(args))
            return Impl(label, o.forward_features, dtype, f"optimize(compile=True, dtype={dtype}, cuda_graphs='auto')")
        if label == "minidino-compile-bf16":
            o = minidino.optimize(m, compile=True, copy=False, dtype=torch.bfloat16, compile_options=_compile_kw(args))
            return Impl(label, o.forward_features, torch.bfloat16, "optimize(compile=True, dtype=bf16), not exact")
        raise ValueError(label)
    if base == "transformers":
        try:
            import transformers
        except ImportError:
            return None
        # minidino.weights writes the transformers config and keys itself (the layout `save_weights` uses).
        kw = {k: v for k, v in huggingface_config(minidino.get_config(name)).items() if k not in ("architectures", "model_type")}
        if kw.get("num_register_tokens"):
            hf = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(**kw))
        else:
            hf = transformers.Dinov2Model(transformers.Dinov2Config(**kw))
        weights = "our weights via minidino.weights.to_huggingface"
        try:
            hub_names = not any(".attention.q_proj." in k for k in hf.state_dict())  # older transformers releases
            hf.load_state_dict(to_huggingface(sd, hub_names=hub_names), strict=True)
        except (KeyError, RuntimeError) as e:
            weights = f"random init (mapping failed: {str(e).splitlines()[0][:120]})"
        hf = hf.to(device, dtype).eval()
        f = torch.compile(hf, **(_compile_kw(args) or {})) if compiled else hf
        attn = getattr(hf.config, "_attn_implementation", "?")
        return Impl(label, lambda x: f(pixel_values=x), dtype,
                    f"transformers {transformers.__version__} {type(hf).__name__}, attn={attn}, {weights}")
    if base == "timm":
        try:
            import timm
        except ImportError:
            return None
        short = name.removeprefix("dinov2_").removesuffix("_reg")
        tname = TIMM_NAMES[short] + ("_reg4" if name.endswith("_reg") else "") + "_dinov2"
        tm = timm.create_model(tname, pretrained=False, img_size=args._res, num_classes=0).to(device, dtype).eval()
        # Compile the method itself: torch.compile(module).forward_features would run the eager method.
        f = torch.compile(tm.forward_features, **(_compile_kw(args) or {})) if compiled else tm.forward_features
        return Impl(label, lambda x: f(x), dtype, f"timm {timm.__version__} {tname}, random init")
    if base == "official":
        try:  # a checkout given with --official, else the PyPI snapshot when installed (plain models)
            ref = official_model(name, repo=args.official)
        except ReferenceUnavailable:
            return None
        om = ref.module
        missing = om.load_state_dict(sd, strict=True)
        om = om.to(device, dtype).eval()
        f = torch.compile(om.forward_features, **(_compile_kw(args) or {})) if compiled else om.forward_features
        return Impl(label, lambda x: f(x), dtype, f"{ref.source}, attention {ref.attn_impl}, our weights {missing}")
    raise ValueError(f"unknown implementation {label!r}")


def labels(args: argparse.Namespace) -> list[str]:
    gpu = args.device == "cuda"
    out = ["minidino", "minidino-explicit", "minidino-fold"] + ([] if gpu else ["minidino-bf16", "minidino-int8"])
    if args.compile:
        out += ["minidino-compile"] + ([] if gpu else ["minidino-compile-bf16"])
    peers = ["official", "timm", "transformers"]
    out += peers
    if args.compile:
        out += [p + "-compile" for p in peers]
    if args.only:
        out = [l for l in out if l in args.only.split(",")]
    return out


# ------------------------------------------------------------------------------------------ timing
def timed(fn: Callable[[], Any], device: str, iters: int) -> float:
    """Seconds per call, over `iters` back-to-back calls."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / iters


def interleaved(impls: list[Impl], x: torch.Tensor, device: str, warmup: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each implementation: warm-up, then rounds of A, B, C (order rotated)."""
    inputs = {i.label: x.to(i.dtype) for i in impls}
    with torch.inference_mode():
        for i in impls:
            for _ in range(warmup):
                i.fn(inputs[i.label])
        # GPU calls are short: repeat each timing so it lasts ~0.1 s at least.
        iters = {i.label: 1 for i in impls}
        if device == "cuda":
            for i in impls:
                t = timed(lambda: i.fn(inputs[i.label]), device, 3)
                iters[i.label] = max(1, min(200, int(0.1 / max(t, 1e-6))))
        times: dict[str, list[float]] = {i.label: [] for i in impls}
        for r in range(rounds):
            order = impls[r % len(impls):] + impls[: r % len(impls)]
            for i in order:
                times[i.label].append(timed(lambda: i.fn(inputs[i.label]), device, iters[i.label]))
    return times


def deviation(impls: list[Impl], x: torch.Tensor) -> dict[str, dict[str, float]]:
    """Max abs difference and min cosine similarity of every implementation's normed tokens to minidino's."""
    ref_impl = next((i for i in impls if i.label == "minidino"), None)
    if ref_impl is None:
        return {}
    with torch.inference_mode():
        ref = _tokens(ref_impl.fn(x.to(ref_impl.dtype))).float()
        out = {}
        for i in impls:
            t = _tokens(i.fn(x.to(i.dtype))).float()
            if t.shape != ref.shape:
                continue
            cos = torch.nn.functional.cosine_similarity(t.flatten(0, 1), ref.flatten(0, 1), dim=-1).min().item()
            out[i.label] = {"max_abs": (t - ref).abs().max().item(), "min_cosine": cos}
    return out


def memory_probe(label: str, name: str, res: int, batch: int, args: argparse.Namespace) -> float | None:
    """Peak memory growth (MiB) of one forward. CPU: in a fresh process; CUDA: in this one."""
    if args.device == "cuda":
        sd = minidino_state(name, "cuda")
        args._res = res
        impl = build(label, name, "cuda", sd, args)
        if impl is None:
            return None
        x = torch.randn(batch, 3, res, res, device="cuda", dtype=impl.dtype)
        with torch.inference_mode():
            impl.fn(x)  # warm-up (compilation, graph capture)
            peak = peak_growth(lambda: impl.fn(x), "cuda") / 2**20
        del impl, x
        gc.collect()
        torch.cuda.empty_cache()
        return peak
    cmd = [sys.executable, __file__, "--_probe", f"{label}:{name}:{res}:{batch}", "--device", "cpu"]
    if args.official:
        cmd += ["--official", args.official]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = [l for l in r.stdout.splitlines() if l.startswith("PEAK_MIB ")]
    return float(lines[-1].split()[1]) if lines else None


def run_probe(spec: str, args: argparse.Namespace) -> None:
    """Child process of memory_probe on CPU: build, reset the RSS high-water mark, one forward."""
    label, name, res, batch = spec.split(":")
    args._res = int(res)
    prefer_mmap()  # RSS follows the live tensors, not what the heap kept from building the model
    impl = build(label, name, "cpu", minidino_state(name, "cpu"), args)
    if impl is None:
        return
    x = torch.randn(int(batch), 3, int(res), int(res), dtype=impl.dtype)
    with torch.inference_mode():
        peak = peak_growth(lambda: impl.fn(x), "cpu")
    if peak is not None:
        print(f"PEAK_MIB {peak / 2**20:.1f}")


# ------------------------------------------------------------------------------------------ weights
def load_test(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time and peak RSS of building a model and loading a full safetensors state dict, two ways."""
    path = Path(args.load_dir) / f"{name}.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"  writing random {name} weights to {path} ...", flush=True)
        code = ("import torch, minidino, safetensors.torch as st, sys\n"
                f"m = minidino.create_model({name!r}, device='meta')\n"
                "sd = {k: torch.randn(v.shape) for k, v in m.state_dict().items()}\n"
                f"st.save_file(sd, {str(path)!r})\n")
        subprocess.run([sys.executable, "-c", code], check=True)
    out = {"model": name, "file": str(path), "file_gib": round(path.stat().st_size / 2**30, 2)}
    for how in ("meta", "naive"):
        r = subprocess.run([sys.executable, __file__, "--_load", f"{how}:{name}:{path}"], capture_output=True, text=True)
        line = [l for l in r.stdout.splitlines() if l.startswith("LOAD ")]
        if not line:
            raise RuntimeError(f"load probe failed: {r.stderr[-2000:]}")
        out[how] = json.loads(line[-1][5:])
        print(f"  {how:5s}: {out[how]}", flush=True)
    return out


def run_load(spec: str) -> None:
    how, name, path = spec.split(":", 2)
    import safetensors.torch as st

    base = proc_status_kib("VmRSS")
    t0 = time.perf_counter()
    if how == "meta":
        model = minidino.create_model(name, device="meta")  # no memory
        t1 = time.perf_counter()
        model.load_state_dict(st.load_file(path), assign=True)  # the loaded tensors become the parameters
    else:
        model = minidino.create_model(name)  # allocates and initialises every weight ...
        t1 = time.perf_counter()
        model.load_state_dict(st.load_file(path))  # ... then a second copy is read and copied in
    t2 = time.perf_counter()
    assert not any(p.is_meta for p in model.parameters())
    # safetensors tensors may be memory-mapped: read one float per 4 KiB page of every weight, so
    # the figures include bringing the weights into the process (from the page cache here).
    touched = sum(float(p.detach().reshape(-1)[::1024].sum()) for p in model.parameters())
    t3 = time.perf_counter()
    n = sum(p.numel() for p in model.parameters())
    print("LOAD " + json.dumps({"create_s": round(t1 - t0, 3), "load_s": round(t2 - t1, 3), "touch_s": round(t3 - t2, 3),
                                "total_s": round(t3 - t0, 3), "checksum_finite": touched == touched,
                                "peak_rss_gib": round((proc_status_kib("VmHWM") - base) / 2**20, 2),
                                "params_gib": round(n * 4 / 2**30, 2)}))


# ------------------------------------------------------------------------------------------ report
def parse_rows(rows: str) -> list[tuple[str, int, int]]:
    out = []
    for r in rows.split(","):
        m, res, b = r.split(":")
        out.append((hub_name(m), int(res), int(b)))
    return out


def bench_row(name: str, res: int, batch: int, args: argparse.Namespace, rounds: int, kind: str) -> dict[str, Any]:
    print(f"\n== {name} {res}px batch {batch} ({kind}) on {args.device}", flush=True)
    sd = minidino_state(name, args.device)
    args._res = res
    impls, skipped = [], []
    for label in labels(args):
        t0 = time.perf_counter()
        impl = build(label, name, args.device, sd, args)
        if impl is None:
            skipped.append(label)
        else:
            impls.append(impl)
            print(f"  built {label:24s} in {time.perf_counter() - t0:5.1f} s: {impl.notes}", flush=True)
    torch.manual_seed(1)
    x = torch.randn(batch, 3, res, res, device=args.device)
    load0 = load_avg()
    times = interleaved(impls, x, args.device, args.warmup, rounds)
    row: dict[str, Any] = {"model": name, "res": res, "batch": batch, "kind": kind, "load_avg_before": load0,
                           "load_avg_after": load_avg(), "skipped": skipped, "impls": {}}
    for i in impls:
        med = statistics.median(times[i.label])
        row["impls"][i.label] = {"notes": i.notes, "dtype": str(i.dtype).removeprefix("torch."),
                                 "median_s": med, "min_s": min(times[i.label]), "all_s": times[i.label],
                                 "img_per_s": batch / med, "ms": 1000 * med}
    if kind == "throughput":
        for label, d in deviation(impls, x).items():  # the timed batch: no recompilation for a new shape
            row["impls"][label].update(d)
        if args.memory:
            for i in impls:
                row["impls"][i.label]["peak_mib"] = memory_probe(i.label, name, res, batch, args)
    del impls
    gc.collect()
    for label, d in row["impls"].items():
        extra = f"  peak {d['peak_mib']:.0f} MiB" if d.get("peak_mib") is not None else ""
        dev = f"  vs minidino max abs {d['max_abs']:.2e} cos {d['min_cosine']:.6f}" if "max_abs" in d else ""
        print(f"  {label:24s} {d['img_per_s']:9.2f} img/s  {d['ms']:9.2f} ms{extra}{dev}")
    return row


def ratio_stats(mine: list[float], peer: list[float]) -> dict[str, float]:
    """peer time / minidino time, three ways: medians; per round (each round times every
    implementation back to back, so the pair shares the machine's state): median and the range
    of the middle half; best round against best round. On a noisy VM the spread says how far
    a ratio can be trusted."""
    paired = sorted(p / m for m, p in zip(mine, peer))
    q = lambda f: paired[min(len(paired) - 1, int(f * len(paired)))]  # noqa: E731
    return {"median": statistics.median(peer) / statistics.median(mine), "paired_median": statistics.median(paired),
            "paired_q25": q(0.25), "paired_q75": q(0.75), "best": min(peer) / min(mine)}


def ratios(row: dict[str, Any]) -> list[str]:
    out, imp = [], row["impls"]
    peers = [l for l in imp if not l.startswith("minidino")]
    for mine in [l for l in imp if l.startswith("minidino")]:
        for p in peers:
            r = ratio_stats(imp[mine]["all_s"], imp[p]["all_s"])
            out.append(f"{mine} / {p}: {r['median']:.3f}x (per round {r['paired_median']:.2f}x, middle half "
                       f"{r['paired_q25']:.2f}-{r['paired_q75']:.2f}; best {r['best']:.2f}x)")
    return out


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [f"# minidino speed, {meta['device']}", "",
             f"{meta['date']}, torch {meta['torch']}, transformers {meta.get('transformers', '-')}, "
             f"python {meta['python']}. Command: `{meta['command']}`", "",
             f"Load average (1, 5, 15 min) at start {meta['load_avg_start']}, at end {meta['load_avg_end']}. "
             f"Skipped (not importable / no --official PATH): {', '.join(meta['skipped']) or 'none'}.", "",
             "Throughput is images/s (median of interleaved rounds), latency the median ms of one batch-1 call; "
             "peak = peak-memory growth of one forward; dev = max abs / min cosine of the normed tokens against "
             "eager minidino (peers differ at 224 px by their position-embedding interpolation, see SPEC 4).", ""]
    for row in result["rows"]:
        what = f"{row['model']} {row['res']}px batch {row['batch']}, {row['kind']}"
        lines += [f"## {what}", "", f"load average {row['load_avg_before']} -> {row['load_avg_after']}", ""]
        if row["kind"] == "throughput":
            lines += ["| implementation | img/s | ms / batch | peak MiB | max abs dev | min cosine | notes |", "|---|---|---|---|---|---|---|"]
        else:
            lines += ["| implementation | ms | notes |", "|---|---|---|"]
        for label, d in row["impls"].items():
            if row["kind"] == "throughput":
                pk = f"{d['peak_mib']:.0f}" if d.get("peak_mib") is not None else "-"
                ma = f"{d['max_abs']:.2e}" if "max_abs" in d else "-"
                cs = f"{d['min_cosine']:.6f}" if "min_cosine" in d else "-"
                lines.append(f"| {label} | {d['img_per_s']:.2f} | {d['ms']:.1f} | {pk} | {ma} | {cs} | {d['notes']} |")
            else:
                lines.append(f"| {label} | {d['ms']:.2f} | {d['notes']} |")
        r = ratios(row)
        if r:
            lines += ["", "Ratios (peer time / minidino time; > 1 means minidino is faster; of the medians, then per "
                      "round, then best round against best round):", ""] + [f"- {x}" for x in r]
        lines.append("")
    if result.get("load_test"):
        lt = result["load_test"]
        lines += [f"## Building {lt['model']} and loading its weights ({lt['file_gib']} GiB safetensors, in page cache)", "",
                  "| how | create s | load s | touch every page s | total s | peak RSS growth GiB | params GiB |",
                  "|---|---|---|---|---|---|---|"]
        for how, desc in (("meta", "create_model(device='meta') + load_state_dict(assign=True)"),
                          ("naive", "create_model() + load_state_dict() (copy)")):
            d = lt[how]
            lines.append(f"| {desc} | {d['create_s']} | {d['load_s']} | {d.get('touch_s', '-')} | {d['total_s']} | "
                         f"{d['peak_rss_gib']} | {d['params_gib']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--rows", help="model:res:batch,... throughput rows (default: the standard rows for the device)")
    p.add_argument("--latency", help="model:res,... batch-1 latency rows ('' for none)")
    p.add_argument("--repeats", type=int, help="timed rounds per row (default 5 on CPU, 20 on CUDA)")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls per implementation (default 1 CPU, 5 CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also compiled modes (default: on for CUDA, off for CPU where compiling takes minutes)")
    p.add_argument("--compile-mode", help="torch.compile mode for every compiled model, e.g. max-autotune-no-cudagraphs")
    p.add_argument("--official", help="path of a local checkout of facebookresearch/dinov2 (torch.hub source='local')")
    p.add_argument("--only", help="comma-separated implementation labels to run")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True, help="measure peak memory")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    p.add_argument("--load-test", metavar="MODEL", help="also time create_model(meta) + safetensors load of MODEL")
    p.add_argument("--load-dir", default="/tmp/minidino_bench")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S", help="wait up to S seconds for load < #cores/2")
    p.add_argument("--out", default=str(RESULTS), help="directory for the JSON and markdown results")
    p.add_argument("--tag", help="file name stem (default <device>_<date>)")
    p.add_argument("--_probe", help=argparse.SUPPRESS)
    p.add_argument("--_load", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._load:
        run_load(args._load)
        return 0
    if args._probe:
        run_probe(args._probe, args)
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here")
    gpu = args.device == "cuda"
    args.compile = gpu if args.compile is None else args.compile
    rounds = args.repeats or (20 if gpu else 5)
    args.warmup = (5 if gpu else 1) if args.warmup is None else args.warmup
    rows = parse_rows(args.rows) if args.rows else [] if args.rows == "" else parse_rows(",".join(GPU_ROWS if gpu else CPU_ROWS))
    lat = args.latency if args.latency is not None else ",".join(GPU_LATENCY if gpu else CPU_LATENCY)
    lat_rows = [(hub_name(r.split(":")[0]), int(r.split(":")[1]), 1) for r in lat.split(",") if r]
    if args.wait_quiet:
        wait_quiet(args.wait_quiet, (os.cpu_count() or 2) / 2)
    now = _dt.datetime.now()
    meta: dict[str, Any] = {"device": device_name(args.device), "date": now.strftime("%Y-%m-%d %H:%M"),
                            "torch": torch.__version__, "python": platform.python_version(),
                            "command": "python benchmarks/bench.py " + " ".join(sys.argv[1:] if argv is None else argv),
                            "load_avg_start": load_avg(), "threads": torch.get_num_threads()}
    try:
        import transformers

        meta["transformers"] = transformers.__version__
    except ImportError:
        pass
    result: dict[str, Any] = {"meta": meta, "rows": []}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.tag or f"{args.device}_{now.strftime('%Y-%m-%d')}"

    def save() -> None:  # after every row: a run cut short (a device time limit) keeps what it measured
        meta["load_avg_end"] = load_avg()
        meta["skipped"] = sorted({s for r in result["rows"] for s in r["skipped"]})
        (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
        (out / f"{stem}.md").write_text(markdown(result))

    for name, res, b in rows:
        result["rows"].append(bench_row(name, res, b, args, rounds, "throughput"))
        save()
    for name, res, b in lat_rows:
        result["rows"].append(bench_row(name, res, b, args, max(rounds, 20 if not gpu else 50), "latency"))
        save()
    if args.load_test:
        print(f"\n== building {args.load_test} and loading its weights", flush=True)
        result["load_test"] = load_test(hub_name(args.load_test), args)
    save()
    print("\nRatios (peer time / minidino time):")
    for row in result["rows"]:
        print(f"  {row['model']} {row['res']}px b{row['batch']} {row['kind']}: " + "; ".join(ratios(row)))
    if meta["skipped"]:
        print(f"Skipped (not importable here, or no --official PATH): {', '.join(meta['skipped'])}")
    print(f"wrote {out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
