"""ONNX and torch.export: exported graphs agree with eager PyTorch at sizes other than the
traced one. Needs the `export` extra (onnx, onnxscript, onnxruntime); skipped without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import minidino
from minidino.cli import main

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

SMALL = dict(depth=1, embed_dim=48, num_heads=3, ffn_hidden_dim=96)
SIZES = [(224, 224), (196, 308), (518, 518), (28, 14), (602, 126)]  # traced at 224 x 224
TOL = 1e-4  # eager vs onnxruntime: different matmul/softmax kernels, measured ~5e-6


def small_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = minidino.create_model(name, **SMALL)
    with torch.no_grad():  # non-trivial position embedding and class token, so a wrong resize shows
        model.pos_embed.normal_()
        model.cls_token.normal_()
    return model


def images(seed: int, B: int, H: int, W: int) -> torch.Tensor:
    return torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(seed))


def run_onnx(path, x: torch.Tensor) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"x": x.numpy()})))


@pytest.fixture(scope="module", params=["dinov2_vits14", "dinov2_vits14_reg"])
def exported(request, tmp_path_factory):
    model = small_model(request.param)
    path = minidino.export_onnx(model, tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx")
    return model, path


def test_dynamic_onnx_matches_eager_at_every_size(exported):
    model, path = exported
    assert model.pos_embed_method == "interpolate" and not model.training  # the export restored them
    worst = 0.0
    for i, (H, W) in enumerate(SIZES):
        x = images(i, 1 + i % 2, H, W)
        with torch.no_grad():
            ref = model.forward_features(x)
        out = run_onnx(path, x)
        assert list(out) == list(minidino.export.default_outputs(model))
        for key, got in out.items():
            assert got.shape == tuple(ref[key].shape), (key, H, W)
            worst = max(worst, float(np.abs(got - ref[key].numpy()).max()))
    print(f"\n{path.name}: max abs diff onnxruntime vs eager over {SIZES}: {worst:.2e}")
    assert worst <= TOL


def test_static_onnx_bakes_one_size(tmp_path):
    model = small_model("dinov2_vits14_reg")
    path = minidino.export_onnx(model, tmp_path / "static.onnx", dynamic=False, size=(196, 308))
    x = images(20, 3, 196, 308)  # any batch
    with torch.no_grad():
        ref = model.forward_features(x)
    out = run_onnx(path, x)
    worst = max(float(np.abs(out[k] - ref[k].numpy()).max()) for k in out)
    assert worst <= TOL
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # the graph is for 196 x 308 only
        run_onnx(path, images(21, 1, 224, 224))


def test_export_program_dynamic_and_classifier():
    model = small_model("dinov2_vits14")
    program = minidino.export_program(model)
    for i, (H, W) in enumerate([(196, 308), (28, 14)]):
        x = images(30 + i, 2 - i, H, W)  # batch 2, then batch 1 at 28 x 14 (h = 2, w = 1)
        with torch.no_grad():
            ref = model.forward_features(x)
            cls, patches = program.module()(x)
        assert (cls - ref["x_norm_clstoken"]).abs().max().item() <= 1e-5
        assert (patches - ref["x_norm_patchtokens"]).abs().max().item() <= 1e-5
    clf = minidino.create_model("dinov2_vits14_lc", layers=1, **SMALL)
    program = minidino.export_program(clf, dynamic=False, size=(56, 42))
    x = images(32, 2, 56, 42)
    with torch.no_grad():
        (logits,) = program.module()(x)
        assert (logits - clf(x)).abs().max().item() <= 1e-5


def test_export_argument_errors(tmp_path):
    model = small_model("dinov2_vits14")
    with pytest.raises(ValueError, match="multiples of the patch size"):
        minidino.export_program(model, size=(224, 225))
    with pytest.raises(ValueError, match="unknown graph outputs"):
        minidino.export_program(model, outputs=["x_norm_regtokenz"])
    with pytest.raises(TypeError, match="backbone or \\*_lc classifier"):
        minidino.export_program(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match=".onnx"):
        minidino.export_onnx(model, tmp_path / "model.pt")


def test_cli_export_static(tmp_path, monkeypatch, capsys):
    weights = tmp_path / "w.safetensors"
    source = small_model("dinov2_vits14")
    minidino.save_weights(source, weights)
    real_create = minidino.create_model  # the command builds the small architecture, then loads the file
    monkeypatch.setattr(minidino.factory, "create_model", lambda name, **kw: real_create(name, **SMALL, **kw))
    out = tmp_path / "cli.onnx"
    assert main(["export", "dinov2_vits14", "--onnx", str(out), "--static", "28x42", "--weights", str(weights)]) == 0
    assert "28x42 only" in capsys.readouterr().out
    x = images(40, 1, 28, 42)
    with torch.no_grad():
        ref = source.forward_features(x)["x_norm_clstoken"].numpy()  # the loaded weights, not a random init
    assert np.abs(run_onnx(out, x)["x_norm_clstoken"] - ref).max() <= TOL
    with pytest.raises(SystemExit):
        main(["export", "dinov2_vits14", "--onnx", str(out), "--static", "224x225"])
    assert "multiples of the patch size 14" in capsys.readouterr().err


def test_cli_export_defaults_to_official_weights_and_labels_random_ones(tmp_path, monkeypatch, capsys):
    """No --weights means the published checkpoint (as in every other command), never a silent random init."""
    asked = []
    monkeypatch.setattr(minidino.factory, "load_pretrained",
                        lambda model, entry, weights, pretrained, **kw: asked.append((entry.name, pretrained)))
    from minidino.export import targets
    from minidino.export.report import ExportReport

    monkeypatch.setattr(targets, "export_model",
                        lambda model, path, **kw: ExportReport("onnx", str(path), "float32", {"x": []}, {}))
    assert main(["export", "dinov2_vits14", "--onnx", str(tmp_path / "a.onnx")]) == 0
    assert asked == [("dinov2_vits14", True)]
    assert "official weights" in capsys.readouterr().err
    assert main(["export", "dinov2_vits14", "--onnx", str(tmp_path / "b.onnx"), "--weights", "random:3"]) == 0
    assert asked == [("dinov2_vits14", True)]  # nothing downloaded
    assert "RANDOM WEIGHTS" in capsys.readouterr().err
