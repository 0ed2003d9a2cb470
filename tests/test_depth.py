"""The depthers offline: names, arguments, errors, weights files, downloads (127.0.0.1 only).

Parity with the official code: tests/test_depth_live.py (live) and tests/test_golden.py (stored).
"""

from __future__ import annotations

import hashlib
import io

import pytest
import torch
from safetensors.torch import load_file

import minidino
import minidino.conformance.reference
from minidino.conformance import golden
from minidino.weights import download as hub
from minidino.catalogue import lookup
from minidino.heads.depth import Depther, pad_to_patch_multiple
from minidino.weights import WeightsMismatchError

from conftest import GOLDEN_DIR, golden_index
from test_download import server  # noqa: F401  (the 127.0.0.1 server fixture)

DEPTHERS = [f"dinov2_vit{s}14_{h}" for h in ("ld", "dd") for s in "sblg"]


def test_the_8_depthers_are_listed_and_build_on_meta():
    assert [n for n in minidino.list_models() if n.endswith(("_ld", "_dd"))] == DEPTHERS
    for name in DEPTHERS:
        m = minidino.create_model(name, device="meta")
        assert isinstance(m, Depther) and m.depth_range == ((0.001, 80.0) if name.endswith("_ld") else (0.001, 10.0))
        assert {k.split(".")[0] for k in m.state_dict()} == {"backbone", "decode_head"}
        assert m.config.out_index == lookup(name).head["blocks"][4]
    ld1 = minidino.create_model("dinov2_vitl14_ld", layers=1, device="meta")
    assert ld1.config.out_index == (23,) and ld1.decode_head.conv_depth.weight.shape == (256, 2 * 1024, 1, 1)
    dd = minidino.create_model("dinov2_vitl14_dd", device="meta")
    assert dd.decode_head.config.post_process_channels == (128, 256, 512, 1024)


def test_weights_and_depth_range_set_the_range():
    assert minidino.create_model("dinov2_vitb14_dd", weights="KITTI", device="meta").depth_range == (0.001, 80.0)
    assert minidino.create_model("dinov2_vitb14_dd", weights="kitti", device="meta").config.weights == "KITTI"
    m = minidino.create_model("dinov2_vits14_dd", weights="KITTI", depth_range=(0.5, 20), device="meta")
    assert m.depth_range == (0.5, 20.0)
    # the hub's linear heads span 0.001..80 m whatever the weights (QUIRK kept); an explicit range is honoured
    assert minidino.create_model("dinov2_vits14_ld", weights="NYU", device="meta").depth_range == (0.001, 80.0)
    assert minidino.create_model("dinov2_vits14_ld", depth_range=(0.1, 5), device="meta").depth_range == (0.1, 5.0)


@pytest.mark.parametrize("kwargs,error,words", [
    ({"weights": "IMAGENET1K"}, ValueError, "unknown depth weights 'IMAGENET1K'"),
    ({"layers": 2}, ValueError, "layers must be 1 or 4"),
    ({"depth_range": (5.0, 1.0)}, ValueError, "0 <= min < max"),
    ({"depth_range": (1.0, 1.0)}, ValueError, "0 <= min < max"),
    ({"depth_range": 3.0}, ValueError, "depth_range must be (min, max)"),
    ({"depht": 3}, TypeError, "did you mean 'depth'"),
])
def test_bad_arguments_are_named(kwargs, error, words):
    with pytest.raises(error) as e:
        minidino.create_model("dinov2_vits14_ld", device="meta", **kwargs)
    assert words in str(e.value)


def test_dpt_takes_no_layers():
    with pytest.raises(TypeError, match="always takes 4 layers"):
        minidino.create_model("dinov2_vits14_dd", layers=1, device="meta")


@pytest.fixture(scope="module")
def small_dd():
    return golden.random_model("dinov2_vits14_dd", seed=3)


@pytest.mark.parametrize("x,error,words", [
    (torch.zeros(3, 30, 30), ValueError, "4 dimensions"),
    (torch.zeros(1, 4, 30, 30), ValueError, "4 channels"),
    (torch.zeros(1, 3, 30, 30, dtype=torch.uint8), TypeError, "dtype torch.uint8"),
    (torch.zeros(1, 3, 30, 30, dtype=torch.float64), TypeError, "float64"),
    ([torch.zeros(3, 30, 30)], TypeError, "torch.Tensor"),
])
def test_bad_images_are_named(small_dd, x, error, words):
    with pytest.raises(error) as e:
        small_dd(x)
    assert words in str(e.value)


def test_any_size_and_batch_gives_a_depth_map_of_that_size(small_dd):
    for shape in [(1, 3, 14, 14), (2, 3, 15, 29), (1, 3, 1, 1)]:
        with torch.no_grad():
            y = small_dd(torch.randn(shape))
        assert y.shape == (shape[0], 1, *shape[2:]) and torch.isfinite(y).all()
        lo, hi = small_dd.depth_range
        assert float(y.min()) >= lo and float(y.max()) <= hi


def test_centre_padding_puts_the_odd_pixel_at_the_bottom_right():
    x = torch.ones(1, 1, 15, 17)
    p = pad_to_patch_multiple(x, 14)  # to 28 x 28: 13 rows (6 top, 7 bottom), 11 columns (5 left, 6 right)
    assert p.shape == (1, 1, 28, 28)
    rows, cols = p[0, 0].sum(1).nonzero().flatten(), p[0, 0].sum(0).nonzero().flatten()
    assert (int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])) == (6, 20, 5, 21)
    assert pad_to_patch_multiple(torch.ones(1, 3, 28, 42), 14).shape == (1, 3, 28, 42)


def test_golden_depth_references_are_not_clamped():
    """The stored official outputs exercise the computation: strictly inside the range, with a spread."""
    cases = [c for c in golden_index()["cases"] if c["model"].endswith(("_ld", "_dd"))]
    assert len(cases) == 5
    for case in cases:
        lo, hi = case["depth_range"]
        for name, t in load_file(str(GOLDEN_DIR / case["file"])).items():
            print(f"{case['file']} {name}: {float(t.min()):.4f}..{float(t.max()):.4f} m")
            assert float(t.min()) > lo and float(t.max()) < hi and float(t.std()) > 1e-2


# ------------------------------------------------------------------ weights
def _head_file(model: Depther, tmp_path, wrapped: bool, seed: int = 5):
    head = {k: v for k, v in golden.generate_for(model, seed).items() if k.startswith("decode_head.")}
    path = tmp_path / "head.pth"
    torch.save({"state_dict": head, "meta": {"epoch": 1}} if wrapped else head, path)
    return path, head


@pytest.mark.parametrize("wrapped", [True, False])
def test_load_weights_accepts_an_official_head_file(small_dd, tmp_path, wrapped):
    path, head = _head_file(small_dd, tmp_path, wrapped)
    before = small_dd.backbone.norm.weight.clone()
    report = minidino.load_weights(small_dd, path)
    assert report.loaded == ["decode_head"] and "decode head" in report.layout
    assert all(torch.equal(small_dd.state_dict()[k], v) for k, v in head.items())
    assert torch.equal(small_dd.backbone.norm.weight, before)  # the backbone is untouched


def test_a_head_file_of_another_model_is_refused(small_dd, tmp_path):
    ld = minidino.create_model("dinov2_vits14_ld", device="meta")
    path, _ = _head_file(ld, tmp_path, wrapped=True)
    with pytest.raises(WeightsMismatchError, match="decode_head"):
        minidino.load_weights(small_dd, path)


def test_head_urls_follow_the_hubs_naming():
    from minidino.weights import weight_files

    assert weight_files("dinov2_vitb14_dd", "KITTI")["decode_head"].path == "dinov2_vitb14/dinov2_vitb14_kitti_dpt_head.pth"
    assert weight_files("dinov2_vits14_ld", "NYU", layers=4)["decode_head"].path == "dinov2_vits14/dinov2_vits14_nyu_linear4_head.pth"
    assert weight_files("dinov2_vitg14_ld", "NYU", layers=1)["decode_head"].path == "dinov2_vitg14/dinov2_vitg14_nyu_linear_head.pth"
    assert weight_files("dinov2_vitg14_ld", "NYU", layers=1)["decode_head"].sha256 is None  # none published: unverified
    assert weight_files("dinov2_vitg14_ld")["backbone"].sha256 == hub.pin("dinov2_vitg14/dinov2_vitg14_pretrain.pth").sha256


def test_pretrained_true_downloads_backbone_and_head(server, tmp_path, monkeypatch, capsys):  # noqa: F811
    model = minidino.create_model("dinov2_vits14_dd", weights="KITTI", device="meta")
    sd = golden.generate_for(model, 8)
    backbone = {k.removeprefix("backbone."): v for k, v in sd.items() if k.startswith("backbone.")}
    head = {k: v for k, v in sd.items() if k.startswith("decode_head.")}
    blobs = {}
    for key, obj in (("b", backbone), ("h", {"state_dict": head})):
        buf = io.BytesIO()
        torch.save(obj, buf)
        blobs[key] = buf.getvalue()
    bpath = "dinov2_vits14/dinov2_vits14_pretrain.pth"
    server.files["/" + bpath] = blobs["b"]
    server.files["/dinov2_vits14/dinov2_vits14_kitti_dpt_head.pth"] = blobs["h"]
    pins = hub.load_pins()
    pins["backbones"]["dinov2_vits14"] = {"path": bpath, "bytes": len(blobs["b"]), "sha256": hashlib.sha256(blobs["b"]).hexdigest()}
    monkeypatch.setattr(hub, "load_pins", lambda: pins)
    monkeypatch.setenv("MINIDINO_BASE_URL", server.url)
    m = minidino.create_model("dinov2_vits14_dd", weights="KITTI", pretrained=True, cache_dir=tmp_path)
    assert all(torch.equal(m.state_dict()[k], v) for k, v in sd.items())
    assert server.requests == ["/" + bpath, "/dinov2_vits14/dinov2_vits14_kitti_dpt_head.pth"]
    assert "no pinned SHA-256" in capsys.readouterr().err  # the head file is marked unverified
    url = server.url + "/dinov2_vits14/dinov2_vits14_kitti_dpt_head.pth"
    m2 = minidino.create_model("dinov2_vits14_dd", pretrained=url, cache_dir=tmp_path)  # a URL: the head alone
    assert all(torch.equal(m2.state_dict()[k], v) for k, v in head.items())


# ------------------------------------------------------------------ the command
def test_depth_command_writes_png_preview_npy_and_names_bad_images(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from minidino.cli import main

    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 45, 3), dtype=np.uint8)).save(src / "a.png")
    Image.fromarray(rng.integers(0, 255, (33, 20, 3), dtype=np.uint8)).save(src / "sub" / "a.jpg")  # same stem
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    rc = main(["depth", str(src), "--out", str(out), "--weights", "random:1", "--npy"])
    err = capsys.readouterr().err
    assert rc == 1 and "broken.jpg" in err and "RANDOM WEIGHTS" in err
    assert sorted(p.name for p in out.iterdir()) == [
        "a-2.depth.npy", "a-2.depth.png", "a-2.preview.png", "a.depth.npy", "a.depth.png", "a.preview.png"]
    png = Image.open(out / "a.depth.png")
    assert png.mode in ("I;16", "I") and png.size == (45, 30)  # 16-bit, the image's own size
    metres = np.asarray(png, dtype=np.float32) / 1000
    npy = np.load(out / "a.depth.npy")
    assert npy.dtype == np.float32 and npy.shape == (30, 45) and np.abs(metres - npy).max() <= 0.0005 + 1e-6
    assert npy.std() > 0 and 0.001 <= npy.min() and npy.max() <= 10.0
    assert np.load(out / "a-2.depth.npy").shape == (33, 20)
    assert Image.open(out / "a.preview.png").mode == "RGB"


def test_depth_command_refuses_a_backbone_name(tmp_path):
    from minidino.cli import main

    with pytest.raises(SystemExit, match="not a depther"):
        main(["depth", str(tmp_path), "--out", str(tmp_path / "o"), "--model", "dinov2_vits14", "--weights", "random"])


@pytest.mark.skipif(not minidino.conformance.reference.official_repo(), reason="no official hub code (../shared/official)")
def test_bench_depth_runs_and_writes_results(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_depth", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_depth.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--models", "dinov2_vits14_ld", "--size", "30x45", "--rounds", "1", "--no-memory",
                       "--out", str(tmp_path), "--tag", "t"]) == 0
    (row,) = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert row["max_abs"] == 0.0 and row["speedup"] > 0  # identical outputs; speed is reported, never tested
    assert "| dinov2_vits14_ld |" in (tmp_path / "t.md").read_text()
