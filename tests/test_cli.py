"""The `minidino` command: embed (corrupt files, shards + merge, resume), similar, info, --help.

Every run uses a 1-block, 48-wide model with RANDOM weights from the golden generator
(`--weights random:SEED`), tiny images and --size 28 (2 x 2 patches), so the file runs in seconds.
"""

from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from minidino.cli import main
from minidino.cli.embed import embed_transform, read_embeddings
from minidino.models.dinov2 import DinoVisionTransformer

TINY = ["--config", "depth=1", "--config", "embed_dim=48", "--config", "num_heads=3", "--config", "ffn_hidden_dim=96"]
ORIGINAL_FORWARD_FEATURES = DinoVisionTransformer.forward_features
RUN = ["--weights", "random:7", *TINY, "--size", "28", "--batch-size", "2", "-q"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def corpus(tmp_path):
    """9 small images in a folder tree, one corrupt .jpg among them, and a .txt file."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    (root / "b").mkdir(parents=True)
    for i in range(8):
        sub = root / "b" if i % 3 == 0 else root
        Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)).save(sub / f"img{i}.png")
    (root / "b" / "corrupt.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    (root / "notes.txt").write_text("not an image, and not listed: .txt files in folders are ignored")
    return root


def good_files(root):
    return sorted(str(p) for p in root.rglob("img*.png"))


def counting(monkeypatch, fail_after: int | None = None):
    """Count forward_features calls (each = one batch); optionally crash after some, like a killed run."""
    calls = []
    original = ORIGINAL_FORWARD_FEATURES  # not the attribute: it may already be a wrapper of an earlier call

    def wrapped(self, x, *a, **k):
        if fail_after is not None and len(calls) >= fail_after:
            raise RuntimeError("simulated crash")
        calls.append(x.shape[0])
        return original(self, x, *a, **k)
    monkeypatch.setattr(DinoVisionTransformer, "forward_features", wrapped)
    return calls


# ------------------------------------------------------------------ embed
def test_embed_folder_writes_every_good_image_and_names_the_bad_one(corpus, tmp_path, capsys):
    out = tmp_path / "emb.safetensors"
    rc = main(["embed", str(corpus), "--out", str(out), "--tokens", "both", *RUN])
    assert rc == 1  # something was skipped
    captured = capsys.readouterr()
    assert "corrupt.jpg" in captured.err and "corrupt.jpg" in captured.out
    tensors, meta = read_embeddings(out)
    names = meta["names"]
    assert sorted(names) == good_files(corpus) and len(names) == 8
    assert meta["skipped"][0][0].endswith("corrupt.jpg")
    assert tensors["cls"].shape == (8, 48) and tensors["patch"].shape == (8, 4, 48)
    assert meta["model"] == "dinov2_vits14" and meta["weights"] == "random:7" and meta["config"]["depth"] == 1
    assert not (tmp_path / "emb.safetensors.parts").exists()  # checkpoints removed after the final write
    # The stored rows are the model's outputs for those files, in that order.
    from minidino.conformance.golden import random_model
    from minidino.utils.transforms import load_image

    model = random_model("dinov2_vits14", 7, depth=1, embed_dim=48, num_heads=3, ffn_hidden_dim=96)
    x = torch.stack([embed_transform(28)(load_image(n)) for n in names])
    with torch.no_grad():
        f = model.forward_features(x)
    assert torch.allclose(tensors["cls"], f["x_norm_clstoken"], atol=1e-5)
    assert torch.allclose(tensors["patch"], f["x_norm_patchtokens"], atol=1e-5)


def test_embed_all_good_exits_zero_and_list_files_work(corpus, tmp_path):
    files = good_files(corpus)
    lst = tmp_path / "list.txt"
    rel = [str(__import__("os").path.relpath(f, tmp_path)) for f in files[:3]]
    lst.write_text("# three images\n" + "\n".join(rel + rel[:1]) + "\n\n")  # relative to the list, one duplicate
    out = tmp_path / "e.npz"
    assert main(["embed", str(lst), files[5], "--out", str(out), *RUN]) == 0
    tensors, meta = read_embeddings(out)
    assert meta["names"] == [str(tmp_path / r) for r in rel] + [files[5]]
    assert list(tensors) == ["cls"] and tensors["cls"].shape == (4, 48)
    with np.load(out) as z:  # plain numpy can read it too
        assert z["cls"].shape == (4, 48) and list(z["names"]) == meta["names"]


@pytest.mark.parametrize("fmt", [".safetensors", ".npz", ".npy"])
def test_shards_merged_equal_a_single_run_exactly(corpus, tmp_path, fmt):
    tokens = "cls" if fmt == ".npy" else "both"
    single = tmp_path / f"single{fmt}"
    assert main(["embed", str(corpus), "--out", str(single), "--tokens", tokens, *RUN]) == 1
    out = tmp_path / f"sh{fmt}"
    shard_files = []
    for i in range(3):
        rc = main(["embed", str(corpus), "--out", str(out), "--tokens", tokens, "--shard", f"{i}/3", *RUN])
        shard_files.append(tmp_path / f"sh.shard-{i}-of-3{fmt}")
        assert shard_files[-1].is_file() and rc in (0, 1)
    merged = tmp_path / f"merged{fmt}"
    assert main(["merge", *map(str, reversed(shard_files)), "--out", str(merged)]) == 1  # any order; 1: a skipped file
    t1, m1 = read_embeddings(single)
    t2, m2 = read_embeddings(merged)
    assert m1 == m2  # names, order, skipped files, settings
    assert t1.keys() == t2.keys() and all(torch.equal(t1[k], t2[k]) for k in t1)
    shard_sizes = [len(read_embeddings(f)[1]["names"]) for f in shard_files]
    assert sum(shard_sizes) == 8 and min(shard_sizes) >= 2  # the work was really split


def test_merge_refuses_incomplete_or_mixed_shards(corpus, tmp_path):
    out = tmp_path / "e.safetensors"
    for i in range(2):
        main(["embed", str(corpus), "--out", str(out), "--shard", f"{i}/2", *RUN])
    s0, s1 = tmp_path / "e.shard-0-of-2.safetensors", tmp_path / "e.shard-1-of-2.safetensors"
    with pytest.raises(SystemExit, match="missing 1/2"):
        main(["merge", str(s0), "--out", str(tmp_path / "m.safetensors")])
    other = tmp_path / "o.safetensors"
    main(["embed", str(corpus), "--out", str(other), "--shard", "1/2", *RUN[:-1], "--size", "42", "-q"])
    with pytest.raises(SystemExit, match="size"):
        main(["merge", str(s0), str(tmp_path / "o.shard-1-of-2.safetensors"), "--out", str(tmp_path / "m.safetensors")])
    assert main(["merge", str(s0), str(s1), "--out", str(tmp_path / "m.safetensors")]) == 1  # corrupt.jpg was skipped


def test_shard_auto_reads_torchrun_environment(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    # Rank 1 holds the corrupt file; it still exits 0, since a failing rank makes torchrun kill the others.
    assert main(["embed", str(corpus), "--out", str(tmp_path / "e.npz"), "--shard", "auto", *RUN]) == 0
    _, meta = read_embeddings(tmp_path / "e.shard-1-of-2.npz")
    assert meta["shard"] == [1, 2] and meta["inputs_total"] == 9 and meta["skipped"][0][0].endswith("corrupt.jpg")


def test_resume_computes_only_what_is_missing(corpus, tmp_path, monkeypatch, capsys):
    ref = tmp_path / "ref.safetensors"
    main(["embed", str(corpus), "--out", str(ref), "--tokens", "both", *RUN])
    out = tmp_path / "e.safetensors"
    args = ["embed", str(corpus), "--out", str(out), "--tokens", "both", "--checkpoint-every", "4", *RUN]
    # 9 inputs in batches of 2 = 5 batches; checkpoints every 2 batches -> parts of batches {0,1}, {2,3}, {4}.
    # Walk order: imgs/img{1,2,4,5,7}.png, then imgs/b/corrupt.jpg, imgs/b/img{0,3,6}.png: batch 2 holds
    # img7 and the corrupt file, so the model sees 1 image there.
    calls = counting(monkeypatch, fail_after=3)  # killed during the second checkpoint
    with pytest.raises(SystemExit, match="simulated crash") as crash:  # one line on stderr, no traceback
        main(args)
    assert crash.value.code == 70  # EXIT_INTERNAL: an unexpected exception
    assert calls == [2, 2, 1] and not out.exists()
    parts = sorted(p.name for p in (tmp_path / "e.safetensors.parts").iterdir())
    assert parts == ["manifest.json", "part-000000000.safetensors"]
    with pytest.raises(SystemExit, match="--resume"):  # no silent restart over checkpoints
        main(args)
    with pytest.raises(SystemExit, match="size differ"):  # and no resume with other settings
        main(args + ["--size", "42", "--resume"])
    capsys.readouterr()
    calls = counting(monkeypatch)
    assert main(args + ["--resume"]) == 1
    assert calls == [1, 2, 1]  # batches 2, 3, 4 only (4 images of checkpoint 0 not recomputed)
    assert "resume: 1 of 3 checkpoints already written (4 images)" in capsys.readouterr().err
    t1, m1 = read_embeddings(ref)
    t2, m2 = read_embeddings(out)
    assert m1 == m2 and all(torch.equal(t1[k], t2[k]) for k in t1)
    calls = counting(monkeypatch)
    assert main(args + ["--resume"]) == 1  # complete already: nothing to do (still reports the skipped file)
    assert calls == []
    assert "already complete" in capsys.readouterr().err


def test_embed_output_errors(corpus, tmp_path):
    with pytest.raises(SystemExit, match="npy"):
        main(["embed", str(corpus), "--out", str(tmp_path / "e.npy"), "--tokens", "both", *RUN])
    with pytest.raises(SystemExit, match="must end in"):
        main(["embed", str(corpus), "--out", str(tmp_path / "e.pt"), *RUN])
    with pytest.raises(SystemExit, match="multiple of the patch size"):
        main(["embed", str(corpus), "--out", str(tmp_path / "e.npz"), *RUN, "--size", "30"])


def test_npy_output_has_a_metadata_sidecar(corpus, tmp_path):
    out = tmp_path / "p.npy"
    main(["embed", str(corpus), "--out", str(out), "--tokens", "patch", *RUN])
    assert np.load(out).shape == (8, 4, 48)
    meta = json.loads((tmp_path / "p.npy.json").read_text())
    assert len(meta["names"]) == 8 and meta["tokens"] == "patch"


# ------------------------------------------------------------------ similar
def test_similar_by_name_and_by_image(corpus, tmp_path, capsys):
    index = tmp_path / "e.safetensors"
    main(["embed", str(corpus), "--out", str(index), *RUN])
    tensors, meta = read_embeddings(index)
    names, emb = meta["names"], torch.nn.functional.normalize(tensors["cls"], dim=1)
    capsys.readouterr()
    assert main(["similar", names[2], str(index), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# dinov2_vits14, RANDOM WEIGHTS")  # an index of random weights says so first
    rows = [line.split() for line in out.splitlines()[3:]]
    cos = emb @ emb[2]
    cos[2] = -2
    expect = torch.topk(cos, 3)
    assert [r[2] for r in rows] == [names[j] for j in expect.indices.tolist()]  # the query itself is left out
    assert np.allclose([float(r[1]) for r in rows], expect.values.numpy(), atol=1e-4)
    # An image file outside the index is embedded with the model, weights and size the index records.
    query = tmp_path / "query.png"
    shutil.copy(names[5], query)
    assert main(["similar", str(query), str(index), "--top", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[3:]]
    assert "RANDOM WEIGHTS" in out and rows[0][2] == names[5] and float(rows[0][1]) > 0.9999


# ------------------------------------------------------------------ info
def test_info_counts_match_the_model_and_the_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    from minidino import create_model
    from minidino.cli.info import model_cost

    for name, overrides in [("dinov2_vits14_reg", dict(depth=2, embed_dim=48, num_heads=3, ffn_hidden_dim=96)),
                            ("dinov2_vitg14", dict(depth=1, embed_dim=48, num_heads=3, ffn_hidden_dim=64)),
                            ("dinov2_vits14_lc", dict(depth=4, embed_dim=48, num_heads=3, ffn_hidden_dim=96))]:
        model = create_model(name, **overrides)
        backbone = getattr(model, "backbone", model)
        backbone.attn_impl = "explicit"  # the flop counter does not see the fused CPU attention kernel
        cost = model_cost(model, 28, 42)
        assert cost.params == sum(p.numel() for p in model.parameters())
        assert cost.tokens == 1 + backbone.num_register_tokens + 6 and cost.grid == (2, 3)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.randn(1, 3, 28, 42))
        assert cost.total_flops == counter.get_total_flops(), (name, cost.flops, counter.get_total_flops())


def test_info_prints_the_published_figures(capsys):
    assert main(["info", "dinov2_vitg14"]) == 0
    out = capsys.readouterr().out
    assert "1,136,480,768" in out  # SPEC: g 1136.48M
    assert main(["info", "dinov2_vitb14_reg", "--size", "518x742"]) == 0
    out = capsys.readouterr().out
    assert "86,58" in out  # SPEC: B 86.58M
    assert "37x53 = 1961 patches" in out and "1966 = 1 class + 4 registers" in out
    with pytest.raises(SystemExit, match="multiples of the patch size"):
        main(["info", "dinov2_vits14", "--size", "225"])


@pytest.mark.skipif(not __import__("minidino.utils.memory").utils.memory.cpu_peak_supported(), reason="needs Linux /proc")
@pytest.mark.parametrize("name, size, batch", [("dinov2_vits14", "224", 4), ("dinov2_vitg14", "126x98", 2)])
def test_info_memory_estimate_agrees_with_the_measurement(name, size, batch):
    """The estimate (activations + outputs) within 20% of the measured peak, for both attention paths.
    In a process of its own: --measure changes the process's malloc settings."""
    import re
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "minidino", "info", name, "--size", size, "--batch-size", str(batch),
                        "--config", "depth=2", "--measure"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    mib = lambda pattern: float(re.search(pattern, r.stdout).group(1).replace(",", ""))  # noqa: E731
    outputs = mib(r"outputs\s+([\d,.]+) MiB")
    for impl, label in (("fused", "fused attention"), ("explicit", "explicit attention")):
        estimate = mib(label + r" \(\w+\)\s+([\d,.]+) MiB") + outputs
        measured = mib(impl + r" ([\d,.]+) MiB")
        assert 0.8 <= measured / estimate <= 1.2, (impl, estimate, measured, r.stdout)


# ------------------------------------------------------------------ help
@pytest.mark.parametrize("command, words", [
    ("embed", ["--tokens", "--shard", "--resume", "--batch-size", "--weights", "random", "merge"]),
    ("merge", ["shard", "--out"]),
    ("similar", ["cosine", "--top", "index"]),
    ("info", ["FLOPs", "parameter", "--size"]),
])
def test_help_explains_each_command(command, words, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert len(text) > 500 and all(w in text for w in words), text


def test_top_level_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(c in text for c in ("embed", "merge", "similar", "info"))
