"""The benchmark scripts run end to end on a tiny setting and report sane figures (no timing is
asserted: speed is reported by the benchmarks, never tested)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_writes_results_with_deviations_and_ratios(tmp_path, capsys):
    bench = load("bench")
    assert bench.main(["--rows", "vits14:56:1", "--latency", "", "--repeats", "2", "--warmup", "0", "--no-memory",
                       "--only", "minidino,minidino-explicit,official,transformers", "--out", str(tmp_path),
                       "--tag", "t"]) == 0
    result = json.loads((tmp_path / "t.json").read_text())
    (row,) = result["rows"]
    impls = row["impls"]
    assert impls["minidino"]["max_abs"] == 0.0 and len(impls["minidino"]["all_s"]) == 2
    assert impls["minidino-explicit"]["max_abs"] < 1e-5
    for peer in ("official", "transformers"):  # present when installed (CI installs both)
        if peer in impls:
            assert impls[peer]["min_cosine"] > 0.999, peer
        else:
            assert peer in row["skipped"]
    assert "Ratios" in (tmp_path / "t.md").read_text()
    assert "per round" in capsys.readouterr().out


def test_list_profile_and_attention_scripts_run(tmp_path, capsys):
    profile = load("profile_cpu")
    assert profile.main(["--res", "56", "--batch", "1", "--repeats", "1", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "profile_cpu_dinov2_vits14_56_b1_fused.md").read_text()
    assert "aten::addmm" in text and "ms / forward" in text
    attention = load("attention_backends")
    assert attention.main(["--device", "cpu", "--repeats", "1", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "attention_backends_cpu.md").read_text()
    assert "| math | " in text and "| default | " in text


def test_bench_dinov3_runs(tmp_path):
    import pytest
    from minidino.conformance.reference_v3 import official_dinov3_repo

    pytest.importorskip("transformers")
    if official_dinov3_repo() is None:
        pytest.skip("no official DINOv3 code (../shared/official)")
    bench = load("bench_dinov3")
    assert bench.main(["--rows", "dinov3_vits16:32:1", "--depth", "1", "--rounds", "1", "--no-memory",
                       "--out", str(tmp_path), "--tag", "t"]) == 0
    (row,) = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert row["max_abs_vs_minidino"]["official"] == 0.0 and row["max_abs_vs_minidino"]["transformers"] < 1e-4
    assert "transformers / minidino" in (tmp_path / "t.md").read_text()
