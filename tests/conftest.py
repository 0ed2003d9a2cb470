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
    from minidino import golden

    case = next(c for c in golden_index()["cases"] if c["model"] == model and c.get("depth") == depth
                and c["weight_seed"] == seed)
    m, _ = golden.build_case(case)
    return m


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
