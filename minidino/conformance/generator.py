"""The golden-vector generator (splitmix64, version 1): weights and inputs any implementation can rebuild.

Weights and inputs of the golden cases are not stored: they are rebuilt bit-exactly from a
counter-based generator (tests/golden/README.md), so the same check runs in any language on any
hardware. `random_model` gives any entry point such weights: random, reproducible anywhere, offline.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import factory  # factory.create_model looked up at each call (a test may patch it)

__all__ = [
    "splitmix64", "uniform", "generate_tensor", "init_range", "generate_key", "generate_state_dict", "generate_for", "random_model",
    "weights_sha256", "generate_images", "generate_masks",
]

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(x: np.ndarray | int) -> np.ndarray:
    """splitmix64 finaliser on unsigned 64-bit integers (wrapping arithmetic).

    Examples:
        >>> hex(int(splitmix64(1234567)))
        '0x599ed017fb08fc85'
    """
    z = np.array(x, dtype=np.uint64)  # a copy: the steps below work in place (one buffer, fast on big tensors)
    with np.errstate(over="ignore"):
        z += np.uint64(0x9E3779B97F4A7C15)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


_CHUNK = 1 << 16  # elements per step: the working arrays stay in the CPU cache (the 7B's matrices: 4x faster)


def _uniform_chunks(seed: int, stream: int, n: int, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, u) for consecutive chunks of elements start .. start+n-1: the values of `uniform`,
    computed in place in reused buffers (a chunk is overwritten by the next one)."""
    if not (0 <= seed < 2**16 and 0 <= stream < 2**16):
        raise ValueError(f"seed and stream must be < 2**16, got {seed}, {stream}")
    base = (np.uint64(seed) << np.uint64(48)) | (np.uint64(stream) << np.uint64(32))
    index = np.arange(min(_CHUNK, max(n, 1)), dtype=np.uint64)
    z, t, u = np.empty_like(index), np.empty_like(index), np.empty(len(index), dtype=np.float64)
    with np.errstate(over="ignore"):
        for offset in range(0, n, _CHUNK):
            m = min(_CHUNK, n - offset)
            zz, tt, uu = z[:m], t[:m], u[:m]
            np.add(index[:m], np.uint64(start + offset), out=zz)
            zz |= base  # (seed << 48) | (stream << 32) | i
            zz += np.uint64(0x9E3779B97F4A7C15)  # splitmix64, step by step in place
            np.right_shift(zz, np.uint64(30), out=tt)
            zz ^= tt
            zz *= np.uint64(0xBF58476D1CE4E5B9)
            np.right_shift(zz, np.uint64(27), out=tt)
            zz ^= tt
            zz *= np.uint64(0x94D049BB133111EB)
            np.right_shift(zz, np.uint64(31), out=tt)
            zz ^= tt
            zz >>= np.uint64(40)  # the top 24 bits
            uu[:] = zz
            uu /= float(2**24)
            yield offset, uu


def uniform(seed: int, stream: int, n: int, start: int = 0) -> np.ndarray:
    """Elements start .. start+n-1 of stream `stream`: float64 multiples of 2**-24 in [0, 1).

    Examples:
        >>> uniform(7, 12, 3).tolist()
        [0.034661948680877686, 0.12949126958847046, 0.545982301235199]
    """
    out = np.empty(n, dtype=np.float64)
    for offset, u in _uniform_chunks(seed, stream, n, start):
        out[offset : offset + len(u)] = u
    return out


def generate_tensor(seed: int, stream: int, shape: tuple[int, ...], center: float, half_width: float) -> Tensor:
    """float32(center + half_width * (2u - 1)), computed in float64 and rounded once.

    Examples:
        >>> t = generate_tensor(0, 0, (2, 3), center=1.0, half_width=0.25)
        >>> t.dtype, bool(((t >= 0.75) & (t < 1.25)).all())
        (torch.float32, True)
    """
    n = int(np.prod(shape)) if shape else 1
    out = np.empty(n, dtype=np.float32)
    for offset, u in _uniform_chunks(seed, stream, n):
        u *= 2.0
        u -= 1.0
        u *= half_width
        u += center  # float64: center + half_width * (2u - 1)
        out[offset : offset + len(u)] = u  # rounded once to float32
    return torch.from_numpy(out.reshape(shape))


def init_range(key: str, shape: tuple[int, ...]) -> tuple[float, float]:
    """(centre, half-width) of a key's generated values (tests/golden/README.md).

    Examples:
        >>> init_range("blocks.0.ls1.gamma", (384,)), init_range("blocks.0.attn.qkv.bias", (1152,))
        ((0.5, 0.25), (0.0, 0.1))
    """
    if key.endswith(".gamma"):
        return 0.5, 0.25
    if key == "decode_head.conv_depth.head.4.bias":
        # The DPT depthers' last bias (the regression is relu(x) + min_depth, then clamped): centred at
        # 2 m so the depth lies inside the range, not at min_depth, and the check exercises every layer.
        return 2.0, 0.1
    if key.endswith(("norm.weight", "norm1.weight", "norm2.weight")):
        return 1.0, 0.25
    if key.endswith(".bias"):
        return 0.0, 0.1
    if key in ("cls_token", "register_tokens", "storage_tokens", "mask_token", "pos_embed"):
        # Exact names only: in the classifier cases `backbone.cls_token` etc. fall through to the
        # fan-in rule below (that is how the reference files were generated; weights_sha256 proves it).
        return 0.0, 1.0
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return 0.0, float(np.sqrt(3.0 / fan_in))


def generate_key(seed: int, stream: int, key: str, shape: tuple[int, ...]) -> Tensor:
    """The generated value of one key: init_range's uniform rule, except DINOv3's two buffers, which
    are not free weights. `rope_embed.periods` (F,): the official periods 100 ** (k / F) times
    (1 + 0.1 (2u - 1)), computed in float64 and rounded once (close to the official ones, and different
    from them, so a model that recomputes them instead of reading them fails). `*.bias_mask` (3D,):
    the official 1 (q), 0 (k), 1 (v), no randomness (its stream is not read).

    Examples:
        >>> generate_key(0, 5, "blocks.0.attn.qkv.bias_mask", (6,)).tolist()
        [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
        >>> p = generate_key(0, 7, "rope_embed.periods", (16,))
        >>> bool(((p / (100 ** (torch.arange(16) / 16)) - 1).abs() <= 0.1).all())
        True
    """
    if key.endswith("rope_embed.periods"):
        F = shape[0]
        official = 100.0 ** (np.arange(F, dtype=np.float64) / F)  # rope_base ** (2k / (hd/2)) with hd = 4F
        jitter = 1.0 + 0.1 * (2.0 * uniform(seed, stream, F) - 1.0)
        return torch.from_numpy((official * jitter).astype(np.float32))
    if key.endswith("bias_mask"):
        D = shape[0] // 3
        return torch.from_numpy(np.concatenate([np.ones(D), np.zeros(D), np.ones(D)]).astype(np.float32))
    return generate_tensor(seed, stream, shape, *init_range(key, shape))


def generate_state_dict(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, Tensor]:
    """Weights for these keys: sorted plain string order, key k uses stream k.

    Examples:
        >>> sd = generate_state_dict({"a.weight": (4, 3), "a.bias": (4,)}, seed=0)
        >>> {k: tuple(v.shape) for k, v in sd.items()}
        {'a.bias': (4,), 'a.weight': (4, 3)}
    """
    return {key: generate_key(seed, k, key, tuple(shapes[key])) for k, key in enumerate(sorted(shapes))}


def generate_for(module: torch.nn.Module, seed: int) -> dict[str, Tensor]:
    """Generated weights for every key of a module's state dict (a meta-device module is fine).

    Examples:
        >>> model = minidino.create_model("dinov2_vits14", depth=1, device="meta")   # shapes only
        >>> sd = generate_for(model, seed=0)
        >>> tuple(sd["pos_embed"].shape), sd["pos_embed"].device.type
        ((1, 1370, 384), 'cpu')
    """
    return generate_state_dict({k: tuple(v.shape) for k, v in module.state_dict().items()}, seed)


def random_model(name: str, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """Hub model `name` with generated weights: random, reproducible anywhere, offline.
    Built on the meta device, so the weights are allocated once.

    Examples:
        >>> model = random_model("dinov2_vits14", seed=0, depth=1)
        >>> tuple(model(generate_images(0, 1, (1, 3, 28, 28))).shape)
        (1, 384)
    """
    model = factory.create_model(name, device="meta", **overrides)
    model.load_state_dict(generate_for(model, seed), strict=True, assign=True)
    return model.eval()


def weights_sha256(state_dict: dict[str, Tensor]) -> str:
    """SHA-256 over each key (UTF-8) then its little-endian float32 bytes, keys sorted.

    Examples:
        >>> len(weights_sha256({"w": torch.zeros(2)}))
        64
    """
    h = hashlib.sha256()
    for key in sorted(state_dict):
        h.update(key.encode())
        h.update(state_dict[key].detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes())
    return h.hexdigest()


def generate_images(seed: int, stream: int, shape: tuple[int, ...]) -> Tensor:
    """Golden input images: a float32 tensor of `shape` (B, 3, H, W), uniform in [-2, 2) (centre 0, half-width 2).

    Examples:
        >>> x = generate_images(1, 1000, (2, 3, 224, 224))
        >>> tuple(x.shape), float(x.min()) >= -2, float(x.max()) < 2
        ((2, 3, 224, 224), True, True)
    """
    return generate_tensor(seed, stream, tuple(shape), 0.0, 2.0)


def generate_masks(seed: int, stream: int, B: int, hw: int, p: float) -> Tensor:
    """Golden masks: (B, h*w) bool, True where the element's uniform(seed, stream, .) value is below p.

    Examples:
        >>> m = generate_masks(1, 2003, 1, 256, 0.3)
        >>> tuple(m.shape), m.dtype
        ((1, 256), torch.bool)
    """
    return torch.from_numpy(uniform(seed, stream, B * hw) < p).reshape(B, hw)
