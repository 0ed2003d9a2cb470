"""Property tests (hypothesis) of the forward pass on small random models."""

from __future__ import annotations

import functools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minidino import create_model

SMALL = dict(depth=2, embed_dim=48, num_heads=3, ffn_hidden_dim=96)
sides = st.integers(1, 12).map(lambda n: 14 * n)
names = st.sampled_from(["dinov2_vits14", "dinov2_vits14_reg", "dinov2_vitg14"])


@functools.lru_cache(maxsize=None)
def small(name: str, dtype: torch.dtype = torch.float32):
    torch.manual_seed(0)
    model = create_model(name, **SMALL)
    with torch.no_grad():  # non-trivial tokens so masks and registers matter (and LayerScale: DINOv3 starts at 1e-5)
        for p in (model.mask_token, model.cls_token, getattr(model, "pos_embed", model.cls_token)):
            p.normal_()
        for name_, p in model.named_parameters():
            if name_.endswith("gamma"):
                p.fill_(0.5)
    return model.to(dtype)


def images(seed: int, B: int, H: int, W: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(seed)).to(dtype)


@settings(max_examples=15, deadline=None)
@given(name=names, H=sides, W=sides, B=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_any_multiple_of_14_works_and_shapes_are_right(name, H, W, B, seed):
    model = small(name)
    with torch.no_grad():
        f = model.forward_features(images(seed, B, H, W))
    h, w, R, D = H // 14, W // 14, model.num_register_tokens, 48
    assert f["x_norm_clstoken"].shape == (B, D)
    assert f["x_norm_regtokens"].shape == (B, R, D)
    assert f["x_norm_patchtokens"].shape == (B, h * w, D)
    assert f["x_prenorm"].shape == (B, 1 + R + h * w, D)
    assert torch.isfinite(f["x_prenorm"]).all()


@settings(max_examples=10, deadline=None)
@given(name=names, H=sides, W=sides, seed=st.integers(0, 2**16), i=st.integers(0, 2))
def test_batch_independence(name, H, W, seed, i):
    model = small(name)
    x = images(seed, 3, H, W)
    with torch.no_grad():
        batched = model.forward_features(x)["x_prenorm"][i]
        alone = model.forward_features(x[i : i + 1])["x_prenorm"][0]
    assert (batched - alone).abs().max().item() <= 1e-5


@settings(max_examples=10, deadline=None)
@given(name=names, H=sides, W=sides, seed=st.integers(0, 2**16))
def test_all_false_mask_equals_no_mask(name, H, W, seed):
    model = small(name)
    x = images(seed, 2, H, W)
    masks = torch.zeros(2, (H // 14) * (W // 14), dtype=torch.bool)
    with torch.no_grad():
        a, b = model.forward_features(x, masks=masks), model.forward_features(x)
    assert torch.equal(a["x_prenorm"], b["x_prenorm"])


@settings(max_examples=10, deadline=None)
@given(name=names, H=sides, W=sides, seed=st.integers(0, 2**16), p=st.floats(0.1, 0.9))
def test_masks_change_only_what_they_should(name, H, W, seed, p):
    model = small(name)
    x = images(seed, 2, H, W)
    hw = (H // 14) * (W // 14)
    masks = torch.zeros(2, hw, dtype=torch.bool)
    masks[0] = torch.rand(hw, generator=torch.Generator().manual_seed(seed)) < p
    masks[0, 0] = True
    R = model.num_register_tokens
    with torch.no_grad():
        t_mask, t_plain = model.prepare_tokens_with_masks(x, masks), model.prepare_tokens_with_masks(x)
        pos = model.interpolate_pos_encoding(H // 14, W // 14, x.dtype)[0, 1:]  # (h*w, D)
        keep = ~masks[0]
        assert torch.equal(t_mask[:, : 1 + R], t_plain[:, : 1 + R])  # cls and registers untouched
        assert torch.equal(t_mask[0, 1 + R :][keep], t_plain[0, 1 + R :][keep])  # unmasked tokens untouched
        assert torch.equal(t_mask[0, 1 + R :][masks[0]], (model.mask_token + pos)[masks[0]])  # masked = token + pos
        assert not torch.equal(t_mask[0], t_plain[0])
        out_mask, out_plain = model.forward_features(x, masks=masks), model.forward_features(x)
    other = (out_mask["x_prenorm"][1] - out_plain["x_prenorm"][1]).abs().max().item()
    assert other <= 1e-5  # the other image in the batch is unaffected
    assert out_mask["masks"] is masks


@settings(max_examples=6, deadline=None)
@given(name=names, H=sides, W=sides, seed=st.integers(0, 2**16))
def test_output_dtype_follows_input_dtype(name, H, W, seed):
    model = small(name, torch.bfloat16)
    with torch.no_grad():
        f = model.forward_features(images(seed, 1, H, W, torch.bfloat16))
    for key in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm"):
        assert f[key].dtype == torch.bfloat16


def test_518_uses_the_stored_embedding_unchanged():
    for name in ("dinov2_vits14", "dinov2_vits14_reg"):
        model = small(name)
        assert torch.equal(model.interpolate_pos_encoding(37, 37, torch.float32), model.pos_embed)
        # offset models do not take the shortcut elsewhere: a 37x36 grid is resized
        assert model.interpolate_pos_encoding(37, 36, torch.float32).shape == (1, 1 + 37 * 36, 48)


def test_thin_and_tiny_images():
    model = small("dinov2_vits14_reg")
    with torch.no_grad():
        for H, W in ((14, 14), (14, 518), (700, 14), (28, 14)):
            f = model.forward_features(images(1, 1, H, W))
            assert f["x_norm_patchtokens"].shape == (1, (H // 14) * (W // 14), 48)


def test_intermediate_layers_semantics():
    model = small("dinov2_vits14_reg")
    x = images(3, 2, 42, 56)
    with torch.no_grad():
        last = model.get_intermediate_layers(x, n=1)
        both = model.get_intermediate_layers(x, n=[0, 1], reshape=True, return_class_token=True)
        raw = model.get_intermediate_layers(x, n=2, norm=False)
        feats = model.forward_features(x)
    assert len(last) == 1 and last[0].shape == (2, 12, 48)
    assert torch.equal(last[0], feats["x_norm_patchtokens"])
    patches, cls = both[1]
    assert patches.shape == (2, 48, 3, 4) and torch.equal(cls, feats["x_norm_clstoken"])
    assert torch.equal(patches.flatten(2).transpose(1, 2), feats["x_norm_patchtokens"])
    assert torch.equal(raw[1], feats["x_prenorm"][:, 5:])
