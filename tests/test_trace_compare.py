"""`minidino trace` and `minidino compare`: the names and order of a trace, the three dump formats,
and the point of it all: a deliberately broken port (q and k swapped in one block; GELU replaced by
its tanh approximation) is caught at the first tensor it gets wrong, and nowhere before."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from minidino.cli import main
from minidino.conformance import golden
from minidino.conformance.dumps import compare_dumps, first_failure, format_comparison, load_dump, save_dump
from minidino.conformance.trace import trace_model, trace_names


@pytest.fixture(scope="module")
def model():
    return golden.random_model("dinov2_vits14", 0, depth=2)  # generated weights: LayerScale and biases not trivial


@pytest.fixture(scope="module")
def x():
    return golden.generate_images(0, 1, (1, 3, 56, 70))  # (1, 3, 56, 70): a 4 x 5 grid, position embedding resized


@pytest.fixture(scope="module")
def reference(model, x):
    return trace_model(model, x)


def test_trace_names_shapes_and_values(model, x, reference):
    assert list(reference) == trace_names(2)
    assert reference["patch_embed"].shape == (1, 20, 384) and reference["tokens"].shape == (1, 21, 384)
    with torch.no_grad():
        feats = model.forward_features(x)
        blocks = model.get_block_outputs(x)
    assert torch.equal(reference["norm"][:, 0], feats["x_norm_clstoken"])  # the very tensors of the forward
    assert torch.equal(reference["blocks.1.residual2"], feats["x_prenorm"])
    assert torch.equal(reference["blocks.0.residual2"], blocks[0])
    blk = model.blocks[0]
    with torch.no_grad():  # residual1 is the block's own first addition
        assert torch.equal(reference["blocks.0.residual1"], reference["tokens"] + blk.ls1(blk.attn(blk.norm1(reference["tokens"]))))


def broken(model, what: str):
    """A copy of the model with one deliberate porting bug."""
    import copy

    port = copy.deepcopy(model)
    if what == "qk_swapped":  # block 1 reads the qkv rows as [k; q; v]
        qkv = port.blocks[1].attn.qkv
        D = qkv.weight.shape[1]
        with torch.no_grad():
            for t in (qkv.weight, qkv.bias):
                t.copy_(torch.cat([t[D:2 * D], t[:D], t[2 * D:]]))
    else:  # block 0's GELU is the tanh approximation
        mlp = port.blocks[0].mlp
        mlp.forward = types.MethodType(lambda self, h: self.fc2(F.gelu(self.fc1(h), approximate="tanh")), mlp)
    return port


@pytest.mark.parametrize("bug,where", [("qk_swapped", "blocks.1.attn"), ("tanh_gelu", "blocks.0.mlp")])
def test_compare_names_the_first_broken_tensor(model, x, reference, bug, where):
    port = trace_model(broken(model, bug), x)
    rows = compare_dumps(reference, port)  # the default tolerance, 1e-4 x max(1, max |reference|)
    bad = first_failure(rows)
    print(f"\n{bug}:\n{format_comparison(rows)}")
    assert bad is not None and bad.name == where, format_comparison(rows)
    before = [r for r in rows[: [r.name for r in rows].index(where)]]
    assert all(r.status == "ok" and r.max_abs == 0.0 for r in before)  # exactly equal up to the bug
    assert rows[-1].max_abs > 0.0  # and the damage reaches the output


def test_dump_formats_round_trip(reference, tmp_path):
    for name in ("t.safetensors", "t.npz", "t_dir"):
        path = save_dump(reference, tmp_path / name)
        back = load_dump(path)
        assert list(back) == list(reference)
        assert all(np.array_equal(back[k], reference[k].numpy()) for k in reference)


def test_a_c_port_writes_raw_files_and_a_manifest(reference, tmp_path):
    """What a C port does: fwrite each tensor as float32, and a manifest.json naming them. Shapes may
    drop the batch dimension of 1; names the port does not dump are skipped."""
    port = tmp_path / "port"
    port.mkdir()
    entries = []
    for name in ("patch_embed", "blocks.0.attn", "norm"):
        a = reference[name].numpy()[0]  # (N, D): no batch dimension
        a.astype("<f4").tofile(port / f"{name}.bin")
        entries.append({"name": name, "file": f"{name}.bin", "shape": list(a.shape)})
    (port / "manifest.json").write_text(json.dumps({"format": "minidino-dump", "version": 1, "tensors": entries}))
    rows = compare_dumps(reference, load_dump(port))
    assert [r.name for r in rows if r.status == "ok"] == ["patch_embed", "blocks.0.attn", "norm"]
    assert first_failure(rows) is None
    (port / "norm.bin").write_bytes(b"\0" * 12)  # truncated
    with pytest.raises(ValueError, match="bytes, but shape"):
        load_dump(port)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "img.png"
    Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_cli_trace_then_compare(model, image, tmp_path, capsys):
    ref = tmp_path / "ref.safetensors"
    args = ["trace", "dinov2_vits14", str(image), "--out", str(ref), "--size", "56x70", "--config", "depth=2",
            "--weights", "random:0"]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "RANDOM WEIGHTS" in out.err and "16 tensors" in out.out
    trace = load_dump(ref)
    assert list(trace) == trace_names(2) and trace["input"].shape == (1, 3, 56, 70)
    x = torch.from_numpy(trace["input"])  # the port gets exactly the preprocessed input
    port = tmp_path / "port.npz"
    save_dump(trace_model(broken(model, "qk_swapped"), x), port)
    assert main(["compare", str(ref), str(port)]) == 8  # a tensor past the tolerance
    assert "FIRST FAILURE: blocks.1.attn" in capsys.readouterr().out
    save_dump(trace_model(model, x), port)
    assert main(["compare", str(ref), str(port)]) == 0
    assert "all 16 compared tensors within" in capsys.readouterr().out


def test_cli_compare_refuses_what_it_cannot_read(tmp_path, capsys):
    save_dump({"a": np.ones(2)}, tmp_path / "a.npz")
    (tmp_path / "empty").mkdir()
    for args, message in ((["compare", str(tmp_path / "a.npz"), str(tmp_path / "empty")], "needs manifest.json"),
                          (["compare", str(tmp_path / "a.npz"), str(tmp_path / "nope.npz")], "no such file"),
                          (["compare", str(tmp_path / "a.npz"), str(tmp_path / "a.txt")], "a dump is")):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2 and message in capsys.readouterr().err
    save_dump({"b": np.ones(2)}, tmp_path / "b.npz")
    with pytest.raises(SystemExit) as e:
        main(["compare", str(tmp_path / "a.npz"), str(tmp_path / "b.npz")])
    assert e.value.code == 2 and "nothing compared" in capsys.readouterr().err
