"""The offline demo: synthetic sample scenes, embedded and pictured with any backbone.

`minidino demo` runs it with weights from the golden splitmix64 generator (minidino.conformance.golden,
`--weights random:0`), so it needs no network: the pictures then check the pipeline (decode, preprocess, forward,
PCA, attention, similarity), not what DINOv2 has learned. The same run with the official
weights gives the real features. The sample scenes are drawn by code (no photos), so they
are reproducible and free of copyright.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ..utils import figures
from ..utils.atomic import atomic_write
from ..utils.transforms import IMAGENET_MEAN, IMAGENET_STD, dense_transform

__all__ = ["sample_images", "run_demo", "similarity_table", "FILES"]

# The files run_demo writes under its folder (each atomically; they replace those of an earlier demo).
FILES = ("samples/ball.png", "samples/house.png", "samples/star.png", "samples/boat.png", "pca.png", "attention.png",
         "similarity.txt", "depth.png")

def _gradient(size: tuple[int, int], top: tuple[int, ...], bottom: tuple[int, ...]) -> np.ndarray:
    W, H = size
    t = np.linspace(0, 1, H)[:, None, None]
    a = (1 - t) * np.array(top, float) + t * np.array(bottom, float)
    return np.broadcast_to(a, (H, W, 3)).copy()


def _texture(a: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    return np.clip(a + rng.normal(0, amount, a.shape[:2])[..., None], 0, 255)


def sample_images(size: int = 224) -> dict[str, Image.Image]:
    """Four small synthetic scenes drawn by code (no photos): ball, house, star, boat; size x size RGB.

    Examples:
        >>> scenes = sample_images(112)
        >>> list(scenes), scenes["ball"].size
        (['ball', 'house', 'star', 'boat'], (112, 112))
    """
    S = size
    rng = np.random.default_rng(0)
    out = {}

    # 1. red ball on grass under a blue sky
    a = _gradient((S, S), (90, 150, 230), (190, 220, 250))
    g = _gradient((S, S), (70, 150, 60), (30, 100, 30))
    horizon = int(S * 0.62)
    a[horizon:] = g[horizon:]
    a = _texture(a, rng, 8)
    img = Image.fromarray(a.astype(np.uint8))
    d = ImageDraw.Draw(img)
    r = S * 0.17
    cx, cy = S * 0.45, S * 0.62
    d.ellipse([cx - r * 1.1, cy + r * 0.7, cx + r * 1.1, cy + r * 1.05], fill=(25, 70, 25))  # shadow
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(215, 35, 35))
    d.ellipse([cx - r * 0.55, cy - r * 0.65, cx - r * 0.1, cy - r * 0.25], fill=(245, 140, 140))  # highlight
    out["ball"] = img

    # 2. house with a roof, a door and a sun
    a = _gradient((S, S), (250, 180, 110), (250, 225, 180))
    a[int(S * 0.75):] = (120, 160, 80)
    a = _texture(a, rng, 6)
    img = Image.fromarray(a.astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.ellipse([S * 0.72, S * 0.08, S * 0.90, S * 0.26], fill=(255, 235, 80))
    x0, x1, y0, y1 = S * 0.22, S * 0.62, S * 0.45, S * 0.78
    d.rectangle([x0, y0, x1, y1], fill=(235, 225, 200), outline=(90, 70, 50), width=2)
    d.polygon([(x0 - S * 0.05, y0), ((x0 + x1) / 2, S * 0.22), (x1 + S * 0.05, y0)], fill=(160, 50, 40))
    d.rectangle([S * 0.37, S * 0.60, S * 0.47, y1], fill=(110, 70, 40))
    d.rectangle([S * 0.27, S * 0.52, S * 0.34, S * 0.59], fill=(120, 180, 230), outline=(90, 70, 50))
    d.rectangle([S * 0.51, S * 0.52, S * 0.58, S * 0.59], fill=(120, 180, 230), outline=(90, 70, 50))
    out["house"] = img

    # 3. yellow star on a grey checkerboard table
    yy, xx = np.mgrid[0:S, 0:S]
    cell = S // 8
    board = ((yy // cell + xx // cell) % 2).astype(float)
    a = (140 + 60 * board)[..., None] * np.ones(3)
    a = _texture(a, rng, 5)
    img = Image.fromarray(a.astype(np.uint8))
    d = ImageDraw.Draw(img)
    cx, cy, R, r = S * 0.5, S * 0.52, S * 0.32, S * 0.13
    pts = []
    for k in range(10):
        ang = -np.pi / 2 + k * np.pi / 5
        rad = R if k % 2 == 0 else r
        pts.append((cx + rad * np.cos(ang), cy + rad * np.sin(ang)))
    d.polygon(pts, fill=(250, 200, 30), outline=(170, 120, 0))
    out["star"] = img

    # 4. sailing boat on the sea
    a = _gradient((S, S), (150, 200, 240), (220, 235, 250))
    sea = _gradient((S, S), (30, 90, 160), (10, 40, 100))
    ly = int(S * 0.55)
    a[ly:] = sea[ly:]
    waves = 10 * np.sin(xx / 6.0 + yy / 2.5)
    a[ly:] += waves[ly:, :, None]
    a = _texture(a, rng, 5)
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.polygon([(S * 0.25, S * 0.62), (S * 0.75, S * 0.62), (S * 0.66, S * 0.72), (S * 0.33, S * 0.72)], fill=(120, 60, 30))
    d.line([(S * 0.5, S * 0.62), (S * 0.5, S * 0.18)], fill=(60, 40, 20), width=3)
    d.polygon([(S * 0.52, S * 0.2), (S * 0.52, S * 0.58), (S * 0.72, S * 0.58)], fill=(250, 250, 245))
    d.polygon([(S * 0.48, S * 0.26), (S * 0.48, S * 0.58), (S * 0.32, S * 0.58)], fill=(235, 90, 60))
    out["boat"] = img
    return out



def similarity_table(names: list[str], emb: torch.Tensor) -> tuple[torch.Tensor, str]:
    """Cosine similarities of the embeddings emb (N, D): the (N, N) matrix and a printable table.

    Examples:
        >>> sim, text = similarity_table(["a", "b"], torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
        >>> [[round(v, 3) for v in row] for row in sim.tolist()]
        [[1.0, 0.707], [0.707, 1.0]]
    """
    e = F.normalize(emb.double(), dim=-1)
    sim = (e @ e.T).float()  # (N, N)
    width = max(8, *(len(n) for n in names)) + 1
    lines = [" " * width + "".join(f"{n:>{width}s}" for n in names)]
    for n, row in zip(names, sim.tolist()):
        lines.append(f"{n:<{width}s}" + "".join(f"{v:>{width}.3f}" for v in row))
    return sim, "\n".join(lines)


@torch.no_grad()
def run_demo(
    out_dir: str | Path, model: torch.nn.Module, *, weights_label: str, size: int = 224,
    log: Callable[[str], Any] = print, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
) -> dict[str, Any]:
    """Draw the sample scenes, embed them with `model` and write, under out_dir:
    samples/*.png (the inputs), pca.png (the first three principal components of the patch
    features, fitted on all scenes), attention.png (the class token's attention per head in
    the last block, one row per scene, with a colour bar), similarity.txt (cosine similarity of
    the class tokens) and depth.png (a depther with random weights, one scale for all scenes).
    weights_label is printed on every picture; mean and std are those of the model's weights (the
    scenes are normalised with them and shown through them). Returns paths, embeddings and timings.

    Examples:
        >>> from minidino.conformance.golden import random_model
        >>> out = run_demo("demo_out", random_model("dinov2_vits14", depth=1), weights_label="RANDOM", size=56, log=lambda s: None)
        >>> out["pca"].name, tuple(out["embeddings"].shape), tuple(out["similarity"].shape)
        ('pca.png', (4, 384), (4, 4))
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    scenes = sample_images(size)
    names = list(scenes)
    sample_paths = []
    for name, img in scenes.items():
        path = out / "samples" / f"{name}.png"
        atomic_write(path, lambda tmp, img=img: img.save(tmp, format="PNG"))
        sample_paths.append(path)
    xs = [dense_transform(img, size=size, patch_size=model.patch_size, mean=mean, std=std)  # each (3, H, W), normalised
          for img in scenes.values()]
    t0 = time.perf_counter()
    pca_img, info = figures.pca_figure(model, xs, mean=mean, std=std, caption=weights_label, names=names)
    t_pca = time.perf_counter() - t0
    cls = info["cls"]  # (4, D)
    H, W = xs[0].shape[-2:]
    log(f"{len(xs)} scenes at {H}x{W} px -> class tokens {tuple(cls.shape)}, patch tokens "
        f"({len(xs)}, {info['patch_tokens'][0].shape[0]}, {cls.shape[1]}) ({H // model.patch_size}x{W // model.patch_size} "
        f"patches); forward + PCA {t_pca:.2f} s")
    pca_path = out / "pca.png"
    atomic_write(pca_path, lambda tmp: pca_img.save(tmp, format="PNG"))
    log(f"wrote {pca_path}: each scene next to its patch features' first 3 principal components as RGB")

    att_img, _ = figures.attention_figure(model, xs, mean=mean, std=std, names=names,
                                          caption=f"{weights_label}\nclass-token attention per head, last block")
    att_path = out / "attention.png"
    atomic_write(att_path, lambda tmp: att_img.save(tmp, format="PNG"))
    log(f"wrote {att_path}: where the class token looks, one row per scene, one heatmap per head (bright = attended)")

    sim, table = similarity_table(names, cls)
    sim_path = out / "similarity.txt"
    atomic_write(sim_path, lambda tmp: tmp.write_text(f"# {weights_label}\n# cosine similarity of the class tokens\n{table}\n"))
    log(f"cosine similarity of the class tokens (written to {sim_path}):\n{table}")
    depth_path = depth_panel(out, scenes, size=size, log=log)
    return {
        "samples": sample_paths, "pca": pca_path, "attention": att_path, "similarity_txt": sim_path, "depth": depth_path,
        "names": names, "embeddings": cls, "similarity": sim,
        "seconds": {"forward_pca": t_pca, "total": time.perf_counter() - t_start},
    }


@torch.no_grad()
def depth_panel(out: Path, scenes: dict[str, Any], *, size: int, seed: int = 0, log: Callable[[str], Any] = print) -> Path:
    """depth.png: each scene beside the depth map of a ViT-S/14 DPT depther with RANDOM weights
    (the golden generator; offline), with a scale bar in metres. It shows the pipeline and the
    picture, not real depth: the label on the picture says so."""
    from ..conformance import golden
    from ..utils.figures import depth_figure

    t0 = time.perf_counter()
    model = golden.random_model("dinov2_vits14_dd", seed)
    label = f"RANDOM WEIGHTS (dinov2_vits14_dd, seed {seed}): the depth pipeline, not real depth"
    small = max(14, size // 2)  # the depther runs at half size (it is the costliest part of the demo)...
    x = torch.stack([dense_transform(img, size=small) for img in scenes.values()])  # (4, 3, h, w)
    depth = F.interpolate(model(x), size=(size, size), mode="bilinear", align_corners=False)  # ...shown at full size
    # one row per scene, [scene | depth], every map on one scale with one bar: the rows compare
    picture = depth_figure(list(scenes.values()), [d[0] for d in depth], list(scenes), caption=label)
    log(f"depth of {len(scenes)} scenes at {small} px (ViT-S/14 DPT, random weights): {time.perf_counter() - t0:.2f} s")
    path = out / "depth.png"
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
    log(f"wrote {path}: each scene next to its depth map (metres) from a depther with RANDOM weights")
    return path
