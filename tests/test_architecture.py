"""Architecture: exact official keys and shapes, parameter counts, config behaviour."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import minidino
from minidino import DinoConfig, create_model, get_config, list_models
from minidino.catalogue import list_models
from minidino.models.config import swiglu_hidden_dim

from conftest import official_shapes

BACKBONES = list_models(False, False, family="dinov2")  # DINOv3: tests/test_dinov3.py
PARAMS_M = {"s": 22.06, "b": 86.58, "l": 304.37, "g": 1136.48}


@pytest.mark.parametrize("name", BACKBONES)
def test_meta_model_has_the_official_keys_and_shapes(name):
    model = create_model(name, device="meta")
    assert all(p.is_meta for p in model.parameters())
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == official_shapes()[name]


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("layers", [1, 4])
def test_classifier_head_shapes(name, layers):
    model = create_model(name + "_lc", layers=layers, device="meta")
    head_key = f"{name}_linear{'4' if layers == 4 else ''}_head"
    head = {k.removeprefix("linear_head."): list(v.shape) for k, v in model.state_dict().items() if k.startswith("linear_head.")}
    assert head == official_shapes()[head_key]
    backbone = {k.removeprefix("backbone."): list(v.shape) for k, v in model.state_dict().items() if k.startswith("backbone.")}
    assert backbone == official_shapes()[name]


@pytest.mark.parametrize("name", BACKBONES)
def test_parameter_counts(name):
    model = create_model(name, device="meta")
    n = sum(p.numel() for p in model.parameters()) - (4 * model.config.embed_dim if "_reg" in name else 0)
    assert round(n / 1e6, 2) == PARAMS_M[name.split("_vit")[1][0]]


def test_swiglu_hidden_for_giant():
    assert swiglu_hidden_dim(1536) == 4096
    assert get_config("dinov2_vitg14").ffn_hidden_dim == 4096


def test_presets_are_plain_frozen_data():
    cfg = get_config("dinov2_vitb14_reg")
    assert (cfg.num_register_tokens, cfg.interpolate_offset, cfg.interpolate_antialias) == (4, 0.0, True)
    assert get_config("dinov2_vitb14").interpolate_offset == 0.1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.depth = 3  # type: ignore[misc]
    for value in cfg.to_dict().values():
        assert isinstance(value, (int, float, str, bool))
    with pytest.raises(TypeError):
        DinoConfig(384, 12, 6)  # type: ignore[misc]  # keyword-only


def test_list_models_and_lc_config():
    names = list_models()
    assert len(names) == 32 and "dinov2_vitg14_reg_lc" in names and "dinov2_vitg14_dd" in names
    assert "dinov2_vitl14_reg4_dinotxt_tet1280d20h24l" in names  # all 25 official DINOv2 hub entry points
    assert len(list_models(family="dinov3")) == 7 and "dinov3_vit7b16" in names  # and the 7 DINOv3 ViTs
    assert len(list_models(include_depthers=False)) == 24
    assert get_config("dinov2_vits14_lc") == get_config("dinov2_vits14")


def test_overrides_truncate_depth():
    model = create_model("dinov2_vitl14", depth=2, device="meta")
    assert len(model.blocks) == 2 and model.config.embed_dim == 1024


def test_meta_build_allocates_nothing_and_loads_with_assign():
    model = create_model("dinov2_vitg14", device="meta")
    assert sum(p.numel() for p in model.parameters() if not p.is_meta) == 0
    small = create_model("dinov2_vits14", depth=1, device="meta")
    sd = {k: torch.zeros(v.shape) for k, v in small.state_dict().items()}
    small.load_state_dict(sd, assign=True)
    assert not any(p.is_meta for p in small.parameters())


def test_random_init_is_the_official_scheme():
    model = create_model("dinov2_vits14", depth=2)
    assert torch.all(model.blocks[0].ls1.gamma == 1.0)
    assert torch.all(model.mask_token == 0)
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=0.1)
    assert not model.training  # create_model returns eval mode


def test_public_types_exported():
    for name in ("DinoVisionTransformer", "DinoConfig", "LinearClassifier", "DINOHead", "create_model", "list_models", "get_config"):
        assert hasattr(minidino, name)
