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

What `load_dump` accepts (anything else is a ValueError naming the file and the problem, never a
crash, and nothing is ever unpickled):

- files: a regular file (not a FIFO, a device or a folder) that its library can read; safetensors
  and npz tensors of a floating-point dtype (float16, bfloat16, float32, float64: integers, booleans,
  complex numbers, strings and pickled objects are refused), read as float32;
- a folder: a manifest.json of at most MANIFEST_LIMIT bytes holding {"tensors": [...]}, each entry
  a distinct non-empty "name", a "file" inside the folder (a relative path with no "..", that no
  symbolic link takes outside), a "shape" of non-negative ints, and a raw file of exactly
  shape-product x 4 bytes.

NaN and infinite values are read as they are: `non_finite` says how many a tensor holds, and a
port's tensor that holds any fails its comparison (`compare_dumps`).

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

__all__ = ["save_dump", "load_dump", "dump_files", "non_finite", "TensorComparison", "compare_dumps", "first_failure",
           "format_comparison", "MANIFEST", "MANIFEST_LIMIT", "DEFAULT_TOL"]

MANIFEST = "manifest.json"
MANIFEST_LIMIT = 16 * 2**20  # a 40-block trace's manifest is ~30 KB
DEFAULT_TOL = 1e-4
_FORMAT = "minidino-dump"
_SAFETENSORS_FLOATS = ("F16", "BF16", "F32", "F64")


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


def _file_names(names: list[str]) -> list[str]:
    """The raw file of each tensor of a folder dump: its name made safe, distinct (a, a-2, ...)."""
    out: list[str] = []
    for name in names:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip(".") or "tensor"
        file, i = f"{safe}.f32", 1
        while file in out or file == MANIFEST:
            i += 1
            file = f"{safe}-{i}.f32"
        out.append(file)
    return out


def dump_files(path: str | os.PathLike, names: list[str]) -> list[Path]:
    """Every file `save_dump` writes for tensors of these names at `path` (for a folder: its raw files,
    then manifest.json); ValueError for a path that is no dump name. What a command gives its output
    planner before the work.

    Examples:
        >>> [p.as_posix() for p in dump_files("d", ["input", "norm"])], dump_files("t.npz", ["input"])
        (['d/input.f32', 'd/norm.f32', 'd/manifest.json'], [PosixPath('t.npz')])
    """
    path = Path(path)
    if _kind(path) != "folder":
        return [path]
    return [path / f for f in _file_names(list(names))] + [path / MANIFEST]


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
        _save_folder(arrays, path)
    return path


def _save_folder(arrays: dict[str, np.ndarray], path: Path) -> None:
    """The raw files and manifest.json, all written before any is moved into place (manifest.json
    last): a failure leaves the folder as it was (an old dump whole), and removes it if it made it."""
    from ..utils.atomic import atomic_write_all

    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    files = _file_names(list(arrays))
    entries = [{"name": name, "file": file, "shape": list(a.shape), "dtype": "float32"}
               for (name, a), file in zip(arrays.items(), files)]
    manifest = {"format": _FORMAT, "version": 1, "tensors": entries}
    writes: dict[Path, Any] = {path / file: (lambda tmp, a=a: tmp.write_bytes(a.astype("<f4").tobytes(order="C")))
                               for a, file in zip(arrays.values(), files)}
    writes[path / MANIFEST] = lambda tmp: tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    try:
        atomic_write_all(writes)
    except BaseException:
        if made:
            try:
                path.rmdir()
            except OSError:
                pass
        raise


def load_dump(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The named tensors of a dump, in its order, as float32 arrays (ValueError if malformed).

    Examples:
        >>> _ = save_dump({"b": np.arange(3.0), "a": np.ones(2)}, "t.safetensors")
        >>> {k: v.tolist() for k, v in load_dump("t.safetensors").items()}      # the order kept
        {'b': [0.0, 1.0, 2.0], 'a': [1.0, 1.0]}
    """
    path = Path(path)
    kind = _kind(path)
    if not os.path.lexists(path):
        raise FileNotFoundError("no such file or folder")
    if kind == "folder":
        return _load_folder(path)
    _check_file(path, f"a .{kind} file")
    return _load_safetensors(path) if kind == "safetensors" else _load_npz(path)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _check_file(path: Path, noun: str) -> int:
    """The size of `path`, a regular non-empty file (a FIFO would block the read, a device never end)."""
    from ..utils.files import kind_problem

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValueError("a broken symbolic link (its target does not exist)" if os.path.islink(path)
                         else "no such file") from None
    except OSError as e:
        raise ValueError(f"cannot access it ({e.strerror or e})") from None
    problem = kind_problem(st.st_mode, noun)
    if problem:
        raise ValueError(problem)
    if st.st_size == 0:
        raise ValueError("an empty file (0 bytes)")
    return st.st_size


def _float_kind(name: str, dtype: Any) -> None:
    if np.dtype(dtype).kind != "f":
        raise ValueError(f"tensor {name!r} is {np.dtype(dtype).name}: a dump holds floating-point tensors (float32; "
                         "float16 and float64 are read too)")


def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            for k in keys:
                dtype = f.get_slice(k).get_dtype()
                if dtype not in _SAFETENSORS_FLOATS:
                    raise ValueError(f"tensor {k!r} is {dtype}: a dump holds floating-point tensors (F32; F16, BF16 "
                                     "and F64 are read too)")
            order = _order(f.metadata() or {})
            keys = [k for k in order if k in keys] + sorted(k for k in keys if k not in order)
            return {k: f.get_tensor(k).float().numpy() for k in keys}
    except (ValueError, MemoryError):
        raise
    except Exception as e:  # safetensors' own SafetensorError: a truncated or foreign file
        raise ValueError(f"not a readable safetensors file ({_one_line(e)})") from None


def _order(metadata: Mapping[str, str]) -> list[str]:
    """The names in the order the metadata gives ("order": a JSON list of names), or []."""
    try:
        order = json.loads(metadata.get("order", "[]"))
    except ValueError:
        order = None
    if not isinstance(order, list) or not all(isinstance(k, str) for k in order):
        raise ValueError("its metadata 'order' is not a JSON list of tensor names")
    return order


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    import zipfile

    from ..utils.files import check_unpacked_size

    try:
        z = np.load(path, allow_pickle=False)  # never unpickle: a pickle can run any code
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"not a readable .npz file ({_one_line(e)})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError("one .npy array, not an .npz archive of named tensors (numpy.savez)")
    out = {}
    with z:
        check_unpacked_size(sum(i.file_size for i in z.zip.infolist()), path.stat().st_size)
        for k in z.files:
            try:
                a = z[k]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError) as e:
                raise ValueError(f"tensor {k!r} cannot be read ({_one_line(e)})") from None
            _float_kind(k, a.dtype)
            out[k] = np.asarray(a, dtype=np.float32)
    return out


def _manifest_error(manifest_path: Path, problem: str) -> ValueError:
    return ValueError(f"{manifest_path}: {problem}; expected "
                      '{"format": "minidino-dump", "version": 1, "tensors": [{"name", "file", "shape"}, ...]}')


def _load_folder(path: Path) -> dict[str, np.ndarray]:
    from ..utils.files import UnreadableFile, read_limited

    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder; a dump is a .safetensors file, an .npz file or a folder with {MANIFEST}")
    if not os.path.lexists(manifest_path):
        raise ValueError(f"{path}: a dump folder needs {MANIFEST} (see minidino.conformance.dumps for its format)")
    try:
        manifest = json.loads(read_limited(manifest_path, MANIFEST_LIMIT, noun="a manifest file"))
    except UnreadableFile as e:
        raise ValueError(str(e)) from None
    except (ValueError, RecursionError) as e:  # bad JSON, bad UTF-8, nesting too deep
        raise _manifest_error(manifest_path, f"not JSON ({type(e).__name__}: {_one_line(e)[:200]})") from None
    entries = manifest.get("tensors") if isinstance(manifest, dict) else None
    if not isinstance(entries, list):
        raise _manifest_error(manifest_path, "no list of tensors")
    root = os.path.realpath(path)
    out: dict[str, np.ndarray] = {}
    for i, entry in enumerate(entries):
        name, file, shape = (entry.get(k) for k in ("name", "file", "shape")) if isinstance(entry, dict) else (None,) * 3
        if not (isinstance(name, str) and name and isinstance(file, str) and file and isinstance(shape, list)
                and all(type(d) is int and d >= 0 for d in shape)):
            raise ValueError(f"{manifest_path}: tensor {i} needs a name, a file and a shape (a list of ints >= 0), "
                             f"got {_one_line(repr(entry))[:200]}")
        if name in out:
            raise ValueError(f"{manifest_path}: tensor {name!r} is named twice")
        if entry.get("dtype", "float32") != "float32":
            raise ValueError(f"{manifest_path}: {name}: only raw float32 files are read, got dtype {entry['dtype']!r}")
        raw = path / file
        if os.path.isabs(file) or ".." in Path(file).parts or "\0" in file \
                or not os.path.realpath(raw).startswith(root + os.sep):
            raise ValueError(f"{manifest_path}: {name}: its file {file!r} is outside the dump folder; name a file in {path}")
        try:
            have = _check_file(raw, "a raw float32 file") if os.path.lexists(raw) else None
        except ValueError as e:
            if "empty" not in str(e):
                raise ValueError(f"{raw}: {e}") from None
            have = 0
        if have is None:
            raise ValueError(f"{manifest_path}: {name}: its file {file} is missing")
        want = 4 * math.prod(shape)
        if have != want:
            raise ValueError(f"{raw}: {have} bytes, but shape {shape} of float32 needs {want}")
        out[name] = np.fromfile(raw, dtype="<f4").reshape(shape)
    return out


def non_finite(a: Any) -> str | None:
    """How many NaN and infinite values a tensor holds, in words, or None when every value is finite.

    Examples:
        >>> non_finite(np.array([1.0, np.nan, np.inf, -np.inf])), non_finite(np.ones(2)) is None
        ('1 NaN, 2 infinite', True)
    """
    a = _array(a)
    nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    if not nan and not inf:
        return None
    return ", ".join(part for part in (f"{nan} NaN" if nan else "", f"{inf} infinite" if inf else "") if part)


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
        bad = [f"{who} holds {what}" for who, what in (("reference", non_finite(r)), ("port", non_finite(p))) if what]
        if bad:  # inf - inf is NaN, but inf == inf would pass a cosine: a value that is not finite never passes
            ok, note = False, "; ".join([note, *bad] if note else bad)
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
        lines.append(f"FIRST FAILURE: {bad.name} ({bad.status}{'; ' + bad.note if bad.note else ''}; {rule}): the port "
                     "goes wrong at or just before it")
    elif not compared:
        lines.append("no tensor in common: check the port's names (minidino trace names: docs/porting.md)")
    else:
        lines.append(f"all {len(compared)} compared tensors within {rule}"
                     + (f"; {len(missing)} not in the port" if missing else ""))
    return "\n".join(lines)
