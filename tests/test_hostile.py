"""Hostile input: what a file system, Pillow, a server, a second process or a user can hand minidino.

One test per case found (issue 13 and later findings); add a test here for every new one. Each
case states the promise it holds: a bad input is named on stderr in one line and skipped, the
rest is written, the exit status says what happened (minidino.cli.errors), nothing is left
behind that changes the next run, and no single input can end, hang or exhaust a run.

Every model run is a 1-block, 48-wide model with RANDOM weights (`--weights random:7`), tiny
images and --size 28, so the whole file runs in about a minute on two cores. The second pass
(issue 20: no command destroys a file it was not asked to write) starts at its own banner below.
"""

from __future__ import annotations

import errno
import gzip
import http.server
import json
import os
import re
import resource
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

import minidino
from minidino.cli import errors, main
from minidino.cli.embed import read_embeddings
from minidino.cli.inputs import display_name, expand_inputs, read_one
from minidino.conformance import golden
from minidino.heads.depth import Depther
from minidino.heads.dinotxt import DinoTxt
from minidino.models.backbone import VisionTransformerBase
from minidino.models.dinov2 import DinoVisionTransformer
from minidino.models.dinov3 import Dinov3VisionTransformer
from minidino.utils import memory
from minidino.weights import CheckpointError, load_weights
from minidino.weights import download as hub

REPO = Path(__file__).resolve().parents[1]
TINY = ["--config", "depth=1", "--config", "embed_dim=48", "--config", "num_heads=3", "--config", "ffn_hidden_dim=96"]
RUN = ["--weights", "random:7", *TINY, "--size", "28", "--batch-size", "2", "-q"]
# DINOv3 (RoPE, storage tokens, 16-pixel patches) gets the same guarantees: the tests below that take a
# `family` run its tiny model too, the same 1-block, 48-wide one, at 32 px.
V3 = ["--model", "dinov3_vits16"]
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
ORIGINAL_FORWARD_FEATURES = DinoVisionTransformer.forward_features


# ------------------------------------------------------------------ helpers
def png(path: Path, size=(30, 20), mode="RGB", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    W, H = size
    a = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(a).convert(mode).save(path)
    return path


def forged_png(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width x height (a decompression bomb's header, without its bytes)."""
    png(path, (1, 1))
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr + 13]))  # over type + the 13 data bytes
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def one_line_errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("minidino:") and "skipped" in line]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    real_connect = socket.socket.connect

    def local_only(self, address, *a, **k):  # the test servers below live on 127.0.0.1
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"network access attempted: {address}")
        return real_connect(self, address, *a, **k)
    monkeypatch.setattr(socket.socket, "connect", local_only)


@pytest.fixture
def good(tmp_path):
    root = tmp_path / "good"
    root.mkdir()
    return [str(png(root / f"g{i}.png", (20 + i, 30), seed=i)) for i in range(3)]


# ------------------------------------------------------------------ one input: the reader
def test_strip_100000x1_is_refused_before_any_resize(tmp_path):
    f = tmp_path / "strip.png"
    Image.new("RGB", (100000, 1)).save(f)  # 375 bytes; resized, it would ask for a 25600000 x 256 image
    x, reason = read_one(f, lambda img: img.resize((25_600_000, 256)))
    assert x is None and "aspect ratio" in reason, reason


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path):
    f = forged_png(tmp_path / "bomb.png", 30000, 30000)  # 900 Mpx claimed
    t0 = time.perf_counter()
    x, reason = read_one(f)
    assert x is None and "decompression bomb" in reason, reason
    assert time.perf_counter() - t0 < 5


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the CLI silences it once per process
def test_image_just_over_our_pixel_limit_is_refused(tmp_path):
    f = forged_png(tmp_path / "big.png", 10000, 9000)  # 90 Mpx > 89.5: Pillow only warns here; we refuse
    x, reason = read_one(f)
    assert x is None and ("Mpx" in reason or "decompression bomb" in reason), reason


def test_truncated_png_and_jpeg(tmp_path):
    for suffix in ("png", "jpg"):
        f = png(tmp_path / f"t.{suffix}", (64, 64))
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        x, reason = read_one(f)
        assert x is None and ("truncated" in reason or "corrupt" in reason), reason


def test_directory_with_an_image_name(tmp_path):
    (tmp_path / "dir.png").mkdir()
    assert read_one(tmp_path / "dir.png") == (None, "is a directory, not an image file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_fifo_does_not_hang_the_run(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result = []
    t = threading.Thread(target=lambda: result.append(read_one(fifo)), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "reading a FIFO blocked"
    assert result[0][0] is None and "FIFO" in result[0][1]


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_symlink_to_a_device(tmp_path):
    (tmp_path / "zero.png").symlink_to("/dev/zero")  # would read forever
    x, reason = read_one(tmp_path / "zero.png")
    assert x is None and "character device" in reason


def test_broken_symlink_and_missing_file(tmp_path):
    (tmp_path / "broken.png").symlink_to(tmp_path / "nowhere.png")
    assert read_one(tmp_path / "broken.png")[1].startswith("broken symbolic link")
    assert read_one(tmp_path / "absent.png")[1] == "no such file"


@pytest.mark.skipif(ROOT, reason="root reads files whatever their mode (covered for users by os.access)")
def test_unreadable_file(tmp_path):
    f = png(tmp_path / "secret.png")
    f.chmod(0)
    assert "permission denied" in read_one(f)[1]


def test_empty_file_and_non_image_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, not a JPEG")
    assert read_one(tmp_path / "empty.jpg")[1] == "empty file (0 bytes)"
    assert "not an image" in read_one(tmp_path / "text.jpg")[1]


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    img, reason = read_one(tmp_path / "anim.gif")
    assert reason is None and img.mode == "RGB" and img.getpixel((8, 8))[0] > 200  # red, the first frame


def test_cmyk_palette_and_16_bit_images_become_rgb(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # red in CMYK
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    Image.fromarray(np.full((16, 16), 32768, dtype=np.uint16)).save(tmp_path / "grey16.png")  # mid-grey, 16 bits
    cmyk, pal_img, grey = (read_one(tmp_path / n)[0] for n in ("cmyk.jpg", "pal.png", "grey16.png"))
    assert cmyk.mode == pal_img.mode == grey.mode == "RGB"
    assert cmyk.getpixel((8, 8))[0] > 200 and pal_img.getpixel((8, 8)) == (0, 255, 0)
    assert 120 <= grey.getpixel((8, 8))[0] <= 135  # rescaled, not clipped to white


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    img.save(tmp_path / "phone.jpg", exif=exif.tobytes())
    out, reason = read_one(tmp_path / "phone.jpg")
    assert reason is None and out.size == (20, 40)


def test_preprocessing_failure_is_this_inputs_not_the_runs(tmp_path):
    f = png(tmp_path / "ok.png")

    def explode(img):
        raise MemoryError

    assert read_one(f, explode) == (None, "out of memory while preprocessing it")


def test_odd_names_print_as_one_line(tmp_path):
    assert display_name("a\nb\x1b.png") == "a\\nb\\x1b.png"
    assert display_name(os.fsdecode(b"caf\xff.png")) == "caf\\udcff.png"


def test_txt_list_with_bytes_that_are_not_utf8(tmp_path):
    name = os.fsdecode(b"img\xff.png")
    png(tmp_path / name)
    (tmp_path / "list.txt").write_bytes(b"# a list\nimg\xff.png\n\n")
    paths, failures = expand_inputs([str(tmp_path / "list.txt")])
    assert failures == [] and paths == [str(tmp_path / name)]
    assert read_one(paths[0])[1] is None


@pytest.mark.skipif(ROOT, reason="root lists folders whatever their mode")
def test_unlistable_subfolder_is_a_failure_not_a_silent_gap(tmp_path):
    (tmp_path / "locked").mkdir()
    png(tmp_path / "locked" / "a.png")
    (tmp_path / "locked").chmod(0)
    try:
        _, failures = expand_inputs([str(tmp_path)])
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert failures and "cannot list" in failures[0][1]


# ------------------------------------------------------------------ one input: the commands
def hostile_folder(root: Path) -> dict[str, str]:
    """Good images and one of every bad kind, in one folder; returns {name: what the reason says}."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        png(root / f"good{i}.png", seed=i)
    png(root / os.fsdecode(b"good-odd-\xff.png"), seed=5)
    png(root / "good-new\nline.png", seed=6)
    Image.new("RGB", (100000, 1)).save(root / "strip.png")
    forged_png(root / "bomb.png", 30000, 30000)
    t = png(root / "trunc.png", (64, 64))
    t.write_bytes(t.read_bytes()[:100])
    (root / "sub").mkdir()
    (root / "sub" / "dir.png").mkdir()  # a folder with an image's name: given explicitly below
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("not an image")
    (root / "broken.png").symlink_to(root / "nowhere.png")
    (root / "list.txt").write_text("sub/dir.png\n")  # a folder named in a list is an input, not a folder to walk
    expected = {"dir.png": "directory", "strip.png": "aspect", "bomb.png": "decompression bomb", "trunc.png": "", "empty.jpg": "empty", "text.jpg": "not an image",
                "broken.png": "broken"}
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "pipe.png")
        expected["pipe.png"] = "FIFO"
    return expected


def test_embed_names_and_skips_every_bad_input_and_writes_the_rest(tmp_path, capsys):
    expected = hostile_folder(tmp_path / "corpus")
    out = tmp_path / "e.safetensors"
    rc = main(["embed", str(tmp_path / "corpus"), str(tmp_path / "corpus" / "list.txt"), "--out", str(out), *RUN])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_PARTIAL
    tensors, meta = read_embeddings(out)
    assert len(meta["names"]) == 5 and tensors["cls"].shape == (5, 48)  # the 5 good ones, odd names included
    assert bool(torch.isfinite(tensors["cls"]).all())
    skipped = {Path(p).name: r for p, r in meta["skipped"]}
    for name, word in expected.items():
        assert name in skipped and word in skipped[name], (name, skipped.get(name))
    lines = one_line_errors(err)
    assert len(lines) == len(expected)  # one stderr line per bad input, odd names included
    assert not (tmp_path / "e.safetensors.parts").exists()


def test_pca_skips_a_bad_image_and_draws_the_others(tmp_path, good, capsys):
    bad = tmp_path / "bad.png"
    Image.new("RGB", (100000, 1)).save(bad)
    out = tmp_path / "pca.png"
    rc = main(["pca", good[0], str(bad), good[1], "-o", str(out), *RUN[:-3], "--size", "28"])
    err = capsys.readouterr().err
    assert rc == 1 and out.is_file() and "bad.png" in err and "aspect" in err
    with Image.open(out) as picture:
        assert picture.size[0] > 0
    rc = main(["pca", str(bad), "-o", str(tmp_path / "none.png"), *RUN[:-3], "--size", "28"])
    assert rc == 1 and not (tmp_path / "none.png").exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_attention_on_a_fifo_returns_at_once(tmp_path, capsys):
    os.mkfifo(tmp_path / "p.png")
    rc = main(["attention", str(tmp_path / "p.png"), "-o", str(tmp_path / "a.png"), *RUN[:-3], "--size", "28"])
    assert rc == 1 and "FIFO" in capsys.readouterr().err and not (tmp_path / "a.png").exists()


def test_dense_commands_bound_the_preprocessed_size(tmp_path, capsys):
    f = png(tmp_path / "pano.png", (200, 20))  # 10:1 is allowed for dense commands ...
    t0 = time.perf_counter()
    rc = main(["pca", str(f), "-o", str(tmp_path / "p.png"), *RUN[:-3], "--size", "2044"])  # ... but not at 2044 px
    assert rc == 1 and "would be resized to 20440x2044" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 10  # refused before the resize, not after
    with pytest.raises(SystemExit, match="between 14"):
        main(["pca", str(f), "-o", str(tmp_path / "p.png"), *RUN[:-3], "--size", "4144"])


def test_similar_with_an_unreadable_query(tmp_path, good, capsys):
    index = tmp_path / "i.safetensors"
    assert main(["embed", *good, "--out", str(index), *RUN]) == 0
    (tmp_path / "q.png").write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        main(["similar", str(tmp_path / "q.png"), str(index)])
    assert e.value.code == errors.EXIT_USAGE and "empty file" in str(e.value)


# ------------------------------------------------------------------ arguments: checked before any work
@pytest.mark.parametrize("option", [["--size", "0"], ["--size", "-14"], ["--size", "30"], ["--batch-size", "0"],
                                    ["--checkpoint-every", "0"], ["--workers", "0"], ["--config", "depth=abc"],
                                    ["--config", "depth='2'"], ["--config", "num_heads=0"], ["--dtype", "int8"]])
def test_bad_arguments_fail_first_and_leave_nothing(tmp_path, good, option, capsys, monkeypatch):
    monkeypatch.setattr(DinoVisionTransformer, "forward_features", lambda *a, **k: pytest.fail("work started"))
    out = tmp_path / "e.safetensors"
    with pytest.raises(SystemExit) as e:
        main(["embed", *good, "--out", str(out), *RUN, *option])
    assert e.value.code == errors.EXIT_USAGE
    assert sorted(os.listdir(tmp_path)) == ["good"]  # no parts folder, no lock, no output
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not supported" not in err


def test_config_type_errors_name_the_field():
    with pytest.raises(TypeError, match="depth must be an int"):
        minidino.create_model("dinov2_vits14", depth="2", device="meta")
    with pytest.raises(ValueError, match="num_heads must be >= 1"):
        minidino.create_model("dinov2_vits14", num_heads=0, device="meta")


def test_out_is_a_folder_fails_before_the_work(tmp_path, good, monkeypatch):
    monkeypatch.setattr(DinoVisionTransformer, "forward_features", lambda *a, **k: pytest.fail("work started"))
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(SystemExit, match="is a folder") as e:
        main(["embed", *good, "--out", str(tmp_path / "d.safetensors"), *RUN])
    assert e.value.code == errors.EXIT_USAGE


def test_unwritable_output_folder_fails_before_the_work(tmp_path, good, monkeypatch):
    """A read-only folder (simulated: the probe file cannot be created, as on a read-only mount)."""
    import minidino.cli.outputs as outputs

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(outputs.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(DinoVisionTransformer, "forward_features", lambda *a, **k: pytest.fail("work started"))
    for argv in (["embed", *good, "--out", str(tmp_path / "e.npz"), *RUN],
                 ["export", "dinov2_vits14", "--onnx", str(tmp_path / "m.onnx"), "--weights", "random:0"],
                 ["pca", good[0], "-o", str(tmp_path / "p.png"), "--weights", "random:0"]):
        with pytest.raises(SystemExit, match="cannot write") as e:
            main(argv)
        assert e.value.code == errors.EXIT_IO


def test_export_to_a_folder_fails_before_building(tmp_path):
    (tmp_path / "m.onnx").mkdir()
    t0 = time.perf_counter()
    with pytest.raises(SystemExit, match="is a folder"):  # official weights would need a download: never reached
        main(["export", "dinov2_vitg14", "--onnx", str(tmp_path / "m.onnx")])
    assert time.perf_counter() - t0 < 5


def test_missing_weights_file_cuda_without_cuda(tmp_path, good, capsys):
    with pytest.raises(SystemExit, match="no such file") as e:
        main(["embed", *good, "--out", str(tmp_path / "e.npz"), "--weights", str(tmp_path / "nope.pth"), *TINY])
    assert e.value.code == errors.EXIT_USAGE
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="CUDA is not available") as e:
            main(["embed", *good, "--out", str(tmp_path / "e.npz"), "--device", "cuda", *RUN])
        assert e.value.code == errors.EXIT_RESOURCES
    assert "Traceback" not in capsys.readouterr().err


# ------------------------------------------------------------------ errors: one line, a status, --debug
def test_corrupt_weights_one_line_and_traceback_only_with_debug(tmp_path, good, capsys, monkeypatch):
    bad = tmp_path / "w.pth"
    bad.write_bytes(b"PK\x03\x04 this is no zip")
    argv = ["embed", *good, "--out", str(tmp_path / "e.npz"), "--weights", str(bad), *TINY]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == errors.EXIT_WEIGHTS and len(err.strip().splitlines()) == 1 and str(bad) in err
    with pytest.raises(CheckpointError):
        main(["--debug", *argv])
    monkeypatch.setenv("MINIDINO_DEBUG", "1")
    with pytest.raises(CheckpointError):
        main(argv)


def test_offline_official_weights_one_line(tmp_path, good, monkeypatch, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: connections are refused
    monkeypatch.setenv("MINIDINO_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MINIDINO_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(hub.time, "sleep", lambda s: None)
    with pytest.raises(SystemExit) as e:
        main(["embed", *good, "--out", str(tmp_path / "e.npz"), "--weights", "official", *TINY])
    assert e.value.code == errors.EXIT_DOWNLOAD
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()[-1:]) == 1 and "could not download" in err and "Traceback" not in err


def test_convert_failures_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["convert", str(tmp_path / "none.pth"), str(tmp_path / "o.safetensors")])
    assert e.value.code == errors.EXIT_USAGE
    (tmp_path / "html.pth").write_text("<html>login</html>")
    with pytest.raises(SystemExit) as e:
        main(["convert", str(tmp_path / "html.pth"), str(tmp_path / "o.safetensors")])
    assert e.value.code == errors.EXIT_WEIGHTS and "HTML" in str(e.value)
    assert "Traceback" not in capsys.readouterr().err and not (tmp_path / "o.safetensors").exists()


def test_merge_of_a_truncated_shard(tmp_path, good):
    for i in range(2):
        main(["embed", *good, "--out", str(tmp_path / "e.safetensors"), "--shard", f"{i}/2", *RUN])
    s1 = tmp_path / "e.shard-1-of-2.safetensors"
    s1.write_bytes(s1.read_bytes()[:-50])
    with pytest.raises(SystemExit, match="truncated or corrupt") as e:
        main(["merge", str(tmp_path / "e.shard-0-of-2.safetensors"), str(s1), "--out", str(tmp_path / "m.safetensors")])
    assert e.value.code == errors.EXIT_USAGE and not (tmp_path / "m.safetensors").exists()


def test_exit_statuses_are_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for status in errors.EXIT_STATUSES:
        assert f"{status:3d}  " in out
    doc = (REPO / "docs" / "cli-errors.md").read_text()
    for status in errors.EXIT_STATUSES:
        assert f"| {status} |" in doc


# ------------------------------------------------------------------ Ctrl-C and --resume
def test_ctrl_c_says_how_to_resume_and_resume_completes(tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(6):
        png(corpus / f"{i}.png", seed=i)
    out = tmp_path / "e.safetensors"
    argv = ["embed", str(corpus), "--out", str(out), "--checkpoint-every", "2", *RUN]
    ref = tmp_path / "ref.safetensors"
    assert main(["embed", str(corpus), "--out", str(ref), *RUN]) == 0
    calls = []

    def interrupted(self, x, *a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return ORIGINAL_FORWARD_FEATURES(self, x, *a, **k)
    monkeypatch.setattr(DinoVisionTransformer, "forward_features", interrupted)
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == errors.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "--resume" in err and "2 of 3 checkpoints" in err and "Traceback" not in err
    monkeypatch.setattr(DinoVisionTransformer, "forward_features", ORIGINAL_FORWARD_FEATURES)
    assert main(argv + ["--resume"]) == 0
    assert torch.equal(read_embeddings(out)[0]["cls"], read_embeddings(ref)[0]["cls"])


def test_ctrl_c_before_the_first_checkpoint_leaves_nothing(tmp_path, good, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(DinoVisionTransformer, "forward_features", interrupted)
    with pytest.raises(SystemExit) as e:
        main(["embed", *good, "--out", str(tmp_path / "e.safetensors"), *RUN])
    assert e.value.code == errors.EXIT_INTERRUPTED
    assert sorted(os.listdir(tmp_path)) == ["good"]  # the next run needs no --resume


def test_a_corrupt_checkpoint_is_recomputed_on_resume(tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(6):
        png(corpus / f"{i}.png", seed=i)
    out = tmp_path / "e.safetensors"
    argv = ["embed", str(corpus), "--out", str(out), "--checkpoint-every", "2", *RUN]
    calls = []

    def crash(self, x, *a, **k):
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        calls.append(1)
        return ORIGINAL_FORWARD_FEATURES(self, x, *a, **k)
    monkeypatch.setattr(DinoVisionTransformer, "forward_features", crash)
    with pytest.raises(SystemExit):
        main(argv)
    part = tmp_path / "e.safetensors.parts" / "part-000000000.safetensors"
    part.write_bytes(part.read_bytes()[:40])
    monkeypatch.setattr(DinoVisionTransformer, "forward_features", ORIGINAL_FORWARD_FEATURES)
    assert main(argv + ["--resume"]) == 0
    assert "corrupt or incomplete" in capsys.readouterr().err
    assert main(["embed", str(corpus), "--out", str(tmp_path / "ref.safetensors"), *RUN]) == 0
    assert torch.equal(read_embeddings(out)[0]["cls"], read_embeddings(tmp_path / "ref.safetensors")[0]["cls"])


# ------------------------------------------------------------------ two real processes, one output
def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_second_run_refuses_while_the_first_holds_the_output_and_a_killed_holder_leaves_no_stuck_lock(tmp_path, good):
    out = tmp_path / "e.safetensors"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom minidino.utils.lock import output_lock\n"
         "with output_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n", str(out)],
        stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run([sys.executable, "-m", "minidino", "embed", *good, "--out", str(out), *RUN],
                                capture_output=True, text=True, env=_env(), timeout=120)
        assert second.returncode == errors.EXIT_BUSY, second.stderr
        assert f"process {holder.pid}" in second.stderr and len(second.stderr.strip().splitlines()) == 1
        assert not out.exists() and not (tmp_path / "e.safetensors.parts").exists()
    finally:
        holder.kill()  # SIGKILL: no clean-up code runs in the holder
        holder.wait()
        holder.stdout.close()
    third = subprocess.run([sys.executable, "-m", "minidino", "embed", *good, "--out", str(out), *RUN],
                           capture_output=True, text=True, env=_env(), timeout=120)
    assert third.returncode == 0, third.stderr
    assert len(read_embeddings(out)[1]["names"]) == 3


def test_two_embeds_started_together_never_mix(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    for i in range(24):
        png(corpus / f"{i:02d}.png", seed=i)
    refs = {}
    for size in (28, 42):
        ref = tmp_path / f"ref{size}.safetensors"
        assert main(["embed", str(corpus), "--out", str(ref), *RUN, "--size", str(size)]) == 0
        refs[size] = read_embeddings(ref)[0]["cls"]
    out = tmp_path / "mix.safetensors"
    procs = [subprocess.Popen([sys.executable, "-m", "minidino", "embed", str(corpus), "--out", str(out), *RUN,
                               "--size", str(size), "--checkpoint-every", "4"],
                              stderr=subprocess.PIPE, text=True, env=_env()) for size in (28, 42)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) in ([0, 0], [0, errors.EXIT_BUSY]), (codes, errs)
    tensors, meta = read_embeddings(out)
    assert torch.equal(tensors["cls"], refs[meta["size"]])  # all rows from the run the metadata names


# ------------------------------------------------------------------ downloads
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = self.server.routes[self.path]  # type: ignore[attr-defined]
        self.send_response(200)
        if self.path.startswith("/html"):
            self.send_header("Content-Type", "text/html")
        if not self.path.startswith("/cut"):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    from safetensors.torch import save

    good = save({"w": torch.ones(64, 64)})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.routes = {"/html/w.pth": b"<!DOCTYPE html><html><body>Sign in</body></html>",  # type: ignore[attr-defined]
                  "/cut/w.safetensors": good[: len(good) // 2], "/ok/w.safetensors": good}
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def cache_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_stalled_server_fails_in_seconds_and_caches_nothing(tmp_path, monkeypatch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts (the kernel completes the handshake) and never answers
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/w.pth"
    try:
        t0 = time.perf_counter()
        with pytest.raises(hub.DownloadTimeout, match="MINIDINO_READ_TIMEOUT"):
            hub.download(url, tmp_path / "w.pth", read_timeout=1, progress=False)
        assert time.perf_counter() - t0 < 5  # one attempt: a timeout is not retried
        monkeypatch.setenv("MINIDINO_READ_TIMEOUT", "1")
        t0 = time.perf_counter()
        with pytest.raises(hub.DownloadTimeout):
            hub.fetch_url(url, cache_dir=tmp_path, progress=False)
        assert time.perf_counter() - t0 < 5
    finally:
        listener.close()
    assert cache_files(tmp_path) == []


def test_timeouts_are_settable_and_checked(monkeypatch):
    assert hub.timeouts() == (10.0, 30.0)
    monkeypatch.setenv("MINIDINO_CONNECT_TIMEOUT", "2.5")
    assert hub.timeouts(read=4) == (2.5, 4.0)
    monkeypatch.setenv("MINIDINO_READ_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="MINIDINO_READ_TIMEOUT"):
        hub.timeouts()


def test_html_page_with_status_200_is_not_cached(server, tmp_path):
    with pytest.raises(hub.BadDownload, match="HTML"):
        hub.fetch_url(server + "/html/w.pth", cache_dir=tmp_path, progress=False)
    assert cache_files(tmp_path) == []


def test_body_cut_short_without_content_length_is_not_cached(server, tmp_path):
    with pytest.raises(hub.BadDownload, match="truncated or corrupt"):
        hub.fetch_url(server + "/cut/w.safetensors", cache_dir=tmp_path, progress=False)
    assert cache_files(tmp_path) == []


def test_cached_unpinned_file_is_checked_against_its_sidecar(server, tmp_path):
    path = hub.fetch_url(server + "/ok/w.safetensors", cache_dir=tmp_path, progress=False)
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # the usual permissions, not 0600
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # same size, one bit flipped
    path.write_bytes(bytes(data))
    with pytest.raises(hub.ChecksumError, match=f"delete {path}"):
        hub.fetch_url(server + "/ok/w.safetensors", cache_dir=tmp_path, progress=False)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_outputs_have_the_usual_permissions(tmp_path, good):
    out = tmp_path / "e.safetensors"
    assert main(["embed", *good, "--out", str(out), *RUN]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~_umask()


# ------------------------------------------------------------------ weights and the model
def _tiny_sd() -> dict:
    m = minidino.create_model("dinov2_vits14", depth=1, embed_dim=48, num_heads=3, ffn_hidden_dim=96)
    return {k: v.clone() for k, v in m.state_dict().items()}, m


def test_integer_tensors_in_a_checkpoint_are_refused():
    sd, m = _tiny_sd()
    sd["blocks.0.norm1.weight"] = sd["blocks.0.norm1.weight"].long()
    with pytest.raises(CheckpointError, match=r"non-floating.*blocks\.0\.norm1\.weight \(torch\.int64\)"):
        load_weights(m, sd)


def test_nan_and_inf_weights_are_refused_naming_the_keys():
    sd, m = _tiny_sd()
    sd["blocks.0.attn.qkv.weight"][0, 0] = float("nan")
    sd["norm.bias"][0] = float("inf")
    with pytest.raises(CheckpointError, match=r"NaN or infinite values in blocks\.0\.attn\.qkv\.weight, norm\.bias"):
        load_weights(m, sd)


def test_get_intermediate_layers_never_returns_fewer_outputs_than_asked():
    m = minidino.create_model("dinov2_vits14", depth=3, embed_dim=48, num_heads=3, ffn_hidden_dim=96)
    x = torch.randn(1, 3, 28, 28)
    assert len(m.get_intermediate_layers(x, n=[0, 2])) == 2
    with pytest.raises(ValueError, match="given twice"):
        m.get_intermediate_layers(x, n=[1, 1])
    with pytest.raises(TypeError):
        m.get_intermediate_layers(x, n=True)


def test_info_measure_refuses_what_cannot_fit(monkeypatch, capsys):
    from minidino.cli import info

    monkeypatch.setattr(memory, "available_memory", lambda device: 2**20)  # a machine with 1 MiB free
    monkeypatch.setattr(info, "measure", lambda *a, **k: pytest.fail("the forward ran"))
    with pytest.raises(SystemExit) as e:
        main(["info", "dinov2_vits14", "--measure"])
    assert e.value.code == errors.EXIT_RESOURCES
    err = capsys.readouterr().err
    assert "GiB available" in err and "--force" in err
    ran = []
    monkeypatch.setattr(info, "measure", lambda *a, **k: ran.append(1))
    assert main(["info", "dinov2_vits14", "--measure", "--force"]) == 0 and ran == [1]


# ------------------------------------------------------------------ slow modes say so
def test_bf16_on_a_cpu_without_bf16_instructions_warns(monkeypatch):
    from minidino.utils import hardware

    m = minidino.create_model("dinov2_vits14", depth=1, embed_dim=48, num_heads=3, ffn_hidden_dim=96)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    with pytest.warns(RuntimeWarning, match="SLOWER than float32"):
        minidino.optimize(m, dtype=torch.bfloat16, compile=False)
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minidino.optimize(m, dtype=torch.bfloat16, compile=False)
        minidino.optimize(m, compile=False)  # float32: nothing to say


# ------------------------------------------------------------------ later findings
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_library_load_image_refuses_a_fifo_instead_of_blocking(tmp_path):
    from minidino.utils.transforms import UnreadableImageError, load_image

    os.mkfifo(tmp_path / "p.png")
    with pytest.raises(UnreadableImageError, match="not a regular file"):
        load_image(tmp_path / "p.png")


def test_demo_checks_its_size_and_folder_first(tmp_path):
    with pytest.raises(SystemExit, match="between 14 and 2044") as e:
        main(["demo", "--out", str(tmp_path / "d"), "--size", "0", *TINY])
    assert e.value.code == errors.EXIT_USAGE and not (tmp_path / "d").exists()
    (tmp_path / "f").write_text("a file")
    with pytest.raises(SystemExit, match="not a folder"):
        main(["demo", "--out", str(tmp_path / "f"), *TINY])


def test_embed_of_a_folder_without_images_is_an_error_not_an_empty_file(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(SystemExit, match="no image files") as e:
        main(["embed", str(tmp_path / "empty"), "--out", str(tmp_path / "e.safetensors"), *RUN])
    assert e.value.code == errors.EXIT_USAGE
    assert sorted(os.listdir(tmp_path)) == ["empty"]


def test_symlink_loop_and_overlong_name(tmp_path):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    assert "cannot access it" in read_one(tmp_path / "loop.png")[1]
    assert read_one(tmp_path / ("x" * 300 + ".png"))[1].startswith("cannot access it")


def test_many_threads_reading_at_once_all_succeed(tmp_path):
    """The reader runs in embed's worker threads: nothing in it may race (warnings filters, Pillow state)."""
    from minidino.cli.inputs import read_images

    paths = [str(png(tmp_path / f"{i}.png", (16 + i % 5, 16), seed=i)) for i in range(40)]
    items, failures = read_images(paths, lambda img: img.size, workers=8)
    assert failures == [] and [p for p, _ in items] == paths


def test_embed_bounds_the_resize_of_a_long_image_at_a_large_size(tmp_path):
    from minidino.cli.embed import embed_transform

    f = png(tmp_path / "pano.png", (400, 10))  # 40:1 passes the reader; at --size 2800 the resize would be 128000x3200
    x, reason = read_one(f, embed_transform(2800))
    assert x is None and "would be resized to 128000x3200" in reason
    assert read_one(f, embed_transform(28))[0].shape == (3, 28, 28)


def test_a_bad_file_already_in_the_cache_names_the_file_to_delete(server, tmp_path):
    """A page cached by an older minidino (before downloads were checked) with a matching sidecar."""
    url = server + "/html/w.pth"
    key = __import__("hashlib").sha256(url.encode()).hexdigest()[:16]
    cached = tmp_path / "urls" / key / "w.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"<!DOCTYPE html><html>old</html>")
    hub._write_sidecar(cached, hub.sha256_file(cached))
    m = minidino.create_model("dinov2_vits14", depth=1, embed_dim=48, num_heads=3, ffn_hidden_dim=96)
    with pytest.raises(CheckpointError, match=f"{cached} is an HTML"):
        load_weights(m, url, cache_dir=tmp_path, progress=False)


def test_unreadable_file_and_unlistable_folder_as_a_user_sees_them(tmp_path, monkeypatch):
    """The two permission cases above, simulated so that they also run as root (CI containers)."""
    f = png(tmp_path / "secret.png")
    real_access, real_scandir = os.access, os.scandir
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == str(f) else real_access(p, mode, **k))
    assert read_one(f) == (None, "permission denied (not readable)")
    (tmp_path / "locked").mkdir()

    def scandir(p="."):
        if str(p) == str(tmp_path / "locked"):
            raise PermissionError(13, "Permission denied", str(p))
        return real_scandir(p)
    monkeypatch.setattr(os, "scandir", scandir)
    paths, failures = expand_inputs([str(tmp_path)])
    assert str(f) in paths and failures == [(str(tmp_path / "locked"), "cannot list this folder (Permission denied)")]


def family_run(family: str) -> list[str]:
    """RUN for the tiny model of a family (DINOv3's images at 32 px: two 16-pixel patches a side)."""
    return RUN if family == "dinov2" else [*V3, *RUN[:-5], "--size", "32", *RUN[-3:]]


@pytest.mark.parametrize("family", ["dinov2", "dinov3"])
def test_a_model_or_batch_too_large_for_the_machine_is_refused_before_it_is_built(tmp_path, good, family, monkeypatch):
    """DINOv3's estimate is its own config's (RoPE, storage tokens, its MLP), made the same way, before the build."""
    monkeypatch.setattr(VisionTransformerBase, "forward_features", lambda *a, **k: pytest.fail("work started"))
    run = family_run(family)
    t0 = time.perf_counter()
    with pytest.raises(SystemExit, match="GiB available") as e:  # ~6.8 TB of weights: the kernel would kill the build
        main(["embed", *good, "--out", str(tmp_path / "e.npz"), *run, "--config", "depth=1000000000"])
    assert e.value.code == errors.EXIT_RESOURCES and time.perf_counter() - t0 < 10
    monkeypatch.setattr(memory, "available_memory", lambda device: 50 * 2**20)  # a machine with 50 MiB free
    with pytest.raises(SystemExit, match="with --batch-size 100000") as e:
        main(["embed", *good, "--out", str(tmp_path / "e.npz"), *run, "--batch-size", "100000"])
    assert e.value.code == errors.EXIT_RESOURCES
    assert sorted(os.listdir(tmp_path)) == ["good"]


# ------------------------------------------------------------------ depth, zeroshot, segment: the same rules
# A 12-block, 48-wide linear depther and a 1-block, 64-wide dino.txt, with RANDOM weights: the plumbing, fast.
DEPTH = ["--model", "dinov2_vits14_ld", "--weights", "random:7", "--size", "14", "--quiet"] + [
    a for kv in ("embed_dim=48", "num_heads=3", "ffn_hidden_dim=96", "layers=1") for a in ("--config", kv)]
TXT = ["--weights", "random:0", "--device", "cpu"] + [
    a for kv in ("vision_embed_dim=64", "vision_num_heads=2", "vision_ffn_hidden_dim=256", "depth=1", "embed_dim=128",
                 "head_ffn_hidden_dim=176", "text_width=64", "text_num_heads=2", "text_layers=1") for a in ("--config", kv)]


def bad_input(root: Path, kind: str) -> tuple[Path, str]:
    """One hostile input of `kind` under `root`, and a word its reason must contain."""
    if kind == "truncated":
        f = png(root / "trunc.png", (64, 64))
        f.write_bytes(f.read_bytes()[:100])
        return f, "truncated"
    if kind == "strip":
        Image.new("RGB", (100000, 1)).save(root / "strip.png")  # 375 bytes; resized, 25600000 x 256 pixels
        return root / "strip.png", "aspect"
    (root / "dir.png").mkdir()
    return root / "dir.png", "directory"


def no_work(monkeypatch):
    """Fail the test if a depther or dino.txt is built: the failure must come before any work."""
    import minidino.cli.depth as depth
    import minidino.cli.text as text

    monkeypatch.setattr(depth, "build_depther", lambda *a, **k: pytest.fail("work started"))
    monkeypatch.setattr(text, "dinotxt_from_args", lambda *a, **k: pytest.fail("work started"))


@pytest.mark.parametrize("kind", ["truncated", "strip", "directory"])
def test_depth_names_and_skips_a_bad_input_and_writes_the_rest(tmp_path, good, kind, capsys):
    bad, word = bad_input(tmp_path, kind)
    listing = tmp_path / "list.txt"  # a folder named in a list is an input (a folder given alone would be walked)
    listing.write_text(f"{bad}\n{good[0]}\n")
    out = tmp_path / "d"
    t0 = time.perf_counter()
    rc = main(["depth", str(listing), "--out", str(out), *DEPTH])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_PARTIAL and time.perf_counter() - t0 < 30
    (line,) = one_line_errors(err)
    assert bad.name in line and word in line, line
    assert sorted(p.name for p in out.iterdir()) == ["g0.depth.png", "g0.preview.png"]  # no lock file left


def test_depth_refuses_an_image_too_large_for_the_model_before_running_it(tmp_path, capsys, monkeypatch):
    Image.new("RGB", (2100, 2100)).save(tmp_path / "big.png")  # 4.4 Mpx at its own size (no --size): over 2048x2048
    argv = [a for a in DEPTH if a not in ("--size", "14")]
    rc = main(["depth", str(tmp_path / "big.png"), "--out", str(tmp_path / "d"), *argv])
    assert rc == errors.EXIT_PARTIAL and "give --size" in capsys.readouterr().err
    assert os.listdir(tmp_path / "d") == []


@pytest.mark.parametrize("option", [["--size", "0"], ["--size", "5000"], ["--config", "depth=abc"], ["--config", "depth=2"],
                                    ["--weights", "random:x"], ["--weights", "nope.pth"], ["--dtype", "int8"],
                                    ["--model", "dinov2_vits14"], ["NO_IMAGES"]])
def test_depth_bad_arguments_fail_first_and_leave_nothing(tmp_path, good, option, capsys, monkeypatch):
    no_work(monkeypatch)
    inputs = good
    if option == ["NO_IMAGES"]:
        (tmp_path / "empty").mkdir()
        inputs, option = [str(tmp_path / "empty")], []
    with pytest.raises(SystemExit) as e:
        main(["depth", *inputs, "--out", str(tmp_path / "d"), *DEPTH, *option])
    assert e.value.code == errors.EXIT_USAGE
    assert not (tmp_path / "d").exists()  # nothing created
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_depth_out_a_file_unwritable_or_occupied_fails_before_the_work(tmp_path, good, monkeypatch):
    import minidino.cli.outputs as outputs
    from minidino.utils.lock import output_lock

    no_work(monkeypatch)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit, match="not a folder") as e:
        main(["depth", *good, "--out", str(tmp_path / "file"), *DEPTH])
    assert e.value.code == errors.EXIT_USAGE
    (tmp_path / "d" / "g0.depth.png").mkdir(parents=True)  # an output name taken by a folder: found before the work
    with pytest.raises(SystemExit, match="is not a file") as e:
        main(["depth", *good, "--out", str(tmp_path / "d"), *DEPTH])
    assert e.value.code == errors.EXIT_USAGE
    with output_lock(tmp_path / "busy" / "depth"):  # another run writes --out busy/
        with pytest.raises(SystemExit, match="is being written by") as e:
            main(["depth", *good, "--out", str(tmp_path / "busy"), *DEPTH])
    assert e.value.code == errors.EXIT_BUSY

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(outputs.tempfile, "mkstemp", refuse)  # a read-only folder (simulated: also as root)
    with pytest.raises(SystemExit, match="cannot write") as e:
        main(["depth", *good, "--out", str(tmp_path / "busy"), *DEPTH])
    assert e.value.code == errors.EXIT_IO


@pytest.mark.parametrize("kind", ["truncated", "strip", "directory"])
def test_zeroshot_names_and_skips_a_bad_input_and_classifies_the_rest(tmp_path, good, kind, capsys):
    from test_dinotxt import VOCAB, needs_text_extra, needs_vocab

    for mark in (needs_vocab, needs_text_extra):  # the labels are tokenised: CLIP's vocabulary and ftfy are needed
        if mark.args[0]:
            pytest.skip(mark.kwargs["reason"])
    bad, word = bad_input(tmp_path, kind)
    rc = main(["zeroshot", str(bad), good[0], "--labels", "a cat,a dog", "--size", "28", "--vocab", str(VOCAB), *TXT])
    out, err = capsys.readouterr()
    assert rc == errors.EXIT_PARTIAL
    (line,) = one_line_errors(err)
    assert bad.name in line and word in line, line
    assert out.splitlines()[0].startswith("# dinotxt, RANDOM WEIGHTS")  # random weights: said first
    assert out.splitlines()[1] == good[0] and out.count("%") == 2 and bad.name not in out


@pytest.mark.parametrize("option", [["--labels", " , ,"], ["--labels", "a,b,a"], ["--top", "0"], ["--size", "0"],
                                    ["--size", "30"], ["--template", "no slot"], ["--vocab", "nope.txt.gz"],
                                    ["--config", "depth=abc"], ["--config", "nope=1"], ["--model", "dinov2_vits14"],
                                    ["--dtype", "int8"]])
def test_zeroshot_bad_arguments_fail_first(tmp_path, good, option, capsys, monkeypatch):
    no_work(monkeypatch)
    labels = [] if option[0] == "--labels" else ["--labels", "a,b"]
    with pytest.raises(SystemExit) as e:
        main(["zeroshot", *good, *labels, *TXT, *option])
    assert e.value.code == errors.EXIT_USAGE
    err = capsys.readouterr().err  # one line (after argparse's usage, for a choice it refuses itself)
    assert err.strip().splitlines()[-1].startswith("minidino") and "Traceback" not in err, err


@pytest.mark.parametrize("kind", ["truncated", "strip", "directory"])
def test_segment_names_a_bad_image_and_writes_nothing(tmp_path, kind, capsys, monkeypatch):
    no_work(monkeypatch)  # the image is read before the model is built
    bad, word = bad_input(tmp_path, kind)
    out = tmp_path / "seg.png"
    rc = main(["segment", str(bad), "--labels", "a,b", "-o", str(out), "--size", "28", *TXT])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_PARTIAL and bad.name in err and word in err and "nothing written" in err
    assert not out.exists() and not (tmp_path / ".seg.png.lock").exists()


@pytest.mark.parametrize("option", [["--labels", ""], ["--size", "0"], ["--size", "5000"], ["--vocab", "nope.txt.gz"],
                                    ["--config", "depth='2'"], ["--template", "{} and {}"]])
def test_segment_bad_arguments_fail_first_and_leave_nothing(tmp_path, good, option, capsys, monkeypatch):
    no_work(monkeypatch)
    labels = [] if option[0] == "--labels" else ["--labels", "a,b"]
    with pytest.raises(SystemExit) as e:
        main(["segment", good[0], *labels, "-o", str(tmp_path / "seg.png"), *TXT, *option])
    assert e.value.code == errors.EXIT_USAGE
    assert sorted(os.listdir(tmp_path)) == ["good"]
    assert "Traceback" not in capsys.readouterr().err


def test_segment_and_embed_text_outputs_are_checked_and_locked_before_the_work(tmp_path, good, monkeypatch):
    import minidino.cli.outputs as outputs
    from minidino.utils.lock import output_lock

    no_work(monkeypatch)
    (tmp_path / "dir.png").mkdir()
    seg = ["segment", good[0], "--labels", "a,b", *TXT, "--size", "28", "-o"]
    for argv, status, message in ((seg + [str(tmp_path / "dir.png")], errors.EXIT_USAGE, "is a folder"),
                                  (seg + [str(tmp_path / "seg.xyz")], errors.EXIT_USAGE, "unknown picture format"),
                                  (["embed-text", "a cat", "--out", str(tmp_path / "dir.png"), *TXT], errors.EXIT_USAGE,
                                   "must end in"),
                                  (["embed-text", "a cat", "--out", str(tmp_path / "t.npy" / "x.npz"), *TXT],
                                   errors.EXIT_USAGE, "not a folder")):
        (tmp_path / "t.npy").write_text("x")
        with pytest.raises(SystemExit, match=message) as e:
            main(argv)
        assert e.value.code == status, argv
    with output_lock(tmp_path / "seg.png"):  # another run writes the same picture
        with pytest.raises(SystemExit, match="is being written by") as e:
            main(seg + [str(tmp_path / "seg.png")])
    assert e.value.code == errors.EXIT_BUSY

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(outputs.tempfile, "mkstemp", refuse)  # a read-only folder (simulated: also as root)
    for argv in (seg + [str(tmp_path / "seg.png")], ["embed-text", "a cat", "--out", str(tmp_path / "t.npz"), *TXT]):
        with pytest.raises(SystemExit, match="cannot write") as e:
            main(argv)
        assert e.value.code == errors.EXIT_IO


def test_a_failed_onnx_export_leaves_no_file(tmp_path, monkeypatch):
    """export_onnx stages the file (and any side file of external weights) in a private folder: an
    exporter that dies half-way leaves neither a partial .onnx nor the folder."""
    import torch

    from minidino import create_model, export_onnx

    def dies_half_way(module, args, f, **kwargs):
        Path(f).write_bytes(b"half an onnx file")
        raise RuntimeError("killed")

    monkeypatch.setattr(torch.onnx, "export", dies_half_way)
    with pytest.raises(RuntimeError, match="killed"):
        export_onnx(create_model("dinov2_vits14", depth=1), tmp_path / "m.onnx", dynamic=False, size=(28, 28))
    assert list(tmp_path.iterdir()) == []


# ================================================================== issue 20: no command destroys a file it was not asked to write
# The second hostile pass. Each test states the documented behaviour (docs/cli-errors.md, "What every command
# guarantees") and failed before the fix of its class:
#
#     A  an output that is also an input (an image, the weights, a shard, the source of convert)
#     B  two inputs whose outputs collide
#     C  symbolic links planted at lock, temporary or output names
#     D  write failures: disk full / file-size limit, paired outputs (.npy and its sidecar)
#     E  limits that can be checked before the work (memory from --config, labels, vocabulary, exports)
#     F  unbounded reads (--texts-file, --labels-file, .txt lists) and texts embedded in one batch
#     G  dino.txt checkpoints and the checkpoints convert writes: the same checks as backbones
#     H  config values out of range
#     I  index and shard metadata checked against the tensors
#     J  non-finite results are never written silently
#     K  the porting commands: export, accuracy, trace, compare (outputs, write failures, dumps, extras)
#
# Models are 1-block, 48-wide (or the tiny dino.txt above) with RANDOM weights, images are tiny; the
# write-failure cases run the command under a file-size limit (RLIMIT_FSIZE), the unbounded-read cases
# under a memory limit (RLIMIT_AS) and a timeout, all in this process (run_limited), to stay fast.
TINY_KW = dict(depth=1, embed_dim=48, num_heads=3, ffn_hidden_dim=96)
TXT_KW = dict(vision_embed_dim=64, vision_num_heads=2, vision_ffn_hidden_dim=256, depth=1, embed_dim=128,
              head_ffn_hidden_dim=176, text_width=64, text_num_heads=2, text_layers=1)
PIC = ["--weights", "random:7", *TINY, "--size", "28"]  # pca / attention: a model and a size, no batch options


# ------------------------------------------------------------------ helpers
def cli(argv: list[str]) -> int:
    """The exit status of `minidino ARGV` run in this process (main returns it or raises CliExit)."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def text_ready() -> str:
    """CLIP's vocabulary file (tokenising labels and texts needs it and ftfy); skip where it is absent."""
    from test_dinotxt import VOCAB, needs_text_extra, needs_vocab

    for mark in (needs_vocab, needs_text_extra):
        if mark.args[0]:
            pytest.skip(mark.kwargs["reason"])
    return str(VOCAB)


class Limited(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


class _Timeout(BaseException):
    """Raised by SIGALRM in run_limited (a BaseException: no `except Exception` of the command catches it)."""


def _mapped_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))


def run_limited(argv: list[str], *, fsize: int | None = None, memory: int | None = None, timeout: float = 60,
                cwd: Path | None = None) -> Limited:
    """`minidino ARGV` run in this process, as from a shell in `cwd`, under limits: a file-size limit (`fsize`
    bytes, RLIMIT_FSIZE: a write beyond it fails with EFBIG as a full disk fails with ENOSPC; Python ignores
    SIGXFSZ), an address space of `memory` bytes more than the process maps now (RLIMIT_AS) and a timeout
    (SIGALRM): a command that regresses fails the test in seconds instead of hanging or eating the machine.
    In process, not in a fresh interpreter, to keep the suite fast; the limits are restored afterwards."""
    import contextlib
    import io
    import signal

    def alarm(signum, frame):
        raise _Timeout
    out, err = io.StringIO(), io.StringIO()
    saved = {r: resource.getrlimit(r) for r in (resource.RLIMIT_FSIZE, resource.RLIMIT_AS)}
    old_handler = signal.signal(signal.SIGALRM, alarm)
    t0 = time.perf_counter()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIDINO_HOME", str((cwd or Path.cwd()) / ".minidino-cache"))
        if cwd is not None:
            mp.chdir(cwd)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                signal.setitimer(signal.ITIMER_REAL, timeout)
                if fsize is not None:
                    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, saved[resource.RLIMIT_FSIZE][1]))
                if memory is not None:
                    resource.setrlimit(resource.RLIMIT_AS, (_mapped_bytes() + memory, saved[resource.RLIMIT_AS][1]))
                rc = cli(argv)
        except _Timeout:
            pytest.fail(f"minidino {' '.join(argv[:3])} ... still running after {time.perf_counter() - t0:.0f} s "
                        "(an unbounded read or a limit checked after the work)")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
            for r, limits in saved.items():
                resource.setrlimit(r, limits)
    return Limited(rc, out.getvalue(), err.getvalue())


def snapshot(path: Path) -> tuple[bytes, int]:
    """The bytes and permission bits of a file: what 'unchanged' means below."""
    return path.read_bytes(), stat.S_IMODE(path.stat().st_mode)


def victim(tmp_path: Path, name: str = "victim.txt") -> Path:
    """A private file outside every output folder, that a planted symbolic link points to."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    f = outside / name
    f.write_text("precious data, not minidino's\n")
    f.chmod(0o600)
    return f


def leftovers(folder: Path) -> list[str]:
    """Temporary files, locks and probes minidino left in a folder."""
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name or p.name.endswith((".lock", ".probe", ".part")))


def tiny_weights(path: Path, seed: int = 0, **changes) -> Path:
    """A 1-block, 48-wide backbone checkpoint (official keys); `changes` replaces some of its tensors."""
    sd = golden.generate_for(minidino.create_model("dinov2_vits14", device="meta", **TINY_KW), seed)
    sd.update(changes)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    return path


def tiny_dinotxt_state(**changes) -> dict[str, torch.Tensor]:
    sd = {k: v.clone().contiguous() for k, v in minidino.create_model("dinotxt", **TXT_KW).state_dict().items()}
    sd.update(changes)
    return sd


def forge_index(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """An embeddings file with the given tensors and metadata (as a hostile or broken tool would write it)."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"minidino": json.dumps(meta)})
    return path


@pytest.fixture
def index(tmp_path, good):
    """A real 3-image index (cls tokens of the tiny model): (path, tensors, meta)."""
    path = tmp_path / "index.safetensors"
    assert cli(["embed", *good, "--out", str(path), *RUN]) == 0
    return (path, *read_embeddings(path))


@pytest.fixture
def shards(tmp_path, good):
    """The two shards of a 3-image embed run: [(path, tensors, meta)] * 2."""
    out = tmp_path / "e.safetensors"
    for i in range(2):
        assert cli(["embed", *good, "--out", str(out), "--shard", f"{i}/2", *RUN]) == 0
    return [(p, *read_embeddings(p)) for p in (tmp_path / f"e.shard-{i}-of-2.safetensors" for i in range(2))]


def nan_like(obj):
    """The same structure with every floating tensor full of NaN."""
    if isinstance(obj, torch.Tensor):
        return torch.full_like(obj, float("nan")) if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: nan_like(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(nan_like(v) for v in obj)
    return obj


def nan_method(cls, name: str, monkeypatch) -> None:
    """Make cls.name return NaN everywhere (a diverged model, an fp16 overflow): its results are not usable."""
    original = getattr(cls, name)
    monkeypatch.setattr(cls, name, lambda self, *a, **k: nan_like(original(self, *a, **k)))


# ================================================================== A: an output that is also an input
@pytest.mark.parametrize("command", ["pca", "attention", "pca-other-spelling", "segment"])
def test_a_picture_written_over_its_own_input_image_is_refused(tmp_path, command, capsys, monkeypatch):
    """`pca IMG -o IMG` replaced the image with its own picture, status 0. The output must be refused
    (status 2, before any work) and the image left byte for byte, however the two paths are spelled."""
    img = png(tmp_path / "photo.png", (40, 30))
    before = snapshot(img)
    (tmp_path / "sub").mkdir()
    if command == "segment":
        vocab = text_ready()
        no_work(monkeypatch)
        argv = ["segment", str(img), "--labels", "a,b", "-o", str(img), "--size", "28", "--vocab", vocab, *TXT]
    elif command == "pca-other-spelling":
        argv = ["pca", str(tmp_path / "sub" / ".." / "photo.png"), "-o", str(img), *PIC]
    else:
        argv = [command, str(img), "-o", str(img), *PIC]
    rc = cli(argv)
    err = capsys.readouterr().err
    assert snapshot(img) == before, "the input image was overwritten"
    assert rc == errors.EXIT_USAGE and "photo.png" in err, (rc, err)


def test_embed_out_equal_to_its_weights_file_is_refused(tmp_path, good, capsys):
    """`embed ... --weights W.safetensors --out W.safetensors` replaced the checkpoint with embeddings."""
    weights = tiny_weights(tmp_path / "w.safetensors")
    before = snapshot(weights)
    rc = cli(["embed", *good, "--out", str(weights), "--weights", str(weights), *TINY, "--size", "28", "-q"])
    assert snapshot(weights) == before, "the weights file was overwritten"
    assert rc == errors.EXIT_USAGE and "w.safetensors" in capsys.readouterr().err


def test_embed_out_equal_to_an_input_file_is_refused(tmp_path, good):
    """An input given by name is an input whatever its suffix (Pillow reads a PNG called img.npz)."""
    img = tmp_path / "img.npz"
    img.write_bytes(Path(good[0]).read_bytes())
    before = snapshot(img)
    rc = cli(["embed", str(img), good[1], "--out", str(img), *RUN])
    assert snapshot(img) == before, "an input image was overwritten by the output"
    assert rc == errors.EXIT_USAGE


def test_embed_text_out_equal_to_its_texts_file_is_refused(tmp_path, monkeypatch):
    vocab = text_ready()
    no_work(monkeypatch)
    texts = tmp_path / "queries.npz"  # a texts file is read as text whatever its name
    texts.write_text("a cat\na dog\n")
    before = snapshot(texts)
    rc = cli(["embed-text", "--texts-file", str(texts), "--out", str(texts), "--vocab", vocab, *TXT])
    assert snapshot(texts) == before
    assert rc == errors.EXIT_USAGE


def test_merge_out_equal_to_one_of_its_shards_is_refused(shards):
    """`merge S0 S1 --out S0` replaced shard 0 (status 0): a later merge can no longer be made."""
    (s0, _, _), (s1, _, _) = shards
    before = snapshot(s0)
    rc = cli(["merge", str(s0), str(s1), "--out", str(s0)])
    assert snapshot(s0) == before
    assert rc == errors.EXIT_USAGE


@pytest.mark.parametrize("layout", ["official", "huggingface_hub"])
def test_convert_onto_its_own_source_is_refused(tmp_path, layout):
    """`convert SRC SRC --network student` replaced a training checkpoint by its student half; `convert HF HF`
    replaced a Hugging Face folder's weights and config.json."""
    sd = golden.generate_for(minidino.create_model("dinov2_vits14", device="meta", **TINY_KW), 0)
    if layout == "official":
        src = tmp_path / "train.pth"
        torch.save({"teacher": {f"backbone.{k}": v for k, v in sd.items()},
                    "student": {f"backbone.{k}": v + 1 for k, v in sd.items()}}, src)
        argv = ["convert", str(src), str(src), "--network", "student"]
        watched = [src]
    else:
        src = tmp_path / "hf"
        assert cli(["convert", str(tiny_weights(tmp_path / "w.pth")), str(src) + "/", "--layout", "huggingface"]) == 0
        argv = ["convert", str(src), str(src), "--layout", layout]
        watched = [src / "model.safetensors", src / "config.json"]
    before = [snapshot(f) for f in watched]
    rc = cli(argv)
    assert [snapshot(f) for f in watched] == before, "the source checkpoint was overwritten"
    assert rc == errors.EXIT_USAGE


def test_depth_into_the_folder_it_reads_never_overwrites_an_input(tmp_path):
    """`depth FOLDER --out FOLDER` where FOLDER holds a.png and the user's own a.depth.png: a.png's map
    replaced a.depth.png (an input), status 0."""
    folder = tmp_path / "photos"
    folder.mkdir()
    png(folder / "a.png", seed=1)
    mine = png(folder / "a.depth.png", seed=2)  # e.g. a ground-truth depth map, an input here
    before = snapshot(mine)
    rc = cli(["depth", str(folder), "--out", str(folder), *DEPTH])
    assert snapshot(mine) == before, "an input was replaced by another input's depth map"
    assert rc in (errors.EXIT_OK, errors.EXIT_USAGE)


@pytest.mark.parametrize("where", ["same-folder", "subfolder"])
def test_depth_rerun_in_place_does_not_read_its_own_outputs(tmp_path, where):
    """A second `depth FOLDER --out FOLDER` (or --out FOLDER/depth, which the walk of FOLDER enters) took the
    first run's maps and previews as inputs (a.depth.depth.png, a.preview.depth.png, ...)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    png(folder / "a.png", seed=1)
    out = folder if where == "same-folder" else folder / "depth"
    cli(["depth", str(folder), "--out", str(out), *DEPTH])
    cli(["depth", str(folder), "--out", str(out), *DEPTH])
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert not [n for n in names if n.count(".depth") + n.count(".preview") > 1], names


# ================================================================== B: outputs that collide
@pytest.mark.parametrize("names", [("a.png", "a.jpg", "a-2.png"), ("x/a.png", "y/a.png", "x/a-2.png")])
def test_depth_inputs_whose_outputs_collide_are_refused_or_kept_apart(tmp_path, names, capsys):
    """`depth a.png a.jpg a-2.png` wrote 2 maps for 3 images (a.jpg's became a-2, then a-2.png's replaced
    it), status 0. Either the run is refused before any work (status 2, nothing written) or every input
    gets outputs of its own."""
    paths = []
    for i, name in enumerate(names):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(np.random.default_rng(i).integers(0, 256, (20, 30, 3), dtype=np.uint8))
        img.save(tmp_path / name)
        paths.append(str(tmp_path / name))
    out = tmp_path / "maps"
    rc = cli(["depth", *paths, "--out", str(out), *DEPTH])
    maps = sorted(p.name for p in out.iterdir() if p.name.endswith(".depth.png")) if out.exists() else []
    if rc == errors.EXIT_USAGE:
        assert maps == [], maps
    else:
        assert rc == errors.EXIT_OK and len(maps) == 3, (rc, maps, capsys.readouterr().err)


# ================================================================== C: symbolic links planted at our names
@pytest.mark.parametrize("command", ["embed", "pca", "depth", "merge"])
def test_a_symlink_at_the_lock_name_is_not_followed(tmp_path, good, command, request):
    """A link planted at `.OUT.lock` pointing outside: the victim was truncated and rewritten with the
    lock's JSON. The victim must keep its bytes and mode (the run may refuse, status 5 or 7, or go on)."""
    target = victim(tmp_path)
    before = snapshot(target)
    out = {"embed": tmp_path / "e.npz", "pca": tmp_path / "p.png", "depth": tmp_path / "maps" / "depth",
           "merge": tmp_path / "m.safetensors"}[command]
    out.parent.mkdir(exist_ok=True)
    (out.parent / f".{out.name}.lock").symlink_to(target)
    argv = {"embed": ["embed", *good, "--out", str(out), *RUN],
            "pca": ["pca", good[0], "-o", str(out), *PIC],
            "depth": ["depth", good[0], "--out", str(out.parent), *DEPTH],
            "merge": ["merge", "SHARDS", "--out", str(out)]}[command]
    if command == "merge":
        argv[1:2] = [str(p) for p, _, _ in request.getfixturevalue("shards")]
    rc = cli(argv)
    assert snapshot(target) == before, "the file behind the planted lock link was rewritten"
    assert rc in (errors.EXIT_OK, errors.EXIT_BUSY, errors.EXIT_IO), rc


def test_output_lock_never_follows_a_symlink(tmp_path):
    """The library function every command uses (minidino.utils.lock.output_lock)."""
    from minidino.utils.lock import OutputLockedError, lock_path, output_lock

    target = victim(tmp_path)
    before = snapshot(target)
    lock_path(tmp_path / "o.npz").symlink_to(target)
    try:
        with output_lock(tmp_path / "o.npz"):
            pass
    except (OutputLockedError, OSError):
        pass  # refusing is fine; writing through the link is not
    assert snapshot(target) == before


def test_every_staged_file_is_flushed_before_its_rename(tmp_path, monkeypatch):
    """The staged files were renamed into place unflushed: after a power cut a filesystem may keep the rename
    and lose the data (an empty or short file under the final name). Now each staged file (every file of a
    package folder too) is fsync-ed before any rename, and each destination folder after the renames."""
    from minidino.utils import atomic

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("names open files through /proc (Linux)")
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}")),
                                                       real_fsync(fd))[1])
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append(f"replace {Path(b).name}"), real_replace(a, b))[1])

    def package(p: Path) -> None:  # a writer that makes a folder (a CoreML .mlpackage)
        (p / "Data").mkdir(parents=True)
        (p / "Data" / "weights.bin").write_bytes(b"w")

    atomic.atomic_write_all({tmp_path / "a.npy": lambda p: p.write_bytes(b"array"),
                             tmp_path / "a.npy.json": lambda p: p.write_text("{}"), tmp_path / "m.mlpackage": package})
    first_rename = next(i for i, e in enumerate(events) if e.startswith("replace"))
    flushed_before = {e.split("/")[-1] for e in events[:first_rename] if e.startswith("fsync")}
    assert {"a.npy", "a.npy.json", "weights.bin"} <= flushed_before, events
    assert events[-1] == f"fsync {tmp_path}", "the folder's entries (the renames) were not flushed"
    assert (tmp_path / "m.mlpackage" / "Data" / "weights.bin").read_bytes() == b"w"


@pytest.mark.parametrize("command", ["pca", "embed-npy", "depth", "atomic_write"])
def test_a_symlink_at_the_temporary_name_is_not_followed(tmp_path, good, command):
    """The temporary name was predictable (`.OUT.tmp-PID`): a link planted there made the writer write the
    victim, chmod it to 0644 and rename the link onto OUT. Temporary files must be created exclusively,
    without following links, under unpredictable names."""
    from minidino.utils.atomic import atomic_write

    target = victim(tmp_path)
    before = snapshot(target)
    out = {"pca": tmp_path / "p.png", "embed-npy": tmp_path / "e.npy.json", "depth": tmp_path / "maps" / "g0.depth.png",
           "atomic_write": tmp_path / "o.txt"}[command]
    out.parent.mkdir(exist_ok=True)
    (out.parent / f".{out.name}.tmp-{os.getpid()}").symlink_to(target)
    if command == "atomic_write":
        try:
            atomic_write(out, lambda tmp: tmp.write_text("new"))
        except OSError:
            pass
    else:
        argv = {"pca": ["pca", good[0], "-o", str(out), *PIC],
                "embed-npy": ["embed", *good, "--out", str(tmp_path / "e.npy"), *RUN],
                "depth": ["depth", good[0], "--out", str(out.parent), *DEPTH]}[command]
        cli(argv)
    assert snapshot(target) == before, "the file behind the planted temporary link was written or chmod-ed"
    assert not out.is_symlink(), f"{out} became a link to a file outside the output folder"


def test_convert_does_not_write_through_a_symlink_at_config_json(tmp_path):
    """`convert W HF/ --layout huggingface` wrote config.json with write_text, through a link planted there."""
    target = victim(tmp_path)
    before = snapshot(target)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").symlink_to(target)
    cli(["convert", str(tiny_weights(tmp_path / "w.pth")), str(tmp_path / "hf") + "/", "--layout", "huggingface"])
    assert snapshot(target) == before


def test_demo_does_not_write_through_a_symlink_in_its_folder(tmp_path):
    """`demo` writes its pictures and similarity.txt in place (Image.save / write_text), without a lock or a
    temporary name: a link planted at similarity.txt had its target rewritten."""
    target = victim(tmp_path)
    before = snapshot(target)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "similarity.txt").symlink_to(target)
    cli(["demo", "--out", str(tmp_path / "demo"), "--size", "28", "--weights", "random:0", *TINY])
    assert snapshot(target) == before


@pytest.mark.skipif(not hasattr(os, "link"), reason="no hard links")
def test_output_lock_never_writes_through_a_hard_link(tmp_path):
    """A hard link to a file elsewhere planted at the lock name: opened and truncated like a lock file of
    our own. A lock file must be a plain file of this user with one name; anything else is refused."""
    from minidino.utils.lock import lock_path, output_lock

    target = victim(tmp_path)
    before = snapshot(target)
    os.link(target, lock_path(tmp_path / "o.npz"))
    with pytest.raises(OSError, match="hard link"):
        with output_lock(tmp_path / "o.npz"):
            pass
    assert snapshot(target) == before


WRITES = re.compile(r"\.save\(|\.write_text\(|\.write_bytes\(|save_file\(|np\.save\(|torch\.save\(|\bopen\([^)]*['\"][wax]")


def test_every_file_minidino_writes_goes_through_the_safe_writers():
    """A file written in place (Image.save(path), write_text, open(path, "w")) follows a link planted at its
    name and leaves half a file on a full disk: convert's config.json, demo's pictures, the cache's sidecars
    did. Every write goes through minidino.utils.atomic, whose writers get the staged name (`tmp`, `p`);
    a new direct write under minidino/ fails here: route it through atomic_write."""
    allowed = {"minidino/utils/atomic.py", "minidino/utils/memory.py"}  # the safe writers themselves; /proc
    found = []
    for path in sorted((REPO / "minidino").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.strip()
            if rel not in allowed and not code.startswith((">>>", "...")) and WRITES.search(code) \
                    and not re.search(r"\b(tmp|p|staged)\b", code):
                found.append(f"{rel}:{i}: {code}")
    assert not found, "writes that bypass minidino.utils.atomic:\n" + "\n".join(found)


# ================================================================== D: write failures
def _no_debris(folder: Path, *outputs: Path) -> None:
    assert leftovers(folder) == [], leftovers(folder)
    for o in outputs:
        assert not o.exists(), f"{o} was left behind"


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_embed_on_a_full_disk_is_status_7_naming_the_output(tmp_path, good, suffix):
    """A file-size limit (EFBIG, as a full disk gives ENOSPC) on the final write: .safetensors gave
    'internal error SafetensorError' (status 70); .npz gave '[Errno 27] File too large' without a name."""
    out = tmp_path / f"e{suffix}"
    r = run_limited(["embed", *good, "--out", str(out), *RUN], fsize=1024, cwd=tmp_path)
    assert r.returncode == errors.EXIT_IO, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("minidino") and out.name in last and "internal error" not in last, r.stderr
    _no_debris(tmp_path, out)


def test_npy_and_its_sidecar_change_together_or_not_at_all(tmp_path, good):
    """`.npy` wrote the sidecar first, then the array: a failed array write left a new sidecar beside the old
    array. Worse, np.save to a file object loses the error of a small array's last buffered write: the run
    said 'wrote', status 0, over a truncated array."""
    out = tmp_path / "e.npy"
    assert cli(["embed", good[0], "--out", str(out), "--tokens", "patch", *RUN]) == 0
    old = (out.read_bytes(), (tmp_path / "e.npy.json").read_bytes())
    r = run_limited(["embed", *good, "--out", str(out), "--tokens", "patch", "--checkpoint-every", "1",
                     *RUN[:-3], "--batch-size", "1", "-q"], fsize=2048, cwd=tmp_path)
    assert r.returncode == errors.EXIT_IO, (r.returncode, r.stdout, r.stderr)
    assert (out.read_bytes(), (tmp_path / "e.npy.json").read_bytes()) == old, "array and sidecar disagree"
    tensors, meta = read_embeddings(out)
    assert tensors["patch"].shape[0] == len(meta["names"]) == 1


@pytest.mark.parametrize("command", ["convert", "convert-hf", "merge", "embed-text", "pca", "depth-npy", "demo"])
def test_every_writer_on_a_full_disk_is_status_7_naming_the_file_and_leaves_nothing(tmp_path, good, command, request):
    """convert, convert to a folder, merge and embed-text went through safetensors: status 70 'internal error';
    convert to a folder left its config.json; pca and depth said '[Errno 27] File too large' and
    '40000 requested and 5088 written' without naming the file."""
    big = png(tmp_path / "big.png", (200, 200))
    weights = tiny_weights(tmp_path / "w.pth")
    cases = {
        "convert": (["convert", str(weights), str(tmp_path / "c.safetensors")], 100_000, tmp_path / "c.safetensors"),
        "convert-hf": (["convert", str(weights), str(tmp_path / "hf") + "/", "--layout", "huggingface"], 100_000,
                       tmp_path / "hf" / "model.safetensors"),
        "merge": (["merge", "SHARDS", "--out", str(tmp_path / "m.safetensors")], 1024,
                  tmp_path / "m.safetensors"),
        "embed-text": (["embed-text", "a cat", "a dog", "--out", str(tmp_path / "t.safetensors"), *TXT], 1024,
                       tmp_path / "t.safetensors"),
        "pca": (["pca", good[0], "-o", str(tmp_path / "p.png"), *PIC], 2048, tmp_path / "p.png"),
        "depth-npy": (["depth", str(big), "--out", str(tmp_path / "maps"), "--npy", *DEPTH], 20_000,
                      tmp_path / "maps" / "big.depth.npy"),
        "demo": (["demo", "--out", str(tmp_path / "demo"), "--size", "28", "--weights", "random:0", *TINY], 5000,
                 tmp_path / "demo" / "pca.png"),
    }
    argv, limit, out = cases[command]
    if command == "merge":
        argv[1:2] = [str(p) for p, _, _ in request.getfixturevalue("shards")]
    if command == "embed-text":
        argv += ["--vocab", text_ready()]
    r = run_limited(argv, fsize=limit, cwd=tmp_path)
    assert r.returncode == errors.EXIT_IO, r.stderr
    assert "internal error" not in r.stderr and out.name in r.stderr, r.stderr
    assert not out.exists() and (not out.parent.exists() or leftovers(out.parent) == [])
    if command == "convert-hf":
        assert not (tmp_path / "hf" / "config.json").exists(), "half a Hugging Face folder was left"


def test_every_output_file_is_checked_before_the_work_not_only_out(tmp_path, good, monkeypatch, capsys):
    """check_output checks --out only: a folder at the .npy's sidecar name (OUT.npy.json) was found after the
    work ('[Errno 21] Is a directory: .OUT.npy.json.tmp-PID', status 7, checkpoints left behind)."""
    monkeypatch.setattr(DinoVisionTransformer, "forward_features", lambda *a, **k: pytest.fail("work started"))
    (tmp_path / "e.npy.json").mkdir()
    rc = cli(["embed", *good, "--out", str(tmp_path / "e.npy"), *RUN])
    assert rc == errors.EXIT_USAGE and "e.npy.json" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["e.npy.json", "good"]


def test_a_run_that_writes_nothing_creates_no_folders(tmp_path):
    """`pca EMPTY.png -o new/sub/p.png` said 'nothing written' (status 1) but left new/sub/ (made for the lock)."""
    (tmp_path / "empty.png").write_bytes(b"")
    rc = cli(["pca", str(tmp_path / "empty.png"), "-o", str(tmp_path / "new" / "sub" / "p.png"), *PIC])
    assert rc == errors.EXIT_PARTIAL and not (tmp_path / "new").exists()


def test_a_full_cache_is_a_write_failure_not_a_download_failure(server, tmp_path, monkeypatch):
    """The download loop caught OSError from its own writes as a network error: a full disk under the cache
    was retried twice and reported as 'could not download' (status 4)."""
    real_fdopen = os.fdopen
    sleeps = []

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(hub.os, "fdopen", lambda fd, mode="r", *a, **k: Full(real_fdopen(fd, mode, *a, **k))
                        if "w" in mode else real_fdopen(fd, mode, *a, **k))
    monkeypatch.setattr(hub.time, "sleep", sleeps.append)
    with pytest.raises(Exception) as e:
        hub.fetch_url(server + "/ok/w.safetensors", cache_dir=tmp_path, progress=False)
    assert errors.exit_status(e.value)[0] == errors.EXIT_IO, (type(e.value).__name__, str(e.value))
    assert sleeps == [], "a full disk was retried like a network error"


# ================================================================== E: limits checked before the work
def small_machine(monkeypatch, free: int = 1000) -> None:
    monkeypatch.setattr(memory, "available_memory", lambda device: free)


def test_depth_checks_the_memory_of_its_model_before_building_it(tmp_path, good, monkeypatch):
    """embed, pca, attention, zeroshot... refuse a model that cannot fit (status 6); depth built it."""
    small_machine(monkeypatch)
    no_work(monkeypatch)
    rc = cli(["depth", *good, "--out", str(tmp_path / "maps"), *DEPTH])
    assert rc == errors.EXIT_RESOURCES


@pytest.mark.parametrize("argv", [
    ["depth", "IMG", "--out", "maps", "--model", "dinov2_vits14_ld", "--weights", "random:0", "--config", "depth=100000000"],
    ["zeroshot", "IMG", "--labels", "a,b", "--weights", "random:0", "--config", "depth=100000000"],
    ["zeroshot", "IMG", "--labels", "a,b", "--weights", "random:0", "--config", "text_layers=100000000"],
    ["embed-text", "a cat", "--out", "t.npz", "--weights", "random:0", "--config", "text_layers=100000000"],
    ["info", "dinov2_vits14", "--config", "depth=100000000"],
], ids=["depth", "zeroshot-depth", "zeroshot-text_layers", "embed-text", "info"])
def test_a_huge_config_is_refused_in_seconds_for_every_model_family(tmp_path, good, argv):
    """`embed --config depth=100000000` is refused in 2 s (status 6). depth and dino.txt built the model on the
    meta device block by block first (minutes, then gigabytes of Python objects); info the same."""
    argv = [good[0] if a == "IMG" else a for a in argv]
    if argv[0] in ("zeroshot", "embed-text"):
        argv += ["--vocab", text_ready()]  # no download, whatever is checked first
    t0 = time.perf_counter()
    r = run_limited(argv, timeout=20, cwd=tmp_path)
    assert r.returncode in (errors.EXIT_OK, errors.EXIT_USAGE, errors.EXIT_RESOURCES), r.stderr
    if argv[0] != "info":
        assert r.returncode == errors.EXIT_RESOURCES, r.stderr
    assert time.perf_counter() - t0 < 20


def test_similar_checks_the_model_an_index_names_before_building_it(index, tmp_path, good, monkeypatch):
    """A query image is embedded with the model, config and weights the index names: it was built unchecked
    (a forged config depth=10**9 builds for ever; embed refuses the same config in 2 s)."""
    import minidino.cli._common as common

    path, tensors, meta = index
    forged = forge_index(tmp_path / "forged.safetensors", tensors, dict(meta, config={**meta["config"], "depth": 10**9}))
    monkeypatch.setattr(common, "build_model", lambda *a, **k: pytest.fail("work started: the model was built"))
    query = str(png(tmp_path / "q.png", seed=9))
    assert cli(["similar", query, str(forged)]) == errors.EXIT_RESOURCES
    small_machine(monkeypatch)
    assert cli(["similar", query, str(path)]) == errors.EXIT_RESOURCES


@pytest.mark.parametrize("argv,status", [
    (["export", "dinotxt", "--weights", "random:0", "--onnx", "OUT"], errors.EXIT_USAGE),
    (["export", "dinov2_vits14_dd", "--weights", "random:0", "--onnx", "OUT", "--static", "28x28"], errors.EXIT_USAGE),
    (["export", "dinov2_vitg14", "--weights", "random:0", "--onnx", "OUT"], errors.EXIT_RESOURCES),
], ids=["dinotxt", "depther-28px", "no-memory"])
def test_export_refuses_what_cannot_be_exported_before_building(tmp_path, argv, status, monkeypatch):
    """`export dinotxt` built the full dino.txt (40 s, GBs) and then said it cannot export it; a depther at
    28x28 was built and then refused; export had no memory check at all."""
    import minidino.cli.export as export

    if status == errors.EXIT_RESOURCES:
        small_machine(monkeypatch)
    monkeypatch.setattr(export, "build_model", lambda *a, **k: pytest.fail("work started: the model was built"))
    assert cli([str(tmp_path / "m.onnx") if a == "OUT" else a for a in argv]) == status


def test_segment_refuses_more_labels_than_it_can_colour_before_the_work(tmp_path, good, monkeypatch):
    """21 labels: the model was built and run, then 'at most 20 labels can be told apart by colour'."""
    vocab = text_ready()
    no_work(monkeypatch)
    labels = ",".join(f"thing {i}" for i in range(21))
    rc = cli(["segment", good[0], "--labels", labels, "-o", str(tmp_path / "s.png"), "--size", "28", "--vocab", vocab, *TXT])
    assert rc == errors.EXIT_USAGE and not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("content", [b"this is not gzip", gzip.compress(b"#version: 0.2\nnot a vocabulary\n")],
                         ids=["not-gzip", "wrong-content"])
@pytest.mark.parametrize("command", ["zeroshot", "segment", "embed-text"])
def test_a_bad_vocabulary_file_is_refused_before_the_work(tmp_path, good, command, content, capsys, monkeypatch):
    """--vocab was checked with is_file() only: the model was built, then 'Not a gzipped file' (status 7,
    the file not named) or 'not CLIP's byte-pair vocabulary' (status 2)."""
    text_ready()
    no_work(monkeypatch)
    vocab = tmp_path / "vocab.txt.gz"
    vocab.write_bytes(content)
    argv = {"zeroshot": ["zeroshot", good[0], "--labels", "a,b", "--size", "28"],
            "segment": ["segment", good[0], "--labels", "a,b", "--size", "28", "-o", str(tmp_path / "s.png")],
            "embed-text": ["embed-text", "a cat", "--out", str(tmp_path / "t.npz")]}[command]
    rc = cli([*argv, "--vocab", str(vocab), *TXT])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_USAGE and "vocab.txt.gz" in err, (rc, err)


def test_attention_checks_the_memory_of_its_attention_maps_before_the_work(tmp_path, monkeypatch):
    """attention materialises (heads, N, N) softmax weights: at --size 2044 a ViT-S/14 needs 6 x 21317^2 x 4 B
    = 10.9 GB. Only the weights were checked (batch 0), so it started on a machine with 2 GiB."""
    small_machine(monkeypatch, free=2 * 2**30)
    monkeypatch.setattr(DinoVisionTransformer, "get_attention_maps", lambda *a, **k: pytest.fail("work started"))
    Image.new("RGB", (2044, 2044), (90, 120, 150)).save(tmp_path / "big.png")
    rc = cli(["attention", str(tmp_path / "big.png"), "-o", str(tmp_path / "a.png"), "--weights", "random:0",
              "--config", "depth=1", "--size", "2044"])
    assert rc == errors.EXIT_RESOURCES


@pytest.mark.parametrize("kv", ["in_chans=4", "in_chans=1"])
def test_a_config_that_cannot_take_rgb_images_is_refused_before_the_work(tmp_path, good, kv, monkeypatch):
    """--config in_chans=4 was refused only by the first forward, after the model was built and the images read."""
    monkeypatch.setattr(DinoVisionTransformer, "forward_features", lambda *a, **k: pytest.fail("work started"))
    assert cli(["embed", *good, "--out", str(tmp_path / "e.npz"), *RUN, "--config", kv]) == errors.EXIT_USAGE


def test_merge_refuses_absurd_shard_counts_at_once(tmp_path, shards):
    """A shard whose metadata says [0, 10**12]: merge listed the missing shards with range(N) and was killed
    (status 137) or ran out of memory."""
    (s0, t0, m0), (s1, _, _) = shards
    forged = forge_index(tmp_path / "f.shard-0-of-2.safetensors", t0, dict(m0, shard=[0, 10**12]))
    r = run_limited(["merge", str(forged), str(s1), "--out", str(tmp_path / "m.safetensors")], memory=2**30,
                    timeout=20, cwd=tmp_path)
    assert r.returncode == errors.EXIT_USAGE, r.stderr


def test_embed_text_refuses_names_that_the_output_cannot_hold_before_the_work(tmp_path, monkeypatch):
    """The texts go into the file's JSON metadata; safetensors refuses a header over 100 MB, so 1.1 million
    100-character texts were embedded and then failed to save ('header too large', status 70)."""
    vocab = text_ready()
    no_work(monkeypatch)
    texts = tmp_path / "t.txt"
    with open(texts, "w") as f:
        for i in range(1_100_000):
            f.write(f"{i:08d} " + "x" * 91 + "\n")
    rc = cli(["embed-text", "--texts-file", str(texts), "--out", str(tmp_path / "t.safetensors"), "--vocab", vocab, *TXT])
    assert rc in (errors.EXIT_USAGE, errors.EXIT_RESOURCES)


def test_write_embeddings_of_many_names_writes_a_readable_file_or_says_why(tmp_path):
    """1 million names of 109 characters: 'SafetensorError: header too large', an internal error (status 70)."""
    from minidino.cli.embed import FORMAT, write_embeddings

    names = [f"{i:09d}" + "y" * 100 for i in range(1_000_000)]
    out = tmp_path / "e.safetensors"
    try:
        write_embeddings(out, {"cls": torch.zeros(len(names), 1)}, {"format": FORMAT, "names": names, "skipped": []})
    except SystemExit as e:
        assert not out.exists()
        assert isinstance(e.code, str) or e.code not in (None, 0, errors.EXIT_INTERNAL)
    except Exception as e:
        assert errors.exit_status(e)[0] != errors.EXIT_INTERNAL, f"{type(e).__name__}: {str(e)[:200]}"
    else:
        assert read_embeddings(out)[1]["names"] == names


# ================================================================== F: unbounded reads, one batch of texts
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "sparse-20G"])
@pytest.mark.parametrize("command", ["embed-text", "zeroshot", "segment"])
def test_text_files_are_bounded_like_images(tmp_path, good, command, kind):
    """--texts-file / --labels-file were read with read_text(): a FIFO blocked for ever, /dev/zero and a
    sparse 20 GB file ran out of memory (status 6 under a 4 GiB limit, the OOM killer without one). They must
    be refused like such images are (a regular file, a bounded size), status 2, in seconds."""
    if kind == "fifo":
        os.mkfifo(tmp_path / "texts.txt")
        f = tmp_path / "texts.txt"
    elif kind == "dev-zero":
        f = tmp_path / "texts.txt"
        f.symlink_to("/dev/zero")
    else:
        f = tmp_path / "texts.txt"
        with open(f, "wb") as h:
            h.truncate(20 * 2**30)
    vocab = text_ready()
    argv = {"embed-text": ["embed-text", "--texts-file", str(f), "--out", str(tmp_path / "t.npz")],
            "zeroshot": ["zeroshot", good[0], "--labels-file", str(f), "--size", "28"],
            "segment": ["segment", good[0], "--labels-file", str(f), "--size", "28", "-o", str(tmp_path / "s.png")]}[command]
    r = run_limited([*argv, "--vocab", vocab, *TXT], memory=2**30, timeout=15, cwd=tmp_path)
    assert r.returncode == errors.EXIT_USAGE and "texts.txt" in r.stderr, (r.returncode, r.stderr)


def test_a_huge_txt_list_of_images_is_not_read_whole(tmp_path):
    """A .txt list is read with f.read(): a sparse 20 GB list ran out of memory (status 6)."""
    f = tmp_path / "list.txt"
    with open(f, "wb") as h:
        h.truncate(20 * 2**30)
    r = run_limited(["embed", str(f), "--out", str(tmp_path / "e.npz"), *RUN], memory=2**30, timeout=20, cwd=tmp_path)
    assert r.returncode in (errors.EXIT_PARTIAL, errors.EXIT_USAGE) and "list.txt" in r.stderr, (r.returncode, r.stderr)


def _batch_spy(monkeypatch, name: str) -> list[int]:
    sizes: list[int] = []
    original = getattr(DinoTxt, name)

    def spy(self, x, *a, **k):
        sizes.append(int(x.shape[0]))
        return original(self, x, *a, **k)
    monkeypatch.setattr(DinoTxt, name, spy)
    return sizes


def test_embed_text_embeds_in_batches(tmp_path, monkeypatch):
    """embed-text tokenised and embedded every text in one batch: memory grows with the file."""
    vocab = text_ready()
    sizes = _batch_spy(monkeypatch, "encode_text")
    texts = tmp_path / "t.txt"
    texts.write_text("".join(f"sentence number {i}\n" for i in range(200)))
    assert cli(["embed-text", "--texts-file", str(texts), "--out", str(tmp_path / "t.npz"), "--vocab", vocab, *TXT]) == 0
    assert sum(sizes) == 200 and max(sizes) <= 64, sizes


def test_zeroshot_embeds_its_labels_in_batches(tmp_path, good, monkeypatch):
    vocab = text_ready()
    sizes = _batch_spy(monkeypatch, "encode_text")
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"thing {i}\n" for i in range(200)))
    assert cli(["zeroshot", good[0], "--labels-file", str(labels), "--size", "28", "--vocab", vocab, *TXT]) == 0
    assert sum(sizes) == 200 and max(sizes) <= 64, sizes


# ================================================================== G: dino.txt checkpoints, convert's output
def _dinotxt_bad(kind: str) -> dict[str, torch.Tensor]:
    sd = tiny_dinotxt_state()
    if kind == "nan-text":
        key = "text_model.backbone.positional_embedding"
        sd[key] = sd[key].clone()
        sd[key][0, 0] = float("nan")
    elif kind == "inf-logit-scale":
        sd["logit_scale"] = torch.full_like(sd["logit_scale"], float("inf"))
    elif kind == "int-vision-head":
        key = next(k for k in sd if k.startswith("visual_model.head.") and k.endswith("qkv.weight"))
        sd[key] = torch.ones_like(sd[key], dtype=torch.int32)
    return sd


@pytest.mark.parametrize("kind", ["nan-text", "inf-logit-scale", "int-vision-head"])
def test_dinotxt_weights_are_checked_like_backbone_weights(tmp_path, good, kind, capsys):
    """A backbone with NaN, inf or integer tensors is status 3 at load; dino.txt's vision head and text encoder
    loaded them: zeroshot printed 'nan%' with status 0, integer weights were cast silently."""
    from safetensors.torch import save_file

    vocab = text_ready()
    f = tmp_path / "dinotxt.safetensors"
    save_file(_dinotxt_bad(kind), str(f))
    argv = [a for a in TXT if not a.startswith("random")]
    argv.remove("--weights")
    rc = cli(["zeroshot", good[0], "--labels", "a cat,a dog", "--size", "28", "--vocab", vocab, "--weights", str(f), *argv])
    assert rc == errors.EXIT_WEIGHTS, capsys.readouterr()


@pytest.mark.parametrize("part", ["vision_head", "text_encoder"])
def test_dinotxt_part_files_are_checked(part):
    model = minidino.create_model("dinotxt", **TXT_KW)
    sub = model.visual_model.head if part == "vision_head" else model.text_model
    sd = {k: v.clone() for k, v in sub.state_dict().items()}
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.ndim == 2)
    sd[key][0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        minidino.load_weights(model, {part: sd})


@pytest.mark.parametrize("kind", ["nan", "int", "nan-head", "only-cls-token", "dinotxt-state-dict"])
def test_convert_never_writes_a_checkpoint_that_would_not_load(tmp_path, kind, capsys):
    """convert wrote NaN, integer and one-tensor 'backbones' and a whole dino.txt state dict as a backbone
    (D=None, depth 0), all with status 0. What it writes must pass the checks loading does: status 3 (or 2 for
    a file that holds no backbone), nothing written."""
    src = tmp_path / "src.pth"
    sd = golden.generate_for(minidino.create_model("dinov2_vits14", device="meta", **TINY_KW), 0)
    if kind == "nan":
        sd["blocks.0.attn.qkv.weight"] = sd["blocks.0.attn.qkv.weight"].clone().fill_(float("nan"))
    elif kind == "int":
        sd["norm.weight"] = torch.ones(48, dtype=torch.int64)
    elif kind == "nan-head":
        sd["linear_head.weight"] = torch.full((1000, 96), float("inf"))
        sd["linear_head.bias"] = torch.zeros(1000)
    elif kind == "only-cls-token":
        sd = {"cls_token": sd["cls_token"]}
    else:
        sd = tiny_dinotxt_state()
    torch.save(sd, src)
    dst = tmp_path / "dst.safetensors"
    rc = cli(["convert", str(src), str(dst), "--with-heads"])
    assert rc in (errors.EXIT_WEIGHTS, errors.EXIT_USAGE) and not dst.exists(), (rc, capsys.readouterr())


def test_convert_to_huggingface_of_a_partial_checkpoint_is_not_an_internal_error(tmp_path, capsys):
    """KeyError 'patch_embed.proj.weight', status 70."""
    src = tmp_path / "src.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 48)}, src)
    rc = cli(["convert", str(src), str(tmp_path / "hf") + "/", "--layout", "huggingface"])
    assert rc in (errors.EXIT_WEIGHTS, errors.EXIT_USAGE) and not (tmp_path / "hf").exists(), capsys.readouterr()


def test_save_weights_refuses_non_finite_tensors(tmp_path):
    sd = golden.generate_for(minidino.create_model("dinov2_vits14", device="meta", **TINY_KW), 0)
    sd["pos_embed"] = sd["pos_embed"].clone().fill_(float("inf"))
    with pytest.raises(CheckpointError):
        minidino.save_weights(sd, tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()


def test_convert_messages_start_with_minidino(tmp_path, capsys):
    """'error: ... holds no backbone' broke the one-line 'minidino: ...' rule (docs/cli-errors.md)."""
    head = tmp_path / "dinov2_vits14_linear_head.pth"
    torch.save({"weight": torch.zeros(1000, 768), "bias": torch.zeros(1000)}, head)
    rc = cli(["convert", str(head), str(tmp_path / "o.safetensors")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == errors.EXIT_USAGE and len(err) == 1 and err[0].startswith("minidino"), err


# ================================================================== H: config values have ranges
@pytest.mark.parametrize("model,kv", [
    ("dinov2_vits14", "layer_norm_eps=-1"),          # all-NaN embeddings, status 0
    ("dinov2_vits14", "interpolate_offset=-20"),     # internal error: output size -18
    ("dinov2_vits14", "interpolate_offset=-0.5"),    # internal error: resize gave (1, 1)
    ("dinov2_vits14", "interpolate_offset=1000000.0"),  # internal error: tried to allocate 1.5 PB
    ("dinotxt", "head_eps=-1"),                      # nan% with status 0
    ("dinotxt", "text_eps=-1"),                      # nan% with status 0
    ("dinotxt", "text_ffn_ratio=-1"),                # internal error: negative dimension
    ("dinotxt", "text_ffn_ratio=0.0001"),            # internal error: ZeroDivisionError
])
def test_config_values_out_of_range_are_refused_before_any_work(tmp_path, good, model, kv, capsys, monkeypatch):
    monkeypatch.setattr(DinoVisionTransformer, "forward_features", lambda *a, **k: pytest.fail("work started"))
    monkeypatch.setattr(DinoTxt, "get_visual_class_and_patch_tokens", lambda *a, **k: pytest.fail("work started"))
    out = tmp_path / "e.npz"
    base = RUN if model == "dinov2_vits14" else [*TXT, "--size", "28", "-q"]
    rc = cli(["embed", *good, "--out", str(out), "--model", model, *base, "--config", kv])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_USAGE and kv.split("=")[0] in err and "internal error" not in err, (rc, err)
    assert not out.exists()


@pytest.mark.parametrize("kv", ["text_vocab_size=10", "text_context_length=1"])
def test_a_text_config_the_tokenizer_cannot_feed_is_refused_before_the_work(good, kv, monkeypatch):
    """The tokenizer gives ids up to 49407 and needs 2 positions: text_vocab_size=10 and
    text_context_length=1 were refused by the first encode_text, after the model was built."""
    vocab = text_ready()
    no_work(monkeypatch)
    rc = cli(["zeroshot", good[0], "--labels", "a,b", "--size", "28", "--vocab", vocab, *TXT, "--config", kv])
    assert rc == errors.EXIT_USAGE


def test_config_dataclasses_check_their_ranges():
    from minidino.models.config import DinoConfig
    from minidino.heads.dinotxt import DinoTxtConfig

    base = minidino.get_config("dinov2_vits14")
    for field, value in (("layer_norm_eps", -1.0), ("interpolate_offset", -20.0)):
        with pytest.raises(ValueError, match=field):
            base.replace(**{field: value})
    for field, value in (("head_eps", -1.0), ("text_eps", -1e-5), ("text_ffn_ratio", -1.0)):
        with pytest.raises(ValueError, match=field):
            DinoTxtConfig().replace(**{field: value})
    assert isinstance(base, DinoConfig)


# ================================================================== I: index and shard metadata
@pytest.mark.parametrize("change", ["fewer-names", "more-names", "names-a-string", "no-names"])
def test_similar_checks_the_names_against_the_rows(index, tmp_path, change, capsys):
    """2 names for 3 rows answered with status 0 (pairing names with the wrong rows, or dropping some);
    more names, a string or no 'names' gave internal errors (status 70). A corrupt index is status 2."""
    path, tensors, meta = index
    meta = dict(meta)
    if change == "fewer-names":
        meta["names"] = meta["names"][:2]
    elif change == "more-names":
        meta["names"] = meta["names"] + ["ghost.png", "ghost2.png"]
    elif change == "names-a-string":
        meta["names"] = meta["names"][0]
    else:
        del meta["names"]
    forged = forge_index(tmp_path / "forged.safetensors", tensors, meta)
    rc = cli(["similar", index[2]["names"][0], str(forged)])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_USAGE and "forged.safetensors" in err and "internal error" not in err, (rc, err)


def test_similar_checks_the_index_settings_before_building_the_model(index, tmp_path, monkeypatch, capsys):
    """size 'big' in the metadata: the model was built, then 'unsupported operand type(s) for /'."""
    import minidino.cli._common as common

    path, tensors, meta = index
    forged = forge_index(tmp_path / "forged.safetensors", tensors, dict(meta, size="big"))
    monkeypatch.setattr(common, "build_model", lambda *a, **k: pytest.fail("work started: the model was built"))
    rc = cli(["similar", str(png(tmp_path / "q.png", seed=3)), str(forged)])
    assert rc == errors.EXIT_USAGE and "size" in capsys.readouterr().err


def test_similar_does_not_download_what_an_index_names(index, tmp_path, capsys):
    """An index may come from anyone: its 'weights' (a URL, any local path) were fetched or read without a
    word. Weights named by an index are used when they are the official ones, random, or an existing
    checkpoint; anything else needs --weights given explicitly (status 2, no connection made)."""
    path, tensors, meta = index
    forged = forge_index(tmp_path / "forged.safetensors", tensors, dict(meta, weights="http://203.0.113.9/w.pth"))
    rc = cli(["similar", str(png(tmp_path / "q.png", seed=3)), str(forged)])  # the offline fixture fails any connect
    err = capsys.readouterr().err
    assert rc == errors.EXIT_USAGE and "--weights" in err, (rc, err)


@pytest.mark.parametrize("index_json", [{}, {"cases": [{"model": "dinov2_vits14"}]}, {"cases": "all"}])
def test_selftest_checks_the_golden_index_it_is_given(tmp_path, index_json, capsys):
    """`selftest --golden DIR` trusted DIR/index.json: {} gave KeyError 'cases' (status 70); its cases name models,
    depths, input shapes and files that were built, allocated and opened as given. A bad index is status 2."""
    (tmp_path / "index.json").write_text(json.dumps(index_json))
    rc = cli(["selftest", "--golden", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_USAGE and "index.json" in err and "internal error" not in err, (rc, err)


@pytest.mark.parametrize("change", ["fewer-names", "other-key", "other-width", "non-finite"])
def test_merge_checks_every_shard_against_its_metadata(shards, tmp_path, change, capsys):
    """A shard with fewer names than rows was merged into an inconsistent file (status 0); shards with other
    keys or widths crashed (KeyError / RuntimeError, status 70); a NaN shard was merged silently."""
    (s0, t0, m0), (s1, t1, m1) = shards
    if change == "fewer-names":
        bad = forge_index(tmp_path / "b.shard-0-of-2.safetensors", t0, dict(m0, names=m0["names"][:1]))
        files = [bad, s1]
    else:
        tensors = {"other-key": {"patch": torch.zeros(len(m1["names"]), 4, 48)},
                   "other-width": {"cls": torch.zeros(len(m1["names"]), 64)},
                   "non-finite": {"cls": torch.full((len(m1["names"]), 48), float("nan"))}}[change]
        files = [s0, forge_index(tmp_path / "b.shard-1-of-2.safetensors", tensors, m1)]
    out = tmp_path / "m.safetensors"
    rc = cli(["merge", *map(str, files), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_USAGE and "b.shard" in err and not out.exists(), (rc, err)


# ================================================================== J: non-finite results
@pytest.mark.parametrize("command,family", [(c, "dinov2") for c in ("embed", "similar", "pca", "attention", "depth",
                                                                     "zeroshot", "embed-text", "segment")]
                         + [(c, "dinov3") for c in ("embed", "pca", "attention")])
def test_non_finite_results_are_never_written_silently(tmp_path, good, command, family, capsys, monkeypatch, request):
    """A model that gives NaN (a diverged checkpoint, fp16 overflow, a bad config) made embed write NaN
    embeddings, zeroshot print 'nan%' and similar rank 'nan' cosines, all with status 0; depth crashed
    in the preview (IndexError, status 70). Refuse, or warn on stderr with a non-zero status. DINOv3
    models go through the same checks."""
    path = request.getfixturevalue("index")[0] if command == "similar" else None
    vocab = text_ready() if command in ("zeroshot", "embed-text", "segment") else None
    vit = DinoVisionTransformer if family == "dinov2" else Dinov3VisionTransformer
    run = family_run(family)
    pic = PIC if family == "dinov2" else [*V3, *PIC[:-1], "32"]
    if command in ("embed", "similar", "pca"):
        nan_method(vit, "forward_features", monkeypatch)
    elif command == "attention":
        nan_method(vit, "get_attention_maps", monkeypatch)
    elif command == "depth":
        nan_method(Depther, "forward", monkeypatch)
    elif command == "zeroshot":
        nan_method(DinoTxt, "encode_image", monkeypatch)
    elif command == "embed-text":
        nan_method(DinoTxt, "encode_text", monkeypatch)
    else:
        nan_method(DinoTxt, "get_visual_class_and_patch_tokens", monkeypatch)
    argv = {"embed": ["embed", *good, "--out", str(tmp_path / "e.npz"), *run],
            "similar": ["similar", str(png(tmp_path / "q.png", seed=4)), str(path)],
            "pca": ["pca", good[0], "-o", str(tmp_path / "p.png"), *pic],
            "attention": ["attention", good[0], "-o", str(tmp_path / "a.png"), *pic],
            "depth": ["depth", good[0], "--out", str(tmp_path / "maps"), *DEPTH],
            "zeroshot": ["zeroshot", good[0], "--labels", "a,b", "--size", "28", "--vocab", vocab, *TXT],
            "embed-text": ["embed-text", "a cat", "--out", str(tmp_path / "t.npz"), "--vocab", vocab, *TXT],
            "segment": ["segment", good[0], "--labels", "a,b", "--size", "28", "-o", str(tmp_path / "s.png"),
                        "--vocab", vocab, *TXT]}[command]
    rc = cli(argv)
    err = capsys.readouterr().err
    assert rc not in (errors.EXIT_OK, errors.EXIT_INTERNAL), (rc, err)
    assert "NaN" in err or "finite" in err, err


# ================================================================== K: the porting commands (export, accuracy, trace, compare)
# The same guarantees for the commands that landed after issue 20: every file they write (the artifact,
# .onnx.data, OpenVINO's .bin, NAME.report.json, a trace's raw files and manifest.json, the lock) is planned
# against every file they read (IMAGE, --weights, --calibration) before the work; a write failure is status 7
# naming the file and leaves nothing; every dump `compare` reads is checked (one line, status 2; a port's
# non-finite tensor is status 8); a missing runtime extra is one line naming it, before the work.
TRACE = ["--weights", "random:0", *TINY, "--size", "28x28"]
EXPORT = ["--weights", "random:0", *TINY, "--static", "28x28"]


def no_port_work(monkeypatch):
    """Fail the test if export, accuracy or trace builds its model: the refusal must come before any work."""
    import minidino.cli.accuracy as accuracy
    import minidino.cli.export as export
    import minidino.cli.trace as trace

    for module in (accuracy, export, trace):
        monkeypatch.setattr(module, "build_model", lambda *a, **k: pytest.fail("work started: the model was built"))


def lists(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("case", ["image", "weights", "link-to-weights", "weights-in-the-folder"])
def test_trace_out_that_is_an_input_is_refused_before_the_work(tmp_path, good, case, monkeypatch, capsys):
    """`trace MODEL IMG --out W.safetensors --weights W.safetensors` replaced the checkpoint with the trace
    (check_output was given no inputs); an image called x.npz (Pillow reads it by its bytes) was replaced by
    its own trace; --out DIR wrote its raw files over a --weights file of the same name in DIR."""
    no_port_work(monkeypatch)
    weights = tiny_weights(tmp_path / "w.safetensors")
    image = tmp_path / "img.npz"
    image.write_bytes(Path(good[0]).read_bytes())
    argv = ["trace", "dinov2_vits14", str(image), *TRACE]
    if case == "image":
        out, watched = image, image
    elif case == "weights":
        out, watched = weights, weights
    elif case == "link-to-weights":
        out, watched = tmp_path / "t.safetensors", weights
        out.symlink_to(weights)
    else:
        (tmp_path / "d").mkdir()
        watched = out = tmp_path / "d"
        watched = tiny_weights(out / "norm.f32")  # the file the dump's tensor `norm` goes to
    argv[argv.index("random:0")] = str(watched if case != "image" else weights)
    before, listing = snapshot(watched), lists(tmp_path)
    rc = cli([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert snapshot(watched) == before, "an input was written over"
    assert rc == errors.EXIT_USAGE and "also an input" in err and len(err.strip().splitlines()) == 1, (rc, err)
    assert lists(tmp_path) == listing


def test_trace_out_that_is_no_dump_name_is_refused_before_the_work(tmp_path, good, monkeypatch, capsys):
    """`trace ... --out t.pt` ran the forward pass, then failed in save_dump ('a dump is a .safetensors file...'),
    after the work; --out naming an existing image file (`--out photo.png`) likewise."""
    no_port_work(monkeypatch)
    (tmp_path / "d.npz").mkdir()
    for out, word in ((tmp_path / "t.pt", "a dump is"), (Path(good[0]), "a dump is"), (tmp_path / "d.npz", "is a folder")):
        before = lists(tmp_path)
        rc = cli(["trace", "dinov2_vits14", good[0], "--out", str(out), *TRACE])
        assert rc == errors.EXIT_USAGE and word in capsys.readouterr().err
        assert lists(tmp_path) == before


def test_trace_out_a_symlink_to_a_file_elsewhere_replaces_the_link(tmp_path, good):
    """A link at --out pointing to a file outside: the trace replaces the link, never writes through it."""
    target = victim(tmp_path)
    before = snapshot(target)
    out = tmp_path / "t.safetensors"
    out.symlink_to(target)
    assert cli(["trace", "dinov2_vits14", good[0], "--out", str(out), *TRACE]) == 0
    assert snapshot(target) == before and not out.is_symlink()
    from minidino.conformance.dumps import load_dump

    assert "norm" in load_dump(out) and leftovers(tmp_path) == []


@pytest.mark.parametrize("case", ["out-is-weights", "bin-is-weights", "report-is-weights", "data-is-calibration",
                                  "package-holds-weights", "package-is-another-folder"])
def test_export_outputs_that_are_inputs_are_refused_before_the_work(tmp_path, good, case, monkeypatch, capsys):
    """--weights at --out, at OpenVINO's .bin or at the report were refused already (kept here, per guarantee);
    the --calibration images were not given to the planner at all (an image explicitly named m.onnx.data was
    written over); `--to coreml --out P.mlpackage` removed an existing P.mlpackage whole (shutil.rmtree): a
    --weights file inside it, or any folder of that name with the user's files (status 0), and its report and
    lock were not planned. Refused now, status 2, before the model is built."""
    no_port_work(monkeypatch)
    args = {"out-is-weights": ("w.onnx", "w.onnx", []), "bin-is-weights": ("w.xml", "w.bin", []),
            "report-is-weights": ("m.onnx", "m.onnx.report.json", []),
            "data-is-calibration": ("m.onnx", "w.safetensors", ["--precision", "int8", "--calibration", "CALIB"]),
            "package-holds-weights": ("p.mlpackage", "p.mlpackage/w.safetensors", []),
            "package-is-another-folder": ("p.mlpackage", "w.safetensors", [])}
    out, weights, extra = args[case]
    (tmp_path / "p.mlpackage").mkdir()
    (tmp_path / "p.mlpackage" / "notes.txt").write_text("not a CoreML package")
    if case == "package-holds-weights":
        (tmp_path / "p.mlpackage" / "Manifest.json").write_text("{}")  # a package, with the weights put inside
    weights = tiny_weights(tmp_path / weights, **{}) if not weights.endswith(".json") else tmp_path / weights
    if weights.suffix == ".json":
        weights.write_text("{}")
    calibration = tmp_path / "m.onnx.data"
    calibration.write_bytes(Path(good[0]).read_bytes())
    watched = [weights, calibration, tmp_path / "p.mlpackage" / "notes.txt"]
    before = [snapshot(f) for f in watched]
    listing = lists(tmp_path)
    to = {".onnx": "onnx", ".xml": "openvino", ".mlpackage": "coreml"}[Path(out).suffix]
    extra = [str(calibration) if a == "CALIB" else a for a in extra]
    rc = cli(["export", "dinov2_vits14", "--to", to, "--out", str(tmp_path / out), *EXPORT, *extra,
              "--weights", str(weights)])
    err = capsys.readouterr().err
    assert [snapshot(f) for f in watched] == before, "an input was written over"
    assert rc == errors.EXIT_USAGE and len(err.strip().splitlines()) == 1, (rc, err)
    assert ("not a CoreML package" if case == "package-is-another-folder" else "input") in err, err
    assert lists(tmp_path) == listing


def test_an_export_into_its_calibration_folder_reads_the_same_images_on_a_rerun(tmp_path):
    """`export --out calib/m.onnx --calibration calib`: the outputs land in the folder the calibration is read
    from. A rerun must calibrate on the same images (the artifact, its report and the lock are no images) and
    leave every image as it was."""
    pytest.importorskip("onnxruntime")
    calib = tmp_path / "calib"
    calib.mkdir()
    images = [png(calib / f"c{i}.png", seed=i) for i in range(2)]
    before = [snapshot(f) for f in images]
    argv = ["export", "dinov2_vits14", "--out", str(calib / "m.onnx"), "--precision", "int8", "--calibration", str(calib),
            *EXPORT, "--no-check"]
    notes = []
    for _ in range(2):
        assert cli(argv) == 0
        notes.append(json.loads((calib / "m.onnx.report.json").read_text())["notes"])
    assert notes[0] == notes[1] and any("calibrated on 2 batch" in n for n in notes[1]), notes
    assert [snapshot(f) for f in images] == before
    assert lists(calib) == ["c0.png", "c1.png", "m.onnx", "m.onnx.report.json"]


def test_export_writes_through_no_link_at_a_side_file(tmp_path):
    """A link planted at OpenVINO's m.bin (the side file of --out m.xml) pointing outside: the victim keeps its
    bytes and m.bin becomes a file of its own."""
    pytest.importorskip("openvino")
    target = victim(tmp_path)
    before = snapshot(target)
    (tmp_path / "m.bin").symlink_to(target)
    assert cli(["export", "dinov2_vits14", "--to", "openvino", "--out", str(tmp_path / "m.xml"), *EXPORT, "--no-check"]) == 0
    assert snapshot(target) == before and not (tmp_path / "m.bin").is_symlink()
    assert (tmp_path / "m.xml.report.json").is_file() and leftovers(tmp_path) == []


def test_a_portable_export_at_a_precision_leaves_other_files_alone(tmp_path):
    """`export --portable --precision float16 --out m.onnx` wrote its float32 graph at m.fp32.onnx beside the
    output and then deleted it: a user's own m.fp32.onnx (e.g. the float32 export made just before) was
    overwritten, then removed. Every intermediate file now stays in the export's private folder."""
    pytest.importorskip("onnxruntime")
    mine = tmp_path / "m.fp32.onnx"
    mine.write_bytes(b"the user's own float32 model")
    before = snapshot(mine)
    rc = cli(["export", "dinov2_vits14", "--to", "onnx", "--out", str(tmp_path / "m.onnx"), "--portable", "--precision",
              "float16", *EXPORT, "--no-check"])
    assert rc == 0 and snapshot(mine) == before
    assert lists(tmp_path) == ["m.fp32.onnx", "m.onnx", "m.onnx.report.json"]


@pytest.mark.parametrize("command", ["export-onnx", "export-openvino", "trace-safetensors", "trace-folder"])
def test_porting_writers_on_a_full_disk_are_status_7_naming_the_file_and_leave_nothing(tmp_path, good, command):
    """The porting commands under a file-size limit (EFBIG, as a full disk gives ENOSPC): status 7 naming the
    file, no partial artifact, no side file (.bin), no report, no half a dump folder (raw files without their
    manifest), no staging folder."""
    if command.startswith("export"):
        pytest.importorskip("openvino" if command.endswith("openvino") else "onnxruntime")
    out = {"export-onnx": tmp_path / "m.onnx", "export-openvino": tmp_path / "m.xml",
           "trace-safetensors": tmp_path / "t.safetensors", "trace-folder": tmp_path / "dump"}[command]
    if command.startswith("export"):
        argv = ["export", "dinov2_vits14", "--out", str(out), *EXPORT, "--no-check"]
    else:
        argv = ["trace", "dinov2_vits14", good[0], "--out", str(out), *TRACE]
    r = run_limited(argv, fsize=8192, cwd=tmp_path)
    assert r.returncode == errors.EXIT_IO, (r.returncode, r.stderr)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("minidino: cannot write") and out.name in last and ".tmp" not in last, r.stderr
    assert lists(tmp_path) == ["good"], lists(tmp_path)


@pytest.mark.parametrize("kind", ["empty-folder", "unreadable-images"])
@pytest.mark.parametrize("command", ["export", "accuracy"])
def test_a_calibration_without_images_is_refused_before_the_model_is_built(tmp_path, good, kind, command, monkeypatch,
                                                                            capsys):
    """An empty --calibration folder said 'none of the 0 images could be read' without naming the option."""
    no_port_work(monkeypatch)
    calib = tmp_path / "calib"
    calib.mkdir()
    if kind == "unreadable-images":
        (calib / "a.png").write_bytes(b"")
        (calib / "b.png").write_text("not an image")
    argv = {"export": ["export", "dinov2_vits14", "--out", str(tmp_path / "m.onnx"), *EXPORT],
            "accuracy": ["accuracy", "dinov2_vits14", good[0], "--to", "onnx", "--size", "28x28", "--weights", "random:0",
                         *TINY]}[command]
    rc = cli([*argv, "--precision", "int8", "--calibration", str(calib)])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_USAGE and "--calibration" in err.strip().splitlines()[-1], (rc, err)
    assert lists(tmp_path) == ["calib", "good"]


@pytest.mark.parametrize("argv,extra", [
    (["export", "dinov2_vits14", "--to", "openvino", "--out", "m.xml"], "openvino"),
    (["export", "dinov2_vits14", "--to", "onnx", "--out", "m.onnx", "--precision", "int8-dynamic", "--no-check"],
     "onnxruntime"),
    (["accuracy", "dinov2_vits14", "IMG", "--to", "onnx", "--size", "28x28"], "onnxruntime"),
    (["accuracy", "dinov2_vits14", "IMG", "--to", "openvino", "--precision", "int8-weights", "--size", "28x28"], "nncf"),
], ids=["export-openvino", "export-onnx-int8-dynamic", "accuracy-onnx", "accuracy-openvino-int8-weights"])
def test_a_missing_runtime_extra_is_one_line_naming_it_before_the_work(tmp_path, good, argv, extra, monkeypatch, capsys):
    """accuracy checked no extra before building the model and reading the images; export checked onnx and the
    runtime but not onnxruntime (its quantizer, float16 converter and the check) nor nncf: the artifact was
    written, then 'No module named onnxruntime' (status 2 after the work, the output left behind)."""
    no_port_work(monkeypatch)
    monkeypatch.setitem(sys.modules, extra, None)  # `import extra` raises ImportError, as where it is not installed
    argv = [good[0] if a == "IMG" else str(tmp_path / a) if a.startswith("m.") else a for a in argv]
    rc = cli([*argv, "--weights", "random:0", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    pip = {"openvino": "openvino", "onnxruntime": "export", "nncf": "openvino"}[extra]
    assert rc == errors.EXIT_USAGE and len(err) == 1 and f"pip install 'minidino[{pip}]'" in err[0], (rc, err)
    assert lists(tmp_path) == ["good"]


@pytest.mark.parametrize("argv", [["--to", "onnx", "--precision", "bfloat16"], ["--to", "coreml"],
                                  ["--to", "executorch", "--precision", "int8-weights"]])
def test_accuracy_refuses_what_the_runtime_does_not_offer_before_the_work(good, argv, monkeypatch, capsys):
    no_port_work(monkeypatch)
    rc = cli(["accuracy", "dinov2_vits14", good[0], *argv, "--weights", "random:0", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == errors.EXIT_USAGE and len(err) == 1 and ("offers" in err[0] or "macOS" in err[0]), err


# ------------------------------------------------------------------ compare: every dump it reads is checked
def _manifest(folder: Path, entries, raw: dict[str, bytes] | None = None) -> Path:
    folder.mkdir(exist_ok=True)
    for name, data in (raw or {}).items():
        (folder / name).write_bytes(data)
    (folder / "manifest.json").write_text(json.dumps({"format": "minidino-dump", "version": 1, "tensors": entries}))
    return folder


def hostile_dump(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A dump `compare` must refuse (status 2) and a word its one line must hold."""
    f4 = np.ones(4, "<f4").tobytes()
    entry = {"name": "a", "file": "a.f32", "shape": [4]}
    d = tmp_path / "port"
    if kind == "manifest-not-json":
        d.mkdir()
        (d / "manifest.json").write_text("{not json")
        return d, "not JSON"
    if kind == "manifest-huge":
        d.mkdir()
        with open(d / "manifest.json", "wb") as h:
            h.truncate(20 * 2**30)  # sparse: 20 GB that read_text() would try to hold
        return d, "more than the limit"
    if kind == "manifest-a-list":
        d.mkdir()
        (d / "manifest.json").write_text("[1, 2]")
        return d, "no list of tensors"
    if kind == "manifest-deep":
        d.mkdir()
        (d / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
        return d, "not JSON"
    if kind == "traversal":
        victim(tmp_path, "x")
        return _manifest(d, [dict(entry, file="../outside/x")]), "outside the dump folder"
    if kind == "absolute":
        return _manifest(d, [dict(entry, file="/etc/hostname")]), "outside the dump folder"
    if kind == "link-outside":
        d.mkdir()
        (tmp_path / "far.f32").write_bytes(f4)
        (d / "a.f32").symlink_to(tmp_path / "far.f32")
        return _manifest(d, [entry]), "outside the dump folder"
    if kind == "fifo":
        d.mkdir()
        os.mkfifo(d / "a.f32")
        return _manifest(d, [entry]), "FIFO"
    if kind == "size-mismatch":
        return _manifest(d, [dict(entry, shape=[5])], {"a.f32": f4}), "bytes, but shape"
    if kind == "shape-a-string":
        return _manifest(d, [dict(entry, shape="4")], {"a.f32": f4}), "shape"
    if kind == "name-twice":
        return _manifest(d, [entry, entry], {"a.f32": f4}), "named twice"
    if kind == "npz-pickle":
        f = tmp_path / "port.npz"
        np.savez(f, a=np.array([{"x": 1}], dtype=object))  # loading it with pickles allowed would run its code
        return f, "pickle"
    if kind == "npz-int":
        f = tmp_path / "port.npz"
        np.savez(f, a=np.arange(4))
        return f, "int64"
    if kind == "npz-numeric-strings":
        f = tmp_path / "port.npz"
        np.savez(f, a=np.array(["1.0", "2.0", "3.0", "4.0"]))  # converted silently to floats before
        return f, "floating-point"
    if kind == "npz-truncated":
        f = tmp_path / "port.npz"
        np.savez(f, a=np.ones(4))
        f.write_bytes(f.read_bytes()[:60])
        return f, "not a readable .npz"
    if kind == "npz-is-npy":
        f = tmp_path / "port.npz"
        with open(f, "wb") as h:
            np.save(h, np.ones(4))
        return f, "not an .npz archive"
    if kind == "npz-fifo":
        f = tmp_path / "port.npz"
        os.mkfifo(f)
        return f, "FIFO"
    if kind == "safetensors-garbage":
        f = tmp_path / "port.safetensors"
        f.write_bytes(b"\xff" * 64)
        return f, "not a readable safetensors"
    if kind == "safetensors-int":
        from safetensors.numpy import save_file

        f = tmp_path / "port.safetensors"
        save_file({"a": np.arange(4, dtype=np.int32)}, str(f))
        return f, "I32"
    from safetensors.numpy import save_file  # safetensors-bad-order

    f = tmp_path / "port.safetensors"
    save_file({"a": np.ones(4, np.float32)}, str(f), metadata={"order": "{\"a\": 1}"})
    return f, "order"


@pytest.mark.parametrize("kind", ["manifest-not-json", "manifest-huge", "manifest-a-list", "manifest-deep", "traversal",
                                  "absolute", "link-outside", "fifo", "size-mismatch", "shape-a-string", "name-twice",
                                  "npz-pickle", "npz-int", "npz-numeric-strings", "npz-truncated", "npz-is-npy",
                                  "npz-fifo", "safetensors-garbage", "safetensors-int", "safetensors-bad-order"])
def test_compare_refuses_a_bad_dump_in_one_line(tmp_path, kind, capsys):
    """What a broken or hostile port can hand `compare`. Before: manifest.json was read whole (a sparse 20 GB
    one: MemoryError, status 6) and a nesting 100000 deep was a RecursionError (status 70); a manifest naming
    '../outside/x' or '/etc/hostname' read those files, and a link out of the folder was followed (status 0);
    a FIFO was called 'missing'; a shape "4" was read as [4] and a name given twice kept its last tensor (status
    0); integer tensors and strings that look like numbers were converted to float (status 8, 'the port
    differs'); a truncated .npz (BadZipFile) and a safetensors file of garbage (SafetensorError) were internal
    errors (status 70); an .npy named .npz said "'numpy.ndarray' object does not support the context manager
    protocol" without naming the file; a FIFO named port.npz blocked for ever; a metadata 'order' that is no
    list was used as one. Each is now one line naming the file and the problem, status 2; nothing is unpickled."""
    if "fifo" in kind and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this OS")
    ref = tmp_path / "ref.npz"
    np.savez(ref, a=np.ones(4, np.float32))
    port, word = hostile_dump(tmp_path, kind)
    r = run_limited(["compare", str(ref), str(port)], memory=2**30, timeout=15, cwd=tmp_path)
    err = r.stderr.strip().splitlines()
    assert r.returncode == errors.EXIT_USAGE, (r.returncode, r.stderr)
    assert len(err) == 1 and err[0].startswith("minidino compare: PORT") and word in err[0], err


def test_compare_refuses_an_npz_that_inflates_past_memory(tmp_path, monkeypatch, capsys):
    """np.savez_compressed of zeros: 64 MiB of arrays in a file of about 64 KB. Before, `compare` inflated
    every array whatever its size (a few MB of zip can declare gigabytes). Now the sizes the zip records
    are summed first and an archive larger than half the free memory is refused, status 2, nothing read."""
    from minidino.utils import memory

    ref = tmp_path / "ref.npz"
    np.savez(ref, a=np.ones(4, np.float32))
    port = tmp_path / "port.npz"
    np.savez_compressed(port, a=np.zeros(16 * 2**20, np.float32))
    assert port.stat().st_size < 2**20
    monkeypatch.setattr(memory, "available_memory", lambda device: 64 * 2**20)  # 64 MiB free: 32 MiB allowed
    assert cli(["compare", str(ref), str(port)]) == errors.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "port.npz" in err[0] and "once decompressed" in err[0], err
    monkeypatch.setattr(memory, "available_memory", lambda device: 2**30)  # room enough: read, then compared
    cli(["compare", str(ref), str(port)])
    assert "once decompressed" not in capsys.readouterr().err  # (it is refused for its shape, (4,) against 16M)


@pytest.mark.parametrize("where", ["port", "reference"])
def test_compare_with_non_finite_values(tmp_path, where, capsys):
    """A port's NaN failed with 'over' and a 'nan' figure, nothing saying why; a reference holding NaN or inf was
    compared as if it were one (inf against inf passed a --min-cosine check). A port's non-finite tensor is the
    first failure, named with what it holds (status 8); a reference that is not finite is refused (status 2)."""
    good_values = np.ones(4, np.float32)
    bad = np.array([1.0, np.nan, np.inf, 4.0], np.float32)
    ref, port = tmp_path / "ref.npz", tmp_path / "port.npz"
    np.savez(ref, a=np.ones(4, np.float32), b=good_values if where == "port" else bad)
    np.savez(port, a=np.ones(4, np.float32), b=bad if where == "port" else good_values)
    rc = cli(["compare", str(ref), str(port)])
    out, err = capsys.readouterr()
    if where == "port":
        assert rc == errors.EXIT_MISMATCH and "FIRST FAILURE: b" in out and "NaN" in out, (rc, out, err)
    else:
        assert rc == errors.EXIT_USAGE and "REFERENCE" in err and "NaN" in err and len(err.strip().splitlines()) == 1


def test_compare_names_shape_mismatches_and_names_on_one_side_only(tmp_path, capsys):
    """Names only in the port were dropped without a word; a shape mismatch is a failure (status 8)."""
    ref, port = tmp_path / "ref.npz", tmp_path / "port.npz"
    np.savez(ref, a=np.ones(4, np.float32), b=np.ones((2, 3), np.float32), c=np.ones(1, np.float32))
    np.savez(port, a=np.ones(4, np.float32), b=np.ones((3, 2), np.float32), extra=np.ones(1, np.float32))
    rc = cli(["compare", str(ref), str(port)])
    out = capsys.readouterr().out
    assert rc == errors.EXIT_MISMATCH and "FIRST FAILURE: b (shape" in out
    assert "c" in out and "missing" in out and "not in the reference: extra" in out, out


@pytest.mark.parametrize("option", [["--tol", "nan"], ["--tol", "-1"], ["--min-cosine", "2"], ["--min-cosine", "nan"]])
def test_compare_checks_its_tolerances(tmp_path, option, capsys):
    """--tol nan or -1 failed every tensor (status 8: 'the port differs'); --min-cosine 2 likewise."""
    ref = tmp_path / "ref.npz"
    np.savez(ref, a=np.ones(4, np.float32))
    rc = cli(["compare", str(ref), str(ref), *option])
    assert rc == errors.EXIT_USAGE and option[0] in capsys.readouterr().err


@pytest.mark.parametrize("family", ["dinov2", "dinov3"])
@pytest.mark.parametrize("command", ["trace", "export", "accuracy"])
def test_porting_commands_check_the_memory_before_building(tmp_path, good, command, family, monkeypatch):
    """The porting commands estimate the memory of their model from its config, DINOv3's included, before
    anything is built (status 6, nothing written)."""
    no_port_work(monkeypatch)
    name = "dinov2_vits14" if family == "dinov2" else "dinov3_vits16"
    size = "28x28" if family == "dinov2" else "32x32"
    argv = {"trace": ["trace", name, good[0], "--out", str(tmp_path / "t.npz"), "--size", size],
            "export": ["export", name, "--out", str(tmp_path / "m.onnx"), "--static", size],
            "accuracy": ["accuracy", name, good[0], "--to", "onnx", "--size", size]}[command]
    t0 = time.perf_counter()
    rc = cli([*argv, "--weights", "random:0", *TINY, "--config", "depth=1000000000"])
    assert rc == errors.EXIT_RESOURCES and time.perf_counter() - t0 < 10
    assert lists(tmp_path) == ["good"]


@pytest.mark.parametrize("family", ["dinov2", "dinov3"])
def test_a_trace_that_is_not_finite_is_not_written(tmp_path, good, family, monkeypatch, capsys):
    """`trace` wrote NaN tensors as the reference (status 0): every port then 'failed' at the first tensor, or a
    NaN reference let `compare` pass nothing. Status 3, nothing written, for DINOv3 as for DINOv2."""
    import minidino.conformance.trace as tracing

    original = tracing.trace_model
    monkeypatch.setattr(tracing, "trace_model", lambda *a, **k: nan_like(original(*a, **k)))
    name, size = ("dinov2_vits14", "28x28") if family == "dinov2" else ("dinov3_vits16", "32x32")
    rc = cli(["trace", name, good[0], "--out", str(tmp_path / "t.safetensors"), "--weights", "random:0", *TINY,
              "--size", size])
    err = capsys.readouterr().err
    assert rc == errors.EXIT_WEIGHTS and "NaN" in err, (rc, err)
    assert lists(tmp_path) == ["good"]
