"""minidino.optimize: the fast inference model agrees with eager, and refuses bad arguments.

Tolerances: without folding the optimized forward runs the eager operations in the same order,
so it must be identical (0.0). Folding LayerScale into the linear layers changes float32
rounding only: 1e-5 max abs on these small models (measured ~1e-6, printed). bf16 keeps 8
mantissa bits: cosine > 0.999 per token, max abs printed. Speed is measured by
benchmarks/bench.py, never asserted here.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import minidino
from minidino.export.optimize import OptimizedModel, fold_layerscale

KEYS = ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm")


def _model(name: str = "dinov2_vits14", depth: int = 2) -> minidino.DinoVisionTransformer:
    torch.manual_seed(0)
    m = minidino.create_model(name, depth=depth)
    with torch.no_grad():
        for blk in m.blocks:  # gammas far from the init's 1.0, so folding is not trivially exact
            blk.ls1.gamma.uniform_(0.1, 1.0)
            blk.ls2.gamma.uniform_(0.1, 1.0)
    return m


def _compare(ref: dict, out: dict) -> tuple[float, float]:
    worst, cos = 0.0, 1.0
    for k in KEYS:
        a, b = ref[k].float(), out[k].float()
        assert a.shape == b.shape, k
        if a.numel() == 0:
            continue
        worst = max(worst, (a - b).abs().max().item())
        cos = min(cos, F.cosine_similarity(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), dim=-1).min().item())
    return worst, cos


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg", "dinov2_vitg14"])
def test_unfolded_uncompiled_is_identical_to_eager(name):
    m = _model(name, depth=1 if name == "dinov2_vitg14" else 2)
    x = torch.randn(2, 3, 56, 70)
    with torch.inference_mode():
        ref = m.forward_features(x)
    out = minidino.optimize(m, compile=False, fold_layerscale=False).forward_features(x)
    worst, _ = _compare(ref, out)
    print(f"{name}: optimize(compile=False, fold_layerscale=False) max abs {worst:.3e}")
    assert worst == 0.0


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg", "dinov2_vitg14"])
def test_folded_layerscale_agrees_with_eager(name):
    m = _model(name, depth=1 if name == "dinov2_vitg14" else 2)
    x = torch.randn(2, 3, 42, 56)
    with torch.inference_mode():
        ref = m.forward_features(x)
    o = minidino.optimize(m, compile=False)
    out = o.forward_features(x)
    worst, cos = _compare(ref, out)
    print(f"{name}: LayerScale folded, float32: max abs {worst:.3e}, min cosine {cos:.8f}")
    assert worst <= 1e-5
    assert all(isinstance(b.ls1, torch.nn.Identity) and isinstance(b.ls2, torch.nn.Identity) for b in o.model.blocks)
    assert isinstance(m.blocks[0].ls1, minidino.models.layers.LayerScale), "the original model must be left untouched"
    assert torch.equal(o(x), out["x_norm_clstoken"])


def test_fold_layerscale_is_the_same_linear_map():
    m = _model()
    blk = m.blocks[0]
    y = torch.randn(5, 384)
    with torch.no_grad():
        ref = blk.ls1(blk.attn.proj(y)).double()
        fold_layerscale(m)
        out = blk.attn.proj(y).double()
    assert isinstance(blk.ls1, torch.nn.Identity)
    assert (ref - out).abs().max().item() < 1e-5  # float32 rounding of O(1) values: a few ulp
    fold_layerscale(m)  # folding twice is a no-op (the scales are gone)
    with torch.no_grad():
        assert torch.equal(blk.attn.proj(y).double(), out)


def test_bf16_is_within_bf16_rounding():
    m = _model(depth=3)
    x = torch.randn(2, 3, 56, 56)
    with torch.inference_mode():
        ref = m.forward_features(x)
    o = minidino.optimize(m, dtype=torch.bfloat16, compile=False)
    out = o.forward_features(x)  # float32 input is cast on entry
    assert out["x_prenorm"].dtype == torch.bfloat16
    worst, cos = _compare(ref, out)
    print(f"bf16 (folded, uncompiled): max abs {worst:.3e}, min cosine {cos:.6f}")
    assert cos > 0.999
    assert worst < 0.25  # bf16 rounding of O(1) activations over 3 blocks; a wrong op gives O(1)


def test_compile_wiring_agrees_with_eager():
    """The compiled path (dynamo capture, run by the eager backend to keep the test fast)."""
    m = _model(depth=1)
    x = torch.randn(1, 3, 28, 42)
    with torch.inference_mode():
        ref = m.forward_features(x)
    o = minidino.optimize(m, compile=True, fold_layerscale=False, compile_options={"backend": "eager"})
    worst, _ = _compare(ref, o.forward_features(x))
    assert worst == 0.0


def test_compile_auto_compiles_on_cuda_or_when_asked_not_on_cpu():
    from minidino.export.optimize import _Forward

    m = _model(depth=1)
    assert isinstance(minidino.optimize(m)._fn, _Forward)  # CPU: measured no gain, so not compiled
    assert not isinstance(minidino.optimize(m, compile_options={"backend": "eager"})._fn, _Forward)
    assert not isinstance(minidino.optimize(m, compile=True, compile_options={"backend": "eager"})._fn, _Forward)


def test_input_errors_are_the_eager_models():
    o = minidino.optimize(_model(depth=1), compile=False)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        o.forward_features(torch.randn(1, 3, 30, 28))
    with pytest.raises(ValueError, match="takes no masks"):
        o.forward_features(torch.randn(1, 3, 28, 28), masks=torch.zeros(1, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="one \\(B, 3, H, W\\) tensor"):
        o.forward_features([torch.randn(1, 3, 28, 28)])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(dtype=torch.int8), ValueError, "dtype must be"),
        (dict(dtype="bf16"), ValueError, "dtype must be"),
        (dict(cuda_graphs="yes"), ValueError, "cuda_graphs must be"),
        (dict(cuda_graphs=True), ValueError, "needs a model on a CUDA device"),
        (dict(compile="inductor"), TypeError, "compile must be True, False or 'auto'"),
        (dict(copy=1), TypeError, "must be bools"),
        (dict(graph_max_batch=0), ValueError, "graph_max_batch"),
        (dict(compile_options=["max-autotune"]), TypeError, "compile_options"),
    ],
)
def test_bad_arguments_are_refused(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        minidino.optimize(_model(depth=1), **kwargs)


def test_refuses_what_it_cannot_optimize():
    with pytest.raises(TypeError, match="optimize its .backbone"):
        minidino.optimize(minidino.create_model("dinov2_vits14_lc", depth=1, layers=1))
    with pytest.raises(TypeError, match="DinoVisionTransformer"):
        minidino.optimize(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="meta device"):
        minidino.optimize(minidino.create_model("dinov2_vits14", depth=1, device="meta"))
    m = _model(depth=1)
    m.attn_impl = "explicit"
    with pytest.raises(ValueError, match="attn_impl"):
        minidino.optimize(m)


def test_copy_false_transforms_in_place():
    m = _model(depth=1)
    o = minidino.optimize(m, compile=False, copy=False, dtype=torch.bfloat16)
    assert isinstance(o, OptimizedModel) and o.model is m
    assert m.patch_embed.proj.weight.dtype == torch.bfloat16 and isinstance(m.blocks[0].ls1, torch.nn.Identity)
