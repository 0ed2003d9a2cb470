"""Golden vectors: the runner of the reference outputs.

A conformance kit. The reference outputs in tests/golden/ were computed with the official
DINOv2 and DINOv3 code; weights and inputs are not stored but rebuilt bit-exactly from a counter-based
generator (generator.py, tests/golden/README.md), so any implementation, in any language or on
any hardware, can run the same check. `run_case` rebuilds a case's model and inputs and returns
the max abs difference of every stored output. The generator's functions are re-exported here:
a golden case is nothing but generated weights and inputs plus stored outputs.
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..factory import create_model, vision_backbone
from ..heads import DINOHead
from .compare import CaseResult
from .generator import (  # noqa: F401  (re-exported: see the module docstring)
    generate_for, generate_images, generate_masks, generate_state_dict, generate_tensor, init_range, random_model,
    splitmix64, uniform, weights_sha256,
)
from .golden_text import build_dinotxt_case, run_dinotxt_case

__all__ = [
    "splitmix64", "uniform", "generate_tensor", "init_range", "generate_state_dict", "generate_for", "random_model", "weights_sha256",
    "generate_images", "generate_masks", "load_index", "build_case", "run_case", "CaseResult", "default_golden_dir",
]

def default_golden_dir() -> Path:
    """tests/golden/ of a source checkout (where the vendored reference files live).

    Examples:
        >>> (default_golden_dir() / "index.json").is_file()
        True
    """
    return Path(__file__).resolve().parents[2] / "tests" / "golden"


def load_index(golden_dir: str | Path | None = None) -> dict[str, Any]:
    """The golden cases: index.json of `golden_dir` (default: tests/golden/ of the checkout) as a dict with "cases".

    Examples:
        >>> index = load_index()
        >>> len(index["cases"]), index["cases"][0]["model"]
        (27, 'dinov2_vits14')
    """
    from ..utils.files import UnreadableFile, read_limited

    d = Path(golden_dir) if golden_dir is not None else default_golden_dir()
    path = d / "index.json"
    if not path.exists():
        raise FileNotFoundError(f"no golden index at {path}; pass the folder that holds index.json and the .safetensors files")
    try:
        index = json.loads(read_limited(path, 16 * 2**20))
    except (UnreadableFile, ValueError) as e:
        raise ValueError(f"golden index {path}: not a readable JSON file ({e})") from None
    problem = _index_problem(index)
    if problem:
        raise ValueError(f"golden index {path}: {problem}; it is not a minidino golden index (tests/golden/index.json)")
    return index


_MAX_VALUES = 2**26  # the largest input a case may ask for (B * C * H * W), 256 MiB in float32


def _index_problem(index: Any) -> str | None:
    """What is wrong with a golden index read from a file (it names files to open and shapes to
    allocate: a file name is a name in the folder, a shape is bounded), or None."""
    if not isinstance(index, dict) or not isinstance(index.get("cases"), list) or not index["cases"]:
        return "it needs a non-empty list 'cases'"
    for i, case in enumerate(index["cases"]):
        if not isinstance(case, dict):
            return f"case {i} is not an object"
        name, file = case.get("model"), case.get("file")
        if not isinstance(name, str) or not name:
            return f"case {i} names no model"
        if not isinstance(file, str) or Path(file).name != file or file in ("", ".", "..") or not file.endswith(".safetensors"):
            return f"case {i} ({name}): its 'file' {file!r} must be a .safetensors file name in the folder"
        for key, value in case.items():
            if isinstance(value, int) and not isinstance(value, bool) and not -1 <= value <= 2**20:
                return f"case {i} ({name}): {key}={value} is out of range"
        if case.get("depth") is not None and not (isinstance(case["depth"], int) and 1 <= case["depth"] <= 64):
            return f"case {i} ({name}): depth {case['depth']!r} is not 1..64"
        inputs = case.get("inputs", [])
        if not isinstance(inputs, list) or not all(isinstance(x, dict) for x in inputs):
            return f"case {i} ({name}): 'inputs' is not a list of objects"
        for x in inputs:
            shape = x.get("shape")
            if shape is not None and not (isinstance(shape, list) and all(isinstance(v, int) and v >= 1 for v in shape)
                                          and math.prod(shape) <= _MAX_VALUES):
                return f"case {i} ({name}): input shape {shape!r} is not a list of positive sizes of at most {_MAX_VALUES} values"
    return None


def case_name(case: dict[str, Any]) -> str:
    """A case's name: the model, with its layers or its non-default weight set.

    Examples:
        >>> case_name({"model": "dinov3_vitl16", "weights": "SAT493M"})
        'dinov3_vitl16_sat493m'
    """
    if "weights" in case:  # a weight set that changes the architecture (DINOv3's satellite ViT-L)
        return f"{case['model']}_{case['weights'].lower()}"
    if "lc_layers" in case:
        return f"{case['model']}_layers{case['lc_layers']}"
    if "depth_layers" in case:  # a linear depther (*_ld)
        return f"{case['model']}_layers{case['depth_layers']}"
    return case["model"]


def build_case(case: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, Tensor]]:
    """The model of a golden case (minidino's), loaded with the generated weights; and those weights.

    Examples:
        >>> case = next(c for c in load_index()["cases"] if c["model"] == "dino_head")
        >>> model, sd = build_case(case)
        >>> weights_sha256(sd) == case["weights_sha256"], type(model).__name__
        (True, 'DINOHead')
    """

    if case["model"] == "dinotxt":  # its own case format: golden_text.py

        return build_dinotxt_case(case)
    if case["model"] == "dino_head":
        model: torch.nn.Module = DINOHead(case["in_dim"], case["out_dim"], case["hidden_dim"], case["bottleneck_dim"],
                                          case["nlayers"], device="meta")
    elif case["model"].endswith(("_ld", "_dd")):  # depthers: full depth (the head reads the last block)
        kw = {"layers": case["depth_layers"]} if "depth_layers" in case else {}
        model = create_model(case["model"], device="meta", **kw)
    else:
        kw = {"layers": case["lc_layers"]} if "lc_layers" in case else {"weights": case["weights"]} if "weights" in case else {}
        model = create_model(case["model"], depth=case["depth"], device="meta", **kw)
    sd = generate_for(model, case["weight_seed"])  # weights_sha256 proves these are the case's keys and values
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval(), sd


_CALL = re.compile(r"^(?P<fn>[a-z_]+)(?:\((?P<args>.*)\))?$")
_SLICE = re.compile(r"^(?P<path>.*?)(?:\[(?P<slices>[^\]]*)\])?$")


def _parse_args(text: str) -> dict[str, Any]:
    """'n=[0, 11],reshape=True' -> {'n': [0, 11], 'reshape': True} (literals only, never eval)."""
    out, depth, cur = {}, 0, ""
    for ch in text + ",":
        if ch == "," and depth == 0:
            if cur.strip():
                k, v = cur.split("=", 1)
                out[k.strip()] = ast.literal_eval(v.strip())
            cur = ""
            continue
        depth += 1 if ch in "[(" else -1 if ch in "])" else 0
        cur += ch
    return out


def _parse_slices(text: str | None) -> tuple[slice, ...]:
    if not text:
        return ()
    parts = []
    for p in text.split(","):
        nums = [int(v) if v.strip() else None for v in p.split(":")]
        parts.append(slice(*nums) if len(nums) > 1 else nums[0])
    return tuple(parts)


def _evaluate(model: torch.nn.Module, x: Tensor, masks: Tensor | None, spec: str, cache: dict[str, Any]) -> Tensor:
    """The value a stored output name describes, e.g. 'forward_features/x_norm_patchtokens[:,::7]'."""
    if spec in ("logits", "depth"):  # a classifier's logits, a depther's depth map (B, 1, H, W)
        return model(x)
    call, _, rest = spec.partition("/")
    path_text = _SLICE.match(rest)
    assert path_text is not None
    path, slices = path_text["path"], _parse_slices(path_text["slices"])
    m = _CALL.match(call)
    if m is None:
        raise ValueError(f"cannot parse golden output name {spec!r}")
    args = _parse_args(m["args"] or "")
    if call not in cache:
        if m["fn"] == "forward_features":
            cache[call] = model.forward_features(x, masks=masks)
        elif m["fn"] == "get_intermediate_layers":
            cache[call] = model.get_intermediate_layers(x, **args)
        else:
            raise ValueError(f"unknown call {m['fn']!r} in golden output name {spec!r}")
    value: Any = cache[call]
    if m["fn"] == "forward_features":
        value = value[path]
    else:
        parts = path.split("/")
        n = args.get("n", 1)
        pos = n.index(int(parts[0])) if isinstance(n, list) else int(parts[0])  # list n: block index; int n: position
        value = value[pos]
        if len(parts) > 1:  # the tuple (patches, cls if return_class_token, storage if return_extra_tokens)
            value = value[{"patch": 0, "cls": 1, "storage": 1 + bool(args.get("return_class_token"))}[parts[1]]]
    return value[slices] if slices else value


@torch.no_grad()
def run_case(case: dict[str, Any], golden_dir: str | Path | None = None, model: torch.nn.Module | None = None, *,
             inputs: int | None = None) -> list[CaseResult]:
    """Rebuild a case, run every stored output (of its first `inputs` inputs, all by default), and return each
    max abs difference.

    Examples:
        >>> case = next(c for c in load_index()["cases"] if c["model"] == "dino_head")
        >>> results = run_case(case)
        >>> [r.output for r in results], max(r.max_abs for r in results) < 1e-5
        (['input', 'output'], True)
    """
    from safetensors.torch import load_file

    d = Path(golden_dir) if golden_dir is not None else default_golden_dir()
    ref = load_file(str(d / case["file"]))
    if case["model"] == "dinotxt":

        return run_dinotxt_case(case, ref, model, inputs=inputs)
    if model is None:
        model, _ = build_case(case)
    name = case_name(case)
    results = []
    if case["model"] == "dino_head":
        inp = case["inputs"][0]
        x = generate_tensor(case["weight_seed"], inp["stream"], tuple(inp["shape"]), inp["center"], inp["half_width"])
        for key, got in (("input", x), ("output", model(x))):
            results.append(CaseResult(name, "-", key, float((got - ref[key]).abs().max()), tuple(got.shape)))
        return results
    for inp in case["inputs"][:inputs]:
        B, C, H, W = inp["shape"]
        x = generate_images(case["weight_seed"], inp["image_stream"], (B, C, H, W))
        masks = None
        if inp.get("mask_stream") is not None:
            p = vision_backbone(model).patch_size  # the grid is floored: DINOv3 takes sides that are not multiples
            masks = generate_masks(case["weight_seed"], inp["mask_stream"], B, (H // p) * (W // p), inp["mask_p"])
            results.append(CaseResult(name, inp["tag"], "masks", float((masks != ref[f"{inp['tag']}/masks"]).sum()),
                                      tuple(masks.shape)))
        cache: dict[str, Any] = {}
        for spec in inp["outputs"]:
            with warnings.catch_warnings():  # the DINOv3 cases' odd sizes, on purpose
                warnings.filterwarnings("ignore", message="image size .* is not a multiple of the patch size")
                got = _evaluate(model, x, masks, spec, cache)
            want = ref[f"{inp['tag']}/{spec}"]
            if got.shape != want.shape:
                raise AssertionError(f"{name} {inp['tag']} {spec}: shape {tuple(got.shape)} != reference {tuple(want.shape)}")
            scale = float(want.abs().max()) if spec == "depth" else 1.0  # metres: see CaseResult.scale
            results.append(CaseResult(name, inp["tag"], spec, float((got.float() - want).abs().max()), tuple(got.shape),
                                      scale))
    return results
