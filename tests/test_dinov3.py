"""DINOv3 ViTs: architecture (keys, shapes, parameter counts of the seven and the satellite variants),
the official API's shapes and errors, weights= and the RoPE periods. Fast: meta-device models and
small inputs. Parity with the official code: tests/test_dinov3_live.py; golden vectors: test_golden.py."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import minidino
from minidino.catalogue import lookup
from minidino.conformance.generator import generate_for
from minidino.conformance.reference_v3 import official_dinov3, official_dinov3_repo
from minidino.models.config import Dinov3Config
from minidino.models.rope import rope_periods

NAMES = minidino.list_models(family="dinov3")
# (parameters, state-dict keys, state-dict values): the official models' (NOTES.md, measured on the official code)
OFFICIAL = {
    "dinov3_vits16": (21_601_152, 188, 21_614_992),
    "dinov3_vits16plus": (28_697_472, 212, 28_711_312),
    "dinov3_vitb16": (85_669_632, 188, 85_697_296),
    "dinov3_vitl16": (303_154_176, 368, 303_227_920),
    "dinov3_vitl16plus": (403_915_776, 416, 403_989_520),
    "dinov3_vith16plus": (840_633_600, 552, 840_756_496),
    "dinov3_vit7b16": (6_716_043_264, 610, 6_716_043_296),
    "dinov3_vitl16 SAT493M": (303_156_224, 370, 303_229_968),
    "dinov3_vit7b16 SAT493M": (6_716_043_264, 610, 6_716_043_296),
}
needs_official = pytest.mark.skipif(not official_dinov3_repo(), reason="no official DINOv3 code: "
                                    "../shared/official/dinov3-*.tar.gz not found and MINIDINO_OFFICIAL_DINOV3 unset")


def _build(label: str, **kw):
    name, _, weights = label.partition(" ")
    return minidino.create_model(name, device="meta", **({"weights": weights} if weights else {}), **kw)


def small(name: str = "dinov3_vits16", depth: int = 2, seed: int = 0):
    model = minidino.create_model(name, depth=depth, device="meta")
    model.load_state_dict(generate_for(model, seed), strict=True, assign=True)
    return model.eval()


def images(B: int, H: int, W: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ architecture
@pytest.mark.parametrize("label", list(OFFICIAL))
def test_parameter_and_key_counts_are_the_official(label):
    model = _build(label)
    sd = model.state_dict()
    got = (sum(p.numel() for p in model.parameters()), len(sd), sum(v.numel() for v in sd.values()))
    assert got == OFFICIAL[label]
    assert all(v.is_meta for v in sd.values())  # nothing allocated


@needs_official
@pytest.mark.parametrize("label", list(OFFICIAL))
def test_keys_shapes_and_order_are_the_official_models(label):
    name, _, weights = label.partition(" ")
    ref = official_dinov3(name, weights=weights or None, meta=True).module
    ours = _build(label)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert list(got.items()) == list(want.items())  # same keys, shapes and order
    assert {k for k, _ in ref.named_buffers()} == {k for k, _ in ours.named_buffers()}  # periods, bias_mask: persistent


@needs_official
def test_init_weights_gives_the_official_buffers_and_scales():
    ref = official_dinov3("dinov3_vits16", depth=1).module
    ours = minidino.create_model("dinov3_vits16", depth=1)
    for (k, a), b in zip(ours.named_buffers(), ref.buffers()):
        assert torch.equal(a, b), k  # the periods 100 ** (2k / (hd/2)) in float32, the masks 1 / 0 / 1
    assert float(ours.blocks[0].ls1.gamma[0].detach()) == float(ref.blocks[0].ls1.gamma[0].detach()) == pytest.approx(1e-5)
    assert torch.count_nonzero(ours.mask_token) == 0
    ours.load_state_dict(ref.state_dict(), strict=True)  # both ways, strictly
    ref.load_state_dict(ours.state_dict(), strict=True)
    giant = official_dinov3("dinov3_vit7b16", depth=0).module  # no blocks: its periods (hd 128) cheaply
    assert torch.equal(giant.rope_embed.periods, rope_periods(128, 100.0))


def test_presets_and_the_satellite_architecture():
    c = minidino.get_config("dinov3_vit7b16")
    assert isinstance(c, Dinov3Config) and (c.embed_dim, c.head_dim, c.ffn_hidden_dim, c.qkv_bias) == (4096, 128, 8192, False)
    assert [minidino.get_config(n).ffn_hidden_dim for n in NAMES] == [1536, 1536, 3072, 4096, 4096, 5120, 8192]
    assert not hasattr(minidino.create_model("dinov3_vitl16", device="meta"), "local_cls_norm")
    for how in ({"weights": "SAT493M"}, {"weights": "/x/dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth"}):
        spec = minidino.factory.resolve("dinov3_vitl16", **how)  # pretrained=False too: the architecture changes
        assert spec.config.local_cls_norm and spec.weights.name == "SAT493M"
        assert spec.weights.preprocessing.mean == (0.430, 0.411, 0.296)
    for other in ("/x/dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth", "https://h/my_finetune.pth?sig=1"):
        assert not minidino.factory.resolve("dinov3_vitl16", weights=other).config.local_cls_norm
    with pytest.raises(ValueError, match="LVD1689M"):
        minidino.factory.resolve("dinov3_vits16", weights="SAT493M")  # the README lists SAT for ViT-L and 7B only
    import enum
    assert minidino.factory.resolve("dinov3_vitl16", weights=enum.Enum("W", "SAT493M").SAT493M).config.local_cls_norm
    with pytest.raises(ValueError, match="multiple of 4"):
        Dinov3Config(embed_dim=60, depth=1, num_heads=6, ffn_hidden_dim=8)  # head dim 10: no RoPE pairs


# ------------------------------------------------------------------ the official API
def test_outputs_and_token_layout():
    model = small()
    x = images(2, 64, 80)
    with torch.no_grad():
        f = model.forward_features(x)
        assert list(f) == ["x_norm_clstoken", "x_storage_tokens", "x_norm_patchtokens", "x_prenorm", "masks"]
        assert [tuple(f[k].shape) for k in list(f)[:4]] == [(2, 384), (2, 4, 384), (2, 20, 384), (2, 25, 384)]
        normed = model.norm(f["x_prenorm"])
        assert torch.equal(f["x_storage_tokens"], normed[:, 1:5]) and torch.equal(model(x), f["x_norm_clstoken"])


def test_sides_not_multiples_of_16_use_the_top_left_whole_patches():
    model = small()
    x = images(1, 40, 50)
    with torch.no_grad(), pytest.warns(UserWarning, match="top-left 32x48"):
        out = model.forward_features(x)["x_prenorm"]
    y = x.clone()
    y[..., 32:, :] = 1e3
    y[..., :, 48:] = -1e3  # the ignored pixels
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(out, model.forward_features(y)["x_prenorm"])
        assert torch.equal(out, model.forward_features(x[..., :32, :48].contiguous())["x_prenorm"])
    with pytest.raises(ValueError, match="smaller than one patch"):
        model(images(1, 15, 32))


def test_masks_replace_patches_and_the_class_token_quirk():
    model = small(depth=1)
    x = images(2, 32, 32)
    masks = torch.tensor([[True, False, False, True], [False] * 4])
    tokens = model.prepare_tokens_with_masks(x, masks)
    assert torch.equal(tokens[0, 5], model.mask_token[0]) and torch.equal(tokens[0, 8], model.mask_token[0])
    assert torch.equal(tokens[1, 5:], model.prepare_tokens_with_masks(x)[1, 5:])
    with torch.no_grad():
        model.mask_token.fill_(float("nan"))  # cls_token + 0 * mask_token, as the official model computes it
        assert not torch.isfinite(model.prepare_tokens_with_masks(x)[:, 0]).any()
        assert torch.isfinite(model.prepare_tokens_with_masks(x)[:, 1:]).all()
    with pytest.raises(TypeError, match="torch.bool"):
        model.forward_features(x, masks=masks.float())


def test_get_intermediate_layers_structure():
    model = small(depth=3)
    x = images(2, 48, 64)
    with torch.no_grad():
        plain = model.get_intermediate_layers(x, n=2)
        assert len(plain) == 2 and plain[0].shape == (2, 12, 384)
        assert all(torch.equal(a, b) for a, b in zip(plain, model.get_intermediate_layers(x, n=[1, 2])))
        full = model.get_intermediate_layers(x, n=[2, 0], reshape=True, return_class_token=True, return_extra_tokens=True)
        (p0, c0, s0), (p2, c2, s2) = full  # block order: 0 then 2
        assert p0.shape == (2, 384, 3, 4) and p0.is_contiguous() and c0.shape == (2, 384) and s0.shape == (2, 4, 384)
        f = model.forward_features(x)
        assert torch.equal(c2, f["x_norm_clstoken"]) and torch.equal(s2, f["x_storage_tokens"])
        raw = model.get_block_outputs(x)[0]
        (q, s), = model.get_intermediate_layers(x, n=[0], return_extra_tokens=True, norm=False)
        assert torch.equal(q, raw[:, 5:]) and torch.equal(s, raw[:, 1:5])
    with pytest.raises(TypeError):
        model.get_intermediate_layers(x, 1)  # keyword-only, as the official signature


def test_attention_maps_and_lists():
    model = small()
    with torch.no_grad():
        (a,) = model.get_attention_maps(images(1, 32, 48))
        assert a.shape == (1, 6, 11, 11) and torch.allclose(a.sum(-1), torch.ones(1))
        assert model.cls_attention_map(a, 2, 3).shape == (1, 6, 2, 3)
        xs = [images(1, 32, 48), images(2, 64, 16)]
        out = model.forward_features(xs, [None, torch.zeros(2, 4, dtype=torch.bool)])
        assert [tuple(o["x_norm_patchtokens"].shape) for o in out] == [(1, 6, 384), (2, 4, 384)]
        model.attn_impl = "explicit"  # the readable maths, rotation included: close to SDPA
        try:
            explicit = model.forward_features(xs[0])["x_prenorm"]
        finally:
            model.attn_impl = "fused"
        assert (explicit - model.forward_features(xs[0])["x_prenorm"]).abs().max() < 1e-4


# ------------------------------------------------------------------ RoPE periods, bfloat16
def test_periods_are_read_from_the_checkpoint_never_recomputed():
    model = small(depth=1)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    assert not torch.equal(sd["rope_embed.periods"], rope_periods(64, 100.0))  # the generator moves them
    x = images(1, 48, 48)
    with torch.no_grad():
        before = model(x)
        model.float(), model.train(), model.eval(), model.to("cpu")
        assert torch.equal(model(x), before)
        model.load_state_dict({**sd, "rope_embed.periods": sd["rope_embed.periods"] * 1.01})
        assert torch.equal(model.rope_embed.periods, sd["rope_embed.periods"] * 1.01) and not torch.equal(model(x), before)
    assert rope_periods(128, 100.0)[-1].item() == pytest.approx(100 ** (31 / 32), rel=1e-6)


def test_bfloat16_rounds_the_periods_and_rotates_in_float32():
    model = small(depth=1).to(torch.bfloat16)
    assert model.rope_embed.periods.dtype == torch.bfloat16
    sin, cos = model.rope_tables(2, 3)
    assert sin.dtype == torch.float32
    want = 2 * math.pi * 0.5 / model.rope_embed.periods.float()  # row 1 of 2, first axis
    assert torch.allclose(torch.asin(sin[3, :16]), torch.asin(torch.sin(want)), atol=1e-6)
    with torch.no_grad():
        assert model(images(1, 32, 48).bfloat16()).dtype == torch.bfloat16


# ------------------------------------------------------------------ weights=
def test_pretrained_without_a_file_says_how_to_get_access(monkeypatch):
    monkeypatch.delenv("MINIDINO_BASE_URL", raising=False)
    with pytest.raises(ConnectionError) as e:
        minidino.create_model("dinov3_vits16", depth=1, pretrained=True)
    message = str(e.value)
    assert "\n" not in message and "dinov3-downloads" in message and "weights=URL" in message


def test_weights_path_loads_it_and_checks_the_digest_in_its_name(tmp_path):
    model = small(depth=1, seed=3)
    good = tmp_path / "dinov3_vits16_pretrain_lvd1689m-00000000.pth"
    torch.save(model.state_dict(), good)
    from minidino.weights.download import ChecksumError, sha256_file

    with pytest.raises(ChecksumError, match="starts with 00000000"):
        minidino.create_model("dinov3_vits16", depth=1, pretrained=True, weights=str(good))
    loaded = minidino.create_model("dinov3_vits16", depth=1, pretrained=True, weights=str(good), check_hash=False)
    assert torch.equal(loaded.cls_token, model.cls_token)
    named = tmp_path / f"dinov3_vits16_pretrain_lvd1689m-{sha256_file(good)[:8]}.pth"
    good.rename(named)
    loaded = minidino.create_model("dinov3_vits16", depth=1, pretrained=str(named))
    assert torch.equal(loaded.rope_embed.periods, model.rope_embed.periods)  # the file's periods, not recomputed
    assert lookup("dinov3_vit7b16").weights_named("SAT493M").files["backbone"].endswith("sat493m-a6675841.pth")


def test_a_dinov2_file_in_a_dinov3_model_is_refused_clearly():
    dinov2 = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)
    with pytest.raises(minidino.weights.WeightsMismatchError, match="dinov2_vits14"):
        minidino.load_weights(minidino.create_model("dinov3_vits16", depth=1, device="meta"), dinov2)
