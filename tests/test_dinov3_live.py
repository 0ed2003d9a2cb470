"""Live parity with the official DINOv3 code, side by side on this machine: max abs 0.0 required.

The official code (facebookresearch/dinov3 at 6876159, DINOv3 License: a test-time black box, imported
and called, never read) comes from ../shared/official/dinov3-*.tar.gz beside this checkout (CI has it
there) or $MINIDINO_OFFICIAL_DINOV3 (minidino.conformance.reference_v3). Both models get the same
weights from the golden-vector generator: LayerScale 0.5 +- 0.25 (not the 1e-5 init, which would make
every block nearly the identity), random norms, biases (the masked key bias too: its mask must work)
and tokens, RoPE periods moved +-10% off the official formula (a model that recomputes them fails),
the official 1/0/1 key-bias masks. Hypothesis draws image sizes (sides that are not multiples of 16
too), batches, masks, lists with masks and the get_intermediate_layers options.

Cost: the hypothesis cases run each model's first blocks at full width (the 7B: one block, 171M weights
per model, the slowest case); ViT-S/16 also runs all 12 blocks on one input of each kind. The official
code is bit-reproducible here (official vs official 0.0), so anything but 0.0 is a difference in the
operations or their order.

    python -m pytest tests/test_dinov3_live.py -s      # prints every figure
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minidino
from minidino.conformance.compare import max_abs_difference as max_diff
from minidino.conformance.generator import generate_for
from minidino.conformance.reference_v3 import official_dinov3, official_dinov3_repo

pytestmark = pytest.mark.skipif(not official_dinov3_repo(), reason="no official DINOv3 code: "
                                "../shared/official/dinov3-*.tar.gz not found and MINIDINO_OFFICIAL_DINOV3 unset")

# (name, weights, depth): the first blocks of each, full width; the satellite ViT-L (local_cls_norm). The
# satellite 7B has the LVD 7B's architecture (tests/test_dinov3.py): its weights are what differs.
CASES = [("dinov3_vits16", None, 2), ("dinov3_vits16plus", None, 2), ("dinov3_vitb16", None, 1),
         ("dinov3_vitl16", None, 1), ("dinov3_vitl16", "SAT493M", 1), ("dinov3_vitl16plus", None, 1),
         ("dinov3_vith16plus", None, 1), ("dinov3_vit7b16", None, 1)]
SETTINGS = settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])


@functools.lru_cache(maxsize=1)  # one pair at a time: the 7B's block is 0.7 GB per model
def pair(name: str, weights: str | None, depth: int | None):
    """(official, ours) with the same generated weights, eval mode."""
    kw = {"weights": weights} if weights else {}
    ref = official_dinov3(name, depth=depth, weights=weights, meta=True).module
    ours = minidino.create_model(name, device="meta", **kw, **({"depth": depth} if depth else {}))
    sd = generate_for(ours, seed=7)
    ref.load_state_dict(sd, strict=True, assign=True)
    ours.load_state_dict(sd, strict=True, assign=True)
    return ref.eval(), ours.eval()


def inputs(seed: int, B: int, H: int, W: int, mask_p: float | None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, H, W, generator=g)
    masks = None if mask_p is None else torch.rand(B, (H // 16) * (W // 16), generator=g) < mask_p
    return x, masks


@torch.no_grad()
def all_outputs(model, x, masks, x2, masks2, gil_kw) -> dict:
    """Every output of the official API on these inputs."""
    return {
        "forward_features": model.forward_features(x, masks=masks),
        "forward": model(x),
        "list": model.forward_features([x, x2], [masks, masks2]),
        "get_intermediate_layers": model.get_intermediate_layers(x, **gil_kw),
    }


def differences(ref, ours, x, masks, x2, masks2, gil_kw) -> dict:
    """Max abs difference per output of `all_outputs`, the official model against minidino's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # minidino warns about the ignored pixels of odd sizes; the official is silent
        want, got = all_outputs(ref, x, masks, x2, masks2, gil_kw), all_outputs(ours, x, masks, x2, masks2, gil_kw)
    return {k: max_diff(want[k], got[k]) for k in want}


@pytest.mark.parametrize("name, weights, depth", CASES, ids=[f"{n}{'-' + w if w else ''}" for n, w, _ in CASES])
@SETTINGS
@given(h=st.integers(1, 5), w=st.integers(1, 5), extra_h=st.sampled_from([0, 0, 7, 15]), extra_w=st.sampled_from([0, 9]),
       B=st.integers(1, 2), seed=st.integers(0, 2**16), mask_p=st.sampled_from([None, 0.0, 0.4]),
       reshape=st.booleans(), cls=st.booleans(), extra=st.booleans(), norm=st.booleans(), last=st.booleans())
def test_identical_to_official(name, weights, depth, h, w, extra_h, extra_w, B, seed, mask_p, reshape, cls, extra, norm,
                               last):
    ref, ours = pair(name, weights, depth)
    blocks = len(ours.blocks)
    if ours.config.embed_dim > 1024:  # ViT-H+ and the 7B: small inputs (their blocks cost 40M-170M multiply-adds a token)
        h, w, B = min(h, 3), min(w, 3), 1
    H, W = 16 * h + extra_h, 16 * w + extra_w
    x, masks = inputs(seed, B, H, W, mask_p)
    x2, masks2 = inputs(seed + 1, 1, 16 * w, 16 * h + 5, 0.3)  # a second, differently shaped batch of the list
    n = 1 if last else sorted({0, blocks - 1})
    gil_kw = dict(n=n, reshape=reshape, return_class_token=cls, return_extra_tokens=extra, norm=norm)
    figures = differences(ref, ours, x, masks, x2, masks2, gil_kw)
    print(f"{name}{' ' + weights if weights else ''} (depth {blocks}) {B}x3x{H}x{W} masks={mask_p} gil={gil_kw}: {figures}")
    assert figures == dict.fromkeys(figures, 0.0)


def test_full_depth_vits16_identical_to_official():
    """All 12 blocks of ViT-S/16: an odd size with masks, a list, and the intermediate layers with every option."""
    ref, ours = pair("dinov3_vits16", None, None)
    x, masks = inputs(3, 2, 16 * 5 + 9, 16 * 3, 0.4)
    x2, masks2 = inputs(4, 1, 48, 64, None)
    gil_kw = dict(n=[0, 5, 11], reshape=True, return_class_token=True, return_extra_tokens=True, norm=True)
    figures = differences(ref, ours, x, masks, x2, masks2, gil_kw)
    print(f"dinov3_vits16 (12 blocks) 2x3x89x48 masks=0.4: {figures}")
    assert figures == dict.fromkeys(figures, 0.0)


def test_the_weights_exercise_the_computation():
    """The check has teeth: the masked key bias, the stored periods and every block matter."""
    ref, ours = pair("dinov3_vits16", None, None)
    x, _ = inputs(0, 1, 64, 48, None)
    with torch.no_grad():
        base = ours(x)
        sd = {k: v.clone() for k, v in ours.state_dict().items()}
        try:
            for key in [k for k in sd if k.endswith("bias_mask")]:
                ours.state_dict()[key].fill_(1.0)  # an unmasked key bias: RoPE makes it count
            unmasked = (ours(x) - base).abs().max().item()
            ours.load_state_dict(sd)
            ours.rope_embed.reset_periods()  # recomputing the periods instead of reading them
            recomputed = (ours(x) - base).abs().max().item()
        finally:
            ours.load_state_dict(sd)
    print(f"key bias unmasked: {unmasked:.3e}; periods recomputed: {recomputed:.3e}")
    assert unmasked > 1e-3 and recomputed > 1e-3
    assert torch.equal(ours(x), base) and torch.equal(ref(x), base)


def test_bfloat16_identical_to_official():
    """In bfloat16 both round the stored periods, build the tables in float32 and rotate in float32."""
    ref, ours = (m.to(torch.bfloat16) for m in pair("dinov3_vits16plus", None, 2))
    try:
        x, masks = inputs(5, 2, 64, 80, 0.3)
        with torch.no_grad():
            d = max(max_diff(ref.forward_features(x.bfloat16(), masks=masks), ours.forward_features(x.bfloat16(), masks=masks)),
                    max_diff(ref.get_intermediate_layers(x.bfloat16(), n=2, return_extra_tokens=True),
                             ours.get_intermediate_layers(x.bfloat16(), n=2, return_extra_tokens=True)))
        assert ours.rope_embed.periods.dtype == torch.bfloat16
    finally:
        pair.cache_clear()  # the pair is now bfloat16
    print(f"dinov3_vits16plus (2 blocks) bfloat16: max abs {d:.3e}")
    assert d == 0.0
