"""The dino.txt commands (zeroshot, embed-text, segment, similar --text) on a tiny random dino.txt.

Random weights (the golden generator) check the plumbing, not the answers; the vocabulary is
CLIP's, from the clip-anytorch wheel (the tests skip without it or without ftfy / regex).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from minidino.cli import main
from minidino.cli.embed import read_embeddings

from test_dinotxt import VOCAB, needs_text_extra, needs_vocab

TINY = ["--weights", "random:0"] + [a for kv in ("vision_embed_dim=64", "vision_num_heads=2", "vision_ffn_hidden_dim=256",
                                                 "depth=1", "embed_dim=128", "head_ffn_hidden_dim=176", "text_width=64",
                                                 "text_num_heads=2", "text_layers=1") for a in ("--config", kv)]

pytestmark = [needs_vocab, needs_text_extra]


@pytest.fixture
def images(tmp_path):
    a = np.zeros((120, 160, 3), np.uint8)
    a[:, :80] = (200, 30, 30)
    a[:, 80:] = (30, 30, 200)
    a[40:80, 60:100] = (30, 200, 30)
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 70, 3), dtype=np.uint8)).save(tmp_path / "b.jpg")
    return [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]


def run(argv, capsys):
    code = main(argv + TINY + ["--vocab", str(VOCAB), "--device", "cpu"])
    return code, capsys.readouterr().out


def test_zeroshot_prints_top_labels_with_probabilities(images, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("# animals\na cat\na dog\n\na car\n")
    code, out = run(["zeroshot", *images, "--labels-file", str(labels), "--template", "a photo of a {}",
                     "--template", "a {} in the picture", "--top", "3", "--size", "56"], capsys)
    assert code == 0
    notice, *blocks = out.strip().split("\n")
    assert notice.startswith("# dinotxt, RANDOM WEIGHTS")  # random weights: said before the results (issue 21)
    assert blocks[0] == images[0] and blocks[4] == images[1]
    for block in (blocks[1:4], blocks[5:8]):
        probs = [float(re.match(r"\s*([\d.]+)%", line).group(1)) for line in block]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 100) < 0.05  # all 3 labels: sums to 100%
        assert {line.split("%  ")[1] for line in block} == {"a cat", "a dog", "a car"}


def test_zeroshot_bad_labels_and_templates(images, capsys):
    for extra, message in ((["--labels", " , ,"], "no labels"), ([], "no labels"),
                           (["--labels", "a,b,a"], "given twice"), (["--labels", "a,b", "--template", "no slot"], "exactly once")):
        with pytest.raises(SystemExit, match=message):
            run(["zeroshot", images[0], *extra], capsys)
    with pytest.raises(SystemExit, match="has no text encoder"):
        main(["zeroshot", images[0], "--labels", "a,b", "--model", "dinov2_vits14", "--weights", "random:0",
              "--config", "depth=1", "--vocab", str(VOCAB)])
    code, out = run(["zeroshot", "nothing.png", images[0], "--labels", "a,b"], capsys)  # named, skipped: status 1
    assert code == 1 and out.splitlines()[1] == images[0] and "nothing.png" not in out


def test_segment_writes_a_picture_with_a_legend(images, tmp_path, capsys):
    out_png = tmp_path / "seg.png"
    code, out = run(["segment", images[0], "--labels", "red,green,blue,background", "-o", str(out_png), "--size", "112"], capsys)
    assert code == 0 and out_png.is_file()
    assert out.startswith("# dinotxt, RANDOM WEIGHTS")
    shares = [float(line.split("%")[0]) for line in out.splitlines() if "%" in line]
    assert len(shares) == 4 and abs(sum(shares) - 100) < 0.5
    pic = Image.open(out_png)
    assert pic.width > 3 * 112 and pic.height > 84  # image, overlay, legend side by side


def test_embed_then_similar_by_text_and_embed_text(images, tmp_path, capsys):
    index = tmp_path / "index.safetensors"
    assert main(["embed", *images, "--model", "dinotxt", "--out", str(index), "-q", "--size", "56", *TINY]) == 0
    tensors, meta = read_embeddings(index)
    assert tensors["cls"].shape == (2, 128) and meta["model"] == "dinotxt"
    capsys.readouterr()
    assert main(["similar", "--text", "a red square", str(index), "--vocab", str(VOCAB), "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "a red square" in out and out.count(".png") + out.count(".jpg") == 2

    # the same ranking from embed-text's output and the stored image embeddings
    queries = tmp_path / "q.safetensors"
    code, _ = run(["embed-text", "a red square", "a dog", "--out", str(queries)], capsys)
    t, m = read_embeddings(queries)
    assert code == 0 and t["text"].shape == (2, 128) and m["names"] == ["a red square", "a dog"]
    assert torch.allclose(t["text"].norm(dim=-1), torch.ones(2), atol=1e-6)
    cos = torch.nn.functional.cosine_similarity(tensors["cls"], t["text"][:1])
    best = meta["names"][int(cos.argmax())]
    assert out.startswith("# dinotxt, RANDOM WEIGHTS")  # an index of random weights says so first
    assert out.splitlines()[3].endswith(best)

    plain = tmp_path / "plain.safetensors"
    assert main(["embed", images[0], "--model", "dinov2_vits14", "--out", str(plain), "-q", "--size", "28",
                 "--weights", "random:0", "--config", "depth=1"]) == 0
    with pytest.raises(SystemExit, match="needs an index of dino.txt"):
        main(["similar", "--text", "a cat", str(plain), "--vocab", str(VOCAB)])


def test_the_vocabulary_on_the_machine_is_used_without_a_download(images, tmp_path, monkeypatch, capsys):
    """An installed CLIP package's copy (clip-anytorch here), checked by digest: no cache, no network needed."""
    from conftest import offline_workdir

    from minidino.weights import vocab

    offline_workdir(tmp_path, monkeypatch, "network access attempted")
    found = vocab.find_vocab()
    assert found is not None and found.name == "bpe_simple_vocab_16e6.txt.gz" and "cache" not in str(found)
    assert main(["zeroshot", images[0], "--labels", "a,b", *TINY, "--device", "cpu", "--size", "56"]) == 0
    assert images[0] in capsys.readouterr().out


def test_without_a_vocabulary_offline_the_text_commands_say_how_to_get_one_before_any_work(images, tmp_path, monkeypatch,
                                                                                          capsys):
    from conftest import offline_workdir

    import minidino.cli.text as text
    from minidino.cli import errors
    from minidino.weights import vocab

    offline_workdir(tmp_path, monkeypatch, "no network here")
    monkeypatch.setattr(vocab, "_SHIPPED_BY", ())  # no CLIP package on this machine
    monkeypatch.setattr(text, "dinotxt_from_args", lambda *a, **k: pytest.fail("the model was built"))
    for argv in (["zeroshot", images[0], "--labels", "a,b"], ["segment", images[0], "--labels", "a,b", "-o", "s.png"],
                 ["embed-text", "a dog", "-o", "t.npz"]):
        with pytest.raises(SystemExit) as e:
            main(argv + TINY)
        err = capsys.readouterr().err.strip()
        assert e.value.code == errors.EXIT_DOWNLOAD and "\n" not in err, err
        assert "pip install --no-deps clip-anytorch" in err and "--vocab" in err
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "t.npz").exists()
