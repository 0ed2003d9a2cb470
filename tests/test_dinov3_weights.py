"""DINOv3 checkpoints in other layouts: transformers' DINOv3ViTModel (both ways, against the real class,
built offline from a config) and timm's (load only: timm needs torchvision, which this environment
lacks, so its keys are written here from the mapping measured on timm 1.0.31, NOTES in docs/dinov3.md)."""

from __future__ import annotations

import json

import pytest
import torch

import minidino
from minidino.conformance.generator import generate_for
from minidino.models.rope import rope_periods
from minidino.weights import detect_layout, load_weights, save_weights, to_huggingface, to_official

transformers = pytest.importorskip("transformers")


def generated(name: str = "dinov3_vits16", depth: int = 2, seed: int = 0, official_periods: bool = True, **kw):
    """A model with generated weights; official_periods: the RoPE periods of the formula (transformers
    and timm recompute them so, whatever a file stores)."""
    model = minidino.create_model(name, depth=depth, device="meta", **kw)
    sd = generate_for(model, seed)
    if official_periods:
        sd["rope_embed.periods"] = rope_periods(model.config.head_dim, model.config.rope_base)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval(), sd


def images(B: int = 2, H: int = 64, W: int = 80, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(seed))


def to_timm(sd: dict, qkv_bias: bool = True) -> dict:
    """Official keys -> timm's vit_*_patch16_dinov3[_qkvb] (Eva) keys, as timm 1.0.31 names them."""
    out = {}
    swiglu = any(k.endswith("mlp.w1.weight") for k in sd)
    for k, v in sd.items():
        if k in ("mask_token", "rope_embed.periods") or k.endswith("bias_mask") or k.startswith("local_cls_norm"):
            continue  # timm has no place for them
        k = k.replace("storage_tokens", "reg_token").replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2")
        k = k.replace("mlp.w1.", "mlp.fc1_g.").replace("mlp.w2.", "mlp.fc1_x.").replace("mlp.w3.", "mlp.fc2.") if swiglu else k
        if k.endswith("attn.qkv.bias"):
            if qkv_bias:
                q, _, vb = v.chunk(3)
                out[k.replace("qkv.bias", "q_bias")], out[k.replace("qkv.bias", "v_bias")] = q, vb
            continue
        out[k] = v
    return out


@pytest.fixture(scope="module")
def hf_model_class():
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    return DINOv3ViTConfig, DINOv3ViTModel


@pytest.mark.parametrize("name", ["dinov3_vits16", "dinov3_vits16plus", "dinov3_vit7b16"])
def test_transformers_layout_both_ways(name, hf_model_class, tmp_path):
    DINOv3ViTConfig, DINOv3ViTModel = hf_model_class
    kw = {"embed_dim": 256, "num_heads": 2, "ffn_hidden_dim": 512} if name == "dinov3_vit7b16" else {}  # a narrow 7B-like
    ours, sd = generated(name, **kw)
    hf_sd = to_huggingface(sd)
    assert detect_layout(hf_sd) == "huggingface-dinov3"
    config = minidino.weights.huggingface_config(ours.config)
    hf = DINOv3ViTModel(DINOv3ViTConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")}))
    hf.load_state_dict({("model." + k if k.startswith("layer.") else k): v for k, v in hf_sd.items()}, strict=True)
    x = images()
    with torch.no_grad():
        got = hf.eval()(pixel_values=x).last_hidden_state  # (B, 1 + 4 + hw, D), normalised
        want = ours.forward_features(x)
    d = (got - ours.norm(want["x_prenorm"])).abs().max().item()
    print(f"{name}: transformers DINOv3ViTModel vs minidino, same weights: max abs {d:.2e}")
    assert d < 1e-4  # split q/k/v products, recomputed RoPE: float32 noise, not 0.0 (docs/dinov3.md)
    # and back: a transformers file loads, the keys it lacks filled with the official values
    back = minidino.create_model(name, depth=2, **kw)
    report = load_weights(back, hf.state_dict())
    assert report.layout == "huggingface-dinov3" and "rope_embed.periods" in report.filled
    assert all(k == "rope_embed.periods" or k.endswith("bias_mask") or k.startswith("local_cls_norm.") for k in report.filled)
    with torch.no_grad():
        assert torch.equal(back.forward_features(x)["x_prenorm"], want["x_prenorm"])  # periods of the formula: 0.0
    path = save_weights(back, tmp_path / "hf.safetensors", layout="huggingface")
    assert detect_layout(minidino.weights.read_checkpoint(path)) == "huggingface-dinov3"


def test_transformers_folder_from_convert_loads_with_from_pretrained(hf_model_class, tmp_path):
    _, DINOv3ViTModel = hf_model_class
    ours, sd = generated("dinov3_vits16", depth=1)
    src = tmp_path / "official.safetensors"
    save_weights(sd, src)
    from minidino.cli import main

    assert main(["convert", str(src), str(tmp_path / "hf") + "/", "--layout", "huggingface"]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "dinov3_vit"
    hf = DINOv3ViTModel.from_pretrained(tmp_path / "hf").eval()
    x = images(1, 48, 48)
    with torch.no_grad():
        d = (hf(pixel_values=x).last_hidden_state - ours.norm(ours.forward_features(x)["x_prenorm"])).abs().max().item()
    assert d < 1e-4


def test_periods_stored_in_a_file_are_what_the_model_uses():
    """What a transformers file lacks costs: a file that stores other periods (the published ones are
    rounded to bfloat16) gives other outputs when they are recomputed."""
    ours, sd = generated(official_periods=False)  # the generator moves the periods by up to 10%
    filled = minidino.create_model("dinov3_vits16", depth=2)
    load_weights(filled, to_huggingface(sd))  # periods recomputed from the formula
    x = images()
    with torch.no_grad():
        d = (filled(x) - ours(x)).abs().max().item()
    assert d > 1e-3
    bf16 = {**sd, "rope_embed.periods": rope_periods(64, 100.0).bfloat16().float()}
    rounded = minidino.create_model("dinov3_vits16", depth=2)
    rounded.load_state_dict(bf16)
    with torch.no_grad():
        cost = (filled(x) - rounded(x)).abs().max().item()
    print(f"periods recomputed in float32 vs stored rounded to bfloat16 (2 blocks): max abs {cost:.2e}")
    assert 0 < cost < 1e-1


@pytest.mark.parametrize("name, qkv_bias", [("dinov3_vits16", True), ("dinov3_vits16", False), ("dinov3_vits16plus", True),
                                            ("dinov3_vit7b16", False)])
def test_timm_layout_loads(name, qkv_bias):
    kw = {"embed_dim": 256, "num_heads": 2, "ffn_hidden_dim": 512} if name == "dinov3_vit7b16" else {}
    ours, sd = generated(name, depth=1, **kw)
    timm_sd = to_timm(sd, qkv_bias and ours.config.qkv_bias)
    assert detect_layout(timm_sd) == "timm-dinov3"
    model = minidino.create_model(name, depth=1, **kw)
    report = load_weights(model, timm_sd)
    assert report.mask_token_missing and "rope_embed.periods" in report.filled
    x = images()
    with torch.no_grad():
        d = (model.forward_features(x)["x_prenorm"] - ours.forward_features(x)["x_prenorm"]).abs().max().item()
    print(f"{name} timm{'_qkvb' if qkv_bias else ''} layout loaded: max abs {d:.2e}")
    if qkv_bias or not ours.config.qkv_bias:
        assert d == 0.0  # the periods of the formula, and the key bias is masked out anyway
    else:
        assert d > 1e-3  # timm's models without qkv bias drop the q and v biases
    with pytest.raises(ValueError, match="no mask_token"):
        model.forward_features(x, masks=torch.zeros(2, 20, dtype=torch.bool))


def test_layouts_tell_the_families_apart():
    v2 = generate_for(minidino.create_model("dinov2_vits14_reg", depth=1, device="meta"), 0)
    v3 = generate_for(minidino.create_model("dinov3_vits16", depth=1, device="meta"), 0)
    assert [detect_layout(s) for s in (v2, to_huggingface(v2), v3, to_huggingface(v3), to_timm(v3))] == \
        ["official", "huggingface", "official", "huggingface-dinov3", "timm-dinov3"]
    back, layout = to_official(to_timm(v3))
    assert layout == "timm-dinov3" and torch.equal(back["blocks.0.ls1.gamma"], v3["blocks.0.ls1.gamma"])
    assert minidino.weights.guess_hub_name(v3) == "dinov3_vits16 truncated to depth 1"
    config = minidino.weights.infer_config(v3)
    assert config == minidino.get_config("dinov3_vits16").replace(depth=1)
