"""Bad input gets a ValueError / TypeError that names the problem and the fix."""

from __future__ import annotations

import pytest
import torch

from minidino import create_model


@pytest.fixture(scope="module")
def model():
    return create_model("dinov2_vits14", depth=1)


def test_wrong_ndim(model):
    with pytest.raises(ValueError, match=r"4 dimensions.*unsqueeze\(0\)"):
        model(torch.zeros(3, 224, 224))


def test_wrong_channel_count(model):
    with pytest.raises(ValueError, match="has 1 channels, expected 3"):
        model(torch.zeros(1, 1, 224, 224))
    with pytest.raises(ValueError, match="permute"):
        model(torch.zeros(1, 224, 224, 3))


def test_size_not_multiple_of_patch(model):
    with pytest.raises(ValueError, match="height 225 .*nearest valid: 224 or 238"):
        model(torch.zeros(1, 3, 225, 224))
    with pytest.raises(ValueError, match="width 10 .*nearest valid: 14"):
        model(torch.zeros(1, 3, 224, 10))


def test_integer_images(model):
    with pytest.raises(TypeError, match="uint8.*normalise"):
        model(torch.zeros(1, 3, 14, 14, dtype=torch.uint8))


def test_not_a_tensor(model):
    with pytest.raises(TypeError, match="torch.Tensor"):
        model.forward_features("image.png")


def test_dtype_mismatch(model):
    with pytest.raises(TypeError, match=r"model.to\(torch.bfloat16\)"):
        model(torch.zeros(1, 3, 14, 14, dtype=torch.bfloat16))


def test_masks_wrong_dtype(model):
    with pytest.raises(TypeError, match="torch.bool"):
        model.forward_features(torch.zeros(1, 3, 28, 28), masks=torch.zeros(1, 4))


def test_masks_wrong_shape(model):
    with pytest.raises(ValueError, match=r"\(B, h\*w\) = \(1, 4\)"):
        model.forward_features(torch.zeros(1, 3, 28, 28), masks=torch.zeros(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="flatten"):
        model.forward_features(torch.zeros(1, 3, 28, 28), masks=torch.zeros(1, 2, 2, dtype=torch.bool))


def test_list_with_mismatched_masks(model):
    xs = [torch.zeros(1, 3, 28, 28), torch.zeros(1, 3, 14, 28)]
    with pytest.raises(ValueError, match="list of 2"):
        model.forward_features(xs, masks=[None])
    with pytest.raises(TypeError, match="masks is a list but x is a single tensor"):
        model.forward_features(xs[0], masks=[None])
    with pytest.raises(ValueError, match="empty list"):
        model.forward_features([])


def test_unknown_model_name_suggests():
    with pytest.raises(ValueError, match="did you mean 'dinov2_vits14'"):
        create_model("dinov2_vits15")
    with pytest.raises(ValueError, match="did you mean 'dinov3_vits16'"):
        create_model("dinov2_vits16")  # the patch size says DINOv3


def test_unknown_override_is_a_type_error():
    with pytest.raises(TypeError, match="unknown config field 'dpeth'.*'depth'"):
        create_model("dinov2_vits14", dpeth=2, device="meta")
    with pytest.raises(TypeError, match="layers"):
        create_model("dinov2_vits14", layers=4, device="meta")
    with pytest.raises(ValueError, match="layers must be 1 or 4"):
        create_model("dinov2_vits14_lc", layers=2, device="meta")


def test_bad_intermediate_indices(model):
    x = torch.zeros(1, 3, 14, 14)
    with pytest.raises(ValueError, match="1 <= n <= depth"):
        model.get_intermediate_layers(x, n=5)
    with pytest.raises(ValueError, match=r"\[0, 0\]"):
        model.get_intermediate_layers(x, n=[3])


def test_bad_attention_block(model):
    with pytest.raises(ValueError, match="out of range"):
        model.get_attention_maps(torch.zeros(1, 3, 14, 14), blocks=(5,))
