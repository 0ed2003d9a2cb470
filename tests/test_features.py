"""Variable-size lists, attention maps, fine-tuning switches, heads."""

from __future__ import annotations

import pytest
import torch

from minidino import DINOHead, create_model

from test_properties import SMALL, images, small


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg", "dinov3_vits16"])
def test_list_of_sizes_matches_running_each_alone(name):
    """Each batch of a list gives exactly (0.0) what it gives alone, as the official DINOv3 list call does."""
    model = small(name)
    p = model.patch_size
    xs = [images(1, 2, 2 * p, 3 * p), images(2, 1, 16 * p, 16 * p), images(3, 1, p, p), images(4, 3, 7 * p, 4 * p),
          images(8, 2, 2 * p, 3 * p)]
    masks = [None, torch.rand(1, 256) < 0.3, None, torch.rand(3, 28) < 0.5, None]
    with torch.no_grad():
        listed = model.forward_features(xs, masks=masks)
        for x, m, out in zip(xs, masks, listed):
            alone = model.forward_features(x, masks=m)
            for key in ("x_norm_clstoken", model.extra_tokens_key, "x_norm_patchtokens", "x_prenorm"):
                assert out[key].shape == alone[key].shape
                assert torch.equal(out[key], alone[key]), key
            assert out["masks"] is m


def test_list_trains_like_separate_images():
    """Gradients through a list call (with checkpointing) equal those of the images run alone."""
    model = small("dinov2_vits14_reg").train()
    model.set_grad_checkpointing(True)
    xs = [images(11, 1, 28, 42), images(12, 2, 14, 14)]
    sum(o["x_norm_patchtokens"].square().mean() for o in model.forward_features(xs)).backward()
    listed = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    sum(model.forward_features(x)["x_norm_patchtokens"].square().mean() for x in xs).backward()
    alone = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert listed.keys() == alone.keys() and "blocks.0.attn.qkv.weight" in alone  # mask_token: no masks, no grad
    worst = max((listed[n] - alone[n]).abs().max().item() for n in alone)
    assert worst <= 1e-5, worst


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_attention_maps(name):
    model = small(name)
    x = images(5, 2, 42, 28)
    with torch.no_grad():
        maps = model.get_attention_maps(x, blocks=(0, -1))
    N = 1 + model.num_register_tokens + 6
    assert len(maps) == 2 and all(m.shape == (2, 3, N, N) for m in maps)
    assert torch.allclose(maps[1].sum(-1), torch.ones(2, 3, N), atol=1e-6)
    cls_map = model.cls_attention_map(maps[1], 3, 2)
    assert cls_map.shape == (2, 3, 3, 2)
    assert torch.equal(cls_map.flatten(2), maps[1][:, :, 0, 1 + model.num_register_tokens :])
    with pytest.raises(ValueError, match="does not fit"):
        model.cls_attention_map(maps[1], 3, 3)


def test_explicit_attention_path_matches_fused():
    model = small("dinov2_vits14_reg")
    x = images(6, 2, 56, 42)
    with torch.no_grad():
        fused = model.forward_features(x)["x_prenorm"]
        model.attn_impl = "explicit"
        try:
            explicit = model.forward_features(x)["x_prenorm"]
        finally:
            model.attn_impl = "fused"
    assert (fused - explicit).abs().max().item() <= 1e-5


def test_drop_path_is_inert_in_eval_and_active_in_training():
    model = create_model("dinov2_vits14", drop_path_rate=0.5, **SMALL)
    rates = [b.drop_path.p for b in model.blocks]
    assert rates == [0.0, 0.5]  # linear over depth
    x = images(8, 4, 28, 28)
    with torch.no_grad():
        a, b = model(x), model(x)
        assert torch.equal(a, b)
        model.train()
        outs = {tuple(model(x).flatten()[:8].tolist()) for _ in range(6)}
    assert len(outs) > 1


def test_gradient_checkpointing_gives_the_same_gradients():
    x = images(9, 2, 28, 28)
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(1)
        model = create_model("dinov2_vits14", **SMALL).train()
        model.set_grad_checkpointing(ckpt)
        model(x).sum().backward()
        grads.append(model.blocks[0].attn.qkv.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_dino_head_accepts_every_weight_norm_layout():
    head = DINOHead(32, 64, hidden_dim=48, bottleneck_dim=16).init_weights()
    x = torch.randn(3, 32)
    ref = head(x)
    sd = head.state_dict()
    assert set(sd) == {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight", "mlp.4.bias",
                       "last_layer.weight_g", "last_layer.weight_v"}
    new_layout = {k.replace("last_layer.weight_g", "last_layer.parametrizations.weight.original0")
                   .replace("last_layer.weight_v", "last_layer.parametrizations.weight.original1"): v for k, v in sd.items()}
    other = DINOHead(32, 64, hidden_dim=48, bottleneck_dim=16)
    other.load_state_dict(new_layout, strict=True)
    assert torch.equal(other(x), ref)
    fused = {k: v for k, v in sd.items() if not k.startswith("last_layer")}
    fused["last_layer.weight"] = head.last_layer.weight.detach()
    other.load_state_dict(fused, strict=True)
    assert torch.allclose(other(x), ref, atol=1e-6)


@pytest.mark.parametrize("layers", [1, 4])
def test_linear_classifier_features(layers):
    clf = create_model("dinov2_vits14_reg_lc", layers=layers, **dict(SMALL, depth=5))
    x = images(10, 2, 28, 28)
    with torch.no_grad():
        f = clf.features(x)
        feats = clf.backbone.forward_features(x)
        outs = clf.backbone.get_intermediate_layers(x, n=4, return_class_token=True)
        logits = clf(x)
    assert f.shape == (2, (1 + layers) * 48) and logits.shape == (2, 1000)
    patch_mean = feats["x_norm_patchtokens"].mean(dim=1)  # registers never enter the mean
    assert torch.equal(f[:, -48:], patch_mean)
    if layers == 4:
        assert torch.equal(f[:, : 4 * 48], torch.cat([c for _, c in outs], dim=1))
    else:
        assert torch.equal(f[:, :48], feats["x_norm_clstoken"])
