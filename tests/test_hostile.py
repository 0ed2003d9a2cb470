"""Hostile input: what a file system, Pillow, a server, a second process or a user can hand minidino.

One test per case found (issue 13 and later findings); add a test here for every new one. Each
case states the promise it holds: a bad input is named on stderr in one line and skipped, the
rest is written, the exit status says what happened (minidino.cli.errors), nothing is left
behind that changes the next run, and no single input can end, hang or exhaust a run.

Every model run is a 1-block, 48-wide model with RANDOM weights (`--weights random:7`), tiny
images and --size 28, so the whole file runs in well under a minute on two cores.
"""

from __future__ import annotations

import http.server
import os
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

import numpy as np
import pytest
import torch
from PIL import Image

import minidino
from minidino.weights import download as hub
from minidino.cli import errors, main
from minidino.cli.embed import read_embeddings
from minidino.cli.inputs import display_name, expand_inputs, read_one
from minidino.models.dinov2 import DinoVisionTransformer
from minidino.weights import CheckpointError, load_weights
from minidino.utils import memory

REPO = Path(__file__).resolve().parents[1]
TINY = ["--config", "depth=1", "--config", "embed_dim=48", "--config", "num_heads=3", "--config", "ffn_hidden_dim=96"]
RUN = ["--weights", "random:7", *TINY, "--size", "28", "--batch-size", "2", "-q"]
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


def test_a_model_or_batch_too_large_for_the_machine_is_refused_before_it_is_built(tmp_path, good, monkeypatch):
    import minidino.cli.info as info

    monkeypatch.setattr(DinoVisionTransformer, "forward_features", lambda *a, **k: pytest.fail("work started"))
    t0 = time.perf_counter()
    with pytest.raises(SystemExit, match="GiB available") as e:  # ~6.8 TB of weights: the kernel would kill the build
        main(["embed", *good, "--out", str(tmp_path / "e.npz"), *RUN, "--config", "depth=1000000000"])
    assert e.value.code == errors.EXIT_RESOURCES and time.perf_counter() - t0 < 10
    monkeypatch.setattr(memory, "available_memory", lambda device: 50 * 2**20)  # a machine with 50 MiB free
    with pytest.raises(SystemExit, match="with --batch-size 100000") as e:
        main(["embed", *good, "--out", str(tmp_path / "e.npz"), *RUN, "--batch-size", "100000"])
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
