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
    LABEL_H, PAD, _BG, _FG, _border, _font, _wrap, colormap, compose_grid, compose_side_by_side, denormalize,
    first_component_flat, hstack_panels, pca_rgb_flat, to_image, upsample,
)

__all__ = ["attention_panels", "pca_figure", "attention_figure", "depth_preview", "segmentation_figure", "LABEL_COLOURS"]


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


def _nice_step(span: float, ticks: int = 5) -> float:
    """A round tick spacing (1, 2 or 5 times a power of ten) giving about `ticks` intervals over `span`."""
    raw = max(span, 1e-9) / ticks
    mag = 10 ** np.floor(np.log10(raw))
    return float(next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw))


def depth_preview(depth: Tensor | np.ndarray, *, caption: str | None = None, bar_width: int = 56) -> Image.Image:
    """A colour-mapped depth map (H, W) in metres with a vertical scale bar in metres beside it.

    Near is bright, far is dark (the ramp of `colormap`, reversed), scaled between the map's own
    minimum and maximum, which the bar's ticks label. caption: text above the picture (e.g. the
    weights used, or that they are random).

    Examples:
        >>> pic = depth_preview(torch.rand(30, 40) * 10, caption="random")
        >>> pic.height > 30 and pic.width > 40
        True
    """
    d = np.asarray(depth.detach().cpu().double() if isinstance(depth, Tensor) else depth, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {d.shape}")
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
