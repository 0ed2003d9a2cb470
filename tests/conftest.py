"""Shared fixtures: the vendored golden vectors (tests/golden/, see its README for provenance)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

GOLDEN_DIR = Path(__file__).parent / "golden"


@functools.lru_cache(maxsize=None)
def golden_index() -> dict:
    return json.loads((GOLDEN_DIR / "index.json").read_text())


@functools.lru_cache(maxsize=None)
def official_shapes() -> dict:
    return json.loads((GOLDEN_DIR / "official_state_dict_shapes.json").read_text())


@functools.lru_cache(maxsize=4)
def golden_model(model: str, depth: int, seed: int):
    """A minidino model at a golden case's architecture, loaded with its generated weights."""
    from minidino.conformance import golden

    case = next(c for c in golden_index()["cases"] if c["model"] == model and c.get("depth") == depth
                and c["weight_seed"] == seed)
    m, _ = golden.build_case(case)
    return m


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def small_depther(head: str = "dpt", seed: int = 0, layers: int = 4):
    """A ViT-S/14 depther on a 4-block backbone (the hub's head and glue, a third of the backbone), with
    generated weights: the head reads blocks (0, 1, 2, 3), or block 3 alone for layers=1. For tests
    that check minidino against itself (export, interop); parity with the official depthers at full
    depth is tests/test_depth_live.py's."""
    import minidino
    from minidino.conformance import golden
    from minidino.heads import Depther
    from minidino.heads.depth_config import depth_config

    backbone = minidino.create_model("dinov2_vits14", depth=4, device="meta")
    config = depth_config({1: (3,), 4: (0, 1, 2, 3)}, head, 384, layers=layers)
    model = Depther(backbone, config, device="meta")
    model.load_state_dict(golden.generate_for(model, seed), strict=True, assign=True)
    return model.eval()


def offline_workdir(tmp_path: Path, monkeypatch, hint: str) -> Path:
    """Make `tmp_path` the working folder, with an empty minidino cache, where opening a network
    connection raises OSError(hint): the documentation examples run there."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError(hint)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("MINIDINO_HOME", str(tmp_path / "cache"))  # nothing from a real cache
    monkeypatch.chdir(tmp_path)
    return tmp_path
