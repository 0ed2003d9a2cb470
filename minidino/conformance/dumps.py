"""Tensor dumps of a forward pass, and their comparison: what `minidino compare` reads and prints.

A dump is named tensors in order. Three formats, chosen by the path:

    NAME.safetensors   safetensors (the order is kept in its metadata, key "order")
    NAME.npz           numpy's savez (keeps the order)
    a folder           one raw file per tensor plus manifest.json: what a C or NPU port writes
                       with fwrite, no library needed

The folder's manifest.json (the raw files beside it):

    {"format": "minidino-dump", "version": 1,
     "tensors": [{"name": "patch_embed", "file": "patch_embed.f32", "shape": [1, 256, 384]},
                 {"name": "blocks.0.norm1", "file": "blocks.0.norm1.f32", "shape": [1, 257, 384]},
                 ...]}

Each raw file is the tensor's values as little-endian IEEE float32, row-major (C order: the
last dimension varies fastest), nothing else: exactly shape-product x 4 bytes. "dtype" may be
given and must be "float32". The list's order is the order `compare` prints.

Comparing a port's dump with a reference (a `minidino trace`, or the numpy reference's trace)
goes tensor by tensor in the reference's order. A tensor passes when

    max |port - reference| <= tol * max(1, max |reference|)     (and cosine >= min_cosine, if given)

so the tolerance is absolute for the O(1) tensors (normed tokens) and relative for the large
ones (the residual stream grows with depth; real DINOv2 weights have high-norm outlier tokens).
The default tol 1e-4 passes a float32 port running other kernels (measured 1e-6 to 1e-5) and
fails a wrong operation (tanh GELU: ~1e-3; q and k swapped: O(1)). The first failing tensor
names where the port goes wrong: its inputs passed, it did not.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .compare import tensor_metrics

__all__ = ["save_dump", "load_dump", "TensorComparison", "compare_dumps", "first_failure", "format_comparison",
           "MANIFEST", "DEFAULT_TOL"]

MANIFEST = "manifest.json"
DEFAULT_TOL = 1e-4
_FORMAT = "minidino-dump"


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().float().cpu().numpy()
    return np.ascontiguousarray(value, dtype=np.float32)


def _kind(path: Path) -> str:
    if path.suffix == ".safetensors":
        return "safetensors"
    if path.suffix == ".npz":
        return "npz"
    if path.suffix == "" or path.is_dir():
        return "folder"
    raise ValueError(f"{str(path)!r}: a dump is a .safetensors file, an .npz file or a folder with {MANIFEST}")


def _file_name(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    return f"{safe}.f32"


def save_dump(tensors: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write named tensors (torch tensors or arrays, stored as float32) in one of the three formats,
    by the path (module docstring); returns the path.

    Examples:
        >>> p = save_dump({"patch_embed": np.ones((1, 4, 8)), "norm": np.zeros((1, 5, 8))}, "dump")   # a folder
        >>> sorted(f.name for f in p.iterdir())
        ['manifest.json', 'norm.f32', 'patch_embed.f32']
        >>> list(load_dump(p)), load_dump(p)["patch_embed"].shape
        (['patch_embed', 'norm'], (1, 4, 8))
    """
    from ..utils.atomic import atomic_write

    path = Path(path)
    arrays = {k: _array(v) for k, v in tensors.items()}
    kind = _kind(path)
    if kind == "safetensors":
        from safetensors.numpy import save_file

        atomic_write(path, lambda tmp: save_file(arrays, str(tmp), metadata={"order": json.dumps(list(arrays))}))
    elif kind == "npz":
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: savez would append .npz to a name
                np.savez(f, **arrays)
        atomic_write(path, write)
    else:
        path.mkdir(parents=True, exist_ok=True)
        entries = []
        for name, a in arrays.items():
            file = _file_name(name)
            atomic_write(path / file, lambda tmp, a=a: tmp.write_bytes(a.astype("<f4").tobytes(order="C")))
            entries.append({"name": name, "file": file, "shape": list(a.shape), "dtype": "float32"})
        manifest = {"format": _FORMAT, "version": 1, "tensors": entries}
        atomic_write(path / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1) + "\n"))
    return path


def load_dump(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The named tensors of a dump, in its order, as float32 arrays (ValueError if malformed).

    Examples:
        >>> _ = save_dump({"b": np.arange(3.0), "a": np.ones(2)}, "t.safetensors")
        >>> {k: v.tolist() for k, v in load_dump("t.safetensors").items()}      # the order kept
        {'b': [0.0, 1.0, 2.0], 'a': [1.0, 1.0]}
    """
    path = Path(path)
    kind = _kind(path)
    if not path.exists():
        raise FileNotFoundError("no such file or folder")
    if kind == "safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            order = json.loads((f.metadata() or {}).get("order", "[]"))
            keys = [k for k in order if k in f.keys()] + sorted(k for k in f.keys() if k not in order)
            return {k: np.asarray(f.get_tensor(k), dtype=np.float32) for k in keys}
    if kind == "npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k], dtype=np.float32) for k in z.files}
    return _load_folder(path)


def _load_folder(path: Path) -> dict[str, np.ndarray]:
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ValueError(f"{path}: a dump folder needs {MANIFEST} (see minidino.conformance.dumps for its format)")
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["tensors"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{manifest_path}: not a dump manifest ({type(e).__name__}: {e}); expected "
                         '{"format": "minidino-dump", "version": 1, "tensors": [{"name", "file", "shape"}, ...]}') from None
    out: dict[str, np.ndarray] = {}
    for i, entry in enumerate(entries):
        try:
            name, file, shape = entry["name"], entry["file"], [int(d) for d in entry["shape"]]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{manifest_path}: tensor {i} needs name, file and shape (a list of ints), got {entry!r}") from None
        if entry.get("dtype", "float32") != "float32":
            raise ValueError(f"{manifest_path}: {name}: only raw float32 files are read, got dtype {entry['dtype']!r}")
        raw = path / file
        if not raw.is_file():
            raise ValueError(f"{manifest_path}: {name}: its file {file} is missing")
        want = 4 * math.prod(shape)
        have = raw.stat().st_size
        if have != want:
            raise ValueError(f"{raw}: {have} bytes, but shape {shape} of float32 needs {want}")
        out[name] = np.fromfile(raw, dtype="<f4").reshape(shape)
    return out


@dataclass
class TensorComparison:
    """One tensor of a reference compared with the port's tensor of the same name.

    status: "ok", "over" (past the tolerance), "missing" (not in the port), "shape" (the sizes differ).

    Examples:
        >>> rows = compare_dumps({"a": np.ones(3)}, {"a": np.ones(3) + 1e-6})
        >>> rows[0].status, rows[0].cosine
        ('ok', 1.0)
    """

    name: str
    shape: tuple[int, ...]
    status: str
    max_abs: float = float("nan")
    cosine: float = float("nan")
    scale: float = 1.0  # max(1, max |reference|): the unit of the tolerance
    note: str = ""


def compare_dumps(reference: Mapping[str, Any], port: Mapping[str, Any], *, tol: float = DEFAULT_TOL,
                  min_cosine: float | None = None) -> list[TensorComparison]:
    """Compare the port's tensors with the reference's, in the reference's order (module docstring).
    A port's tensor with the same number of values and the same shape once its size-1
    dimensions are dropped (a C port's (256, 384) for (1, 256, 384)) is compared as reshaped.

    Examples:
        >>> ref = {"x": np.ones((1, 4)), "y": np.full((1, 4), 2.0), "z": np.zeros(2)}
        >>> rows = compare_dumps(ref, {"x": np.ones(4), "y": np.full((1, 4), 2.1)})
        >>> [(r.name, r.status) for r in rows], first_failure(rows).name
        ([('x', 'ok'), ('y', 'over'), ('z', 'missing')], 'y')
    """
    rows = []
    for name, r in reference.items():
        r = _array(r)
        if name not in port:
            rows.append(TensorComparison(name, r.shape, "missing"))
            continue
        p = _array(port[name])
        note = ""
        if p.shape != r.shape:
            if p.size == r.size and [d for d in p.shape if d != 1] == [d for d in r.shape if d != 1]:
                note, p = f"port shape {p.shape}", p.reshape(r.shape)
            else:
                rows.append(TensorComparison(name, r.shape, "shape", note=f"port shape {p.shape}"))
                continue
        diff, cos = tensor_metrics(r, p)
        scale = max(1.0, float(np.abs(r).max(initial=0.0)))
        ok = diff <= tol * scale and (min_cosine is None or cos >= min_cosine)  # NaN fails both
        rows.append(TensorComparison(name, r.shape, "ok" if ok else "over", diff, cos, scale, note))
    return rows


def first_failure(rows: list[TensorComparison]) -> TensorComparison | None:
    """The first tensor, in order, past the tolerance or of the wrong shape (None if none).

    Examples:
        >>> first_failure(compare_dumps({"a": np.ones(2)}, {"a": np.ones(2)})) is None
        True
    """
    return next((r for r in rows if r.status in ("over", "shape")), None)


def format_comparison(rows: list[TensorComparison], *, tol: float = DEFAULT_TOL, min_cosine: float | None = None) -> str:
    """The comparison as a table, one tensor a line, and a last line that names the first failure.

    Examples:
        >>> print(format_comparison(compare_dumps({"a": np.ones(2)}, {"a": np.ones(2)})))
        tensor  shape  max abs  cosine    status
        a       (2,)   0.0e+00  1.000000  ok
        all 1 compared tensors within tol 1e-04 x max(1, max |reference|)
    """
    header = ("tensor", "shape", "max abs", "cosine", "status")
    table = [header]
    for r in rows:
        shape = "(" + ", ".join(map(str, r.shape)) + ("," if len(r.shape) == 1 else "") + ")"
        figures = ("-", "-") if math.isnan(r.max_abs) and r.status != "over" else (f"{r.max_abs:.1e}", f"{r.cosine:.6f}")
        status = r.status + (f" ({r.note})" if r.note else "") + (f" (scale {r.scale:.3g})" if r.status == "over" and r.scale > 1 else "")
        table.append((r.name, shape, *figures, status))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    compared = [r for r in rows if r.status in ("ok", "over")]
    missing = [r.name for r in rows if r.status == "missing"]
    rule = f"tol {tol:.0e} x max(1, max |reference|)" + (f" and cosine >= {min_cosine}" if min_cosine is not None else "")
    bad = first_failure(rows)
    if bad is not None:
        lines.append(f"FIRST FAILURE: {bad.name} ({bad.status}; {rule}): the port goes wrong at or just before it")
    elif not compared:
        lines.append("no tensor in common: check the port's names (minidino trace names: docs/porting.md)")
    else:
        lines.append(f"all {len(compared)} compared tensors within {rule}"
                     + (f"; {len(missing)} not in the port" if missing else ""))
    return "\n".join(lines)
