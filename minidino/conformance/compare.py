"""Comparing outputs: the max abs difference of two results (tensors or nests of them), the record
of one golden comparison, and the two figures every port comparison states (max abs, cosine)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["CaseResult", "max_abs_difference", "tensor_metrics"]


@dataclass
class CaseResult:
    """One compared output of a golden case: its max abs difference to the stored reference, and its shape.

    Examples:
        >>> r = CaseResult("dinov2_vits14", "r224", "forward_features/x_norm_clstoken", 3.1e-6, (2, 384))
        >>> r.max_abs <= 1e-5
        True
    """

    case: str
    tag: str
    output: str
    max_abs: float
    shape: tuple[int, ...]
    # The tolerance's unit. Features and logits are O(1): 1. A depth map is in metres, up to 80 (the
    # linear heads' bins), where float32 itself steps by 4e-6 and a different thread count or BLAS
    # blocking moves the result by a few steps (measured: 1.9e-5 m at 44 m with one thread, 0.0 with
    # 2-4): its unit is the reference's largest |value|, so the check stays 1e-5 relative.
    scale: float = 1.0

    def ok(self, tol: float) -> bool:
        """Within `tol` in the output's unit: max_abs <= tol * max(1, scale).

        Examples:
            >>> CaseResult("d", "t", "depth", 2e-5, (1, 1, 4, 4), scale=40.0).ok(1e-5)
            True
            >>> CaseResult("m", "t", "logits", 2e-5, (1, 1000)).ok(1e-5)
            False
        """
        return self.max_abs <= tol * max(1.0, self.scale)


def max_abs_difference(a: Any, b: Any) -> float:
    """Largest |a - b| over nested tensors / dicts / tuples (bool tensors: the count that differ).

    Examples:
        >>> max_abs_difference({"a": torch.zeros(2), "b": (torch.ones(1), torch.zeros(1))},
        ...                    {"a": torch.tensor([0.0, 0.5]), "b": (torch.ones(1), torch.zeros(1))})
        0.5
    """
    if isinstance(a, torch.Tensor):
        if a.dtype == torch.bool:  # masks, passed through
            return float((a != b).sum())
        return 0.0 if a.numel() == 0 else float((a.float() - b.float()).abs().max())
    if isinstance(a, dict):
        return max(max_abs_difference(a[k], b[k]) for k in a if a[k] is not None)
    return max(max_abs_difference(x, y) for x, y in zip(a, b, strict=True))


def tensor_metrics(reference: Any, port: Any) -> tuple[float, float]:
    """(max abs difference, cosine similarity) of two same-shaped tensors or arrays, in float64,
    the cosine over all their values flattened (1.0 when both are all zero).

    Examples:
        >>> tensor_metrics(np.array([1.0, 2.0]), np.array([1.0, 2.5]))
        (0.5, 0.9965457582448796)
    """
    a = np.asarray(reference, dtype=np.float64).ravel()
    b = np.asarray(port, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"cannot compare {np.shape(reference)} with {np.shape(port)}")
    if not a.size:
        return 0.0, 1.0
    diff = float(np.abs(a - b).max())
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    cos = 1.0 if na == nb == 0.0 else float(a @ b / (na * nb)) if na and nb else 0.0
    return diff, cos
