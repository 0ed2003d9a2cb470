"""The matrix form of the position-embedding resize against `interpolate` (posembed.py).

Measured on this project's machine (x86-64, torch 2.13 CPU) over every (h, w) in 1..80 with
random normal (std 1) embeddings: antialiased bicubic (D = 384) differs from `interpolate` by
at most 7.2e-7, at (28, 58) (float32 rounding of the matrix products: the kernel sums its taps
in another order); plain bicubic with the 0.1 offset (D = 64) is bit-identical at every size.
That sweep takes minutes, so the tests check the 1-D weights exhaustively (bit for bit) and
the 2-D resize on a sample in which every h and every w in 1..80 occurs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minidino import create_model
from minidino.models.posembed import resize_matrices, resize_pos_embed, resize_taps

M = 37
MODES = {"offset (plain models)": (0.1, False), "antialias (register models)": (0.0, True)}
TOL = 1e-6  # the target for the 2-D resize; the measured figure is printed


def reference_weights(n: int, offset: float, antialias: bool, axis: str) -> torch.Tensor:
    """`interpolate`'s own (n, M) weights along one axis: a one-hot basis over M channels,
    the other axis kept at length 2 (not resized, so its weights are exactly the identity)."""
    if axis == "rows":
        basis = torch.eye(M).reshape(1, M, M, 1).expand(1, M, M, 2)  # (1, M channels, M, 2)
        factors, size = (((n + offset) / M, 1.0), None) if offset else (None, (n, 2))
    else:
        basis = torch.eye(M).reshape(1, M, 1, M).expand(1, M, 2, M)  # (1, M channels, 2, M)
        factors, size = ((1.0, (n + offset) / M), None) if offset else (None, (2, n))
    out = F.interpolate(basis.contiguous(), size=size, scale_factor=factors, mode="bicubic", antialias=antialias)
    return (out[0, :, :, 0] if axis == "rows" else out[0, :, 0, :]).T  # (n, M)


@pytest.mark.parametrize("mode", MODES)
def test_matrices_are_interpolates_weights_bit_for_bit(mode):
    offset, antialias = MODES[mode]
    for n in range(1, 81):
        other = 2 if n == M else M  # at h == w == M the offset models skip the resize: tested below
        A, _ = resize_matrices(n, other, M, offset=offset, antialias=antialias)
        _, B = resize_matrices(other, n, M, offset=offset, antialias=antialias)
        assert A.shape == B.shape == (n, M)
        assert torch.equal(A, reference_weights(n, offset, antialias, "rows")), f"rows, n={n}"
        assert torch.equal(B, reference_weights(n, offset, antialias, "cols")), f"cols, n={n}"


def test_taps_are_the_matrix_before_summing_duplicates():
    for h, w in [(1, 80), (16, 16), (52, 71)]:
        (idx_h, wts_h), (idx_w, wts_w) = resize_taps(h, w, M, offset=0.1)
        A, B = resize_matrices(h, w, M, offset=0.1, antialias=False)
        for idx, wts, mat in ((idx_h, wts_h, A), (idx_w, wts_w, B)):
            assert idx.shape == wts.shape == (mat.shape[0], 4) and idx.min() >= 0 and idx.max() < M
            rebuilt = torch.zeros_like(mat).scatter_add_(1, idx, wts)
            assert (rebuilt - mat).abs().max().item() <= 1e-7


def sample_sizes() -> list[tuple[int, int]]:
    """Every h and every w in 1..80 at least once, plus the border and identity cases."""
    pairs = {(h, (h * 29) % 80 + 1) for h in range(1, 81)}  # 29 is prime to 80: w runs over 1..80 too
    pairs |= {(1, 1), (1, 80), (80, 1), (80, 80), (M, M), (M, 16), (16, M), (16, 16), (28, 58), (52, 71)}
    return sorted(pairs)


@pytest.mark.parametrize("mode", MODES)
def test_matrix_resize_matches_interpolate(mode):
    offset, antialias = MODES[mode]
    # std 1 like real embeddings; 96 channels rather than 384 to keep the test short.
    pos = torch.randn(1, 1 + M * M, 96, generator=torch.Generator().manual_seed(0))
    worst, where = 0.0, None
    for h, w in sample_sizes():
        ref = resize_pos_embed(pos, h, w, offset=offset, antialias=antialias)
        got = resize_pos_embed(pos, h, w, offset=offset, antialias=antialias, method="matrix")
        assert got.shape == ref.shape == (1, 1 + h * w, 96)
        d = (got - ref).abs().max().item()
        if d > worst:
            worst, where = d, (h, w)
    print(f"\n{mode}: max abs diff to interpolate {worst:.2e} at {where} over {len(sample_sizes())} sizes")
    assert worst <= TOL


@pytest.mark.parametrize("mode", MODES)
def test_stored_size_is_the_identity(mode):
    offset, antialias = MODES[mode]
    A, B = resize_matrices(M, M, M, offset=offset, antialias=antialias)
    assert torch.equal(A, torch.eye(M)) and torch.equal(B, torch.eye(M))
    pos = torch.randn(1, 1 + M * M, 8)
    assert torch.equal(resize_pos_embed(pos, M, M, offset=offset, antialias=antialias, method="matrix"), pos)
    if offset:  # 518 x 224: the rows are still resampled with the 0.1 offset, as in the official code
        A, _ = resize_matrices(M, 16, M, offset=offset, antialias=antialias)
        assert not torch.equal(A, torch.eye(M))


def test_matrices_are_cached_per_size():
    a = resize_matrices(23, 31, M, offset=0.1, antialias=False)
    b = resize_matrices(23, 31, M, offset=0.1, antialias=False)
    assert b[0] is a[0] and b[1] is a[1]
    assert resize_matrices(23, 31, M, offset=0.0, antialias=True)[0] is not a[0]


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_model_matrix_method_matches_default(name):
    model = create_model(name, depth=1, embed_dim=48, num_heads=3, ffn_hidden_dim=96)
    with torch.no_grad():
        model.pos_embed.normal_()
        x = torch.randn(1, 3, 56, 98)
        ref = model.forward_features(x)["x_prenorm"]
        model.pos_embed_method = "matrix"
        got = model.forward_features(x)["x_prenorm"]
    assert (got - ref).abs().max().item() <= 1e-5
    model.pos_embed_method = "bilinear"  # type: ignore[assignment]
    with pytest.raises(ValueError, match="unknown position-embedding method"):
        model(torch.randn(1, 3, 28, 28))
