"""minidino.utils.transforms against Pillow's own resize/crop done by hand, and decoding of odd files."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from minidino.utils.transforms import (
    IMAGENET_MEAN, IMAGENET_STD, UnreadableImageError, classification_transform, dense_size, dense_transform,
    load_batch, load_image, normalize, to_tensor,
)

MEAN = np.array(IMAGENET_MEAN, np.float32)[:, None, None]
STD = np.array(IMAGENET_STD, np.float32)[:, None, None]


def _random_image(w: int, h: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _reference(img: Image.Image) -> torch.Tensor:
    """Normalised (3, H, W) of a PIL RGB image, written with numpy only."""
    a = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
    return torch.from_numpy((a - MEAN) / STD)


def test_to_tensor_and_normalize():
    img = _random_image(5, 3)
    t = to_tensor(img)
    assert t.shape == (3, 3, 5) and t.dtype == torch.float32
    assert torch.equal(t, torch.from_numpy(np.asarray(img).transpose(2, 0, 1).astype(np.float32) / 255))
    assert 0 <= t.min() and t.max() <= 1
    n = normalize(t)
    assert torch.allclose(n, _reference(img), atol=1e-6)
    assert torch.allclose(normalize(t.unsqueeze(0))[0], n)  # batched too
    assert torch.allclose(normalize(torch.tensor(IMAGENET_MEAN).view(3, 1, 1)), torch.zeros(3, 1, 1), atol=1e-7)


@pytest.mark.parametrize("w, h", [(300, 200), (200, 333), (256, 256), (1000, 257)])
def test_classification_transform_is_pillow_bicubic_resize_then_centre_crop(w, h):
    img = _random_image(w, h)
    x = classification_transform(img)
    assert x.shape == (3, 224, 224)
    # By hand: shorter side to 256 (longer side truncated), Pillow BICUBIC, centre crop 224.
    if w <= h:
        size = (256, int(256 * h / w))
    else:
        size = (int(256 * w / h), 256)
    r = img.resize(size, Image.Resampling.BICUBIC) if size != img.size else img
    left, top = int(round((size[0] - 224) / 2)), int(round((size[1] - 224) / 2))
    ref = _reference(r.crop((left, top, left + 224, top + 224)))
    assert torch.allclose(x, ref, atol=1e-6), (x - ref).abs().max()


def test_classification_transform_other_sizes():
    x = classification_transform(_random_image(50, 40), resize=32, crop=28)
    assert x.shape == (3, 28, 28)
    with pytest.raises(ValueError, match="crop"):
        classification_transform(_random_image(50, 40), resize=20, crop=28)


@pytest.mark.parametrize("w, h, size, expect", [
    (100, 60, None, (56, 98)),        # own size, each side rounded to the nearest multiple of 14
    (100, 60, 112, (112, 182)),       # shorter side 112, longer 100 * 112 / 60 = 186.7 -> 182
    (60, 100, 112, (182, 112)),
    (640, 480, 448, (448, 602)),      # 597.3 -> 602
    (100, 60, 100, (98, 168)),        # 100 is rounded to 98
    (100, 60, (70, 30), (70, 28)),    # (H, W), rounded
    (5, 5, None, (14, 14)),           # at least one patch
])
def test_dense_size(w, h, size, expect):
    assert dense_size((h, w), size) == expect
    x = dense_transform(_random_image(w, h), size=size)
    assert tuple(x.shape) == (3, *expect)


def test_dense_resize_is_pillow_bicubic_at_that_size():
    img = _random_image(100, 60)
    x = dense_transform(img, size=112)
    ref = _reference(img.resize((182, 112), Image.Resampling.BICUBIC))
    assert torch.allclose(x, ref, atol=1e-6)
    same = _random_image(112, 56)  # already whole patches: untouched
    assert torch.allclose(dense_transform(same, size=56), _reference(same), atol=1e-6)
    assert dense_transform(img, size=112, patch_size=16).shape == (3, 112, 192)


def test_dense_pad_keeps_pixels_in_place_and_pads_with_the_mean():
    img = _random_image(30, 20)
    x = dense_transform(img, mode="pad")
    assert x.shape == (3, 28, 42)
    assert torch.allclose(x[:, :20, :30], _reference(img), atol=1e-6)  # top-left: the image, unscaled
    assert (x[:, 20:] == 0).all() and (x[:, :, 30:] == 0).all()  # bottom and right: 0 = the ImageNet mean
    y = dense_transform(img, mode="pad", size=40)  # shorter side exactly 40, no distortion
    assert y.shape == (3, 42, 70)
    assert torch.allclose(y[:, :40, :60], _reference(img.resize((60, 40), Image.Resampling.BICUBIC)), atol=1e-6)
    z = dense_transform(img, mode="pad", size=(56, 56))  # fit inside 56 x 56
    assert z.shape == (3, 56, 56) and (z[:, 37:] == 0).all() and not (z[:, :37] == 0).all()
    with pytest.raises(ValueError, match="mode"):
        dense_transform(img, mode="crop")


def test_other_statistics_for_other_weights():
    """mean= and std= (DINOv3's SAT-493M weights have their own): the same pixels, normalised with them;
    the defaults are ImageNet's, bit for bit."""
    from minidino.catalogue import SATELLITE

    img = _random_image(50, 40)
    sat = {"mean": SATELLITE.mean, "std": SATELLITE.std}
    for transform, kw in [(classification_transform, {"resize": 37, "crop": 32}), (dense_transform, {"size": 28}),
                          (dense_transform, {"size": 28, "mode": "pad"})]:
        imagenet = transform(img, **kw)
        assert torch.equal(imagenet, transform(img, **kw, mean=IMAGENET_MEAN, std=IMAGENET_STD))
        pixels = imagenet * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        want = normalize(pixels, SATELLITE.mean, SATELLITE.std)
        got = transform(img, **kw, **sat)
        inside = imagenet.abs().sum(0) > 0  # pad mode: the padding is 0 in both (the mean colour of each)
        assert torch.allclose(got[:, inside], want[:, inside], atol=1e-5) and (got[:, ~inside] == 0).all()


# ------------------------------------------------------------------ decoding
def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high; left half red, right half blue
    a[:, :20] = (255, 0, 0)
    a[:, 20:] = (0, 0, 255)
    a[0, 0] = (0, 255, 0)  # a green marker top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _save(Image.fromarray(a), tmp_path / "rotated.png", exif=exif)
    assert Image.open(path).size == (40, 20)  # stored sideways
    img = load_image(path)
    assert img.size == (20, 40) and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), np.rot90(a, k=-1))  # clockwise: the marker goes top-right
    assert tuple(np.asarray(img)[0, -1]) == (0, 255, 0)


def test_greyscale_and_bilevel_become_grey_rgb(tmp_path):
    g = np.arange(60, dtype=np.uint8).reshape(6, 10) * 4
    img = load_image(_save(Image.fromarray(g, "L"), tmp_path / "grey.png"))
    a = np.asarray(img)
    assert img.mode == "RGB" and (a == g[..., None]).all()
    b = load_image(_save(Image.fromarray(g > 100).convert("1"), tmp_path / "bw.png"))
    assert set(np.unique(np.asarray(b))) == {0, 255}


def test_palette_image_gives_its_colours(tmp_path):
    rgb = _random_image(12, 8, seed=3).quantize(colors=16)  # mode P
    assert rgb.mode == "P"
    img = load_image(_save(rgb, tmp_path / "pal.png"))
    assert np.array_equal(np.asarray(img), np.asarray(rgb.convert("RGB")))


def test_alpha_is_composited_on_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., :3] = (200, 40, 0)
    a[0, :, 3] = 255  # opaque row
    a[1, :, 3] = 0  # transparent row: white, whatever colour is stored under it
    a[2, :, 3] = 128  # half: 200*128/255 + 255*127/255
    a[3, :, 3] = 64
    img = load_image(_save(Image.fromarray(a, "RGBA"), tmp_path / "rgba.png"))
    out = np.asarray(img).astype(int)
    alpha = a[..., 3:].astype(float) / 255
    expect = a[..., :3] * alpha + 255 * (1 - alpha)
    assert np.abs(out - expect).max() <= 1
    assert (out[1] == 255).all() and (out[0] == (200, 40, 0)).all()
    la = load_image(_save(Image.fromarray(a[..., [0, 3]], "LA"), tmp_path / "la.png"))  # grey + alpha
    assert (np.asarray(la)[1] == 255).all() and (np.asarray(la)[0] == 200).all()


def test_palette_transparency_is_white(tmp_path):
    p = Image.new("P", (4, 2), 0)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.putpixel((0, 0), 1)
    path = _save(p, tmp_path / "t.png", transparency=0)  # index 0 transparent
    a = np.asarray(load_image(path))
    assert tuple(a[0, 0]) == (10, 200, 30) and (a[1] == 255).all()


def test_16_bit_greyscale_is_rescaled_not_clipped(tmp_path):
    g = np.array([[0, 257, 32768, 65535], [1000, 20000, 40000, 60000]], np.uint16)
    path = _save(Image.fromarray(g), tmp_path / "g16.png")
    assert Image.open(path).mode.startswith("I")  # Pillow opens it as 16-bit (I;16 or I)
    a = np.asarray(load_image(path))[..., 0].astype(int)
    assert np.abs(a - g / 257).max() <= 0.5
    assert a[0].tolist() == [0, 1, 128, 255]  # Pillow's convert("L") would give 255 for all but the first two
    from minidino.utils.transforms import to_rgb

    assert np.array_equal(np.asarray(to_rgb(Image.fromarray(g.astype(np.int32), "I")))[..., 0], a)
    f = np.asarray(to_rgb(Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")))[..., 0]
    assert f.tolist() == [[0, 128, 255]]


def test_cmyk_and_first_frame_of_an_animation(tmp_path):
    cmyk = load_image(_save(_random_image(8, 8).convert("CMYK"), tmp_path / "c.jpg"))
    assert cmyk.mode == "RGB" and cmyk.size == (8, 8)
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert tuple(np.asarray(load_image(path))[0, 0]) == (255, 0, 0)


def test_unreadable_files_raise_an_error_naming_them(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(UnreadableImageError, match="broken.jpg") as e:
        load_image(bad)
    assert e.value.path == str(bad) and isinstance(e.value, OSError)
    buf = io.BytesIO()
    _random_image(64, 64).save(buf, format="PNG")
    cut = tmp_path / "truncated.png"
    cut.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(UnreadableImageError, match="truncated.png"):
        load_image(cut)
    with pytest.raises(UnreadableImageError, match="missing.png.*no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(UnreadableImageError, match="is a directory"):
        load_image(tmp_path)


def test_load_batch(tmp_path):
    paths = [_save(_random_image(30 + 20 * i, 20, seed=i), tmp_path / f"{i}.png") for i in range(3)]
    x = load_batch(paths)
    assert x.shape == (3, 3, 224, 224)
    assert torch.equal(x[1], classification_transform(load_image(paths[1])))
    with pytest.raises(ValueError, match="different sizes"):
        load_batch(paths, lambda img: dense_transform(img))
