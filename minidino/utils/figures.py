"""The pictures minidino draws: PCA of patch features, attention heatmaps, depth maps, segmentation.

Each figure runs the model it is given (any backbone with forward_features / get_attention_maps)
or takes its outputs, and composes panels with the layout helpers of viz.py, so every picture
shares one colour map, font and caption style. Shapes: N images, h w patch grid, D width,
nh heads, H W pixels, T labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from .viz import (
    LABEL_H, PAD, _BG, _FG, _border, _font, colormap, colour_bar, compose_grid, compose_side_by_side, denormalize,
    first_component_flat, hstack_panels, pca_rgb_flat, require_finite, to_image, upsample, with_caption,
)

__all__ = ["attention_panels", "pca_figure", "attention_figure", "depth_preview", "depth_figure", "segmentation_figure",
           "LABEL_COLOURS"]


def attention_panels(cls_attn: Tensor, size: tuple[int, int]) -> list[Image.Image]:
    """One heatmap per head from the class token's attention (nh, h, w), each scaled from 0 (dark)
    to its own maximum (bright: heads differ in sharpness) and resized (nearest) to `size` (W, H);
    then the mean over heads as the last panel. `attention_maxima` gives the value of "bright".

    Examples:
        >>> panels = attention_panels(torch.rand(6, 2, 3), (42, 28))   # (nh, h, w) -> nh + 1 pictures
        >>> len(panels), panels[0].size
        (7, (42, 28))
    """
    return [upsample(to_image(colormap((m / m.max().clamp_min(1e-12)).numpy())), size) for m in _attention_maps(cls_attn)]


def _attention_maps(cls_attn: Tensor) -> list[Tensor]:
    """The heads' maps (nh, h, w) and their mean, float64 on the CPU."""
    if cls_attn.ndim != 3:
        raise ValueError(f"cls_attn must be (nh, h, w), got shape {tuple(cls_attn.shape)}")
    a = cls_attn.detach().cpu().double()
    return list(a) + [a.mean(dim=0)]


def _attention_labels(cls_attn: Tensor) -> list[str]:
    """'head 0  max 3.1%' ...: the attention weight that the brightest colour of each panel stands for."""
    names = [f"head {i}" for i in range(cls_attn.shape[0])] + ["mean"]
    return [f"{n}  max {100 * float(m.max()):.1f}%" for n, m in zip(names, _attention_maps(cls_attn))]


_ATTENTION_NOTE = ("colour: the class token's attention to each patch (softmax weight), from 0 (dark) to the "
                   "panel's max (bright, the % in its label); registers skipped")


@torch.no_grad()
def pca_figure(
    model: torch.nn.Module, xs: Sequence[Tensor], *, mean: Sequence[float], std: Sequence[float],
    foreground: bool = False, threshold: float = 0.0, caption: str | None = None, names: Sequence[str] | None = None,
) -> tuple[Image.Image, dict[str, object]]:
    """The classic DINOv2 picture for normalised images xs (each (3, H, W), sizes may differ).

    One row per image: [image, PCA colours], labelled by `names` (file or scene names). The
    colours are the first three principal components as red, green and blue: not a value scale,
    so the caption says so instead of a colour bar. The PCA is fitted jointly on the patch tokens of
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
    note += ": red, green, blue = the 1st, 2nd, 3rd principal components (similar colours, similar features)"
    if foreground:
        note += f"; background = first component <= {threshold:g} std (black)"
    caption = f"{caption}\n{note}" if caption else note
    return compose_side_by_side(images, maps, ("image", what), caption, names=names), info


@torch.no_grad()
def attention_figure(
    model: torch.nn.Module, x: Tensor | Sequence[Tensor], *, mean: Sequence[float], std: Sequence[float],
    block: int = -1, columns: int = 4, overlay: bool = False, caption: str | None = None,
    names: Sequence[str] | None = None,
) -> tuple[Image.Image, Tensor]:
    """The class token's attention to the patches in one block, per head, with a colour bar.

    One normalised image x (3, H, W): a grid [image, head 0, head 1, ..., mean] wrapped at
    `columns`. Several images (a list): one row per image, [image, head 0, ..., mean], each row
    labelled by `names`. Each heatmap runs from 0 (dark) to its own maximum (bright), which its
    label gives in percent; registers are skipped. Returns the picture and the attention weights,
    (nh, h, w) for one image, (B, nh, h, w) for a list (of images of one size).

    Examples:
        >>> from minidino.utils.transforms import IMAGENET_MEAN, IMAGENET_STD
        >>> from minidino.conformance.golden import random_model
        >>> model = random_model("dinov2_vits14", depth=1)
        >>> pic, attn = attention_figure(model, torch.randn(3, 28, 42), mean=IMAGENET_MEAN, std=IMAGENET_STD)
        >>> tuple(attn.shape)                                   # (nh, h, w)
        (6, 2, 3)
        >>> pic, attn = attention_figure(model, [torch.randn(3, 28, 42)] * 2, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        ...                              names=["a", "b"])
        >>> tuple(attn.shape)                                   # (B, nh, h, w): one row per image
        (2, 6, 2, 3)
    """
    xs = [x] if isinstance(x, Tensor) else list(x)
    if not xs or (names is not None and len(names) != len(xs)):
        raise ValueError(f"attention_figure needs at least one image and one name per image, got {len(xs)} images")
    p = model.patch_size
    ref = next(model.parameters())
    blk = block % len(model.blocks)
    rows, labels, maps = [], [], []
    for i, xi in enumerate(xs):
        h, w = xi.shape[-2] // p, xi.shape[-1] // p
        attn = model.get_attention_maps(xi.unsqueeze(0).to(ref.device, ref.dtype), blocks=(block,))[0]  # (1, nh, N, N)
        require_finite(attn, "the attention maps")
        cls = model.cls_attention_map(attn, h, w)[0]  # (nh, h, w)
        image = denormalize(xi, mean, std)
        heat = attention_panels(cls, image.size)
        if overlay:
            heat = [Image.blend(image, m, 0.6) for m in heat]
        name = names[i] if names is not None else "image"
        rows.append([image] + heat)
        labels.append([f"{name} (block {blk})"] + _attention_labels(cls))
        maps.append(cls)
    if len(xs) == 1:  # one image: wrap its panels at `columns`
        columns = max(1, columns)
        rows = [rows[0][i : i + columns] for i in range(0, len(rows[0]), columns)]
        labels = [labels[0][i : i + columns] for i in range(0, len(labels[0]), columns)]
    grid = compose_grid(rows, labels)
    bar = compose_grid([[colour_bar(min(grid.height - 2 * PAD - LABEL_H, 240), [(0.0, "0"), (1.0, "max"), (0.5, "max/2")])]],
                       [["attention"]])
    picture = with_caption(hstack_panels(grid, bar), f"{caption}\n{_ATTENTION_NOTE}" if caption else _ATTENTION_NOTE)
    return picture, maps[0] if len(xs) == 1 else torch.stack(maps)


def _nice_step(span: float, ticks: int = 5) -> float:
    """A round tick spacing (1, 2 or 5 times a power of ten) giving about `ticks` intervals over `span`."""
    raw = max(span, 1e-9) / ticks
    mag = 10 ** np.floor(np.log10(raw))
    return float(next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw))


def _depth_bar(lo: float, hi: float, height: int) -> Image.Image:
    """The colour bar of depth maps drawn by `_depth_image`, ticks in metres at round values."""
    span = max(hi - lo, 1e-6)
    step = _nice_step(span)
    ticks, t = [], np.ceil(lo / step) * step
    while t <= hi + 1e-9:
        ticks.append(((hi - t) / span, f"{t:g}"))  # far (hi) at the top: dark, as in the map
        t += step
    return colour_bar(height, ticks)


def _depth_image(d: np.ndarray, lo: float, hi: float) -> Image.Image:
    """Near is bright, far is dark (the ramp of `colormap`, reversed), between lo and hi metres."""
    return to_image(colormap(1.0 - (d - lo) / max(hi - lo, 1e-6)))


def _as_array(depth: Tensor | np.ndarray) -> np.ndarray:
    d = np.asarray(depth.detach().cpu().double() if isinstance(depth, Tensor) else depth, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {d.shape}")
    require_finite(d, "the depth map")
    return d


def depth_preview(depth: Tensor | np.ndarray, *, caption: str | None = None) -> Image.Image:
    """A colour-mapped depth map (H, W) in metres with a vertical scale bar in metres beside it.

    Near is bright, far is dark, scaled between the map's own minimum and maximum, which the bar's
    ticks label. caption: text above the picture (e.g. the weights used, or that they are random).

    Examples:
        >>> pic = depth_preview(torch.rand(30, 40) * 10, caption="random")
        >>> pic.height > 30 and pic.width > 40
        True
    """
    d = _as_array(depth)
    lo, hi = float(d.min()), float(d.max())
    # the map and the bar side by side, each its own width (a grid of equal cells would give the
    # narrow bar a cell as wide as the map, leaving a blank strip at the right)
    body = hstack_panels(compose_grid([[_depth_image(d, lo, hi)]], [["depth"]]),
                         compose_grid([[_depth_bar(lo, hi, d.shape[0])]], [["metres"]]))
    return with_caption(body, caption)


def depth_figure(images: Sequence[Image.Image], depths: Sequence[Tensor | np.ndarray], names: Sequence[str], *,
                 caption: str | None = None) -> Image.Image:
    """One row per image, [image | depth map], every map on ONE scale (the smallest and largest depth
    of all of them), with one bar in metres: colours can be compared between rows.

    Examples:
        >>> pics = [Image.new("RGB", (40, 30))] * 2
        >>> fig = depth_figure(pics, [torch.rand(30, 40), 5 + torch.rand(30, 40)], ["near", "far"])
        >>> fig.width > 2 * 40
        True
    """
    ds = [_as_array(d) for d in depths]
    if not ds or len(ds) != len(images) or len(names) != len(images):
        raise ValueError(f"need one depth map and one name per image, got {len(images)}, {len(ds)}, {len(names)}")
    lo, hi = min(float(d.min()) for d in ds), max(float(d.max()) for d in ds)
    rows = [[img.convert("RGB"), _depth_image(d, lo, hi)] for img, d in zip(images, ds)]
    grid = compose_grid(rows, [[name, "depth"] for name in names])
    bar = compose_grid([[_depth_bar(lo, hi, grid.height - 2 * PAD - LABEL_H)]], [["metres"]])
    note = "one colour scale for every row (near bright, far dark)"
    return with_caption(hstack_panels(grid, bar), f"{caption}\n{note}" if caption else note)


# Twenty distinct colours for labels, in order (our own list: saturated first, then lighter tones).
LABEL_COLOURS = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (145, 30, 180), (70, 240, 240), (245, 130, 48),
    (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128), (128, 128, 0),
    (250, 190, 212), (170, 255, 195), (220, 190, 255), (255, 215, 180), (128, 128, 128), (0, 0, 0),
]


def segmentation_figure(image: Image.Image, similarity: Tensor, labels: Sequence[str],
                        caption: str | None = None) -> tuple[Image.Image, list[float]]:
    """[image with the regions' outlines | labels | legend] for patch-text similarities (T, h, w).

    The (T, h, w) map is upsampled bilinearly to the image's pixels and each pixel takes the label
    of highest similarity. The label panel paints each pixel in its label's colour, exactly the
    legend's swatch (no blending with the photo, which would change the colours); the image panel
    outlines the regions in the same colours. Returns the picture and each label's share of the
    pixels (the legend shows it too).

    Examples:
        >>> pic, shares = segmentation_figure(Image.new("RGB", (42, 28)), torch.rand(2, 2, 3), ["a cat", "a dog"])
        >>> round(sum(shares), 6)
        1.0
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
    palette = np.array(LABEL_COLOURS[:T], dtype=np.uint8)
    solid = Image.fromarray(palette[winner], "RGB")  # (H, W, 3): the swatch colours themselves
    edge = np.zeros((H, W), dtype=bool)  # a pixel whose right or lower neighbour has another label
    edge[:, :-1] |= winner[:, 1:] != winner[:, :-1]
    edge[:-1, :] |= winner[1:, :] != winner[:-1, :]
    outlined = np.asarray(image.convert("RGB")).copy()
    outlined[edge] = palette[winner][edge]
    shares = [float((winner == t).mean()) for t in range(T)]
    font = _font()
    row = LABEL_H + 4
    legend_w = int(max(font.getlength(f"{lab}  {100 * s:.0f}%") for lab, s in zip(labels, shares))) + 2 * PAD + 16
    legend = Image.new("RGB", (max(legend_w, 60), T * row + PAD), _BG)
    draw = ImageDraw.Draw(legend)
    for t, (lab, s) in enumerate(zip(labels, shares)):
        y = PAD + t * row
        draw.rectangle([0, y + 1, 12, y + 13], fill=LABEL_COLOURS[t], outline=_FG)
        draw.text((PAD + 14, y), f"{lab}  {100 * s:.0f}%", fill=_FG, font=font)
    body = hstack_panels(compose_grid([[Image.fromarray(outlined, "RGB"), solid]], [["image, region outlines", "labels"]]),
                         compose_grid([[legend]], [["legend"]]))
    return with_caption(body, caption), shares
