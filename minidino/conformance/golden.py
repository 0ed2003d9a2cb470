"""Golden vectors: the splitmix64 generator and a runner for the reference outputs.

A conformance kit. The reference outputs in tests/golden/ were computed with the official
DINOv2 code; weights and inputs are not stored but rebuilt bit-exactly from a counter-based
generator (tests/golden/README.md), so any implementation, in any language or on any
hardware, can run the same check. `run_case` rebuilds a case's model and inputs and returns
the max abs difference of every stored output.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "splitmix64", "uniform", "generate_tensor", "init_range", "generate_state_dict", "generate_for", "random_model", "weights_sha256",
    "generate_images", "generate_masks", "load_index", "build_case", "run_case", "CaseResult", "default_golden_dir",
]

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(x: np.ndarray | int) -> np.ndarray:
    """splitmix64 finaliser on unsigned 64-bit integers (wrapping arithmetic).

    Examples:
        >>> hex(int(splitmix64(1234567)))
        '0x599ed017fb08fc85'
    """
    z = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(seed: int, stream: int, n: int, start: int = 0) -> np.ndarray:
    """Elements start .. start+n-1 of stream `stream`: float64 multiples of 2**-24 in [0, 1).

    Examples:
        >>> uniform(7, 12, 3).tolist()
        [0.034661948680877686, 0.12949126958847046, 0.545982301235199]
    """
    if not (0 <= seed < 2**16 and 0 <= stream < 2**16):
        raise ValueError(f"seed and stream must be < 2**16, got {seed}, {stream}")
    i = np.arange(start, start + n, dtype=np.uint64)
    x = (np.uint64(seed) << np.uint64(48)) | (np.uint64(stream) << np.uint64(32)) | i
    return (splitmix64(x) >> np.uint64(40)).astype(np.float64) / float(2**24)


def generate_tensor(seed: int, stream: int, shape: tuple[int, ...], center: float, half_width: float) -> Tensor:
    """float32(center + half_width * (2u - 1)), computed in float64 and rounded once.

    Examples:
        >>> t = generate_tensor(0, 0, (2, 3), center=1.0, half_width=0.25)
        >>> t.dtype, bool(((t >= 0.75) & (t < 1.25)).all())
        (torch.float32, True)
    """
    n = int(np.prod(shape)) if shape else 1
    u = uniform(seed, stream, n)
    return torch.from_numpy((center + half_width * (2.0 * u - 1.0)).astype(np.float32).reshape(shape))


def init_range(key: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(centre, half-width) of a key's generated values (tests/golden/README.md).

    Examples:
        >>> init_range("blocks.0.ls1.gamma", (384,)), init_range("blocks.0.attn.qkv.bias", (1152,))
        ((0.5, 0.25), (0.0, 0.1))
    """
    if key.endswith(".gamma"):
        return 0.5, 0.25
    if key == "decode_head.conv_depth.head.4.bias":
        # The DPT depthers' last bias (the regression is relu(x) + min_depth, then clamped): centred at
        # 2 m so the depth lies inside the range, not at min_depth, and the check exercises every layer.
        return 2.0, 0.1
    if key.endswith(("norm.weight", "norm1.weight", "norm2.weight")):
        return 1.0, 0.25
    if key.endswith(".bias"):
        return 0.0, 0.1
    if key in ("cls_token", "register_tokens", "mask_token", "pos_embed"):
        # Exact names only: in the classifier cases `backbone.cls_token` etc. fall through to the
        # fan-in rule below (that is how the reference files were generated; weights_sha256 proves it).
        return 0.0, 1.0
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return 0.0, float(np.sqrt(3.0 / fan_in))


def generate_state_dict(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, Tensor]:
    """Weights for these keys: sorted plain string order, key k uses stream k.

    Examples:
        >>> sd = generate_state_dict({"a.weight": (4, 3), "a.bias": (4,)}, seed=0)
        >>> {k: tuple(v.shape) for k, v in sd.items()}
        {'a.bias': (4,), 'a.weight': (4, 3)}
    """
    return {key: generate_tensor(seed, k, tuple(shapes[key]), *init_range(key, tuple(shapes[key])))
            for k, key in enumerate(sorted(shapes))}


def generate_for(module: torch.nn.Module, seed: int) -> dict[str, Tensor]:
    """Generated weights for every key of a module's state dict (a meta-device module is fine).

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1, device="meta")   # shapes only
        >>> sd = generate_for(model, seed=0)
        >>> tuple(sd["pos_embed"].shape), sd["pos_embed"].device.type
        ((1, 1370, 384), 'cpu')
    """
    return generate_state_dict({k: tuple(v.shape) for k, v in module.state_dict().items()}, seed)


def random_model(name: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """Hub model `name` with generated weights: random, reproducible anywhere, offline.
    Built on the meta device, so the weights are allocated once.

    Examples:
        >>> model = random_model("dinov2_vits14", seed=0, depth=1)
        >>> tuple(model(generate_images(0, 1, (1, 3, 28, 28))).shape)
        (1, 384)
    """
    from .. import create_model  # late import: golden is a leaf module otherwise

    model = create_model(name, device="meta", **overrides)
    model.load_state_dict(generate_for(model, seed), strict=True, assign=True)
    return model.eval()


def weights_sha256(state_dict: dict[str, Tensor]) -> str:
    """SHA-256 over each key (UTF-8) then its little-endian float32 bytes, keys sorted.

    Examples:
        >>> len(weights_sha256({"w": torch.zeros(2)}))
        64
    """
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes())
    return h.hexdigest()


def generate_images(seed: int, stream: int, shape: tuple[int, ...]) -> Tensor:
    """Golden input images: a float32 tensor of `shape` (B, 3, H, W), uniform in [-2, 2) (centre 0, half-width 2).

    Examples:
        >>> x = generate_images(1, 1000, (2, 3, 224, 224))
        >>> tuple(x.shape), float(x.min()) >= -2, float(x.max()) < 2
        ((2, 3, 224, 224), True, True)
    """
    return generate_tensor(seed, stream, tuple(shape), 0.0, 2.0)


def generate_masks(seed: int, stream: int, B: int, hw: int, p: float) -> Tensor:
    """Golden masks: (B, h*w) bool, True where the element's uniform(seed, stream, .) value is below p.

    Examples:
        >>> m = generate_masks(1, 2003, 1, 256, 0.3)
        >>> tuple(m.shape), m.dtype
        ((1, 256), torch.bool)
    """
    return torch.from_numpy(uniform(seed, stream, B * hw) < p).reshape(B, hw)


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
        (19, 'dinov2_vits14')
    """
    d = Path(golden_dir) if golden_dir is not None else default_golden_dir()
    path = d / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"no golden index at {path}; pass the folder that holds index.json and the .safetensors files")
    return json.loads(path.read_text())


def case_name(case: dict[str, Any]) -> str:
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
    from .. import create_model  # late import: golden is a leaf module otherwise
    from ..heads import DINOHead

    if case["model"] == "dinotxt":  # its own case format: golden_text.py
        from .golden_text import build_dinotxt_case

        return build_dinotxt_case(case)
    if case["model"] == "dino_head":
        model: torch.nn.Module = DINOHead(case["in_dim"], case["out_dim"], case["hidden_dim"], case["bottleneck_dim"],
                                          case["nlayers"], device="meta")
    elif case["model"].endswith(("_ld", "_dd")):  # depthers: full depth (the head reads the last block)
        kw = {"layers": case["depth_layers"]} if "depth_layers" in case else {}
        model = create_model(case["model"], device="meta", **kw)
    else:
        kw = {"layers": case["lc_layers"]} if "lc_layers" in case else {}
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
        if len(parts) > 1:
            value = value[0] if parts[1] == "patch" else value[1]
    return value[slices] if slices else value


@dataclass
class CaseResult:
    """One compared output of a golden case: its max abs difference to the stored reference, and its shape.

    Examples:
        >>> r = CaseResult("dinov2_vits14", "r224", "forward_features/x_norm_clstoken", 3.1e-6, (2, 384))
        >>> r.max_abs <= 1e-5
        True
    """

    case: str
    tag: str
    output: str
    max_abs: float
    shape: tuple[int, ...]
    # The tolerance's unit. Features and logits are O(1): 1. A depth map is in metres, up to 80 (the
    # linear heads' bins), where float32 itself steps by 4e-6 and a different thread count or BLAS
    # blocking moves the result by a few steps (measured: 1.9e-5 m at 44 m with one thread, 0.0 with
    # 2-4): its unit is the reference's largest |value|, so the check stays 1e-5 relative.
    scale: float = 1.0

    def ok(self, tol: float) -> bool:
        """Within `tol` in the output's unit: max_abs <= tol * max(1, scale).

        Examples:
            >>> CaseResult("d", "t", "depth", 2e-5, (1, 1, 4, 4), scale=40.0).ok(1e-5)
            True
            >>> CaseResult("m", "t", "logits", 2e-5, (1, 1000)).ok(1e-5)
            False
        """
        return self.max_abs <= tol * max(1.0, self.scale)


@torch.no_grad()
def run_case(case: dict[str, Any], golden_dir: str | Path | None = None, model: torch.nn.Module | None = None) -> list[CaseResult]:
    """Rebuild a case, run every stored output, and return each max abs difference.

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
        from .golden_text import run_dinotxt_case

        return run_dinotxt_case(case, ref, model)
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
    for inp in case["inputs"]:
        B, C, H, W = inp["shape"]
        x = generate_images(case["weight_seed"], inp["image_stream"], (B, C, H, W))
        masks = None
        if inp.get("mask_stream") is not None:
            masks = generate_masks(case["weight_seed"], inp["mask_stream"], B, (H // 14) * (W // 14), inp["mask_p"])
            results.append(CaseResult(name, inp["tag"], "masks", float((masks != ref[f"{inp['tag']}/masks"]).sum()),
                                      tuple(masks.shape)))
        cache: dict[str, Any] = {}
        for spec in inp["outputs"]:
            got = _evaluate(model, x, masks, spec, cache)
            want = ref[f"{inp['tag']}/{spec}"]
            if got.shape != want.shape:
                raise AssertionError(f"{name} {inp['tag']} {spec}: shape {tuple(got.shape)} != reference {tuple(want.shape)}")
            scale = float(want.abs().max()) if spec == "depth" else 1.0  # metres: see CaseResult.scale
            results.append(CaseResult(name, inp["tag"], spec, float((got.float() - want).abs().max()), tuple(got.shape),
                                      scale))
    return results
