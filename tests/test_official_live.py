"""Live parity against the official DINOv2 hub code (opt-in).

    MINIDINO_OFFICIAL_REPO=/path/to/facebookresearch/dinov2 python -m pytest tests/test_official_live.py -s
    MINIDINO_REAL_WEIGHTS=1 ...   # also downloads and compares the real pretrained checkpoints

The official models are loaded with torch.hub.load(path, name, source="local", pretrained=False).
Hypothesis fills every parameter of both with the same random values (not the init) and drives
random sizes, batch sizes and masks through both; outputs must be identical (max abs 0.0: the
same operations in the same order on the same machine). Skipped, with the reason, when the
variable is not set.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minidino
from minidino.names import list_models

REPO = os.environ.get("MINIDINO_OFFICIAL_REPO")
pytestmark = pytest.mark.skipif(
    not REPO, reason="set MINIDINO_OFFICIAL_REPO to a local checkout of facebookresearch/dinov2 to run live parity"
)

NAMES = list_models()
FAST = ["dinov2_vits14", "dinov2_vits14_reg", "dinov2_vitb14_reg", "dinov2_vits14_lc", "dinov2_vits14_reg_lc"]


@functools.lru_cache(maxsize=2)
def pair(name: str, layers: int = 4):
    kw = {"layers": layers} if name.endswith("_lc") else {}
    official = torch.hub.load(REPO, name, source="local", pretrained=False, **kw).eval()
    ours = minidino.create_model(name, **kw).eval()
    return official, ours


def randomise(official, ours, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(v.shape, generator=g) * (0.02 if v.ndim >= 2 and "token" not in k and "pos_embed" not in k else 0.5)
          + (1.0 if k.endswith((".gamma", "norm.weight", "norm1.weight", "norm2.weight")) else 0.0)
          for k, v in official.state_dict().items()}
    official.load_state_dict(sd, strict=True)
    ours.load_state_dict(sd, strict=True)


def max_diff(a, b) -> float:
    if isinstance(a, torch.Tensor):
        return 0.0 if a.numel() == 0 else float((a - b).abs().max())
    if isinstance(a, dict):
        return max(max_diff(a[k], b[k]) for k in a if a[k] is not None)
    return max(max_diff(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=st.integers(1, 40), w=st.integers(1, 40), B=st.integers(1, 3), seed=st.integers(0, 2**16),
       mask_p=st.sampled_from([None, 0.0, 0.4]), layers=st.sampled_from([1, 4]))
def test_identical_to_official(name, h, w, B, seed, mask_p, layers):
    if name not in FAST:  # big models: fewer and smaller inputs
        h, w, B = min(h, 16), min(w, 16), 1
    official, ours = pair(name, layers if name.endswith("_lc") else 4)
    randomise(official, ours, seed)
    x = torch.randn(B, 3, 14 * h, 14 * w, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        if name.endswith("_lc"):
            d = max_diff(official(x), ours(x))
        else:
            masks = None if mask_p is None else torch.rand(B, h * w, generator=torch.Generator().manual_seed(seed)) < mask_p
            d = max_diff(official.forward_features(x, masks=masks), ours.forward_features(x, masks=masks))
            n = [0, len(ours.blocks) - 1]
            kw = dict(n=n, reshape=True, return_class_token=True)
            d = max(d, max_diff(official.get_intermediate_layers(x, **kw), ours.get_intermediate_layers(x, **kw)))
    print(f"{name} {B}x3x{14 * h}x{14 * w} masks={mask_p}: max abs {d:.3e}")
    assert d == 0.0


@pytest.mark.skipif(os.environ.get("MINIDINO_REAL_WEIGHTS") != "1", reason="set MINIDINO_REAL_WEIGHTS=1 (needs network)")
@pytest.mark.parametrize("name", NAMES)
def test_real_checkpoints_identical(name):
    kw = {"layers": 4} if name.endswith("_lc") else {}
    official = torch.hub.load(REPO, name, source="local", pretrained=True, **kw).eval()
    ours = minidino.create_model(name, pretrained=True, **kw).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        d = max_diff(official(x), ours(x))
    print(f"{name} real weights, 224 px: max abs {d:.3e}")
    assert d == 0.0
