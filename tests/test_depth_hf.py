"""Hugging Face interop of the DPT depthers: transformers' DPTForDepthEstimation (the model class of
facebook/dpt-dinov2-{small,base,large,giant}-{nyu,kitti}) built offline from a config, weights
mapped both ways, and its output compared with the official depther on the same weights.

transformers' model differs from the official pipeline in what surrounds the network: it does not
pad (the processor does), returns relu(x) without + min_depth, and neither clamps nor resizes back.
With those three steps applied to its output, on an image whose sides are multiples of 14, its
max abs difference to the official depther is printed (its DINOv2 backbone computes the same maths
in another order, like the backbone table's transformers column).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import minidino
from minidino.conformance import golden
from minidino.conformance.reference import official_model, official_repo
from minidino.weights import huggingface_dpt_config

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def ours():
    return golden.random_model("dinov2_vits14_dd", 4)


@pytest.fixture(scope="module")
def hf(ours):
    return hf_model(ours)


def hf_model(model):
    cfg = huggingface_dpt_config(model)
    backbone = transformers.Dinov2Config(**{k: v for k, v in cfg.pop("backbone_config").items() if k not in ("architectures", "model_type")})
    return transformers.DPTForDepthEstimation(transformers.DPTConfig(backbone_config=backbone, **cfg)).eval()


def test_dpt_weights_round_trip_through_transformers(ours, hf, tmp_path):
    path = minidino.save_weights(ours, tmp_path / "dpt.safetensors", layout="huggingface")
    from safetensors.torch import load_file

    hf.load_state_dict(load_file(str(path)), strict=True)  # every DPTForDepthEstimation key, nothing else
    back = minidino.create_model("dinov2_vits14_dd", device="meta")
    report = minidino.load_weights(back, hf.state_dict())  # transformers' own state dict -> official keys
    assert "Hugging Face DPT" in report.layout and sorted(report.loaded) == ["backbone", "decode_head"]
    assert all(torch.equal(back.state_dict()[k], v) for k, v in ours.state_dict().items())


def test_transformers_dpt_against_the_official_depther(ours, hf):
    hf.load_state_dict(minidino.weights.dpt_to_huggingface(ours.state_dict()), strict=True)
    x = golden.generate_images(4, 9, (1, 3, 154, 210))  # multiples of 14: no padding needed
    with torch.no_grad():
        raw = hf(pixel_values=x).predicted_depth.unsqueeze(1)  # (1, 1, 16h, 16w), relu only
        lo, hi = ours.depth_range
        theirs = F.interpolate((raw + lo).clamp(lo, hi), size=x.shape[2:], mode="bilinear", align_corners=False)
        mine = ours(x)
    d_ours = None
    if official_repo():
        ref = official_model("dinov2_vits14_dd", meta=True).module
        ref.load_state_dict(ours.state_dict(), assign=True)
        with torch.no_grad():
            official = ref.eval().whole_inference(x, img_meta=None, rescale=True)
        d_ours = float((mine - official).abs().max())
        d_hf = float((theirs - official).abs().max())
        print(f"vs the official depther: minidino {d_ours}, transformers DPTForDepthEstimation {d_hf:.3e} m")
        assert d_ours == 0.0
    d = float((theirs - mine).abs().max())
    print(f"transformers vs minidino (same weights, + min_depth, clamp, resize applied): max abs {d:.3e} m")
    assert d < 1e-3 and mine.std() > 1e-3
