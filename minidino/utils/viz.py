"""The building blocks of minidino's pictures: PCA of patch features as RGB, the colour map, panel layout.

The classic DINOv2 figure: project every patch token onto the first three principal
components of the patch features (fitted jointly over all images, so the same colour means
the same feature direction in every image) and show the projections as RGB, next to the
image. The first component alone often separates foreground from background, so it can
also serve as a mask: `foreground_mask` thresholds it, and `pca_rgb(..., mask=...)` fits
the colours on the foreground patches only, leaving the background black.

The maths is on tensors and numpy arrays; Pillow is used only to compose pictures. The figures
themselves (PCA, attention, depth, segmentation) are in figures.py, built from these pieces so
that they look alike. Shapes: N images, h w patch grid, D width, nh heads, H W pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = [
    "fit_pca", "pca_rgb", "first_component", "foreground_mask", "colormap", "to_image", "upsample",
    "denormalize", "compose_grid", "compose_side_by_side", "first_component_flat", "pca_rgb_flat", "hstack_panels",
    "with_caption", "colour_bar", "NotFiniteError", "require_finite",
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


def _fit(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: float) -> str:
    """`text` shortened in the middle ("a_very_lo…name.png") to fit `width` pixels: a panel's label
    never runs into its neighbour's."""
    if font.getlength(text) <= width:
        return text
    keep = len(text)
    while keep > 1 and font.getlength(text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2:]) > width:
        keep -= 1
    return text[: (keep + 1) // 2] + "…" + text[len(text) - keep // 2:]


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
                draw.text((x, y + 1), _fit(labels[r][c], font, Wc), fill=_FG, font=font)
            out.paste(panel.convert("RGB"), (x, y + L))
    return out


def compose_side_by_side(
    images: Sequence[Image.Image], maps: Sequence[Image.Image], labels: Sequence[str] = ("image", "features"),
    caption: str | None = None, names: Sequence[str] | None = None,
) -> Image.Image:
    """One row per image: [image, map], the map resized (nearest) to the image's size. `names`
    label each row's image (a file or scene name) instead of labels[0].

    Examples:
        >>> from PIL import Image
        >>> pic = compose_side_by_side([Image.new("RGB", (28, 28))], [Image.new("RGB", (2, 2))], caption="test")
        >>> pic.width == 2 * 28 + 3 * PAD
        True
    """
    if len(images) != len(maps) or not images:
        raise ValueError(f"need as many maps as images (and at least one), got {len(images)} images and {len(maps)} maps")
    if names is not None and len(names) != len(images):
        raise ValueError(f"need one name per image, got {len(names)} names for {len(images)} images")
    rows = [[img, upsample(m, img.size)] for img, m in zip(images, maps)]
    row_labels = [[names[i] if names is not None else labels[0], *labels[1:]] for i in range(len(rows))]
    return compose_grid(rows, row_labels, caption)


def with_caption(body: Image.Image, caption: str | None, min_width: int = 240) -> Image.Image:
    """`body` with `caption` above it, wrapped to the picture's width (a narrow picture is widened to
    min_width rather than wrapping one word a line).

    Examples:
        >>> pic = with_caption(Image.new("RGB", (300, 50)), "a caption")
        >>> pic.size == (300, 50 + LABEL_H)
        True
    """
    if not caption:
        return body
    font = _font()
    width = max(body.width, min(int(font.getlength(caption)) + 2 * PAD, min_width))
    lines = _wrap(caption, font, width - 2 * PAD)
    out = Image.new("RGB", (width, body.height + LABEL_H * len(lines)), _BG)
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((PAD, PAD // 2 + i * LABEL_H), line, fill=_FG, font=font)
    out.paste(body.convert("RGB"), (0, LABEL_H * len(lines)))
    return out


def colour_bar(height: int, ticks: Sequence[tuple[float, str]], width: int = 56) -> Image.Image:
    """The colour map as a vertical bar (value 1 at the top, 0 at the bottom) with text ticks at
    positions in [0, 1]: what the colours of a map mean.

    Examples:
        >>> bar = colour_bar(100, [(0.0, "0"), (1.0, "max")])
        >>> bar.size
        (56, 100)
    """
    bar_h = max(height, 60)
    ramp = np.linspace(1.0, 0.0, bar_h)[:, None].repeat(12, axis=1)  # (bar_h, 12): the top row is value 1
    out = Image.new("RGB", (width, bar_h), _BG)
    out.paste(to_image(colormap(ramp)), (0, 0))
    draw = ImageDraw.Draw(out)
    font = _font()
    for pos, text in ticks:
        y = int(round((1.0 - pos) * (bar_h - 1)))
        draw.line([(12, y), (16, y)], fill=_FG)
        draw.text((18, min(max(y - 6, 0), bar_h - 12)), text, fill=_FG, font=font)
    return out


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


