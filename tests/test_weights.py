"""Checkpoint layouts: every layout loads to identical outputs, transformers agrees, bad files are refused.

Weights come from the golden generator (minidino.conformance.golden), on truncated models, so nothing is
downloaded and the file runs in seconds. "Identical" means max abs difference 0.0.
"""

from __future__ import annotations

import argparse
import functools
import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import minidino
from minidino import DINOHead, create_model, load_weights, save_weights
from minidino.conformance import golden
from minidino import weights as W
from minidino.models.config import swiglu_hidden_dim

# Truncated architectures: GELU without registers, GELU with registers, a narrow SwiGLU giant with registers.
ARCHS = {
    "vits14": ("dinov2_vits14", dict(depth=2)),
    "vits14_reg": ("dinov2_vits14_reg", dict(depth=2)),
    "vitg14_reg_narrow": ("dinov2_vitg14_reg", dict(depth=2, embed_dim=64, num_heads=4, ffn_hidden_dim=swiglu_hidden_dim(64))),
}


def build(arch: str, device: str = "meta"):
    name, kw = ARCHS[arch]
    return create_model(name, device=device, **kw)


@functools.lru_cache(maxsize=None)
def _golden_sd(arch: str, seed: int) -> dict[str, torch.Tensor]:
    model = build(arch)
    return golden.generate_for(model, seed)


def golden_sd(arch: str, seed: int = 7) -> dict[str, torch.Tensor]:
    """Generated weights (cached; a fresh dict each call, the tensors are never modified in place)."""
    return dict(_golden_sd(arch, seed))


def images(size: tuple[int, int] = (56, 42), B: int = 2) -> torch.Tensor:
    return golden.generate_images(11, 1, (B, 3, *size))


@torch.no_grad()
def features(model, x=None, masks=None) -> dict:
    return model.forward_features(images() if x is None else x, masks=masks)


def assert_identical(a: dict, b: dict) -> None:
    for key in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm"):
        assert torch.equal(a[key], b[key]), f"{key}: max abs {(a[key] - b[key]).abs().max().item()}"


@functools.lru_cache(maxsize=None)
def reference(arch: str, seed: int = 7) -> dict:
    model = build(arch)
    model.load_state_dict(golden_sd(arch, seed), strict=True, assign=True)
    return features(model.eval())


# ------------------------------------------------------------------ layouts built by hand from the official one
def as_chunked(sd, chunks: int = 2):
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    per = depth // chunks
    return {(f"blocks.{int(k.split('.')[1]) // per}.{k[len('blocks.'):]}" if k.startswith("blocks.") else k): v
            for k, v in sd.items()}


def as_timm(sd):
    """timm's layout (SPEC.md section 2): no mask_token, reg_token, class position folded for register models."""
    out = {k: v.clone() for k, v in sd.items() if k != "mask_token"}
    if "register_tokens" in out:
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]
        out["pos_embed"] = out["pos_embed"][:, 1:].clone()  # (1, M*M, D)
    for k in [k for k in out if ".mlp.w" in k]:  # timm's packed SwiGLU: fc1 = w12, fc2 = w3
        out[k.replace("mlp.w12", "mlp.fc1").replace("mlp.w3", "mlp.fc2")] = out.pop(k)
    return out


LAYOUTS = {
    "official": lambda sd: dict(sd),
    "chunked": as_chunked,
    "huggingface": lambda sd: W.to_huggingface(sd),
    "huggingface_hub_names": lambda sd: W.to_huggingface(sd, hub_names=True),
    "timm": as_timm,
    "hub_lc_wrapper_backbone": lambda sd: {"backbone." + k: v for k, v in sd.items()},
    "teacher_checkpoint": lambda sd: {"teacher": {**{"backbone." + k: v for k, v in as_chunked(sd).items()},
                                                  "dino_head.mlp.0.weight": torch.zeros(8, 4)}},
    "training_state": lambda sd: {"model": {**{"teacher.backbone." + k: v for k, v in sd.items()},
                                            **{"student.backbone." + k: v * 0 for k, v in sd.items()}},
                                  "iteration": torch.tensor(3)},
    "ddp_module_prefix": lambda sd: {"module." + k: v for k, v in sd.items()},
}
EXPECTED_LAYOUT = {"official": "official", "chunked": "chunked", "huggingface": "huggingface",
                   "huggingface_hub_names": "huggingface", "timm": "timm", "hub_lc_wrapper_backbone": "official",
                   "teacher_checkpoint": "training (teacher) + chunked", "training_state": "training (model/teacher) + official",
                   "ddp_module_prefix": "official"}


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_layout_gives_identical_outputs(arch, layout):
    sd = golden_sd(arch)
    model = build(arch)
    report = load_weights(model, LAYOUTS[layout](sd))
    assert report.layout == EXPECTED_LAYOUT[layout]
    assert report.loaded == ["backbone"]
    assert not any(p.is_meta for p in model.parameters())
    assert_identical(features(model), reference(arch))
    if layout != "timm":
        assert torch.equal(model.state_dict()["mask_token"], sd["mask_token"])


@pytest.mark.parametrize("arch", ["vits14", "vits14_reg"])
def test_timm_matches_at_other_sizes_and_masks_raise(arch, tmp_path):
    model = build(arch)
    report = load_weights(model, as_timm(golden_sd(arch)))
    assert report.mask_token_missing
    ref = build(arch)
    ref.load_state_dict(golden_sd(arch), assign=True)
    for size in ((224, 224), (70, 98)):
        x = images(size, B=1)
        assert_identical(features(model, x), features(ref.eval(), x))
    masks = torch.zeros(1, 4 * 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="no mask_token.*timm"):
        model.forward_features(images((56, 42), B=1), masks=masks)
    # Saved in the official layout the file has no mask token either, so the reload refuses masks too.
    path = save_weights(model, tmp_path / "timm.safetensors")
    assert "mask_token" not in load_file(str(path))
    again = build(arch)
    assert load_weights(again, path).mask_token_missing
    with pytest.raises(ValueError, match="no mask_token"):
        again.forward_features(images((56, 42), B=1), masks=masks)


def test_student_is_picked_with_network_student():
    sd, student = golden_sd("vits14", 7), golden_sd("vits14", 8)
    ckpt = {"model": {**{"teacher.backbone." + k: v for k, v in sd.items()},
                      **{"student.backbone." + k: v for k, v in student.items()},
                      **{"student.dino_head.mlp.0.weight": torch.zeros(2, 2)}}}
    model = build("vits14")
    report = load_weights(model, ckpt, network="student")
    assert report.ignored == ["dino_head"]
    assert_identical(features(model), reference("vits14", 8))
    with pytest.raises(ValueError, match="only the teacher.*network='teacher'"):
        load_weights(build("vits14"), {"teacher": {"backbone." + k: v for k, v in sd.items()}}, network="student")
    with pytest.raises(ValueError, match="network must be 'teacher' or 'student'"):
        load_weights(build("vits14"), ckpt, network="ema")


def dino_head_sd(in_dim: int, seed: int = 3, parametrizations: bool = False):
    head = DINOHead(in_dim, 96, hidden_dim=32, bottleneck_dim=16, device="meta")
    sd = golden.generate_for(head, seed)
    if parametrizations:
        sd["last_layer.parametrizations.weight.original0"] = sd.pop("last_layer.weight_g")
        sd["last_layer.parametrizations.weight.original1"] = sd.pop("last_layer.weight_v")
    return sd


@pytest.mark.parametrize("parametrizations", [False, True])
def test_dino_head_loads_from_a_training_checkpoint(tmp_path, parametrizations):
    backbone, head = golden_sd("vits14"), dino_head_sd(384, parametrizations=parametrizations)
    ckpt = {"teacher": {**{"backbone." + k: v for k, v in backbone.items()}, **{"dino_head." + k: v for k, v in head.items()},
                        "ibot_head.mlp.0.weight": torch.zeros(2, 2)}}
    torch.save(ckpt, tmp_path / "teacher_checkpoint.pth")
    model = DINOHead(384, 96, hidden_dim=32, bottleneck_dim=16, device="meta")
    report = load_weights(model, tmp_path / "teacher_checkpoint.pth")
    assert report.loaded == ["dino_head"] and report.ignored == ["backbone", "ibot_head"]
    ref = DINOHead(384, 96, hidden_dim=32, bottleneck_dim=16, device="meta")
    ref.load_state_dict(dino_head_sd(384, parametrizations=False), assign=True)
    x = golden.generate_tensor(3, 99, (4, 384), 0.0, 1.0)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


@pytest.mark.parametrize("layers", [1, 4])
def test_linear_classifier_from_backbone_file_and_head_file(tmp_path, layers):
    lc = create_model("dinov2_vits14_lc", layers=layers, depth=4, device="meta")
    full = golden.generate_for(lc, 5)
    backbone = {k.removeprefix("backbone."): v for k, v in full.items() if k.startswith("backbone.")}
    head = {k.removeprefix("linear_head."): v for k, v in full.items() if k.startswith("linear_head.")}
    torch.save(backbone, tmp_path / "backbone.pth")
    torch.save(head, tmp_path / "head.pth")  # the official head files hold just weight and bias
    model = create_model("dinov2_vits14_lc", layers=layers, depth=4, pretrained=tmp_path / "backbone.pth")
    assert load_weights(model, tmp_path / "head.pth").loaded == ["linear_head"]
    ref = create_model("dinov2_vits14_lc", layers=layers, depth=4, device="meta")
    ref.load_state_dict(full, assign=True)
    x = images((42, 42))
    with torch.no_grad():
        assert torch.equal(model(x), ref.eval()(x))
    # The hub wrapper's own keys (backbone.*, linear_head.*) load in one go.
    whole = create_model("dinov2_vits14_lc", layers=layers, depth=4, device="meta")
    assert load_weights(whole, full).loaded == ["backbone", "linear_head"]


def test_huggingface_classifier_keys_map_to_the_layers1_head():
    lc = create_model("dinov2_vits14_lc", layers=1, depth=2, device="meta")
    full = golden.generate_for(lc, 5)
    backbone = {k.removeprefix("backbone."): v for k, v in full.items() if k.startswith("backbone.")}
    hf = {"dinov2." + k: v for k, v in W.to_huggingface(backbone).items()}
    hf.update({"classifier.weight": full["linear_head.weight"], "classifier.bias": full["linear_head.bias"]})
    model = create_model("dinov2_vits14_lc", layers=1, depth=2, device="meta")
    load_weights(model, hf)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in full.items())


# ------------------------------------------------------------------ files: both formats, save, convert
@pytest.mark.parametrize("fmt", ["pth", "safetensors", "legacy_pth"])
def test_files_in_both_formats_and_create_model_pretrained_path(tmp_path, fmt):
    sd = golden_sd("vits14_reg")
    path = tmp_path / f"w.{fmt.removeprefix('legacy_')}"
    if fmt == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, path, _use_new_zipfile_serialization=fmt == "pth")
    name, kw = ARCHS["vits14_reg"]
    model = create_model(name, pretrained=str(path), **kw)
    assert_identical(features(model), reference("vits14_reg"))


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("layout", ["official", "huggingface", "huggingface_hub"])
def test_save_weights_round_trip(tmp_path, arch, layout):
    model = build(arch)
    load_weights(model, golden_sd(arch))
    path = save_weights(model, tmp_path / "out.safetensors", layout=layout)
    assert W.detect_layout(load_file(str(path))) == ("official" if layout == "official" else "huggingface")
    again = build(arch)
    load_weights(again, path)
    assert_identical(features(again), features(model))


def test_save_weights_refuses_bad_requests(tmp_path):
    with pytest.raises(ValueError, match="layout must be"):
        save_weights(build("vits14", "cpu"), tmp_path / "x.safetensors", layout="timm")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="meta device"):
        save_weights(build("vits14"), tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="save model.backbone"):
        save_weights(create_model("dinov2_vits14_lc", depth=1), tmp_path / "x.safetensors", layout="huggingface")


def convert(argv: list[str]) -> int:
    from minidino.cli import COMMANDS
    from minidino.cli import convert as convert_cmd

    assert "convert" in COMMANDS
    parser = argparse.ArgumentParser()
    convert_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", *argv])
    return args.func(args)


def test_convert_command_training_checkpoint_to_official(tmp_path, capsys):
    sd = golden_sd("vits14_reg")
    torch.save({"teacher": {"backbone." + k: v for k, v in as_chunked(sd).items()}}, tmp_path / "teacher.pth")
    assert convert([str(tmp_path / "teacher.pth"), str(tmp_path / "out.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "training (teacher) + chunked" in out and "dinov2_vits14_reg truncated to depth 2" in out
    written = load_file(str(tmp_path / "out.safetensors"))
    assert written.keys() == sd.keys() and all(torch.equal(written[k], sd[k]) for k in sd)


# ------------------------------------------------------------------ against transformers itself
def _hf_classes(arch: str):
    transformers = pytest.importorskip("transformers")
    reg = "reg" in arch
    cfg_cls = transformers.Dinov2WithRegistersConfig if reg else transformers.Dinov2Config
    model_cls = transformers.Dinov2WithRegistersModel if reg else transformers.Dinov2Model
    return cfg_cls, model_cls


@pytest.mark.parametrize("arch", list(ARCHS))
def test_transformers_loads_the_converted_file_strictly_and_agrees_at_518(tmp_path, arch):
    cfg_cls, model_cls = _hf_classes(arch)
    ours = build(arch)
    load_weights(ours, golden_sd(arch))
    path = save_weights(ours, tmp_path / "model.safetensors", layout="huggingface")
    hf_cfg = {k: v for k, v in W.huggingface_config(ours.config).items() if k not in ("architectures", "model_type")}
    theirs = model_cls(cfg_cls(**hf_cfg)).eval()
    theirs.load_state_dict(load_file(str(path)), strict=True)
    x = images((518, 518), B=1)
    with torch.no_grad():
        out = theirs(pixel_values=x)
        f = ours.forward_features(x)
    tokens = torch.cat([f["x_norm_clstoken"][:, None], f["x_norm_regtokens"], f["x_norm_patchtokens"]], dim=1)
    d_tokens = (out.last_hidden_state - tokens).abs().max().item()
    d_pool = (out.pooler_output - f["x_norm_clstoken"]).abs().max().item()
    print(f"\n{arch} at 518x518 vs transformers {model_cls.__name__}: last_hidden_state max abs {d_tokens:.3e}, "
          f"pooler {d_pool:.3e}")
    # Same weights, same maths; only float32 summation order differs (attention kernels).
    assert d_tokens <= 1e-5 and d_pool <= 1e-5
    # And transformers' own state dict (its real key names) loads back into minidino, identically.
    again = build(arch)
    assert load_weights(again, theirs.state_dict()).layout == "huggingface"
    assert_identical(features(again), features(ours))


@pytest.mark.parametrize("layout", ["huggingface", "huggingface_hub"])
def test_convert_to_a_folder_that_from_pretrained_reads(tmp_path, layout):
    transformers = pytest.importorskip("transformers")
    sd = golden_sd("vitg14_reg_narrow")
    torch.save(sd, tmp_path / "src.pth")
    # A width no hub model has: the head count is not in the weights, so say it.
    assert convert([str(tmp_path / "src.pth"), str(tmp_path / "hf") + "/", "--layout", layout, "--num-heads", "4"]) == 0
    path = tmp_path / "hf" / "model.safetensors"
    model = build("vitg14_reg_narrow")
    load_weights(model, sd)
    theirs, info = transformers.AutoModel.from_pretrained(str(path.parent), output_loading_info=True)
    assert type(theirs).__name__ == "Dinov2WithRegistersModel"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    # minidino reads the folder back too.
    again = build("vitg14_reg_narrow")
    load_weights(again, path.parent)
    assert_identical(features(again), features(model))


def test_sharded_folder_written_by_save_pretrained_loads(tmp_path):
    """transformers' own sharded output (model-0000i-of-0000N + index.json), as the hub serves large models."""
    cfg_cls, model_cls = _hf_classes("vits14")
    ours = build("vits14")
    load_weights(ours, golden_sd("vits14"))
    hf_cfg = {k: v for k, v in W.huggingface_config(ours.config).items() if k not in ("architectures", "model_type")}
    theirs = model_cls(cfg_cls(**hf_cfg)).eval()
    theirs.load_state_dict(W.to_huggingface(ours.state_dict()), strict=True)
    theirs.save_pretrained(tmp_path / "hf", max_shard_size="1MB")
    index = "model.safetensors.index.json"
    shards = sorted(p.name for p in (tmp_path / "hf").iterdir() if "-of-" in p.name)
    assert (tmp_path / "hf" / index).is_file() and len(shards) > 2, shards
    for source in (tmp_path / "hf", tmp_path / "hf" / index):
        again = build("vits14")
        assert load_weights(again, source).layout == "huggingface"
        assert_identical(features(again), features(ours))


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_sharded_index_errors_name_the_shard_or_key(tmp_path, fmt):
    sd = golden_sd("vits14")
    keys = sorted(sd)
    parts = {f"a.{fmt}": {k: sd[k] for k in keys[:10]}, f"b.{fmt}": {k: sd[k] for k in keys[10:]}}
    for name, part in parts.items():
        save_file(part, str(tmp_path / name)) if fmt == "safetensors" else torch.save(part, tmp_path / name)
    index = tmp_path / ("model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json")
    weight_map = {k: name for name, part in parts.items() for k in part}
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    model = build("vits14")
    load_weights(model, tmp_path)  # the folder's index
    assert_identical(features(model), reference("vits14"))
    index.write_text(json.dumps({"weight_map": {**weight_map, "extra.weight": f"c.{fmt}"}}))
    with pytest.raises(FileNotFoundError, match=f"c.{fmt}"):
        W.read_checkpoint(index)
    index.write_text(json.dumps({"weight_map": {**weight_map, "extra.weight": f"a.{fmt}"}}))
    with pytest.raises(W.CheckpointError, match="extra.weight"):
        W.read_checkpoint(index)
    index.write_text("[1, 2]")
    with pytest.raises(W.CheckpointError, match="weight_map"):
        W.read_checkpoint(index)


def test_convert_hub_architecture_writes_config_json(tmp_path):
    transformers = pytest.importorskip("transformers")
    sd = golden_sd("vits14")
    torch.save(sd, tmp_path / "src.pth")
    assert convert([str(tmp_path / "src.pth"), str(tmp_path / "hf") + "/", "--layout", "huggingface"]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["model_type"]) == (384, 2, "dinov2")
    theirs, info = transformers.AutoModel.from_pretrained(str(tmp_path / "hf"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


# ------------------------------------------------------------------ strictness and messages
def test_shape_mismatch_names_key_shapes_and_the_look_alike():
    model = create_model("dinov2_vitb14", depth=2, device="meta")
    with pytest.raises(W.WeightsMismatchError) as e:
        load_weights(model, golden_sd("vits14_reg"))
    msg = str(e.value)
    assert "checkpoint (384" in msg and "model (768" in msg and "'" in msg
    assert "looks like dinov2_vits14_reg truncated to depth 2" in msg and "model is dinov2_vitb14 truncated to depth 2" in msg


def test_missing_and_unexpected_keys_are_listed_with_counts():
    sd = golden_sd("vits14")
    sd.pop("norm.bias")
    sd["extra.thing"] = torch.zeros(1)
    with pytest.raises(W.WeightsMismatchError, match=r"(?s)missing keys: norm.bias \(1\).*unexpected keys: extra.thing \(1\)"):
        load_weights(build("vits14"), sd)
    deeper = golden_sd("vits14")
    with pytest.raises(W.WeightsMismatchError, match=r"unexpected keys: blocks\.1\..*\(14 in all\)"):
        load_weights(create_model("dinov2_vits14", depth=1, device="meta"), deeper)
    report = load_weights(create_model("dinov2_vits14", depth=1, device="meta"), deeper, strict=False)
    assert len(report.unexpected) == 14 and not report.missing


def test_wrong_kind_of_file_for_the_model():
    with pytest.raises(W.WeightsMismatchError, match="holds linear_head.*needs backbone"):
        load_weights(build("vits14"), {"weight": torch.zeros(3, 768), "bias": torch.zeros(3)})
    with pytest.raises(TypeError, match="file path, an http"):
        load_weights(build("vits14"), 42)
    with pytest.raises(TypeError, match="pretrained must be"):
        create_model("dinov2_vits14", depth=1, pretrained=3.5)


def test_dtype_of_the_model_is_kept(tmp_path):
    name, kw = ARCHS["vits14"]
    model = create_model(name, dtype=torch.bfloat16, pretrained=golden_sd("vits14"), **kw)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


# ------------------------------------------------------------------ safety and broken files
class _RunsCode:
    """Unpickling this object would call open(marker, "w"): it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("container", ["torch_zip", "plain_pickle"])
def test_a_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"cls_token": torch.zeros(1, 1, 384), "blocks.0.norm1.weight": _RunsCode(marker)}
    if container == "torch_zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    assert not marker.exists()
    with pytest.raises(W.UnsafeCheckpointError, match=f"refusing to load {path}.*never unpickles"):
        load_weights(build("vits14"), path)
    with pytest.raises(W.UnsafeCheckpointError):
        create_model("dinov2_vits14", depth=1, pretrained=str(path))
    assert not marker.exists(), "loading the checkpoint ran code from it"


def _broken_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    sd = golden_sd("vits14")
    torch.save(sd, tmp_path / "good.pth")
    save_file(sd, str(tmp_path / "good.safetensors"))
    cases = {}
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    cases["truncated pth"] = (tmp_path / "truncated.pth", "truncated or corrupt")
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    data = (tmp_path / "legacy.pth").read_bytes()
    (tmp_path / "truncated_legacy.pth").write_bytes(data[: len(data) // 2])
    cases["truncated legacy pth"] = (tmp_path / "truncated_legacy.pth", "truncated or corrupt")
    data = (tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    cases["truncated safetensors"] = (tmp_path / "truncated.safetensors", "truncated or corrupt")
    (tmp_path / "page.pth").write_text("<!DOCTYPE html>\n<html><body>403 Forbidden</body></html>\n")
    cases["html page"] = (tmp_path / "page.pth", "HTML or XML page")
    (tmp_path / "empty.pth").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.pth", r"empty \(0 bytes\)")
    (tmp_path / "noise.pth").write_bytes(bytes(range(7, 200)))
    cases["not a checkpoint"] = (tmp_path / "noise.pth", "neither a PyTorch checkpoint")
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    cases["not a mapping"] = (tmp_path / "list.pth", "holds a list, not a state dict")
    return cases


def test_broken_files_name_the_file_and_the_problem(tmp_path):
    for what, (path, message) in _broken_files(tmp_path).items():
        with pytest.raises(W.CheckpointError, match=message) as e:
            load_weights(build("vits14"), path)
        assert str(path) in str(e.value), what
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weights(build("vits14"), tmp_path / "nope.pth")
    assert load_weights(build("vits14"), tmp_path / "good.pth").layout == "official"


def test_vendored_pins_are_the_shared_catalogue():
    from minidino.weights import download as hub
    from minidino.weights import weight_files

    pins = hub.load_pins()
    assert len([k for k in pins["backbones"]]) == 8
    shared = Path(__file__).resolve().parents[2] / "shared" / "checkpoints.json"
    if shared.is_file():
        assert json.loads(shared.read_text()) == pins
    for name in minidino.list_models(include_classifiers=False, include_depthers=False, family="dinov2"):
        pin = weight_files(name)["backbone"]
        assert pin.sha256 and len(pin.sha256) == 64 and pin.bytes and pin.path.endswith("_pretrain.pth")
    for name in minidino.list_models(family="dinov3"):  # gated: no pins, the 8 hex digits of the official names
        pin = weight_files(name)["backbone"]
        assert pin.sha256 is None and pin.sha256_prefix and len(pin.sha256_prefix) == 8
