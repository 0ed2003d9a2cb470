"""Feature pictures (minidino.utils.viz and the `pca` / `attention` commands) on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from minidino.conformance import golden

from minidino.utils import figures, viz

TINY = dict(depth=2, embed_dim=48, num_heads=3, ffn_hidden_dim=96)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def golden_tiny(name: str = "dinov2_vits14", seed: int = 3):
    """A tiny model with weights from the golden splitmix64 generator (random, but reproducible anywhere)."""
    return golden.random_model(name, seed, **TINY)


def halves_image(size: int = 112) -> Image.Image:
    """Left half brick red with fine vertical stripes, right half smooth blue."""
    a = np.zeros((size, size, 3), np.uint8)
    a[:, : size // 2] = (200, 60, 40)
    a[:, : size // 2 : 4] = (120, 30, 20)
    a[:, size // 2 :] = (50, 90, 210)
    return Image.fromarray(a)


def object_image(size: int = 112) -> Image.Image:
    """A yellow square in the middle of a uniform green background."""
    a = np.full((size, size, 3), (40, 140, 60), np.uint8)
    q = size // 4
    a[q : size - q, q : size - q] = (240, 210, 30)
    return Image.fromarray(a)


def normalise(img: Image.Image) -> torch.Tensor:
    x = torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1)  # (3, H, W)
    return (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def patch_tokens(model, imgs):
    x = torch.stack([normalise(i) for i in imgs])
    with torch.no_grad():
        return model.forward_features(x)["x_norm_patchtokens"]


# ------------------------------------------------------------------ the maths
def test_fit_pca_matches_the_covariance_eigenvectors():
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
    x = (torch.randn(500, 10, generator=g, dtype=torch.float64) * torch.linspace(5, 0.5, 10, dtype=torch.float64)) @ basis.T
    x = x + 3.0  # an offset the PCA must remove
    mean, comps = viz.fit_pca(x, k=3)
    evals, evecs = torch.linalg.eigh(torch.cov(x.T))  # ascending
    for i in range(3):
        assert abs(abs(float(comps[i] @ evecs[:, -1 - i])) - 1) < 1e-9
    assert torch.allclose(mean, x.mean(0))
    proj = (x - mean) @ comps.T
    assert (proj**3).sum(0).min() > 0  # the sign convention: positive skew
    assert torch.allclose(proj.var(0), evals.flip(0)[:3], rtol=1e-9)


def test_pca_rgb_shapes_range_and_joint_fit():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randn(3, 4 * 5, 16, generator=g)
    tokens[2] = tokens[0]  # the same features in two images must get the same colours
    rgb = viz.pca_rgb(tokens, 4, 5)
    assert rgb.shape == (3, 4, 5, 3) and rgb.dtype == torch.float32
    assert rgb.min() == 0 and rgb.max() == 1
    for c in range(3):  # min-max scaled jointly: every channel spans [0, 1] over all images together
        assert rgb[..., c].min() == 0 and rgb[..., c].max() == 1
    assert torch.equal(rgb[0], rgb[2])
    # Fitting one image alone gives different colours than fitting it jointly with others.
    assert not torch.allclose(viz.pca_rgb(tokens[:1], 4, 5)[0], rgb[0])


def test_pca_rgb_mask_blacks_out_background_and_fits_foreground_only():
    g = torch.Generator().manual_seed(2)
    tokens = torch.randn(2, 9, 8, generator=g)
    mask = torch.zeros(2, 3, 3, dtype=torch.bool)
    mask[:, 1:, 1:] = True
    rgb = viz.pca_rgb(tokens, 3, 3, mask=mask)
    assert torch.all(rgb[~mask] == 0)
    fg = rgb[mask]  # (K, 3)
    assert fg.min() == 0 and fg.max() == 1
    # Background tokens do not influence the foreground colours.
    tokens2 = tokens.clone()
    tokens2[~mask.reshape(2, 9)] = 100.0
    assert torch.allclose(viz.pca_rgb(tokens2, 3, 3, mask=mask), rgb)


def test_bad_shapes_are_explained():
    with pytest.raises(ValueError, match="unsqueeze"):
        viz.pca_rgb(torch.zeros(16, 8), 4, 4)
    with pytest.raises(ValueError, match=r"\(N, 12, D\)"):
        viz.pca_rgb(torch.zeros(1, 16, 8), 3, 4)
    with pytest.raises(ValueError, match="bool"):
        viz.pca_rgb(torch.zeros(1, 16, 8), 4, 4, mask=torch.ones(1, 16))


# ------------------------------------------------------------------ on a real (tiny) model
def test_first_component_splits_an_image_whose_halves_differ():
    model = golden_tiny()
    img = halves_image(112)  # 8 x 8 patches, the split falls between patch columns 3 and 4
    pc1 = viz.first_component(patch_tokens(model, [img]), 8, 8)[0]  # (8, 8)
    left, right = pc1[:, :4], pc1[:, 4:]
    assert torch.sign(left).unique().numel() == 1 and torch.sign(right).unique().numel() == 1
    assert torch.sign(left[0, 0]) != torch.sign(right[0, 0])
    gap = (left.mean() - right.mean()).abs()
    assert gap > 5 * max(left.std(), right.std()), (gap, left.std(), right.std())
    rgb = viz.pca_rgb(patch_tokens(model, [img]), 8, 8)[0]  # (8, 8, 3)
    assert (rgb[:, :4].mean((0, 1)) - rgb[:, 4:].mean((0, 1))).abs().max() > 0.5  # two clearly different colours


def test_foreground_mask_finds_the_object_in_the_middle():
    model = golden_tiny()
    tokens = patch_tokens(model, [object_image(112), object_image(112).transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    fg = viz.foreground_mask(tokens, 8, 8)  # (2, 8, 8)
    want = torch.zeros(8, 8, dtype=torch.bool)
    want[2:6, 2:6] = True  # the square covers pixels 28..83 = patches 2..5
    assert torch.equal(fg[0], want) and torch.equal(fg[1], want)
    assert not viz.foreground_mask(tokens, 8, 8, threshold=10.0).any()


# ------------------------------------------------------------------ pictures
def test_compose_side_by_side_layout_is_exact():
    imgs = [Image.new("RGB", (40, 30), (10, 20, 30)), Image.new("RGB", (40, 30), (40, 50, 60))]
    maps = [viz.to_image(np.full((3, 4, 3), 0.5)), viz.to_image(np.ones((3, 4, 3)))]
    out = viz.compose_side_by_side(imgs, maps, caption="a caption")
    P, L = viz.PAD, viz.LABEL_H
    assert out.size == (2 * 40 + 3 * P, 2 * (30 + L) + 3 * P + L)
    a = np.asarray(out)
    for r, (img_rgb, map_rgb) in enumerate([((10, 20, 30), (128, 128, 128)), ((40, 50, 60), (255, 255, 255))]):
        y = L + P + r * (30 + L + P) + L
        assert (a[y : y + 30, P : P + 40] == img_rgb).all()
        assert (a[y : y + 30, 2 * P + 40 : 2 * P + 80] == map_rgb).all()


def test_upsample_keeps_one_block_per_patch():
    grid = np.zeros((2, 3, 3))
    grid[1, 2] = 1.0
    big = np.asarray(viz.upsample(viz.to_image(grid), (42, 28)))
    assert (big[14:, 28:] == 255).all() and (big[:14].sum() == 0) and (big[14:, :28].sum() == 0)


def test_colormap_is_monotonic_in_brightness():
    rgb = viz.colormap(np.linspace(0, 1, 50))
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    assert rgb.shape == (50, 3) and np.all(np.diff(lum) > 0)
    assert np.allclose(viz.colormap(np.array([-1.0, 2.0])), viz.colormap(np.array([0.0, 1.0])))


def test_denormalize_inverts_normalisation():
    img = halves_image(28)
    assert np.array_equal(np.asarray(viz.denormalize(normalise(img), MEAN, STD)), np.asarray(img))


def test_attention_panels_one_per_head_plus_mean():
    model = golden_tiny("dinov2_vits14_reg")
    x = normalise(object_image(56))[None]
    with torch.no_grad():
        attn = model.get_attention_maps(x)[0]
    cls = model.cls_attention_map(attn, 4, 4)[0]  # (nh, 4, 4), registers skipped
    panels = figures.attention_panels(cls, (56, 56))
    assert len(panels) == 3 + 1 and all(p.size == (56, 56) for p in panels)
    hottest = np.unravel_index(int(cls[0].argmax()), (4, 4))
    block = np.asarray(panels[0])[hottest[0] * 14 : hottest[0] * 14 + 14, hottest[1] * 14 : hottest[1] * 14 + 14]
    assert (block == np.round(viz.colormap(1.0) * 255)).all()  # the most attended patch is the brightest


def test_segmentation_label_colours_are_the_legend_swatches_and_the_picture_has_no_empty_margin():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (56, 84, 3), dtype=np.uint8))
    sim = torch.zeros(3, 4, 6)
    sim[0, :, :2], sim[1, :, 2:4], sim[2, :, 4:] = 1.0, 1.0, 1.0  # three vertical bands
    pic, shares = figures.segmentation_figure(image, sim, ["a", "b", "c"])
    a = np.asarray(pic)
    P, L = viz.PAD, viz.LABEL_H
    labels_panel = a[P + L : P + L + 56, 2 * P + 84 : 2 * P + 168].reshape(-1, 3)
    swatches = {tuple(c) for c in figures.LABEL_COLOURS[:3]}
    assert {tuple(int(v) for v in px) for px in labels_panel} == swatches  # exactly the legend's colours, all three
    assert pic.width < 2 * 84 + 3 * P + 120  # image, labels and a narrow legend: no blank strip
    assert abs(sum(shares) - 1) < 1e-6 and min(shares) > 0.2


def test_depth_figure_puts_every_row_on_one_scale():
    near, far = torch.full((70, 80), 1.0), torch.full((70, 80), 9.0)
    near[0, 0], far[0, 0] = 1.5, 9.5  # each map a small range of its own, its bulk at its own minimum
    pics = [Image.new("RGB", (80, 70))] * 2
    fig = np.asarray(figures.depth_figure(pics, [near, far], ["near", "far"])).astype(int)
    P, L = viz.PAD, viz.LABEL_H
    K = fig.shape[0] - (2 * (70 + L) + 3 * P)  # the caption above the rows
    cell = lambda r: fig[K + P + r * (70 + L + P) + L + 35, 2 * P + 80 + 40]  # the middle of row r's depth map
    assert cell(0).sum() > cell(1).sum() + 300  # near bright, far dark: comparable between rows
    alone = [np.asarray(figures.depth_preview(d)).astype(int)[P + L + 35, P + 40] for d in (near, far)]
    assert (alone[0] == alone[1]).all()  # each map alone is on its own scale: the same colour for 1 m and 9 m
