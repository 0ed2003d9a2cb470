"""Image decoding and preprocessing for DINOv2, with Pillow and torch only (no torchvision).

    img = load_image("cat.jpg")                  # PIL RGB, EXIF orientation applied
    x = classification_transform(img)            # (3, 224, 224): shorter side 256 bicubic, centre crop 224
    x = dense_transform(img, size=448)           # (3, H, W), H and W multiples of 14, shorter side 448

All tensors are float32 RGB, normalised with the ImageNet mean and std (SPEC.md section 7) unless
`mean=` and `std=` say otherwise: weights trained on other images bring their own (DINOv3's SAT-493M:
minidino.catalogue.SATELLITE; `minidino.factory.resolve(name, weights=...).weights.preprocessing`).
Resizing is Pillow's antialiased BICUBIC, the filter the official evaluation pipeline uses
on PIL images.

Decoding choices (`load_image`), each for a reason:
- EXIF orientation is applied, so a phone photo is upright (as every image viewer shows it).
- Transparency is composited on WHITE, not dropped: the colour stored under transparent
  pixels is arbitrary (often black or left-over paint), while transparent product photos and
  logos are meant to be seen on a light page.
- 16-bit and 32-bit greyscale (Pillow modes I;16*, I, F) are rescaled to 8 bits. Pillow's own
  convert("L") clips them at 255, which turns most 16-bit images white.
- Multi-frame files (GIF, TIFF pages) give their first frame.
- Anything Pillow cannot decode (corrupt, truncated, not an image) or that is not a regular
  file (a folder; a FIFO would block) raises `UnreadableImageError`, naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "UnreadableImageError", "load_image", "to_tensor", "normalize",
    "classification_transform", "dense_transform", "dense_size", "load_batch", "IMAGE_EXTENSIONS",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# File name endings that `minidino embed` treats as images when it walks a folder.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif")

ALPHA_BACKGROUND = (255, 255, 255)  # transparency is composited on white (see the module docstring)


class UnreadableImageError(OSError):
    """A file that Pillow cannot decode; `path` names it.

    Examples:
        >>> _ = open("broken.jpg", "wb").write(b"not an image")
        >>> try:
        ...     load_image("broken.jpg")
        ... except UnreadableImageError as e:
        ...     print(e.path)
        broken.jpg
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        super().__init__(f"cannot read image {self.path}: {reason}")


# ------------------------------------------------------------------ decoding
def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """Greyscale with more than 8 bits (I;16*, I, F) -> 8-bit L, rescaled instead of clipped.

    I;16 and I (how Pillow opens 16-bit PNG and TIFF greyscale) are taken as 0..65535;
    F (float TIFF) as 0..1 when its maximum is at most 1, else as 0..255.
    """
    a = np.asarray(img).astype(np.float64)  # (H, W)
    if img.mode == "F":
        a = a * 255.0 if np.nanmax(a, initial=0.0) <= 1.0 else a
    else:
        a = a / 257.0  # 65535 -> 255
    a = np.nan_to_num(a, nan=0.0)
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow image -> 8-bit RGB: alpha composited on white, high bit depths rescaled."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _high_bit_depth_to_l(img).convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info) \
        or (img.mode in ("L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file to an upright 8-bit RGB PIL image (see the module docstring).

    Raises UnreadableImageError (an OSError naming the file) when the file is missing,
    corrupt, truncated or not an image.

    Examples:
        >>> from PIL import Image
        >>> Image.new("L", (40, 30)).save("gray.png")
        >>> img = load_image("gray.png")
        >>> img.mode, img.size                              # always RGB, (W, H)
        ('RGB', (40, 30))
    """
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO or device would block or never end
        raise UnreadableImageError(path, "is a directory" if os.path.isdir(path) else "is not a regular file")
    try:
        with Image.open(path) as f:
            f.seek(0)  # first frame of an animation / multi-page file
            f.load()  # decode now, so a truncated file fails here and not later
            img = ImageOps.exif_transpose(f)  # a copy, upright
            if img is f:  # older Pillow returns the same object when there is nothing to do
                img = f.copy()
        return to_rgb(img)
    except FileNotFoundError as e:
        raise UnreadableImageError(path, "no such file") from e
    except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError...
        reason = "not an image Pillow can identify" if isinstance(e, Image.UnidentifiedImageError) else str(e) or type(e).__name__
        raise UnreadableImageError(path, reason) from e


# ------------------------------------------------------------------ tensors
def to_tensor(img: Image.Image) -> Tensor:
    """PIL image -> (3, H, W) float32 RGB in [0, 1] (non-RGB images go through `to_rgb`).

    Examples:
        >>> from PIL import Image
        >>> t = to_tensor(Image.new("RGB", (40, 30), (255, 0, 0)))
        >>> tuple(t.shape), t[:, 0, 0].tolist()             # (3, H, W) in [0, 1]
        ((3, 30, 40), [1.0, 0.0, 0.0])
    """
    a = np.asarray(to_rgb(img), dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)


def normalize(t: Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """(t - mean) / std per channel, for (3, H, W) or (B, 3, H, W); returns a new tensor.

    Examples:
        >>> tuple(normalize(torch.rand(2, 3, 28, 28)).shape)
        (2, 3, 28, 28)
    """
    m = torch.tensor(mean, dtype=t.dtype, device=t.device).view(-1, 1, 1)  # (3, 1, 1)
    s = torch.tensor(std, dtype=t.dtype, device=t.device).view(-1, 1, 1)
    return (t - m) / s


def _resize(img: Image.Image, size_wh: tuple[int, int]) -> Image.Image:
    """Pillow's antialiased bicubic resize to (W, H); the image itself when the size is already right."""
    return img if img.size == size_wh else img.resize(size_wh, Image.Resampling.BICUBIC)


# ------------------------------------------------------------------ classification
def classification_transform(img: Image.Image, *, resize: int = 256, crop: int = 224,
                             mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """The ImageNet evaluation preprocessing: (3, crop, crop), normalised with `mean` and `std`.

    The shorter side is resized to `resize` with bicubic filtering (the longer side to
    int(resize * long / short), truncated), then the centre crop x crop is taken (offset
    int(round((side - crop) / 2)) from the top left), as in the official linear evaluation.

    Examples:
        >>> from PIL import Image
        >>> tuple(classification_transform(Image.new("RGB", (640, 480))).shape)   # 480 -> 256 -> centre 224
        (3, 224, 224)
    """
    img = to_rgb(img)
    W, H = img.size
    if W <= H:
        new_w, new_h = resize, int(resize * H / W)
    else:
        new_w, new_h = int(resize * W / H), resize
    img = _resize(img, (new_w, new_h))
    if crop > min(new_w, new_h):
        raise ValueError(f"crop {crop} is larger than the resized image {new_w}x{new_h}")
    top, left = int(round((new_h - crop) / 2.0)), int(round((new_w - crop) / 2.0))
    img = img.crop((left, top, left + crop, top + crop))
    return normalize(to_tensor(img), mean, std)


# ------------------------------------------------------------------ dense
def _round_to(n: float, m: int) -> int:
    """Nearest multiple of m, at least m."""
    return max(m, int(round(n / m)) * m)


def dense_size(image_hw: tuple[int, int], size: int | Sequence[int] | None = None, patch_size: int = 14) -> tuple[int, int]:
    """The (H, W) that `dense_transform(mode="resize")` produces for an image of size image_hw.

    size None: the image's own size, each side rounded to the nearest multiple of patch_size.
    size an int: the shorter side becomes `size` rounded to a multiple of patch_size, the
    longer side keeps the aspect ratio and is rounded likewise. size (H, W): those, rounded.

    Examples:
        >>> dense_size((480, 640), 448), dense_size((480, 640)), dense_size((480, 640), (224, 300))
        ((448, 602), (476, 644), (224, 294))
    """
    H, W = image_hw
    if size is None:
        return _round_to(H, patch_size), _round_to(W, patch_size)
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        short = _round_to(size, patch_size)
        if H <= W:
            return short, _round_to(W * short / H, patch_size)
        return _round_to(H * short / W, patch_size), short
    if len(size) != 2:
        raise ValueError(f"size must be an int (shorter side) or (H, W), got {size!r}")
    return _round_to(size[0], patch_size), _round_to(size[1], patch_size)


def dense_transform(img: Image.Image, *, size: int | Sequence[int] | None = None, mode: str = "resize",
                    patch_size: int = 14, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> Tensor:
    """(3, H, W) normalised with `mean` and `std`, H and W multiples of patch_size, for patch features.

    mode="resize": bicubic resize to `dense_size(...)` (aspect kept up to the rounding to
    whole patches, at most patch_size / 2 pixels per side).
    mode="pad": the image is not distorted. With size None it keeps its size; with an int it
    is resized so the shorter side is exactly `size`; with (H, W) it is resized to fit inside
    (H, W) rounded to whole patches. Then it is padded at the bottom and right, up to whole
    patches (or to (H, W)), with zeros after normalisation (the colour `mean`). Padding
    only bottom and right keeps pixel (y, x) at (y, x): patch (i, j) covers the original pixels
    [14i, 14i + 14) x [14j, 14j + 14).

    Examples:
        >>> from PIL import Image
        >>> tuple(dense_transform(Image.new("RGB", (640, 480)), size=448).shape)   # shorter side 448, sides multiples of 14
        (3, 448, 602)
    """
    if mode not in ("resize", "pad"):
        raise ValueError(f"mode must be 'resize' or 'pad', got {mode!r}")
    img = to_rgb(img)
    W0, H0 = img.size
    if mode == "resize":
        H, W = dense_size((H0, W0), size, patch_size)
        return normalize(to_tensor(_resize(img, (W, H))), mean, std)
    if size is None:
        h_in, w_in = H0, W0
    elif isinstance(size, int):
        s = size / min(H0, W0)
        h_in, w_in = max(1, round(H0 * s)), max(1, round(W0 * s))
    else:
        box_h, box_w = _round_to(size[0], patch_size), _round_to(size[1], patch_size)
        s = min(box_h / H0, box_w / W0)
        h_in, w_in = min(box_h, max(1, round(H0 * s))), min(box_w, max(1, round(W0 * s)))
    x = normalize(to_tensor(_resize(img, (w_in, h_in))), mean, std)  # (3, h_in, w_in)
    if size is not None and not isinstance(size, int):
        H, W = box_h, box_w
    else:
        H, W = -(-h_in // patch_size) * patch_size, -(-w_in // patch_size) * patch_size  # ceil to whole patches
    return torch.nn.functional.pad(x, (0, W - w_in, 0, H - h_in), value=0.0)  # (3, H, W)


def load_batch(paths: Sequence[str | os.PathLike], transform: Callable[[Image.Image], Tensor] = classification_transform) -> Tensor:
    """(B, 3, H, W): every file decoded with `load_image` and transformed (all must give one size).

    Examples:
        >>> from PIL import Image
        >>> for i in range(2):
        ...     Image.new("RGB", (300, 260)).save(f"im{i}.png")
        >>> tuple(load_batch(["im0.png", "im1.png"]).shape)   # (B, 3, 224, 224)
        (2, 3, 224, 224)
    """
    xs = [transform(load_image(p)) for p in paths]
    shapes = {tuple(x.shape) for x in xs}
    if len(shapes) > 1:
        raise ValueError(f"the transform gave different sizes {sorted(shapes)}; use a fixed size to batch them")
    return torch.stack(xs)
