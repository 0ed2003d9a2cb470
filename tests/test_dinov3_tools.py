"""DINOv3 through the rest of minidino: torch.export and ONNX with a free size and batch, optimize,
the cost estimates and the command line. Small models with generated weights; figures printed."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from PIL import Image

import minidino
from minidino.cli import main
from minidino.conformance.generator import generate_for
from minidino.models.cost import model_cost


def generated(name: str = "dinov3_vits16plus", depth: int = 1, seed: int = 0):
    model = minidino.create_model(name, depth=depth, device="meta")
    model.load_state_dict(generate_for(model, seed), strict=True, assign=True)
    return model.eval()


SIZES = [(1, 32, 48), (3, 80, 64)]


def test_export_program_free_size_and_batch_is_exact():
    model = generated()
    program = minidino.export_program(model, size=(64, 80))
    with torch.no_grad():
        for B, H, W in SIZES:
            x = torch.randn(B, 3, H, W)
            got, want = program.module()(x), model.forward_features(x)
            keys = ("x_norm_clstoken", "x_storage_tokens", "x_norm_patchtokens")
            assert all(torch.equal(g, want[k]) for g, k in zip(got, keys))  # the same operations: 0.0
    with pytest.raises(ValueError, match="unknown graph outputs"):
        minidino.export_program(model, outputs=["x_norm_regtokens"])  # DINOv2's key


def test_onnx_free_size_and_batch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = generated()
    path = minidino.export_onnx(model, tmp_path / "v3.onnx", size=(64, 80))
    session = ort.InferenceSession(str(path))
    worst = 0.0
    with torch.no_grad():
        for B, H, W in SIZES:
            x = torch.randn(B, 3, H, W)
            got = session.run(None, {"x": x.numpy()})
            want = model.forward_features(x)
            for g, k in zip(got, ("x_norm_clstoken", "x_storage_tokens", "x_norm_patchtokens")):
                worst = max(worst, float(np.abs(g - want[k].numpy()).max()))
    print(f"onnxruntime vs eager, dinov3_vits16plus 1 block, sizes {SIZES}: max abs {worst:.2e}")
    assert worst < 1e-4  # other matmul / softmax kernels: a few 1e-6


def test_optimize():
    model = generated()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        assert torch.equal(minidino.optimize(model, compile=False, fold_layerscale=False)(x), model(x))
        folded = (minidino.optimize(model, compile=False)(x) - model(x)).abs().max().item()
        bf16 = minidino.optimize(model, dtype=torch.bfloat16, compile=False)(x)
    assert folded < 1e-4 and bf16.dtype == torch.bfloat16


def test_cost_counts_the_storage_tokens_and_floors_the_grid():
    cost = model_cost(minidino.create_model("dinov3_vits16", device="meta"), 224, 224)
    assert cost.grid == (14, 14) and cost.tokens == 1 + 4 + 196
    assert round(cost.total_flops / 1e9, 2) == 9.40
    assert model_cost(minidino.create_model("dinov3_vits16", device="meta"), 203, 125).grid == (12, 7)


def test_command_line(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    rng = np.random.default_rng(0)
    images = []
    for i in range(2):
        images.append(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(images[-1])
    run = ["--model", "dinov3_vits16", "--weights", "random:1", "--config", "depth=1"]
    assert main(["info", "dinov3_vits16plus", "--size", "224"]) == 0
    assert "4 storage tokens" in capsys.readouterr().out
    assert main(["embed", *map(str, images), "--out", str(tmp_path / "e.safetensors"), "--size", "32", "-q", *run]) == 0
    assert main(["attention", str(images[0]), "--out", str(tmp_path / "a.png"), "--size", "64", *run]) == 0
    assert main(["pca", str(images[0]), "--out", str(tmp_path / "p.png"), "--size", "64", *run]) == 0
    assert "storage tokens skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="multiple of the patch size 16"):
        main(["embed", str(images[0]), "--out", str(tmp_path / "f.npy"), "--size", "28", *run])
