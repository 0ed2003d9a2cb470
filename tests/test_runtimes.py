"""The runtimes porters use, on this CPU: ONNX Runtime (reduced precision, the portable graph for NPU
toolchains), OpenVINO, ExecuTorch (XNNPACK) and CoreML (conversion only: it runs on macOS).

Every export runs on its runtime against eager float32: float32 within 1e-4 max abs (measured
1e-7 to 5e-6), reduced precision by cosine (float16 / bfloat16 > 0.9999, int8 > 0.99: random
weights, see docs/porting.md). Tiny models (one block, width 48, 3 heads) of one backbone per
family of the catalogue (DINOv2's with registers, DINOv3's ViT-S/16), one lowering per
runtime shared by its tests: the figures for the real sizes are benchmarks/porting_figures.py's.
Each runtime's tests skip without its extra.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import minidino
from minidino.catalogue import backbone_entries
from minidino.cli import main
from minidino.conformance import golden
from minidino.conformance.compare import tensor_metrics
from minidino.export.report import read_report
from minidino.export.runners import load_runner
from minidino.export.mode import torch_onnx_quiet
from minidino.export.targets import export_model

TOL = 1e-4
SMALL = dict(depth=1, embed_dim=48, num_heads=3, ffn_hidden_dim=96)


def one_backbone_per_family() -> list[str]:
    """The first backbone of each family with extra tokens (registers / storage), else its first."""
    names = []
    for family in dict.fromkeys(e.family for e in backbone_entries()):
        rows = backbone_entries(family)
        names.append(next((e.name for e in rows if getattr(e.config, "num_register_tokens", 0)), rows[0].name))
    return names


def tiny(name: str, depth: int = 1) -> torch.nn.Module:
    fields = {f.name for f in dataclasses.fields(minidino.get_config(name))}
    return golden.random_model(name, 0, **{k: v for k, v in {**SMALL, "depth": depth}.items() if k in fields})


def images(seed: int, B: int, H: int, W: int) -> torch.Tensor:
    return torch.randn(B, 3, H, W, generator=torch.Generator().manual_seed(seed))


def px(model, *patches: int) -> tuple[int, ...]:
    """Sides in patches -> pixels for this model (14 px for DINOv2, 16 for DINOv3)."""
    return tuple(n * model.patch_size for n in patches)


def against_eager(model, run, x) -> tuple[float, float]:
    """(max abs, min cosine) of a runner's outputs against eager float32, over every output."""
    with torch.no_grad():
        ref = model.forward_features(x)
    got = run(x.numpy())
    figures = [tensor_metrics(ref[k].numpy(), v) for k, v in got.items()]
    return max(f[0] for f in figures), min(f[1] for f in figures)


@pytest.fixture(scope="module", params=one_backbone_per_family())
def model(request):
    return tiny(request.param)


@pytest.fixture(scope="module")
def calibration(model):
    return [images(100 + i, 1, *px(model, 4, 4)) for i in range(4)]


# ------------------------------------------------------------------------------------- export_program
def test_bounds_and_static_modes_are_checked():
    m = minidino.create_model("dinov2_vits14", device="meta", **SMALL)
    for kwargs, message in ((dict(max_batch=2), "max_batch >= 3"), (dict(batch=1, max_batch=4), "not both"),
                            (dict(max_side=112), "smaller than the traced size"),
                            (dict(dynamic=False, max_side=518), "needs dynamic=True"), (dict(batch=0), "positive int")):
        with pytest.raises(ValueError, match=message):
            minidino.export_program(m, **kwargs)


def test_block_outputs_and_a_fully_static_program():
    m = tiny("dinov2_vits14_reg", depth=2)
    program = minidino.export_program(m, dynamic=False, size=(28, 42), batch=1,
                                      outputs=["x_norm_clstoken", "blocks.0.residual2", "blocks.1.residual2"])
    x = images(1, 1, 28, 42)
    cls, b0, b1 = program.module()(x)
    with torch.no_grad():
        blocks = m.get_block_outputs(x)
        assert torch.allclose(b0, blocks[0], atol=1e-6) and torch.allclose(b1, blocks[1], atol=1e-6)
        assert torch.allclose(cls, m(x), atol=1e-6)
    assert program.example_inputs[0][0].shape == (1, 3, 28, 42)
    assert all(isinstance(d, int) for n in program.graph.nodes if n.op == "placeholder" for d in n.meta["val"].shape)


# ------------------------------------------------------------------------------------- ONNX Runtime
@pytest.fixture(scope="module")
def onnx_free(model, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    return export_model(model, tmp_path_factory.mktemp("onnx") / "m.onnx", size=px(model, 4, 4))


@pytest.mark.parametrize("precision,floor", [("float16", 0.9999), ("int8-dynamic", 0.99), ("int8", 0.99)])
def test_onnx_reduced_precision_keeps_the_free_size(model, onnx_free, calibration, precision, floor, tmp_path):
    from minidino.export.onnx_precision import convert_onnx

    path = tmp_path / f"{precision}.onnx"
    convert_onnx(onnx_free.path, path, precision, calibration)
    run = load_runner(path)
    for i, (B, H, W) in enumerate([(1, 4, 4), (2, 3, 5)]):
        mx, cos = against_eager(model, run, images(i, B, *px(model, H, W)))
        print(f"\nonnx {precision} {B}x{H}x{W}: max abs {mx:.1e}, cosine {cos:.6f}")
        assert cos > floor


def test_portable_onnx_for_npu_toolchains(model, tmp_path):
    pytest.importorskip("onnxruntime")
    report = export_model(model, tmp_path / "npu.onnx", portable=True, opset=17, layer_norm="primitive", dynamic=False,
                          size=px(model, 4, 4))
    assert report.opset["ai.onnx"] == 17 and not report.free
    assert report.inputs == {"x": [1, 3, *px(model, 4, 4)]}
    assert not {"LayerNormalization", "Gelu", "Attention"} & set(report.ops), report.ops
    assert report.ops["Softmax"] == 1 and report.ops["Erf"] == 1 and report.ops["MatMul"] == 6
    # Static: DINOv3's rotary tables are baked constants (no Range, Sin, Cos); its rotation is Slice, Mul,
    # Add, Concat and one Neg (rotate_half) each for q and k. DINOv2 rotates nothing.
    assert not {"Range", "Sin", "Cos"} & set(report.ops), report.ops
    assert report.ops.get("Neg", 0) == (2 if model.rope_tables(1, 1) is not None else 0), report.ops
    assert max(v[0] for v in report.check.values()) < TOL, report.check
    with pytest.raises(ValueError, match="opset 17 and above"):
        export_model(model, tmp_path / "old.onnx", portable=True, opset=16, dynamic=False, size=px(model, 4, 4))


# ------------------------------------------------------------------------------------- OpenVINO
@pytest.fixture(scope="module")
def openvino_free(model, tmp_path_factory):
    pytest.importorskip("openvino")
    return export_model(model, tmp_path_factory.mktemp("ov") / "m.xml", size=px(model, 4, 4))


def test_openvino_float32_any_batch_and_size(model, openvino_free):
    assert openvino_free.inputs == {"x": ["batch", 3, "H", "W"]}
    assert max(v[0] for v in openvino_free.check.values()) < TOL
    run = load_runner(openvino_free.path)
    assert run.output_names == tuple(minidino.export.default_outputs(model))  # renamed from 'select_22:0' ...
    for i, (B, H, W) in enumerate([(1, 2, 3), (3, 5, 4), (2, 1, 8)]):
        mx, cos = against_eager(model, run, images(i, B, *px(model, H, W)))
        assert mx < TOL, (B, H, W, mx)


@pytest.mark.parametrize("precision,floor", [("int8", 0.99), ("int8-weights", 0.999)])
def test_openvino_int8_from_the_float32_ir(model, openvino_free, calibration, precision, floor, tmp_path):
    pytest.importorskip("nncf")
    from minidino.export.openvino import quantize_openvino

    report = quantize_openvino(openvino_free.path, tmp_path / "q.xml", precision,
                               calibration if precision == "int8" else None)
    assert {"FakeQuantize", "Convert"} & set(report.ops) and report.free == openvino_free.free
    run = load_runner(report.path)
    for i, (B, H, W) in enumerate([(1, 4, 4), (2, 3, 5)]):  # the int8 IR keeps the free size
        mx, cos = against_eager(model, run, images(i, B, *px(model, H, W)))
        print(f"\nopenvino {precision} {B}x{H}x{W}: max abs {mx:.1e}, cosine {cos:.6f}")
        assert cos > floor


# ------------------------------------------------------------------------------------- ExecuTorch
@pytest.fixture(scope="module")
def executorch_free(model, tmp_path_factory):
    pytest.importorskip("executorch")
    return export_model(model, tmp_path_factory.mktemp("et") / "m.pte", size=px(model, 4, 4), max_batch=4, max_side=px(model, 8)[0])


def test_executorch_float32_free_up_to_the_bounds(model, executorch_free):
    p = model.patch_size
    assert executorch_free.free == {"batch": "1..4", "H": f"{p}..{8 * p}, multiple of {p}", "W": f"{p}..{8 * p}, multiple of {p}"}
    assert "executorch_call_delegate" in executorch_free.ops and "aten.linear.default" in executorch_free.delegated
    run = load_runner(executorch_free.path)
    for i, (B, H, W) in enumerate([(1, 4, 4), (3, 3, 5), (4, 8, 1), (1, 1, 8)]):
        mx, cos = against_eager(model, run, images(i, B, *px(model, H, W)))
        assert mx < TOL, (B, H, W, mx)
    for B, H, W in ((5, 4, 4), (1, 9, 4)):  # past a bound: a clean error, not a crash
        with pytest.raises(RuntimeError, match="failed with error"):
            run(images(9, B, *px(model, H, W)).numpy())


def test_executorch_int8_dynamic(model, tmp_path):
    report = export_model(model, tmp_path / "m.pte", precision="int8-dynamic", dynamic=False, size=px(model, 4, 4), max_batch=4)
    print(f"\nexecutorch int8-dynamic: {report.check}")
    assert min(v[1] for v in report.check.values()) > 0.99
    # every linear in the delegate, DINOv3's key-masked qkv too (its bias folded to a constant for export)
    assert report.delegated["aten.linear.default"] == 4 and not [op for op in report.ops if "quantize" in op], report.ops
    assert report.free == {"batch": "1..4"}


def test_float16_model_keeps_its_layernorms_in_float32(model):
    """What ExecuTorch float16 lowers (its lowering is left to benchmarks/porting_figures.py, for time):
    float16 weights, every LayerNorm in float32, float32 in and out of the exported graph."""
    from minidino.export.executorch import Float32LayerNorm, half_with_float32_layernorm
    from minidino.export.program import _Exportable

    half = half_with_float32_layernorm(model)
    assert half.blocks[0].attn.qkv.weight.dtype == torch.float16
    assert not [m for m in half.modules() if type(m) is torch.nn.LayerNorm and m.weight.dtype != torch.float32]
    assert sum(isinstance(m, Float32LayerNorm) for m in half.modules()) == 3
    x = images(0, 1, *px(model, 4, 4))
    with torch.no_grad():
        outs = _Exportable(half, minidino.export.default_outputs(model))(x)
        ref = model.forward_features(x)
    assert all(o.dtype == torch.float32 for o in outs)
    assert tensor_metrics(ref["x_norm_clstoken"].numpy(), outs[0].numpy())[1] > 0.9999


def test_swiglu_exports_without_a_split():
    """ViT-g's SwiGLU cuts w12's output with two slices: ExecuTorch plans a split's outputs for the traced
    shape, and a free-size ViT-g program then failed at batch 1 ("Attempted to resize a static tensor")."""
    from minidino.export.report import program_ops
    from minidino.models.layers import SwiGLUFFN

    Dim = torch.export.Dim
    program = torch.export.export(SwiGLUFFN(dim=48, hidden_dim=64, bias=True), (torch.randn(2, 5, 48),),
                                  dynamic_shapes=({0: Dim("batch", max=8), 1: Dim("tokens", max=64)},))
    assert not [op for op in program_ops(program) if "split" in op or "chunk" in op]


def test_dinov3_free_program_keeps_to_what_xnnpack_lowers():
    """DINOv3's RoPE in a free-size program: no split (rotate_half slices; a split's list output pinned
    the batch to the traced one) and no unsqueeze with two free dimensions (the patch grid is flattened
    before stacking; XNNPACK: "reshape only supports 1 dynamic dimension"). The key bias is folded
    for the export only: the model keeps its MaskedBiasLinear."""
    from minidino.export.report import program_ops
    from minidino.models.layers import MaskedBiasLinear

    m = tiny("dinov3_vits16")
    program = minidino.export_program(m, size=(64, 64), max_batch=4, max_side=128)
    assert not [op for op in program_ops(program) if "split" in op or "chunk" in op or "unbind" in op]
    for n in program.graph.nodes:
        if n.op == "call_function" and "unsqueeze" in str(n.target):
            assert sum(not isinstance(d, int) for d in n.meta["val"].shape) <= 1, (n, n.meta["val"].shape)
    assert not [k for k in program.state_dict if k.endswith("bias_mask")]
    assert type(m.blocks[0].attn.qkv) is MaskedBiasLinear
    x = images(3, 3, 48, 80)
    with torch.no_grad():
        assert torch.allclose(program.module()(x)[0], m(x), atol=1e-6)


def test_executorch_float16_layernorm_is_still_wrong_upstream():
    """Why float16 keeps its LayerNorms in float32: ExecuTorch's portable fp16 LayerNorm is wrong for
    rows of 256 values or more. If this fails, ExecuTorch fixed it: drop half_with_float32_layernorm."""
    exir = pytest.importorskip("executorch.exir")
    from executorch.runtime import Runtime

    ln = torch.nn.LayerNorm(256).half().eval().requires_grad_(False)
    x = torch.randn(4, 256).half()
    with torch_onnx_quiet():  # torch's own LeafSpec FutureWarning, inside to_edge
        program = exir.to_edge(torch.export.export(ln, (x,))).to_executorch()
    loaded = Runtime.get().load_program(program.buffer)
    (out,) = loaded.load_method("forward").execute([x])
    ref = torch.nn.functional.layer_norm(x.float(), (256,), ln.weight.float(), ln.bias.float(), ln.eps)
    err = float((out.float() - ref).abs().max())
    assert err > 0.1, f"fp16 LayerNorm now right (max abs {err:.1e}): the float32 workaround can go"


# ------------------------------------------------------------------------------------- CoreML
def test_coreml_converts_and_saves(model, tmp_path):
    pytest.importorskip("coremltools")
    report = export_model(model, tmp_path / "m.mlpackage", dynamic=False, size=px(model, 4, 4))
    assert (tmp_path / "m.mlpackage" / "Manifest.json").is_file()
    assert report.inputs == {"x": [1, 3, *px(model, 4, 4)]} and list(report.outputs) == list(minidino.export.default_outputs(model))
    assert report.ops["layer_norm"] == 3 and report.ops["softmax"] == 1 and report.ops["linear"] == 4
    assert any("macOS" in n for n in report.notes) and not report.check
    w8 = export_model(model, tmp_path / "w8.mlpackage", dynamic=False, size=px(model, 4, 4), precision="int8-weights")
    assert w8.ops == {**w8.ops, "linear": 4}
    with pytest.raises(RuntimeError, match="macOS"):
        load_runner(tmp_path / "m.mlpackage")


# ------------------------------------------------------------------------------------- command line
def test_cli_export_to_openvino_bfloat16_prints_the_report(tmp_path, capsys):
    """bfloat16 on OpenVINO: the float32 IR, compiled with the bf16 hint (the loader reads it from the report)."""
    pytest.importorskip("openvino")
    out = tmp_path / "m.xml"
    config = [f"--config={k}={v}" for k, v in SMALL.items()]
    assert main(["export", "dinov2_vits14", "--to", "openvino", "--out", str(out), "--static", "28x28",
                 "--precision", "bf16", "--weights", "random:0", *config]) == 0
    printed = capsys.readouterr()
    assert "RANDOM WEIGHTS" in printed.err
    assert "openvino, bfloat16" in printed.out and "ops " in printed.out and "check  x_norm_clstoken" in printed.out
    assert out.is_file() and out.with_suffix(".bin").is_file()
    report = json.loads((tmp_path / "m.xml.report.json").read_text())
    assert report["inputs"] == {"x": ["batch", 3, 28, 28]} and report["precision"] == "bfloat16"
    assert min(v[1] for v in read_report(out).check.values()) > 0.999


@pytest.mark.parametrize("args,message", [
    (["--onnx", "a.onnx", "--to", "openvino"], "give one or the other"),
    (["--to", "coreml", "--out", "a.mlpackage"], "needs a static image size"),
    (["--out", "a.xml", "--precision", "int8-dynamic"], "openvino offers"),
    (["--out", "a.onnx", "--precision", "int8"], "--calibration"),
    (["--out", "a.onnx", "--max-batch", "4"], "bound ExecuTorch"),
    (["--out", "a.bin"], "cannot tell the runtime"),
])
def test_cli_export_refuses_bad_options_before_any_work(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["export", "dinov2_vits14", "--weights", "random:0", *args])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cli_accuracy_per_block(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from PIL import Image

    for i in range(2):
        Image.fromarray((np.random.default_rng(i).random((60, 80, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.png")
    config = [f"--config={k}={v}" for k, v in {**SMALL, "depth": 2}.items()]
    args = ["accuracy", "dinov2_vits14", str(tmp_path), "--to", "onnx", "--precision", "int8-dynamic", "--size", "56x56",
            "--static", "--weights", "random:0", *config]
    assert main(args) == 0
    out = capsys.readouterr().out
    for row in ("x_norm_clstoken", "x_norm_patchtokens", "blocks.0.residual2", "blocks.1.residual2"):
        assert row in out
    assert "RANDOM WEIGHTS" in out and "outlier tokens" in out
    assert main(args + ["--min-cosine", "0.99999999"]) == 8  # int8 is not that close
