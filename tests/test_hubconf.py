"""hubconf.py: torch.hub.load(repo, name, source="local") builds the official entry points."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

import minidino
from minidino.heads import LinearClassifier
from minidino.models.dinov2 import DinoVisionTransformer

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(depth=1, embed_dim=48, num_heads=3, ffn_hidden_dim=96)


def _load(name: str, **kwargs):
    return torch.hub.load(str(ROOT), name, source="local", trust_repo=True, **kwargs)


def _hubconf():
    import importlib.util

    spec = importlib.util.spec_from_file_location("minidino_hubconf", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_official_entry_point_is_listed():
    listed = [n for n in dir(_hubconf()) if n.startswith(("dinov2_", "dinov3_"))]
    assert sorted(listed) == sorted(minidino.list_models())
    assert len(listed) == 32  # DINOv2: 8 backbones, 8 classifiers, 8 depthers, dino.txt; DINOv3: 7 ViTs


@pytest.mark.parametrize("name", minidino.list_models())
def test_entry_point_defaults_match_the_official_hub(name):
    params = inspect.signature(getattr(_hubconf(), name)).parameters
    assert params["pretrained"].default is True and params["pretrained"].kind is inspect.Parameter.KEYWORD_ONLY
    if name.endswith(("_ld", "_dd")):
        assert params["weights"].default == "NYU" and ("layers" in params) == name.endswith("_ld")
        assert not name.endswith("_ld") or params["layers"].default == 4
    elif "dinotxt" in name:  # the official entry point takes no weights= or layers=
        assert set(params) == {"pretrained", "kwargs"}
    elif name.endswith("_lc"):
        assert params["layers"].default == 4 and params["weights"].default == "IMAGENET1K"
    elif name.startswith("dinov3_"):  # the official DINOv3 hub: (*, pretrained=True, weights=LVD1689M, check_hash, **kwargs)
        assert list(params) == ["pretrained", "weights", "check_hash", "kwargs"] and params["weights"].default == "LVD1689M"
    else:
        assert "layers" not in params and params["weights"].default == "LVD142M"


def test_load_vits14_is_the_real_config_and_runs():
    model = _load("dinov2_vits14", pretrained=False)
    assert isinstance(model, DinoVisionTransformer) and not model.training
    assert model.config == minidino.get_config("dinov2_vits14")
    assert sum(p.numel() for p in model.parameters()) == 22_056_576  # SPEC section 1: S 22.06M
    with torch.no_grad():
        assert model(torch.randn(1, 3, 28, 28)).shape == (1, 384)


@pytest.mark.parametrize("name", [n for n in minidino.list_models(include_classifiers=False, include_depthers=False)])
def test_load_each_backbone(name):
    model = _load(name, pretrained=False, device="meta")  # full size on meta: nothing allocated
    assert model.config == minidino.get_config(name)
    assert model.num_register_tokens == (4 if name.endswith("_reg") or name.startswith("dinov3_") else 0)


def test_lc_default_layers_4_and_layers_1():
    four = _load("dinov2_vits14_reg_lc", pretrained=False, **dict(TINY, depth=4))
    one = _load("dinov2_vits14_reg_lc", pretrained=False, layers=1, **dict(TINY, depth=4))
    assert isinstance(four, LinearClassifier) and four.layers == 4 and four.linear_head.in_features == 5 * 48
    assert one.layers == 1 and one.linear_head.in_features == 2 * 48
    with torch.no_grad():
        assert four(torch.randn(2, 3, 28, 28)).shape == (2, 1000)


def test_pretrained_default_loads_the_official_checkpoint(monkeypatch):
    calls = []
    monkeypatch.setattr(minidino.factory, "load_pretrained",
                        lambda model, entry, weights, pretrained, **kw: calls.append((entry.name, pretrained)))
    _load("dinov2_vits14", **TINY)
    _load("dinov2_vitb14_lc", **TINY)
    assert calls == [("dinov2_vits14", True), ("dinov2_vitb14_lc", True)]


def test_official_weights_argument_is_accepted_and_others_refused():
    import enum

    class Weights(enum.Enum):  # the official hub passes an enum member
        LVD142M = "LVD142M"

    assert _load("dinov2_vits14", pretrained=False, weights=Weights.LVD142M, **TINY).config.depth == 1
    with pytest.raises(ValueError, match="LVD142M"):
        _load("dinov2_vits14", pretrained=False, weights="IMAGENET22K", **TINY)
    with pytest.raises(TypeError, match="unknown config field"):
        _load("dinov2_vits14", pretrained=False, not_a_field=1)
