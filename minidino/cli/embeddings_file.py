"""The files `minidino embed`, `merge` and `embed-text` write and `similar` reads.

`.safetensors`: tensors `cls` (N, D) and/or `patch` (N, h*w, D), and the JSON metadata (model,
weights, size, file names in order, skipped files) under the key "minidino". `.npz`: the same
arrays plus `names` (strings) and `metadata` (the JSON). `.npy`: one array (cls or patch) and the
metadata in `OUT.npy.json`, the two written together (both complete before either is replaced).
Values are float32 whatever --dtype, and finite.

An embeddings file may come from anyone: `read_embeddings` checks its metadata against its
tensors (`validate_embeddings`) and refuses, naming the file, anything that does not agree.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..utils.atomic import atomic_write, atomic_write_all, save_npy
from ..utils.files import UnreadableFile, read_limited

__all__ = ["FORMAT", "VERSION", "SUFFIXES", "TOKEN_KEYS", "HEADER_LIMIT", "write_embeddings", "read_embeddings",
           "validate_embeddings", "check_header_room", "sidecar_path"]

FORMAT = "minidino-embeddings"
VERSION = 1
SUFFIXES = (".safetensors", ".npz", ".npy")
TOKEN_KEYS = {"cls": ("cls",), "patch": ("patch",), "both": ("cls", "patch"), "text": ("text",)}
HEADER_LIMIT = 100_000_000 - 1_000_000  # safetensors refuses a header over 100 MB; keep room for the rest
METADATA_LIMIT = 2**30  # an .npy's metadata file (its names): read at most this much


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SystemExit(f"minidino: {path}: the output must end in {', '.join(SUFFIXES)}")
    return suffix


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where an .npy output keeps its metadata: OUT.npy.json."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def check_header_room(path: str | os.PathLike, names: list[str]) -> None:
    """A .safetensors file keeps the names in its JSON header, which safetensors caps at 100 MB: refuse
    (status 2, before any work) names that cannot fit, suggesting .npz or .npy (no such cap)."""
    if Path(path).suffix.lower() != ".safetensors":
        return
    # Each name is in the metadata JSON, itself a string in the header's JSON: escaped twice, `\"name\", `.
    size = sum(len(n) + 6 if n.isascii() and n.isprintable() and '"' not in n and "\\" not in n
               else len(json.dumps(json.dumps(n))) + 2 for n in names)
    if size > HEADER_LIMIT:
        raise SystemExit(f"minidino: {path}: the {len(names):,} names need about {size / 1e6:,.0f} MB of metadata, more "
                         "than a .safetensors header holds (100 MB); write .npz or .npy instead")


def write_embeddings(path: str | os.PathLike, tensors: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write tensors (float32, first dim = len(meta['names'])) and meta atomically; the format follows the
    suffix. A failed write leaves the old file (and an .npy's old metadata) and raises WriteError."""
    import numpy as np
    import torch

    path = Path(path)
    suffix = _check_suffix(path)
    check_header_room(path, meta["names"])
    text = json.dumps(meta)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"minidino": text}))
    elif suffix == ".npz":
        def save_npz(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, names=np.array(meta["names"], dtype=str), metadata=np.array(text),
                         **{k: v.numpy() for k, v in tensors.items()})
        atomic_write(path, save_npz)
    else:
        if len(tensors) != 1:
            raise SystemExit(f"minidino: {path}: a .npy file holds one array; use .safetensors or .npz for "
                             f"{' and '.join(tensors)}")
        (array,) = tensors.values()
        # The pair changes together: both written completely before either is replaced, the metadata last.
        atomic_write_all({path: lambda tmp: save_npy(tmp, array.numpy()),
                          sidecar_path(path): lambda tmp: tmp.write_text(text, encoding="utf-8")})
    return path


def read_embeddings(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, meta) of a file written by `minidino embed` / `merge` / `embed-text`, checked by
    `validate_embeddings`; any problem is one line naming the file (status 2)."""
    import numpy as np
    import torch

    path = Path(path)
    suffix = _check_suffix(path)
    if not path.is_file():
        raise SystemExit(f"minidino: {path}: no such file")
    try:
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta_text = (f.metadata() or {}).get("minidino")
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if "metadata" not in z:
                    meta_text = None
                else:
                    meta_text = str(z["metadata"])
                tensors = {k: torch.from_numpy(z[k].copy()) for k in z.files if k not in ("names", "metadata")}
        else:
            sidecar = sidecar_path(path)
            meta_text = read_limited(sidecar, METADATA_LIMIT).decode("utf-8") if sidecar.exists() else None
            array = torch.from_numpy(np.load(path, allow_pickle=False).copy())
            tokens = json.loads(meta_text).get("tokens") if meta_text else None
            tensors = {tokens if isinstance(tokens, str) else "cls": array}
        meta = json.loads(meta_text) if meta_text is not None else None
    except Exception as e:  # truncated, corrupt, not this format (safetensors, zip, numpy and JSON errors)
        reason = e.reason if isinstance(e, UnreadableFile) else " ".join(str(e).split())[:160] or type(e).__name__
        raise SystemExit(f"minidino: {path} is truncated or corrupt ({reason}); "
                         "write it again (rerun the command that made it)") from None
    if meta is None:
        raise SystemExit(f"minidino: {path} has no minidino metadata (not written by `minidino embed`)")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SystemExit(f"minidino: {path} is not a minidino embeddings file")
    validate_embeddings(path, tensors, meta)
    return tensors, meta


def _problem(tensors: dict[str, Any], meta: dict[str, Any]) -> str | None:
    """What does not agree in an embeddings file, or None."""
    import torch

    from ..catalogue import lookup

    if meta.get("version") != VERSION:
        return f"version {meta.get('version')!r}, not {VERSION}"
    names = meta.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return "its 'names' are not a list of strings"
    skipped = meta.get("skipped", [])
    if not isinstance(skipped, list) or not all(isinstance(s, list) and len(s) == 2 and all(isinstance(x, str) for x in s)
                                                for s in skipped):
        return "its 'skipped' is not a list of [name, reason] pairs"
    tokens = meta.get("tokens")
    if tokens not in TOKEN_KEYS:
        return f"'tokens' is {tokens!r}, not one of {', '.join(TOKEN_KEYS)}"
    if sorted(tensors) != sorted(TOKEN_KEYS[tokens]):
        return f"it holds {', '.join(sorted(tensors)) or 'no tensors'} but its 'tokens' says {tokens}"
    widths = set()
    for key, t in tensors.items():
        want = 3 if key == "patch" else 2
        if t.ndim != want:
            return f"{key} has shape {tuple(t.shape)}, not {want}-D"
        if t.shape[0] != len(names):
            return f"{len(names)} names for {t.shape[0]} rows of {key}"
        if not t.is_floating_point():
            return f"{key} is {t.dtype}, not floating point"
        if not bool(torch.isfinite(t).all()):
            return f"{key} holds NaN or infinite values"
        widths.add(t.shape[-1])
    model = meta.get("model")
    try:
        lookup(model)
    except (ValueError, TypeError, KeyError):
        return f"it names the model {model!r}, which minidino does not know"
    if not isinstance(meta.get("weights"), str):
        return f"its 'weights' is {meta.get('weights')!r}, not a string"
    config = meta.get("config") or {}
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        return f"its 'config' is {config!r}, not a mapping of field names"
    size = meta.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 4144):
        return f"'size' is {size!r}, not a side in pixels (1..4144)"
    shard = meta.get("shard")
    if shard is not None and not (isinstance(shard, list) and len(shard) == 2
                                  and all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
                                  and 0 <= shard[0] < shard[1]):
        return f"'shard' is {shard!r}, not [I, N] with 0 <= I < N"
    return None


def validate_embeddings(path: str | os.PathLike, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    """Exit with one line naming `path` (status 2) unless its metadata agrees with its tensors: as many
    names (strings) as rows in every tensor, the tensors its 'tokens' says, float and finite values, a
    known model, a size, config and shard of the right types. An index may come from anyone: names
    that do not match the rows would pair results with the wrong files."""
    problem = _problem(tensors, meta)
    if problem is not None:
        raise SystemExit(f"minidino: {path}: {problem} (corrupt, or not written by minidino); write it again")
