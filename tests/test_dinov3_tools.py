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


# ---------------------------------------------------------------------------------------------------- normalisation
# The satellite ViT-L (SAT-493M) expects its own mean and std: a file whose name says so (the official one,
# `...-eadcf0ff.pth`) is normalised with them by every command, and DINOv2 keeps ImageNet's. Tiny models (1 block,
# 64 wide) with generated weights; the file's hash check is switched off (its name is the official one, its
# content is not), which is not what these tests are about.
TINY_V3 = {"depth": 1, "embed_dim": 64, "num_heads": 2, "ffn_hidden_dim": 128}
SAT_NAME = "dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth"
COLOUR = (200, 60, 120)  # a flat image: every pixel of its normalised tensor is (COLOUR / 255 - mean) / std


def config_args(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items() for a in ("--config", f"{k}={v}")]


@pytest.fixture
def sat_file(tmp_path, monkeypatch):
    """Generated SAT-architecture (local_cls_norm) weights of a tiny dinov3_vitl16, under the official SAT name."""
    monkeypatch.setattr("minidino.weights.load.verify_file", lambda *a, **k: None)
    model = minidino.create_model("dinov3_vitl16", weights="SAT493M", device="meta", **TINY_V3)
    assert model.config.local_cls_norm
    path = tmp_path / SAT_NAME
    minidino.save_weights(generate_for(model, 3), path)
    return path


def test_preprocessing_follows_the_weights(capsys):
    from minidino.catalogue import IMAGENET, SATELLITE
    from minidino.cli.weight_sets import preprocessing_of

    assert preprocessing_of("dinov3_vitl16", f"/w/{SAT_NAME}") == SATELLITE
    assert preprocessing_of("dinov3_vitl16", f"https://example.org/{SAT_NAME}?Signature=x") == SATELLITE
    assert preprocessing_of("dinov3_vit7b16", "/w/dinov3_vit7b16_pretrain_sat493m-a6675841.pth") == SATELLITE
    assert preprocessing_of("dinov3_vitl16", "/w/mine.pth", {"weights": "SAT493M"}) == SATELLITE  # --config weights=
    assert preprocessing_of("dinov3_vitl16", "random:0", {"weights": "sat493m", "depth": 1}) == SATELLITE
    for name, weights in [("dinov3_vitl16", "random:0"), ("dinov3_vitl16", "/w/mine.pth"), ("dinov3_vits16", "official"),
                          ("dinov3_vitl16", "/w/dinov3_vitl16_pretrain_lvd1689m-8aa4cbdd.pth"),
                          ("dinov2_vits14", "official"), ("dinov2_vitb14_lc", "/w/x.pth"), ("dinov2_vits14_dd", "KITTI")]:
        assert preprocessing_of(name, weights) == IMAGENET, (name, weights)
    with pytest.raises(SystemExit, match="unknown weights"):
        preprocessing_of("dinov3_vits16", "random:0", {"weights": "SAT493M"})  # ViT-L and 7B only
    assert main(["info", "dinov3_vitl16"]) == 0 and main(["info", "dinov2_vits14"]) == 0  # each set's statistics
    out = capsys.readouterr().out
    assert "SAT493M: mean (0.430, 0.411, 0.296), std (0.213, 0.156, 0.143)" in out
    assert out.count("ImageNet mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)") == 2


def test_satellite_embeddings_are_those_of_the_python_pipeline(sat_file, tmp_path, capsys):
    from minidino.catalogue import IMAGENET, SATELLITE
    from minidino.cli.embed import read_embeddings
    from minidino.utils.transforms import classification_transform, load_image

    rng = np.random.default_rng(1)
    images = []
    for i in range(2):
        images.append(tmp_path / f"tile{i}.png")
        Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 50, 3), dtype=np.uint8)).save(images[-1])
    run = ["--model", "dinov3_vitl16", "--size", "32", "-q", "--device", "cpu", *config_args(TINY_V3)]
    assert main(["embed", *map(str, images), "--out", str(tmp_path / "sat.safetensors"), "--weights", str(sat_file), *run]) == 0
    assert "(SAT493M normalisation)" in capsys.readouterr().err
    got = read_embeddings(tmp_path / "sat.safetensors")[0]["cls"]  # (2, 64)

    model = minidino.create_model("dinov3_vitl16", pretrained=str(sat_file), check_hash=False, **TINY_V3)

    def python_pipeline(stats):
        x = torch.stack([classification_transform(load_image(p), resize=37, crop=32, mean=stats.mean, std=stats.std)
                         for p in images])
        with torch.inference_mode():
            return model.forward_features(x)["x_norm_clstoken"]

    assert torch.equal(got, python_pipeline(SATELLITE))
    assert (got - python_pipeline(IMAGENET)).abs().max() > 1e-2  # the statistics matter
    # the same file under another name is LVD-1689M (and its local_cls_norm does not fit); --config weights= names the set
    renamed = tmp_path / "my_satellite.pth"
    renamed.write_bytes(sat_file.read_bytes())
    with pytest.raises(SystemExit) as e:
        main(["embed", str(images[0]), "--out", str(tmp_path / "r.safetensors"), "--weights", str(renamed), *run])
    assert e.value.code == 3
    err = capsys.readouterr().err
    assert "my_satellite.pth is taken for LVD1689M" in err and "local_cls_norm" in err and "--config weights=SET" in err
    assert main(["embed", *map(str, images), "--out", str(tmp_path / "r.safetensors"), "--weights", str(renamed), *run,
                 "--config", "weights=SAT493M"]) == 0
    assert torch.equal(read_embeddings(tmp_path / "r.safetensors")[0]["cls"], got)


@pytest.mark.parametrize("family", ["dinov3_sat", "dinov2"])
def test_every_image_command_normalises_with_the_weights_statistics(family, sat_file, tmp_path, monkeypatch, capsys):
    """What reaches the patch embedding of the model, in embed, similar (a query embedded as its index was),
    pca, attention, demo, trace and accuracy, is the image normalised with the weights' mean and std; the
    pictures show the image through the same ones. Fails for any command that ignores the weights' statistics."""
    from minidino.catalogue import IMAGENET, SATELLITE
    from minidino.cli.demo_scenes import sample_images
    from minidino.conformance.dumps import load_dump
    from minidino.utils.transforms import dense_transform, normalize, to_tensor

    if family == "dinov2":  # DINOv2: ImageNet's statistics, as always
        name, stats, weights, size = "dinov2_vits14", IMAGENET, "random:2", 28
        overrides = {"depth": 1, "embed_dim": 48, "num_heads": 3, "ffn_hidden_dim": 96}
    else:
        name, stats, weights, size = "dinov3_vitl16", SATELLITE, str(sat_file), 32
        overrides = TINY_V3
    patch = 14 if family == "dinov2" else 16
    flat = tmp_path / "flat.png"
    Image.new("RGB", (50, 40), COLOUR).save(flat)
    want = normalize(to_tensor(Image.new("RGB", (1, 1), COLOUR)), stats.mean, stats.std)[:, 0, 0]  # (3,)
    seen: list[torch.Tensor] = []

    def record(module, inputs):
        if type(module).__name__ == "PatchEmbed" and module.proj.kernel_size == (patch, patch):
            seen.extend(inputs[0].detach().float().cpu())  # each (3, H, W)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        def flat_inputs(command: list[str]) -> None:
            seen.clear()
            assert main(command) == 0
            assert seen, command
            for x in seen:  # every pixel of the flat image (a border pixel may be 1/255 off after the resize)
                assert torch.allclose(x.flatten(1).median(dim=1).values, want, atol=1e-5), (command, x.flatten(1).median(1))

        def shown(picture) -> int:  # pixels of the picture within 2 levels of the flat image's colour
            a = np.asarray(Image.open(picture).convert("RGB")).astype(int)
            return int((np.abs(a - np.array(COLOUR)).max(axis=-1) <= 2).sum())

        run = ["--model", name, "--weights", weights, "--device", "cpu", *config_args(overrides)]
        index = tmp_path / "index.safetensors"
        flat_inputs(["embed", str(flat), "--out", str(index), "--size", str(size), "-q", *run])
        query = tmp_path / "query.png"
        query.write_bytes(flat.read_bytes())
        flat_inputs(["similar", str(query), str(index), "--device", "cpu"])  # model, weights and config from the index
        flat_inputs(["pca", str(flat), "--out", str(tmp_path / "p.png"), "--size", str(2 * size), *run])
        assert shown(tmp_path / "p.png") >= (2 * size) ** 2  # the image panel: the image's own colour
        flat_inputs(["attention", str(flat), "--out", str(tmp_path / "a.png"), "--size", str(2 * size), *run])
        assert shown(tmp_path / "a.png") >= (2 * size) ** 2
        named = ["--weights", weights, *config_args(overrides)]
        assert main(["trace", name, str(flat), "--out", str(tmp_path / "t.safetensors"), "--size", f"{size}x{size}", *named]) == 0
        x = torch.from_numpy(load_dump(tmp_path / "t.safetensors")["input"][0])  # the exact preprocessed batch
        assert torch.allclose(x.flatten(1).median(dim=1).values, want, atol=1e-5)

        batches = []

        def measure(model, x, **kwargs):  # accuracy: what it would export and run, then stop
            batches.append(x)
            raise ImportError("not measured in this test")
        monkeypatch.setattr("minidino.export.accuracy.measure_accuracy", measure)
        assert main(["accuracy", name, str(flat), "--to", "onnx", "--size", f"{size}x{size}", *named]) == 2
        assert torch.allclose(batches[0][0].flatten(1).median(dim=1).values, want, atol=1e-5)

        seen.clear()
        assert main(["demo", "--out", str(tmp_path / "demo"), "--size", str(size), *run]) == 0
        scenes = [dense_transform(img, size=size, patch_size=patch, mean=stats.mean, std=stats.std)
                  for img in sample_images(size).values()]
        mine = [x for x in seen if x.shape == scenes[0].shape]  # not the demo's own depther's (half size, ImageNet)
        assert len(mine) >= 4 and all(any(torch.equal(x, s) for s in scenes) for x in mine)  # the scenes, normalised so
    finally:
        handle.remove()
    capsys.readouterr()
