"""The offline demo, the `pca` / `attention` / `demo` commands, and the learner's guide's links.

Run as a script (`python tests/test_demo.py --fix-guide-links`) to move docs/guide.md's line
links to wherever the quoted code now is.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_viz import golden_tiny

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "guide.md"
# [`code quoted from the line`](../path/to/file.py#L123): the quote must be on that line.
LINE_LINK = re.compile(r"\[`([^`]+)`\]\((\.\./[^)#\s]+)#L(\d+)\)")
ANY_LINK = re.compile(r"\]\((\.\./[^)#\s]+)(?:#L\d+)?\)")


def _guide_link_problems(fix: bool = False) -> list[str]:
    text = GUIDE.read_text()
    problems = []

    def check(m: re.Match) -> str:
        quote, rel, line = m[1], m[2], int(m[3])
        lines = (GUIDE.parent / rel).resolve().read_text().splitlines()
        if line <= len(lines) and quote in lines[line - 1]:
            return m[0]
        where = [i + 1 for i, text_line in enumerate(lines) if quote in text_line]
        if fix and len(where) == 1:
            return f"[`{quote}`]({rel}#L{where[0]})"
        problems.append(f"{rel}#L{line}: `{quote}` is at line(s) {where or 'nowhere'}")
        return m[0]

    new = LINE_LINK.sub(check, text)
    if fix and new != text:
        GUIDE.write_text(new)
    for rel in ANY_LINK.findall(text):
        if not (GUIDE.parent / rel).resolve().exists():
            problems.append(f"{rel}: no such file")
    return problems


def test_guide_line_links_point_at_the_code_they_quote():
    problems = _guide_link_problems()
    assert not problems, "docs/guide.md links are stale (python tests/test_demo.py --fix-guide-links):\n" + "\n".join(problems)
    assert len(LINE_LINK.findall(GUIDE.read_text())) >= 15


def test_readme_links_the_guide():
    assert "docs/guide.md" in (ROOT / "README.md").read_text()


# ------------------------------------------------------------------ the demo
# The offline random-weights option of minidino/cli/_common.py, on the first 2 blocks of ViT-S/14 (full width).
RANDOM = ["--weights", "random:0", "--config", "depth=2"]


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_sample_images_are_distinct_reproducible_scenes():
    from minidino.cli.demo_scenes import sample_images

    a, b = sample_images(112), sample_images(112)
    assert list(a) == ["ball", "house", "star", "boat"]
    for name in a:
        assert a[name].size == (112, 112) and a[name].mode == "RGB"
        assert np.array_equal(np.asarray(a[name]), np.asarray(b[name]))
    arrays = [np.asarray(i, np.float32) for i in a.values()]
    assert min(np.abs(x - y).mean() for i, x in enumerate(arrays) for y in arrays[i + 1 :]) > 20
    assert all(x.std() > 20 for x in arrays)  # scenes, not flat colours


def test_run_demo_writes_labelled_pictures_and_a_similarity_table(tmp_path, offline):
    from minidino.utils import viz
    from minidino.cli.demo_scenes import run_demo

    lines = []
    out = run_demo(tmp_path, golden_tiny("dinov2_vits14_reg"), weights_label="RANDOM WEIGHTS test",
                   size=112, log=lines.append)
    assert [p.name for p in out["samples"]] == ["ball.png", "house.png", "star.png", "boat.png"]
    assert all(Image.open(p).size == (112, 112) for p in out["samples"])
    P, L = viz.PAD, viz.LABEL_H
    pca = Image.open(out["pca"])  # 4 rows [scene, PCA] under a caption of K // L lines
    K = pca.height - (4 * (112 + L) + 5 * P)
    assert pca.width == 2 * 112 + 3 * P and K >= 2 * L and K % L == 0
    att = Image.open(out["attention"])  # one row per scene: scene + 3 heads + mean; then the colour bar (56 px)
    K = att.height - (4 * (112 + L) + 5 * P)
    assert att.width == 5 * 112 + 6 * P + (56 + P) and K >= 3 * L and K % L == 0
    depth = Image.open(out["depth"])  # one row per scene: [scene | depth], one shared bar
    assert depth.width == 2 * 112 + 3 * P + (56 + P)
    sim = out["similarity"]
    assert sim.shape == (4, 4) and torch.allclose(sim, sim.T) and torch.allclose(sim.diagonal(), torch.ones(4))
    assert out["embeddings"].shape == (4, 48)
    text = out["similarity_txt"].read_text()
    assert "RANDOM WEIGHTS test" in text and all(n in text for n in out["names"])
    assert any("patch tokens (4, 64, 48)" in line for line in lines)


def test_demo_command_default_is_offline_fast_and_says_how_to_get_real_features(tmp_path, offline, capsys):
    from minidino.cli import main

    t0 = time.perf_counter()
    assert main(["demo", "--out", str(tmp_path / "d")]) == 0  # the README's command: ViT-S/14 at 224 px
    seconds = time.perf_counter() - t0
    text = capsys.readouterr().out
    assert "RANDOM WEIGHTS" in text and "--weights official" in text and "cosine similarity" in text
    assert seconds < 30, seconds
    for name in ("pca.png", "attention.png", "similarity.txt", "depth.png", "samples/ball.png"):
        assert (tmp_path / "d" / name).is_file()
    pca = Image.open(tmp_path / "d" / "pca.png")
    assert pca.width == 2 * 224 + 3 * 6 and (pca.height - (4 * (224 + 16) + 5 * 6)) // 16 >= 2  # 4 rows + caption
    print(f"minidino demo (ViT-S/14, 4 scenes at 224 px): {seconds:.1f} s")


# ------------------------------------------------------------------ pca and attention commands
def _halves(path: Path, size: int = 112) -> Path:
    a = np.zeros((size, size, 3), np.uint8)
    a[:, : size // 2] = (200, 60, 40)
    a[:, : size // 2 : 4] = (120, 30, 20)
    a[:, size // 2 :] = (50, 90, 210)
    Image.fromarray(a).save(path)
    return path


def test_pca_command_splits_halves_side_by_side(tmp_path, offline):
    from minidino.utils import viz
    from minidino.cli import main

    img, out = _halves(tmp_path / "halves.png"), tmp_path / "pca.png"
    assert main(["pca", str(img), "-o", str(out), "--size", "112", *RANDOM]) == 0
    a = np.asarray(Image.open(out)).astype(int)
    P, L = viz.PAD, viz.LABEL_H
    K = a.shape[0] - (112 + L + 2 * P)  # caption height
    assert a.shape[1] == 2 * 112 + 3 * P and K % L == 0 and K > 0
    y0 = K + P + L
    left_panel = a[y0 : y0 + 112, P : P + 112]
    right_panel = a[y0 : y0 + 112, 2 * P + 112 : 2 * P + 224]
    assert np.array_equal(left_panel, np.asarray(Image.open(img)).astype(int))  # the image itself, on the left
    red_l, red_r = right_panel[:, :56, 0], right_panel[:, 56:, 0]  # red = the first principal component
    gap = max(red_l.min() - red_r.max(), red_r.min() - red_l.max())
    assert gap > 100, (red_l.min(), red_l.max(), red_r.min(), red_r.max())  # every left patch apart from every right one


def test_pca_command_foreground_blacks_out_the_background(tmp_path, offline):
    from minidino.utils import viz
    from minidino.cli import main

    a = np.full((112, 112, 3), (40, 140, 60), np.uint8)
    a[28:84, 28:84] = (240, 210, 30)
    Image.fromarray(a).save(tmp_path / "obj.png")
    out = tmp_path / "fg.png"
    assert main(["pca", str(tmp_path / "obj.png"), str(tmp_path / "obj.png"), "-o", str(out), "--size", "112",
                 "--foreground", *RANDOM]) == 0
    pic = np.asarray(Image.open(out)).astype(int)
    P, L = viz.PAD, viz.LABEL_H
    K = pic.shape[0] - (2 * (112 + L) + 3 * P)
    for r in range(2):
        y0 = K + P + r * (112 + L + P) + L
        panel = pic[y0 : y0 + 112, 2 * P + 112 : 2 * P + 224]
        assert (panel[:14] == 0).all() and (panel[:, :14] == 0).all()  # border patches: background, black
        assert (panel[28:84, 28:84].sum(-1) > 0).mean() > 0.9  # the square: foreground, coloured


def test_attention_command_grid(tmp_path, offline, capsys):
    from minidino.utils import viz
    from minidino.cli import main

    img, out = _halves(tmp_path / "halves.png", 56), tmp_path / "att.png"
    assert main(["attention", str(img), "-o", str(out), "--size", "56", "--columns", "3", *RANDOM]) == 0
    pic = Image.open(out)
    P, L = viz.PAD, viz.LABEL_H
    heads = 6  # ViT-S/14: image + 6 heads + mean = 8 panels, 3 per row -> 3 rows
    K = pic.height - (3 * (56 + L) + 4 * P)
    assert pic.width == 3 * 56 + 4 * P + (56 + P) and K > 0 and K % L == 0  # the grid, then the colour bar
    assert f"{heads} heads of block 1" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["pca", "attention", "demo"])
def test_help_explains_each_command(command, capsys):
    from minidino.cli import main

    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert len(text) > 600 and ("principal components" in text or "attention" in text)
    assert "--weights" in text or command != "demo"


if __name__ == "__main__" and "--fix-guide-links" in sys.argv:
    left = _guide_link_problems(fix=True)
    print("left to fix by hand:\n" + "\n".join(left) if left else "every guide link now points at its quote")
