"""Feature pictures: PCA of patch features as RGB, attention heatmaps, side-by-side panels.

The classic DINOv2 figure: project every patch token onto the first three principal
components of the patch features (fitted jointly over all images, so the same colour means
the same feature direction in every image) and show the projections as RGB, next to the
image. The first component alone often separates foreground from background, so it can
also serve as a mask: `foreground_mask` thresholds it, and `pca_rgb(..., mask=...)` fits
the colours on the foreground patches only, leaving the background black.

The maths is on tensors and numpy arrays; Pillow is used only to compose pictures.
Shapes: N images, h w patch grid, D width, nh heads, H W pixels.

Over 400 lines on purpose: every picture minidino draws (PCA, attention, depth, segmentation)
shares the colour map, the font, the captions and the panel layout here, so they look alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = [
    "fit_pca", "pca_rgb", "first_component", "foreground_mask", "colormap", "to_image", "upsample",
    "denormalize", "compose_grid", "compose_side_by_side", "attention_panels", "first_component_flat", "pca_rgb_flat",
    "pca_figure", "attention_figure", "hstack_panels", "NotFiniteError", "require_finite",
]


class NotFiniteError(ValueError):
    """Model outputs that hold NaN or infinite values: a picture of them would be a lie (or a crash in
    the colour lookup), so the picture functions refuse them. The command line reports it with exit
    status 3 (the weights, the config or the dtype give such values).

    Examples:
        >>> require_finite(torch.tensor([1.0, float("nan")]), "the depth map")
        Traceback (most recent call last):
        ...
        minidino.utils.viz.NotFiniteError: the depth map holds NaN or infinite values
    """


def require_finite(values: Tensor | np.ndarray, what: str) -> None:
    """NotFiniteError naming `what` unless every value is finite.

    Examples:
        >>> require_finite(torch.ones(2), "the features")    # finite: nothing happens
        >>> require_finite(np.array([np.inf]), "the features")
        Traceback (most recent call last):
        ...
        minidino.utils.viz.NotFiniteError: the features holds NaN or infinite values
    """
    ok = bool(torch.isfinite(values).all()) if isinstance(values, Tensor) else bool(np.isfinite(values).all())
    if not ok:
        raise NotFiniteError(f"{what} holds NaN or infinite values")


# ------------------------------------------------------------------ PCA
def fit_pca(x: Tensor, k: int = 3) -> tuple[Tensor, Tensor]:
    """Principal components of the rows of x (M, D): (mean (D,), components (k, D)), float64.

    Components are unit vectors in order of decreasing variance. The sign of a principal
    component is arbitrary; we fix it so that the projections have positive skew (their
    long tail points up), a choice that depends on the data only, not on the solver.

    Examples:
        >>> mean, comps = fit_pca(torch.randn(100, 16), k=3)
        >>> tuple(mean.shape), tuple(comps.shape), mean.dtype
        ((16,), (3, 16), torch.float64)
    """
    if x.ndim != 2:
        raise ValueError(f"fit_pca expects (M, D) rows, got shape {tuple(x.shape)}")
    M, D = x.shape
    if M < 2:
        raise ValueError(f"PCA needs at least 2 rows, got {M}")
    x = x.detach().to("cpu", torch.float64)
    mean = x.mean(dim=0)  # (D,)
    xc = x - mean  # (M, D)
    # Right singular vectors of the centred data = eigenvectors of its covariance.
    _, _, vh = torch.linalg.svd(xc, full_matrices=False)  # vh: (min(M, D), D)
    comps = vh[:k]  # (k', D), k' = min(k, M, D)
    if comps.shape[0] < k:  # fewer rows or dims than components: pad with zero directions
        comps = torch.cat([comps, comps.new_zeros(k - comps.shape[0], D)])
    proj = xc @ comps.T  # (M, k)
    skew = (proj**3).sum(dim=0)  # (k,)
    comps = comps * torch.where(skew < 0, -1.0, 1.0).unsqueeze(1).to(comps)
    return mean, comps


def _check_tokens(patch_tokens: Tensor, h: int, w: int) -> tuple[int, int]:
    if patch_tokens.ndim == 2:
        raise ValueError(f"patch_tokens must be (N, h*w, D); for one image use patch_tokens.unsqueeze(0), got {tuple(patch_tokens.shape)}")
    if patch_tokens.ndim != 3 or patch_tokens.shape[1] != h * w:
        raise ValueError(f"patch_tokens must be (N, h*w, D) = (N, {h * w}, D) for an {h}x{w} grid, got {tuple(patch_tokens.shape)}")
    return patch_tokens.shape[0], patch_tokens.shape[2]


def _border(h: int, w: int) -> Tensor:
    """(h*w,) bool: the patches on the edge of an h x w grid (all of them when h or w <= 2)."""
    b = torch.ones(h, w, dtype=torch.bool)
    if h > 2 and w > 2:
        b[1:-1, 1:-1] = False
    return b.reshape(-1)


def first_component_flat(flat: Tensor, border: Tensor) -> Tensor:
    """PC1 of the rows of flat (M, D) in units of its std, (M,), oriented so that the rows flagged
    in border (M,) have a negative mean. The list form of `first_component`.

    Examples:
        >>> border = torch.zeros(10, dtype=torch.bool); border[:3] = True
        >>> tuple(first_component_flat(torch.randn(10, 8), border).shape)
        (10,)
    """
    flat = flat.detach().to("cpu", torch.float64)
    mean, comps = fit_pca(flat, k=1)
    pc1 = (flat - mean) @ comps[0]  # (M,)
    pc1 = pc1 / pc1.std().clamp_min(1e-12)
    if pc1[border.cpu()].mean() > 0:
        pc1 = -pc1
    return pc1.float()


def pca_rgb_flat(flat: Tensor, keep: Tensor | None = None) -> Tensor:
    """The first three principal components of the rows of flat (M, D) as RGB in [0, 1], (M, 3).
    The PCA is fitted on the rows where keep (M,) is True (all by default); the others are 0.
    The list form of `pca_rgb`.

    Examples:
        >>> tuple(pca_rgb_flat(torch.randn(10, 8)).shape)
        (10, 3)
    """
    flat = flat.detach().to("cpu", torch.float64)
    M = flat.shape[0]
    keep = torch.ones(M, dtype=torch.bool) if keep is None else keep.reshape(-1).cpu()
    rgb = torch.zeros(M, 3, dtype=torch.float64)  # (M, 3)
    if int(keep.sum()) >= 2:
        mean, comps = fit_pca(flat[keep], k=3)
        proj = (flat[keep] - mean) @ comps.T  # (K, 3)
        lo, hi = proj.min(dim=0).values, proj.max(dim=0).values
        rgb[keep] = (proj - lo) / (hi - lo).clamp_min(1e-12)
    return rgb.float()


def first_component(patch_tokens: Tensor, h: int, w: int) -> Tensor:
    """Projection of every patch on the first principal component, in units of its std: (N, h, w).

    Fitted jointly over all N images. Oriented so that the patches on the image border
    (mostly background in photos) have a negative mean: high values = foreground.

    Examples:
        >>> tuple(first_component(torch.randn(2, 12, 384), 3, 4).shape)
        (2, 3, 4)
    """
    N, D = _check_tokens(patch_tokens, h, w)
    flat = patch_tokens.reshape(N * h * w, D)  # (N*h*w, D)
    return first_component_flat(flat, _border(h, w).repeat(N)).reshape(N, h, w)


def foreground_mask(patch_tokens: Tensor, h: int, w: int, threshold: float = 0.0) -> Tensor:
    """Foreground patches, (N, h, w) bool: the first principal component above `threshold`
    (in standard deviations; 0 splits at the mean, higher keeps less).

    Examples:
        >>> m = foreground_mask(torch.randn(1, 16, 384), 4, 4)
        >>> tuple(m.shape), m.dtype
        ((1, 4, 4), torch.bool)
    """
    return first_component(patch_tokens, h, w) > threshold


def pca_rgb(patch_tokens: Tensor, h: int, w: int, *, mask: Tensor | None = None) -> Tensor:
    """The first three principal components of the patch features as RGB: (N, h, w, 3) in [0, 1].

    patch_tokens: (N, h*w, D), e.g. `forward_features(x)["x_norm_patchtokens"]`. The PCA is
    fitted jointly over all N images, and each component is min-max scaled over all of them,
    so colours are comparable across images. mask: optional (N, h, w) or (N, h*w) bool; the
    PCA is then fitted on the masked patches only and the others are black (0).

    Examples:
        >>> rgb = pca_rgb(torch.randn(2, 6, 384), 2, 3)        # (N, h*w, D) patch tokens of 2 images
        >>> tuple(rgb.shape), float(rgb.min()) >= 0, float(rgb.max()) <= 1
        ((2, 2, 3, 3), True, True)
    """
    N, D = _check_tokens(patch_tokens, h, w)
    if mask is not None and (mask.dtype != torch.bool or mask.numel() != N * h * w):
        raise ValueError(f"mask must be a bool tensor with N*h*w = {N * h * w} elements, got {mask.dtype} {tuple(mask.shape)}")
    return pca_rgb_flat(patch_tokens.reshape(N * h * w, D), mask).reshape(N, h, w, 3)


# ------------------------------------------------------------------ colours and images
# Anchor colours of a perceptually ordered dark-blue -> purple -> orange -> yellow ramp
# (close to matplotlib's "inferno"; our own anchors, interpolated linearly).
_RAMP = np.array([
    [0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164],
], dtype=np.float64) / 255.0


def colormap(values: np.ndarray | Tensor) -> np.ndarray:
    """Map values in [0, 1] (any shape) to RGB (..., 3) in [0, 1] on a dark-to-bright ramp.

    Examples:
        >>> colormap(torch.tensor([0.0, 1.0])).shape          # (..., 3)
        (2, 3)
    """
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0) * (len(_RAMP) - 1)
    i = np.minimum(v.astype(np.int64), len(_RAMP) - 2)
    t = (v - i)[..., None]
    return _RAMP[i] * (1 - t) + _RAMP[i + 1] * t


def to_image(rgb: np.ndarray | Tensor) -> Image.Image:
    """(h, w, 3) floats in [0, 1] -> an RGB PIL image (rounded to 8 bits).

    Examples:
        >>> to_image(torch.rand(16, 16, 3)).size
        (16, 16)
    """
    a = np.asarray(rgb.detach().cpu() if isinstance(rgb, Tensor) else rgb, dtype=np.float64)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an (h, w, 3) array, got shape {a.shape}")
    return Image.fromarray(np.round(np.clip(a, 0, 1) * 255).astype(np.uint8), "RGB")


def upsample(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize a patch-grid picture to (W, H) pixels with nearest neighbour: one block per patch.

    Examples:
        >>> upsample(to_image(torch.rand(2, 3, 3)), (42, 28)).size   # a 2 x 3 grid -> 14 px blocks
        (42, 28)
    """
    return img.resize(size, Image.Resampling.NEAREST)


def denormalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Image.Image:
    """A normalised (3, H, W) image tensor back to an RGB PIL image (x * std + mean).

    Examples:
        >>> from minidino.utils.transforms import IMAGENET_MEAN, IMAGENET_STD
        >>> denormalize(torch.zeros(3, 28, 42), IMAGENET_MEAN, IMAGENET_STD).size     # (W, H)
        (42, 28)
    """
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(x.shape)}")
    m = torch.tensor(mean, dtype=torch.float64).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(3, 1, 1)
    rgb = (x.detach().cpu().double() * s + m).permute(1, 2, 0)  # (H, W, 3)
    return to_image(rgb.numpy())


# ------------------------------------------------------------------ layout
PAD = 6  # pixels between panels and around the picture
LABEL_H = 16  # height of the text line above each panel (when labelled)
_BG = (255, 255, 255)
_FG = (0, 0, 0)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


def _wrap(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: float) -> list[str]:
    """Split text into lines (at its newlines, then at spaces) that fit `width` pixels."""
    lines = []
    for para in text.splitlines():
        line = ""
        for word in para.split(" "):
            trial = f"{line} {word}" if line else word
            if line and font.getlength(trial) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def compose_grid(
    rows: Sequence[Sequence[Image.Image]], labels: Sequence[Sequence[str]] | None = None, caption: str | None = None,
) -> Image.Image:
    """Panels in a grid on white, each cell the size of the largest panel.

    Layout (all in pixels): cell width Wc = max panel width, cell height Hc = max panel height;
    width = C * Wc + (C + 1) * PAD; height = R * (Hc + L) + (R + 1) * PAD + K, where L = LABEL_H
    if labels are given (else 0) and K = LABEL_H per caption line (else 0); caption lines longer
    than the picture are wrapped at spaces. Panel (r, c) has its
    top-left corner at (PAD + c * (Wc + PAD), K + PAD + r * (Hc + L + PAD) + L).

    Examples:
        >>> from PIL import Image
        >>> panel = Image.new("RGB", (20, 10))
        >>> grid = compose_grid([[panel, panel], [panel, panel]])   # no labels, no caption
        >>> grid.size == (2 * 20 + 3 * PAD, 2 * 10 + 3 * PAD)
        True
    """
    if not rows or not all(rows):
        raise ValueError("compose_grid needs at least one non-empty row of panels")
    C, R = max(len(r) for r in rows), len(rows)
    Wc = max(p.width for r in rows for p in r)
    Hc = max(p.height for r in rows for p in r)
    L = LABEL_H if labels is not None else 0
    width = C * Wc + (C + 1) * PAD
    font = _font()
    lines = _wrap(caption, font, width - 2 * PAD) if caption else []
    K = LABEL_H * len(lines)
    out = Image.new("RGB", (width, R * (Hc + L) + (R + 1) * PAD + K), _BG)
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((PAD, PAD // 2 + i * LABEL_H), line, fill=_FG, font=font)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            x, y = PAD + c * (Wc + PAD), K + PAD + r * (Hc + L + PAD)
            if labels is not None and r < len(labels) and c < len(labels[r]):
                draw.text((x, y + 1), labels[r][c], fill=_FG, font=font)
            out.paste(panel.convert("RGB"), (x, y + L))
    return out


def compose_side_by_side(
    images: Sequence[Image.Image], maps: Sequence[Image.Image], labels: Sequence[str] = ("image", "features"),
    caption: str | None = None,
) -> Image.Image:
    """One row per image: [image, map], the map resized (nearest) to the image's size.

    Examples:
        >>> from PIL import Image
        >>> pic = compose_side_by_side([Image.new("RGB", (28, 28))], [Image.new("RGB", (2, 2))], caption="test")
        >>> pic.width == 2 * 28 + 3 * PAD
        True
    """
    if len(images) != len(maps) or not images:
        raise ValueError(f"need as many maps as images (and at least one), got {len(images)} images and {len(maps)} maps")
    rows = [[img, upsample(m, img.size)] for img, m in zip(images, maps)]
    return compose_grid(rows, [list(labels)] * len(rows), caption)


def attention_panels(cls_attn: Tensor, size: tuple[int, int]) -> list[Image.Image]:
    """One heatmap per head from the class token's attention (nh, h, w), each min-max scaled
    on its own (heads differ in sharpness) and resized (nearest) to `size` (W, H); then the
    mean over heads as the last panel.

    Examples:
        >>> panels = attention_panels(torch.rand(6, 2, 3), (42, 28))   # (nh, h, w) -> nh + 1 pictures
        >>> len(panels), panels[0].size
        (7, (42, 28))
    """
    if cls_attn.ndim != 3:
        raise ValueError(f"cls_attn must be (nh, h, w), got shape {tuple(cls_attn.shape)}")
    a = cls_attn.detach().cpu().double()
    maps = list(a) + [a.mean(dim=0)]
    out = []
    for m in maps:
        lo, hi = m.min(), m.max()
        scaled = ((m - lo) / (hi - lo).clamp_min(1e-12)).numpy()  # (h, w) in [0, 1]
        out.append(upsample(to_image(colormap(scaled)), size))
    return out


# ------------------------------------------------------------------ figures from a model
@torch.no_grad()
def pca_figure(
    model: torch.nn.Module, xs: Sequence[Tensor], *, mean: Sequence[float], std: Sequence[float],
    foreground: bool = False, threshold: float = 0.0, caption: str | None = None,
) -> tuple[Image.Image, dict[str, object]]:
    """The classic DINOv2 picture for normalised images xs (each (3, H, W), sizes may differ).

    One row per image: [image, PCA colours]. The PCA is fitted jointly on the patch tokens of
    all images. With foreground=True, the first component (oriented so that the border is
    negative) above `threshold` std selects the foreground, a second PCA is fitted on the
    foreground patches only, and the background is black. Returns the picture and a dict of
    what was computed: "grids" [(h, w)], "rgb" [(h, w, 3)], "pc1" [(h, w)], "foreground" [(h, w)],
    "cls" (len(xs), D) class tokens, "patch_tokens" [(h*w, D)].

    Examples:
        >>> from minidino.utils.transforms import IMAGENET_MEAN, IMAGENET_STD
        >>> from minidino.conformance.golden import random_model
        >>> model = random_model("dinov2_vits14", depth=1)
        >>> pic, info = pca_figure(model, [torch.randn(3, 56, 56), torch.randn(3, 28, 42)], mean=IMAGENET_MEAN, std=IMAGENET_STD)
        >>> info["grids"], tuple(info["cls"].shape)
        ([(4, 4), (2, 3)], (2, 384))
    """
    if not xs:
        raise ValueError("pca_figure needs at least one image")
    p = model.patch_size
    grids = [(x.shape[-2] // p, x.shape[-1] // p) for x in xs]
    ref = next(model.parameters())  # run on the model's device and dtype; the pictures use the inputs as given
    feats = model.forward_features([x.unsqueeze(0).to(ref.device, ref.dtype) for x in xs])  # one dict per image
    flat = torch.cat([f["x_norm_patchtokens"][0] for f in feats])  # (sum h*w, D)
    require_finite(flat, "the patch features")
    sizes = [h * w for h, w in grids]
    pc1 = first_component_flat(flat, torch.cat([_border(h, w) for h, w in grids]))  # (sum h*w,)
    keep = pc1 > threshold if foreground else None
    rgb = pca_rgb_flat(flat, keep)  # (sum h*w, 3)
    info: dict[str, object] = {
        "grids": grids,
        "rgb": [r.reshape(h, w, 3) for r, (h, w) in zip(rgb.split(sizes), grids)],
        "pc1": [c.reshape(h, w) for c, (h, w) in zip(pc1.split(sizes), grids)],
        "foreground": [(c > threshold).reshape(h, w) for c, (h, w) in zip(pc1.split(sizes), grids)],
        "cls": torch.cat([f["x_norm_clstoken"] for f in feats]),  # (len(xs), D)
        "patch_tokens": [f["x_norm_patchtokens"][0] for f in feats],
    }
    images = [denormalize(x, mean, std) for x in xs]
    maps = [to_image(r) for r in info["rgb"]]  # type: ignore[attr-defined]
    what = f"foreground PCA (PC1 > {threshold:g})" if foreground else "patch features, PCA as RGB"
    note = f"PCA fitted jointly on the {len(xs)} images" if len(xs) > 1 else "PCA of this image's patches"
    if foreground:
        note += f"; background = first component <= {threshold:g} std (black)"
    caption = f"{caption}\n{note}" if caption else note
    return compose_side_by_side(images, maps, ("image", what), caption), info


@torch.no_grad()
def attention_figure(
    model: torch.nn.Module, x: Tensor, *, mean: Sequence[float], std: Sequence[float], block: int = -1,
    columns: int = 4, overlay: bool = False, caption: str | None = None,
) -> tuple[Image.Image, Tensor]:
    """The class token's attention to the patches in one block, per head, for one normalised
    image x (3, H, W): a grid [image, head 0, head 1, ..., mean of heads] of heatmaps (bright =
    attended), registers skipped. Returns the picture and the (nh, h, w) attention weights.

    Examples:
        >>> from minidino.utils.transforms import IMAGENET_MEAN, IMAGENET_STD
        >>> from minidino.conformance.golden import random_model
        >>> model = random_model("dinov2_vits14", depth=1)
        >>> pic, attn = attention_figure(model, torch.randn(3, 28, 42), mean=IMAGENET_MEAN, std=IMAGENET_STD)
        >>> tuple(attn.shape)                                   # (nh, h, w)
        (6, 2, 3)
    """
    p = model.patch_size
    h, w = x.shape[-2] // p, x.shape[-1] // p
    ref = next(model.parameters())
    attn = model.get_attention_maps(x.unsqueeze(0).to(ref.device, ref.dtype), blocks=(block,))[0]  # (1, nh, N, N)
    require_finite(attn, "the attention maps")
    cls = model.cls_attention_map(attn, h, w)[0]  # (nh, h, w)
    image = denormalize(x, mean, std)
    heat = attention_panels(cls, image.size)
    if overlay:
        heat = [Image.blend(image, m, 0.6) for m in heat]
    panels = [image] + heat
    names = ["image"] + [f"head {i}" for i in range(cls.shape[0])] + ["mean of heads"]
    depth = len(model.blocks)
    names[0] = f"image (block {block % depth})"
    columns = max(1, columns)
    rows = [panels[i : i + columns] for i in range(0, len(panels), columns)]
    labels = [names[i : i + columns] for i in range(0, len(names), columns)]
    return compose_grid(rows, labels, caption), cls


# ------------------------------------------------------------------ depth
def _nice_step(span: float, ticks: int = 5) -> float:
    """A round tick spacing (1, 2 or 5 times a power of ten) giving about `ticks` intervals over `span`."""
    raw = max(span, 1e-9) / ticks
    mag = 10 ** np.floor(np.log10(raw))
    return float(next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw))


def depth_preview(depth: Tensor | np.ndarray, *, caption: str | None = None, bar_width: int = 56) -> Image.Image:
    """A colour-mapped depth map (H, W) in metres with a vertical scale bar in metres beside it.

    Near is bright, far is dark (the ramp of `colormap`, reversed), scaled between the map's own
    minimum and maximum, which the bar's ticks label. caption: text above the picture (e.g. the
    weights used, or that they are random)."""
    d = np.asarray(depth.detach().cpu().double() if isinstance(depth, Tensor) else depth, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {d.shape}")
    require_finite(d, "the depth map")
    lo, hi = float(d.min()), float(d.max())
    span = max(hi - lo, 1e-6)
    panel = to_image(colormap(1.0 - (d - lo) / span))  # near (small depth) bright
    H, W = d.shape
    font = _font()
    bar_h = max(H, 60)
    ramp = np.linspace(0.0, 1.0, bar_h)[:, None].repeat(12, axis=1)  # colour of depth hi (far, dark) at the top...
    bar = to_image(colormap(ramp))  # ...down to depth lo (near, bright) at the bottom, as the map
    legend = Image.new("RGB", (bar_width, bar_h), _BG)
    legend.paste(bar, (0, 0))
    draw = ImageDraw.Draw(legend)
    step = _nice_step(span)
    t = np.ceil(lo / step) * step
    while t <= hi + 1e-9:
        y = int(round((hi - t) / span * (bar_h - 1)))  # depth hi at the top
        draw.line([(12, y), (16, y)], fill=_FG)
        draw.text((18, min(max(y - 6, 0), bar_h - 12)), f"{t:g}", fill=_FG, font=font)
        t += step
    # the map and the bar side by side, each its own width (a grid of equal cells would give the
    # narrow bar a cell as wide as the map, leaving a blank strip at the right)
    body = hstack_panels(compose_grid([[panel]], [["depth"]]), compose_grid([[legend]], [["metres"]]))
    if not caption:
        return body
    # a small map gets a wider picture rather than a caption of one word per line
    width = max(body.width, min(int(font.getlength(caption)) + 2 * PAD, 240))
    lines = _wrap(caption, font, width - 2 * PAD)
    img = Image.new("RGB", (width, body.height + LABEL_H * len(lines)), _BG)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((PAD, PAD // 2 + i * LABEL_H), line, fill=_FG, font=font)
    img.paste(body, (0, LABEL_H * len(lines)))
    return img


def hstack_panels(*framed: Image.Image) -> Image.Image:
    """Pictures framed by compose_grid (PAD around each) side by side on white, top-aligned, each
    keeping its own width; neighbours share the PAD between them.

    Examples:
        >>> a, b = compose_grid([[Image.new("RGB", (20, 10))]]), compose_grid([[Image.new("RGB", (5, 30))]])
        >>> hstack_panels(a, b).size == (20 + 5 + 3 * PAD, 30 + 2 * PAD)
        True
    """
    if not framed:
        raise ValueError("hstack_panels needs at least one picture")
    out = Image.new("RGB", (sum(f.width for f in framed) - PAD * (len(framed) - 1), max(f.height for f in framed)), _BG)
    x = 0
    for f in framed:
        out.paste(f.convert("RGB"), (x, 0))
        x += f.width - PAD
    return out


# ------------------------------------------------------------------ open-vocabulary segmentation (dino.txt)
# Twenty distinct colours for labels, in order (our own list: saturated first, then lighter tones).
LABEL_COLOURS = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240), (245, 130, 48),
    (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128), (128, 128, 0),
    (250, 190, 212), (170, 255, 195), (220, 190, 255), (255, 215, 180), (128, 128, 128), (0, 0, 0),
]


def segmentation_figure(image: Image.Image, similarity: Tensor, labels: Sequence[str], caption: str | None = None,
                        alpha: float = 0.55) -> tuple[Image.Image, list[float]]:
    """[image | label colours over the image | legend] for patch-text similarities (T, h, w).

    The (T, h, w) map is upsampled bilinearly to the image's pixels, each pixel takes the label
    of highest similarity, and its colour is blended over the image (alpha = colour weight).
    Returns the picture and each label's share of the pixels (the legend shows it too).
    """
    import torch.nn.functional as F

    T, h, w = similarity.shape
    if T != len(labels) or T < 1:
        raise ValueError(f"{T} similarity maps for {len(labels)} labels")
    if T > len(LABEL_COLOURS):
        raise ValueError(f"at most {len(LABEL_COLOURS)} labels can be told apart by colour, got {T}")
    require_finite(similarity, "the patch-text similarities")
    W, H = image.size
    up = F.interpolate(similarity[None].float(), size=(H, W), mode="bilinear", align_corners=False)[0]  # (T, H, W)
    winner = up.argmax(dim=0).numpy()  # (H, W) label index per pixel
    palette = np.array(LABEL_COLOURS[:T], dtype=np.float64)
    base = np.asarray(image.convert("RGB"), dtype=np.float64)
    blend = (1 - alpha) * base + alpha * palette[winner]  # (H, W, 3)
    overlay = Image.fromarray(np.round(blend).astype(np.uint8), "RGB")
    shares = [float((winner == t).mean()) for t in range(T)]
    font = _font()
    row = LABEL_H + 4
    legend_w = int(max(font.getlength(f"{lab}  {100 * s:.0f}%") for lab, s in zip(labels, shares))) + 3 * PAD + 14
    legend = Image.new("RGB", (max(legend_w, 60), max(H, T * row + PAD)), _BG)
    draw = ImageDraw.Draw(legend)
    for t, (lab, s) in enumerate(zip(labels, shares)):
        y = PAD + t * row
        draw.rectangle([PAD, y + 1, PAD + 12, y + 13], fill=LABEL_COLOURS[t], outline=_FG)
        draw.text((2 * PAD + 14, y), f"{lab}  {100 * s:.0f}%", fill=_FG, font=font)
    return compose_grid([[image.convert("RGB"), overlay, legend]], [["image", "labels", "legend"]], caption), shares
