"""The numpy-only reference (minidino/conformance/numpy_reference.py) against the golden vectors of
the official code, and its trace against `minidino trace`'s.

Every golden case of the ViT (DINOv2's 8 backbones, 4 linear classifiers and DINO head; DINOv3's 8
backbone cases) runs, each on a selection of its inputs that still covers every kind of input once
(DINOv2: r224, r518, r196x308, mask224, r28x14; DINOv3: r224, r203x125, mask224, r112x96, r77x61,
mask96), in float64 (r518 in float32, for time): within 1e-5 of the official outputs. The full set
(every backbone input, also in float32) runs with MINIDINO_NUMPY_GOLDEN=all (about 80 s float64 on a
loaded 2-core machine for DINOv2 alone). The depthers and dino.txt are outside the reference's scope (the ViT forward).

numpy's OpenBLAS is held to one thread here: with several, on a busy machine, its threads
busy-wait against torch's and a 4-block forward took 4.6 s instead of 1.0 s.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pytest

from minidino.conformance import golden
from minidino.conformance import numpy_reference as R
from minidino.conformance.golden import _parse_args, _parse_slices
from minidino.conformance.trace import trace_model

TOL = 1e-5  # the golden tolerance of every implementation (docs/parity.md)
ALL = os.environ.get("MINIDINO_NUMPY_GOLDEN") == "all"

# The inputs run by default: each case at least once, each kind of input at least once, the cheap ones.
SELECTED = {
    "dinov2_vits14": ("mask224", "r28x14"),
    "dinov2_vits14_reg": ("r196x308", "r28x14"),
    "dinov2_vitb14": ("r224", "r28x14"),
    "dinov2_vitb14_reg": ("mask224", "r28x14"),
    "dinov2_vitl14": ("r224", "r518"),
    "dinov2_vitl14_reg": ("mask224", "r196x308"),
    "dinov2_vitg14": ("r224", "mask224"),
    "dinov2_vitg14_reg": ("r196x308", "mask224"),
    "dinov3_vits16": ("r203x125", "mask224"),  # 12 blocks: the full-depth DINOv3 case
    "dinov3_vits16plus": ("r224",),
    "dinov3_vitb16": ("r203x125",),
    "dinov3_vitl16": ("r112x96",),
    "dinov3_vitl16_sat493m": ("mask96",),
    "dinov3_vitl16plus": ("r77x61",),
    "dinov3_vith16plus": ("mask96",),
    "dinov3_vit7b16": ("r77x61",),
}
INDEX = golden.load_index()
BACKBONES = [c for c in INDEX["cases"] if "depth" in c and "lc_layers" not in c and golden.case_name(c) in SELECTED]
INPUTS = [(c, i) for c in BACKBONES for i in c["inputs"] if ALL or i["tag"] in SELECTED[golden.case_name(c)]]
CLASSIFIERS = [c for c in INDEX["cases"] if "lc_layers" in c]
HEADS = [c for c in INDEX["cases"] if c["model"] == "dino_head"]


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        yield


_WEIGHTS: dict[str, dict[str, np.ndarray]] = {}


def case_weights(case: dict) -> dict[str, np.ndarray]:
    """The case's generated weights as numpy arrays (one case kept at a time: ViT-g is large)."""
    if case["file"] not in _WEIGHTS:
        _WEIGHTS.clear()
        _, sd = golden.build_case(case)  # weights_sha256-proven generator (tests/test_golden.py)
        _WEIGHTS[case["file"]] = {k: v.numpy() for k, v in sd.items()}
    return _WEIGHTS[case["file"]]


def golden_value(spec: str, sd: dict, cfg: R.ViTConfig, feats: dict, trace: dict, h: int, w: int) -> np.ndarray:
    """The value a stored output name describes (tests/golden/README.md), from one traced forward."""
    call, _, rest = spec.partition("/")
    path, _, slices_text = rest.partition("[")
    slices = _parse_slices(slices_text.rstrip("]") or None)
    fn, _, args_text = call.partition("(")
    if fn == "forward_features":
        value = feats[path]
    else:
        args = _parse_args(args_text.rstrip(")"))
        blocks = [trace[f"blocks.{i}.residual2"] for i in range(cfg.depth)]
        outs = R.select_layers(sd, cfg, blocks, h, w, **args)
        parts = path.split("/")
        n = args.get("n", 1)
        value = outs[n.index(int(parts[0])) if isinstance(n, list) else int(parts[0])]
        if len(parts) > 1:  # an item (patches, cls if asked, storage if asked)
            names = ["patch"] + ["cls"] * bool(args.get("return_class_token")) + ["storage"] * bool(args.get("return_extra_tokens"))
            value = value[names.index(parts[1])]
    return value[slices] if slices else value


def run_input(case: dict, inp: dict, dtype: type = np.float64) -> dict[str, float]:
    from safetensors.numpy import load_file

    sd = case_weights(case)
    ref = load_file(str(golden.default_golden_dir() / case["file"]))
    cfg = R.config_from_state_dict(sd)
    B, C, H, W = inp["shape"]
    h, w = H // cfg.patch_size, W // cfg.patch_size  # DINOv3 drops the pixels past the last whole patch
    x = golden.generate_images(case["weight_seed"], inp["image_stream"], (B, C, H, W)).numpy()
    masks = None
    if inp.get("mask_stream") is not None:
        masks = golden.generate_masks(case["weight_seed"], inp["mask_stream"], B, h * w, inp["mask_p"]).numpy()
    trace: dict[str, np.ndarray] = {}
    forward = R.dinov3_forward_features if cfg.family == "dinov3" else R.dinov2_forward_features
    feats = forward(sd, cfg, x, masks=masks, trace=trace, dtype=dtype)
    diffs = {}
    for spec in inp["outputs"]:
        got = golden_value(spec, sd, cfg, feats, trace, h, w)
        want = ref[f"{inp['tag']}/{spec}"]
        assert got.shape == want.shape, (spec, got.shape, want.shape)
        diffs[spec] = float(np.abs(got - want).max())
    return diffs


def test_the_reference_imports_numpy_and_nothing_else():
    """Copy the file anywhere: numpy (and the standard library) is all it needs."""
    tree = ast.parse(Path(R.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported == {"__future__", "math", "dataclasses", "typing", "numpy"}, imported


def dtype_of(inp: dict) -> type:
    """float64, except r518 by default: 45 GMAC in float64 was 10 s on a loaded machine (float32: 3.6 s)."""
    return np.float32 if inp["tag"] == "r518" and not ALL else np.float64


@pytest.mark.parametrize("case,inp", INPUTS, ids=[f"{c['model']}-{i['tag']}" for c, i in INPUTS])
def test_golden_backbone(case, inp):
    diffs = run_input(case, inp, dtype_of(inp))
    worst = max(diffs.values())
    print(f"\n{case['model']} ({case['depth']} blocks) {inp['tag']} {np.dtype(dtype_of(inp)).name}: "
          f"max abs {worst:.1e} over {len(diffs)} outputs")
    assert worst <= TOL, diffs


if ALL:
    @pytest.mark.parametrize("case,inp", INPUTS, ids=[f"{c['model']}-{i['tag']}" for c, i in INPUTS])
    def test_golden_backbone_float32(case, inp):
        """What a float32 port runs; its margin depends on this machine's BLAS (measured 7.2e-6 at worst)."""
        diffs = run_input(case, inp, np.float32)
        worst = max(diffs.values())
        print(f"\n{case['model']} ({case['depth']} blocks) {inp['tag']} float32: max abs {worst:.1e}")
        assert worst <= TOL, diffs


@pytest.mark.parametrize("case", CLASSIFIERS, ids=[golden.case_name(c) for c in CLASSIFIERS])
def test_golden_linear_classifier(case):
    from safetensors.numpy import load_file

    sd = case_weights(case)
    (inp,) = case["inputs"]
    x = golden.generate_images(case["weight_seed"], inp["image_stream"], tuple(inp["shape"])).numpy()
    logits = R.dinov2_linear_classifier(sd, x)
    diff = float(np.abs(logits - load_file(str(golden.default_golden_dir() / case["file"]))[f"{inp['tag']}/logits"]).max())
    print(f"\n{golden.case_name(case)}: logits max abs {diff:.1e}")
    assert diff <= TOL


@pytest.mark.parametrize("case", HEADS, ids=["dino_head"])
def test_golden_dino_head(case):
    from safetensors.numpy import load_file

    ref = load_file(str(golden.default_golden_dir() / case["file"]))
    (inp,) = case["inputs"]
    x = golden.generate_tensor(case["weight_seed"], inp["stream"], tuple(inp["shape"]), inp["center"], inp["half_width"])
    assert np.array_equal(x.numpy(), ref["input"])
    diff = float(np.abs(R.dino_head(case_weights(case), x.numpy()) - ref["output"]).max())
    assert diff <= TOL


def test_every_case_and_every_input_kind_is_covered():
    cases = {c["model"] for c, _ in INPUTS} | {golden.case_name(c) for c in CLASSIFIERS} | {c["model"] for c in HEADS}
    vit_cases = [c for c in INDEX["cases"] if not c["model"].endswith(("_ld", "_dd")) and c["model"] != "dinotxt"]
    assert {golden.case_name(c) for c in vit_cases} <= cases | {golden.case_name(c) for c in BACKBONES}
    assert {i["tag"] for c in BACKBONES for i in c["inputs"]} == {i["tag"] for _, i in INPUTS}


def trace_models() -> list[str]:
    """DINOv2 with and without registers, and the first backbone of every other family (DINOv3 once merged)."""
    from minidino.catalogue import backbone_entries

    others = {e.family: e.name for e in reversed(backbone_entries()) if e.family != "dinov2"}
    return ["dinov2_vits14", "dinov2_vitb14_reg", *others.values()]


@pytest.mark.parametrize("name", trace_models())
def test_trace_matches_minidino_trace(name):
    """The same generated weights and image through the numpy reference (float64) and `minidino trace`
    (torch float32): every name, in order, within float32 rounding."""
    model = golden.random_model(name, 3, depth=2)
    p = model.patch_size
    x = golden.generate_images(3, 7, (2, 3, 3 * p, 4 * p))  # a 3 x 4 grid: DINOv2's position embedding is resized
    ours = trace_model(model, x)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    theirs: dict[str, np.ndarray] = {}
    forward = R.dinov3_forward_features if R.config_from_state_dict(sd).family == "dinov3" else R.dinov2_forward_features
    forward(sd, None, x.numpy(), trace=theirs)
    assert list(theirs) == list(ours)[1:]  # the same names in the same order, after trace's "input"
    worst = max(float(np.abs(ours[k].numpy() - theirs[k]).max()) / max(1.0, float(np.abs(theirs[k]).max()))
                for k in theirs)
    print(f"\n{name}: trace vs numpy reference, worst relative max abs {worst:.1e}")
    assert worst <= TOL
