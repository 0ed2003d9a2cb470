"""The figures of docs/porting.md: every backbone on every runtime, on the golden inputs; and the operators.

    python benchmarks/porting_figures.py                       # all backbones of the catalogue with a golden case
    python benchmarks/porting_figures.py --models dinov2_vits14 --runtimes onnx openvino

1. Parity. For each backbone golden case (its generated weights and depth: tests/golden/), export
   float32 with a free size (ExecuTorch: batch <= 3, sides <= 518 px) for ONNX Runtime, OpenVINO
   and ExecuTorch, run every golden input without masks (an exported graph takes none), and
   compare with eager float32 (max abs, cosine of every default output) and with the stored
   outputs of the official code where they are forward_features outputs.
2. Operators. Full-depth ViT-S/14 (and the first backbone of every other family): the op counts of
   the free-size and static ONNX graphs, the portable graph (opset 18 and 17, LayerNorm written
   out), the OpenVINO IR, the ExecuTorch program (delegated to XNNPACK and left to the portable
   kernels) and the CoreML ML program (iOS17 and iOS18).

Writes benchmarks/results/porting_<date>.{json,md} (a rerun on the same day updates its rows). A
backbone without a golden case gets the parity against eager on generated weights and images. With
--models, part 2 is done for the families of those models only.

DINOv3's golden inputs include sides that are not multiples of 16 (203 x 125): the model ignores
the pixels past the last whole patch, and an exported graph takes whole patches only, so such an
input is cropped to whole patches first for the runtimes (eager and the official outputs take the
uncropped image, and read the same pixels).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import minidino
from minidino.catalogue import backbone_entries
from minidino.conformance import golden
from minidino.conformance.compare import tensor_metrics
from minidino.export.program import default_outputs
from minidino.export.runners import load_runner
from minidino.export.targets import export_model

RESULTS = Path(__file__).parent / "results"


def log(*a: Any) -> None:
    print(*a, flush=True)


def parity(model: torch.nn.Module, inputs: list[tuple[str, torch.Tensor, dict[str, np.ndarray]]], runtime: str,
           work: Path) -> dict[str, Any]:
    """Export float32 for `runtime`, run every input; worst figures against eager and the official outputs."""
    suffix = {"onnx": ".onnx", "openvino": ".xml", "executorch": ".pte"}[runtime]
    path = work / f"m{suffix}"
    kw: dict[str, Any] = {"max_batch": 3, "max_side": 518} if runtime == "executorch" else {}
    t0 = time.perf_counter()
    export_model(model, path, check=False, **kw)
    seconds = time.perf_counter() - t0
    run = load_runner(path)
    keys = default_outputs(model)
    worst = {"max_abs": 0.0, "cosine": 1.0, "official_max_abs": 0.0, "inputs": []}
    p = model.patch_size
    for tag, x, official in inputs:
        with torch.no_grad():
            ref = model.forward_features(x)
        got = run(x[..., : x.shape[-2] // p * p, : x.shape[-1] // p * p].numpy())  # whole patches (docstring)
        for k in keys:
            d, c = tensor_metrics(ref[k].numpy(), got[k])
            worst["max_abs"], worst["cosine"] = max(worst["max_abs"], d), min(worst["cosine"], c)
        for spec, want in official.items():  # 'x_norm_patchtokens[:,::7]' -> the port's tensor, sliced
            key, _, sl = spec.partition("[")
            value = got[key][golden._parse_slices(sl.rstrip("]") or None) or slice(None)]
            worst["official_max_abs"] = max(worst["official_max_abs"], float(np.abs(value - want).max()))
        worst["inputs"].append(tag)
    worst.update(max_abs=float(f"{worst['max_abs']:.3g}"), cosine=round(worst["cosine"], 7),
                 official_max_abs=float(f"{worst['official_max_abs']:.3g}"), export_s=round(seconds, 1))
    return worst


def golden_inputs(case: dict[str, Any]) -> list[tuple[str, torch.Tensor, dict[str, np.ndarray]]]:
    from safetensors.numpy import load_file

    stored = load_file(str(golden.default_golden_dir() / case["file"]))
    out = []
    for inp in case["inputs"]:
        if inp.get("mask_stream") is not None:
            continue
        x = golden.generate_images(case["weight_seed"], inp["image_stream"], tuple(inp["shape"]))
        official = {spec.split("/", 1)[1]: stored[f"{inp['tag']}/{spec}"] for spec in inp["outputs"]
                    if spec.startswith("forward_features/") and "x_prenorm" not in spec}
        out.append((inp["tag"], x, official))
    return out


def operators(name: str, work: Path) -> dict[str, Any]:
    model = golden.random_model(name, 0)  # full depth
    out: dict[str, Any] = {}
    jobs = {
        "onnx free size": dict(path="free.onnx"),
        "onnx static 224": dict(path="static.onnx", dynamic=False),
        "onnx portable opset 18": dict(path="p18.onnx", portable=True, dynamic=False, opset=18),
        "onnx portable opset 17, LayerNorm written out": dict(path="p17.onnx", portable=True, dynamic=False, opset=17,
                                                               layer_norm="primitive"),
        "openvino free size": dict(path="free.xml"),
        "executorch static 224, batch <= 8": dict(path="static.pte", dynamic=False, max_batch=8),
        "coreml iOS17 static 224": dict(path="m.mlpackage", dynamic=False),
    }
    for label, kw in jobs.items():
        path = work / kw.pop("path")
        try:
            t0 = time.perf_counter()
            r = export_model(model, path, **kw)
            out[label] = {"ops": r.ops, "delegated": r.delegated, "opset": r.opset, "inputs": r.inputs, "free": r.free,
                          "nodes": sum(r.ops.values()), "check": r.check, "seconds": round(time.perf_counter() - t0, 1)}
            log(f"  {label}: {sum(r.ops.values())} nodes, check {r.check}")
        except Exception as e:
            out[label] = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"}
            log(f"  {label}: {out[label]['error']}")
    try:
        import coremltools as ct

        from minidino.export.coreml import coreml_ops

        with minidino.export.program.exportable(model, dynamic=False, size=(224, 224), batch=1) as (module, shapes):
            program = torch.export.export(module, (shapes.example,)).run_decompositions({})
        ml = ct.convert(program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                        compute_precision=ct.precision.FLOAT32)
        out["coreml iOS18 static 224"] = {"ops": coreml_ops(ml)}
    except Exception as e:
        out["coreml iOS18 static 224"] = {"error": f"{type(e).__name__}: {e}"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", help="backbones (default: every backbone with a golden case)")
    ap.add_argument("--runtimes", nargs="+", default=["onnx", "openvino", "executorch"])
    ap.add_argument("--no-operators", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    cases = {c["model"]: c for c in golden.load_index()["cases"] if "depth" in c and "lc_layers" not in c
             and c["model"] in {e.name for e in backbone_entries()}}
    names = args.models or list(cases)
    result: dict[str, Any] = {"date": _dt.date.today().isoformat(), "torch": torch.__version__,
                              "loadavg_start": os.getloadavg(), "parity": {}, "operators": {}}
    with tempfile.TemporaryDirectory(prefix="porting-figures-") as tmp:
        for name in names:
            if name in cases:
                model, _ = golden.build_case(cases[name])
                inputs = golden_inputs(cases[name])
            else:  # a family without golden vectors yet: generated weights and images
                model = golden.random_model(name, 0, depth=2)
                inputs = [("r224", golden.generate_images(0, 1, (2, 3, 224, 224)), {})]
            depth = len(getattr(model, "blocks", []))
            result["parity"][name] = {"depth": depth}
            for runtime in args.runtimes:
                work = Path(tmp) / f"{name}-{runtime}"
                work.mkdir()
                try:
                    result["parity"][name][runtime] = parity(model, inputs, runtime, work)
                except Exception as e:
                    result["parity"][name][runtime] = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"}
                log(f"{name} ({depth} blocks) {runtime}: {result['parity'][name][runtime]}")
        if not args.no_operators:
            families = {e.family: e.name for e in reversed(backbone_entries())}  # the first backbone of each family
            if args.models:
                families = {f: n for f, n in families.items() if f in {e.family for e in backbone_entries() if e.name in names}}
            for family, name in sorted(families.items()):
                name = "dinov2_vits14" if family == "dinov2" else name
                work = Path(tmp) / f"ops-{name}"
                work.mkdir()
                log(f"operators of {name} (full depth)")
                result["operators"][name] = operators(name, work)
    result["loadavg_end"] = os.getloadavg()
    stem = RESULTS / f"porting_{result['date']}"
    if stem.with_suffix(".json").exists():  # a partial rerun (--models, --runtimes) updates the day's file
        old = json.loads(stem.with_suffix(".json").read_text())
        for name, runs in result["parity"].items():
            old["parity"].setdefault(name, {}).update(runs)
        old["operators"].update(result["operators"])
        old.setdefault("reruns", []).append({"models": names, "runtimes": args.runtimes, "operators": list(result["operators"]),
                                             "loadavg_start": result["loadavg_start"], "loadavg_end": result["loadavg_end"]})
        result = old
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    log(f"wrote {stem}.json and .md")


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Porting figures ({r['date']}, torch {r['torch']})", "",
             f"Load average {tuple(round(v, 2) for v in r['loadavg_start'])} at the start, "
             f"{tuple(round(v, 2) for v in r['loadavg_end'])} at the end.", "",
             *[f"Rerun for {', '.join(run['models'])} ({', '.join(run['runtimes'])}; operators of "
               f"{', '.join(run['operators']) or 'none'}): load average {tuple(round(v, 2) for v in run['loadavg_start'])} "
               f"at the start, {tuple(round(v, 2) for v in run['loadavg_end'])} at the end{run.get('note', '')}.\n"
               for run in r.get("reruns", [])],
             "## Parity on the golden inputs (float32, free size)", "",
             "Golden case weights and depth; every golden input without masks. Against eager float32: worst max abs and "
             "lowest cosine over the default outputs; against the stored official outputs: worst max abs.", "",
             "| model (blocks) | runtime | max abs vs eager | cosine | max abs vs official | export s |", "|---|---|---|---|---|---|"]
    for name, runs in r["parity"].items():
        for runtime, f in runs.items():
            if runtime == "depth":
                continue
            if "error" in f:
                lines.append(f"| {name} ({runs['depth']}) | {runtime} | {f['error']} | | | |")
            else:
                lines.append(f"| {name} ({runs['depth']}) | {runtime} | {f['max_abs']:.1e} | {f['cosine']:.6f} | "
                             f"{f['official_max_abs']:.1e} | {f['export_s']} |")
    for name, graphs in r["operators"].items():
        lines += ["", f"## Operators of {name} (full depth)", ""]
        for label, g in graphs.items():
            if "error" in g:
                lines.append(f"- **{label}**: {g['error']}")
                continue
            ops = ", ".join(f"{k} {v}" for k, v in g["ops"].items())
            extra = f"; inside the XNNPACK delegate: {', '.join(f'{k} {v}' for k, v in g['delegated'].items())}" if g.get("delegated") else ""
            lines.append(f"- **{label}** ({g.get('nodes', sum(g['ops'].values()))} nodes{', opset ' + str(g['opset']) if g.get('opset') else ''}"
                         f"{', free ' + str(g['free']) if g.get('free') else ''}): {ops}{extra}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
