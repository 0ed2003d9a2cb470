"""Live parity against the official DINOv2 code, run side by side on this machine.

Two sources of the official code (minidino.conformance.reference, black-box: imported and called, never read):

- the PyPI snapshot `dinov2==0.0.1.dev2` (April 2023, installed by .ci/run with --no-deps; the
  four plain backbones, explicit attention): compared with attn_impl="explicit", which must be
  bit-identical (max abs 0.0), and with the default SDPA path (within 1e-5). Skipped, with the
  reason, when the package is not installed.
- the current official hub code (facebookresearch/dinov2 at b8931f7): the snapshot tarball at
  ../shared/official/ beside this checkout (CI has it there), unpacked once to a temporary folder,
  or $MINIDINO_OFFICIAL_REPO (a checkout or a tarball); loaded with torch.hub.load(path, name,
  source="local", pretrained=False). All 16 hub models; ViT-L/g at their first blocks.

    MINIDINO_OFFICIAL_REPO=/path/to/dinov2 python -m pytest tests/test_official_live.py -s
    MINIDINO_REAL_WEIGHTS=1 ...   # also downloads and compares the real pretrained checkpoints

Hypothesis fills every parameter of both models with the same random values (not the init) and
drives random sizes, batch sizes and masks through both.
"""

from __future__ import annotations

import functools
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minidino
from minidino.catalogue import list_models
from minidino.conformance.compare import max_abs_difference as max_diff
from minidino.conformance.reference import official_repo, snapshot_available
from minidino.conformance.side_by_side import compare, official_pair

REPO = official_repo()  # $MINIDINO_OFFICIAL_REPO, else ../shared/official/dinov2-*.tar.gz, else None
# The depthers have their own live tests (tests/test_depth_live.py), dino.txt too (test_dinotxt.py).
NAMES = [n for n in list_models(include_depthers=False, family="dinov2") if "dinotxt" not in n]  # DINOv3: test_dinov3_live.py
FAST = ["dinov2_vits14", "dinov2_vits14_reg", "dinov2_vitb14_reg", "dinov2_vits14_lc", "dinov2_vits14_reg_lc"]
PLAIN = ["dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14"]
# Reduced cost, same code: ViT-L/g run their first 2 blocks (their *_lc classifiers 4, the last 4 feed the head).
REDUCED_DEPTH = {n: (4 if n.endswith("_lc") else 2) for n in NAMES if "vitl14" in n or "vitg14" in n}
needs_repo = pytest.mark.skipif(
    not REPO, reason="no official hub code: ../shared/official/dinov2-*.tar.gz not found and MINIDINO_OFFICIAL_REPO unset")
needs_snapshot = pytest.mark.skipif(
    not snapshot_available(), reason="`pip install --no-deps dinov2==0.0.1.dev2` (the PyPI snapshot) to run it")
SETTINGS = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@functools.lru_cache(maxsize=2)
def pair(name: str, layers: int = 4, depth: int | None = None, pypi: bool = False):
    """(official, ours): ours runs the attention path that performs the official operations."""
    ref, ours = official_pair(name, repo=None if pypi else REPO, pypi=pypi,
                              layers=layers if name.endswith("_lc") else None, **({"depth": depth} if depth else {}))
    return ref.module, ours


def randomise(official, ours, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(v.shape, generator=g) * (0.02 if v.ndim >= 2 and "token" not in k and "pos_embed" not in k else 0.5)
          + (1.0 if k.endswith((".gamma", "norm.weight", "norm1.weight", "norm2.weight")) else 0.0)
          for k, v in official.state_dict().items()}
    official.load_state_dict(sd, strict=True)
    ours.load_state_dict(sd, strict=True)


def inputs(h: int, w: int, B: int, seed: int, mask_p: float | None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 3, 14 * h, 14 * w, generator=g)
    masks = None if mask_p is None else torch.rand(B, h * w, generator=g) < mask_p
    return x, masks


# ------------------------------------------------------------------ the PyPI snapshot (runs in CI)
# Kept beside the current code: it is what attn_impl="explicit" reproduces operation for operation.
@needs_snapshot
@pytest.mark.parametrize("name", PLAIN)
@SETTINGS
@given(h=st.integers(1, 40), w=st.integers(1, 40), B=st.integers(1, 3), seed=st.integers(0, 2**16),
       mask_p=st.sampled_from([None, 0.0, 0.4]))
def test_identical_to_official_snapshot(name, h, w, B, seed, mask_p):
    depth = None if name == "dinov2_vits14" else 2  # big models: their first two blocks (same code, any depth)
    official, ours = pair(name, depth=depth, pypi=True)
    assert ours.attn_impl == "explicit"
    randomise(official, ours, seed)
    x, masks = inputs(h, w, B, seed, mask_p)
    d = compare(official, ours, x, masks)
    print(f"{name} (depth {len(ours.blocks)}) {B}x3x{14 * h}x{14 * w} masks={mask_p}: max abs {d:.3e}")
    assert d == 0.0


@needs_snapshot
def test_default_sdpa_path_close_to_official_snapshot():
    """The default (fused SDPA) path reorders the attention sums: close to the explicit official code, not equal."""
    official, ours = pair("dinov2_vits14", pypi=True)
    randomise(official, ours, 3)
    x, masks = inputs(16, 22, 2, 3, 0.3)
    ours.attn_impl = "fused"
    try:
        d = compare(official, ours, x, masks)
    finally:
        ours.attn_impl = "explicit"
    print(f"dinov2_vits14 default SDPA path vs the explicit official snapshot: max abs {d:.3e}")
    assert 0.0 < d < 1e-5  # not 0: if this ever reads 0.0 the snapshot changed its attention


# ------------------------------------------------------------------ the current official hub code (runs in CI)
@needs_repo
@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(h=st.integers(1, 40), w=st.integers(1, 40), B=st.integers(1, 3), seed=st.integers(0, 2**16),
       mask_p=st.sampled_from([None, 0.0, 0.4]), layers=st.sampled_from([1, 4]))
def test_identical_to_official(name, h, w, B, seed, mask_p, layers):
    if name not in FAST:  # big models: fewer and smaller inputs
        h, w, B = min(h, 16), min(w, 16), 1
    official, ours = pair(name, layers if name.endswith("_lc") else 4, REDUCED_DEPTH.get(name))
    assert getattr(ours, "backbone", ours).attn_impl == "fused"  # the default path: the current official code is SDPA too
    randomise(official, ours, seed)
    x, masks = inputs(h, w, B, seed, mask_p)
    if name.endswith("_lc"):
        with torch.no_grad():
            d = max_diff(official(x), ours(x))
    else:
        d = compare(official, ours, x, masks)
    print(f"{name} (depth {len(getattr(ours, 'backbone', ours).blocks)}) {B}x3x{14 * h}x{14 * w} masks={mask_p}: "
          f"max abs {d:.3e}")
    assert d == 0.0


@needs_repo
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
