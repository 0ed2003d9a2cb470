"""The files `minidino embed`, `merge` and `embed-text` write and `similar` reads.

`.safetensors`: tensors `cls` (N, D) and/or `patch` (N, h*w, D), and the JSON metadata (model,
weights, size, file names in order, skipped files) under the key "minidino". `.npz`: the same
arrays plus `names` (strings) and `metadata` (the JSON). `.npy`: one array (cls or patch) and the
metadata in `OUT.npy.json`. Values are float32 whatever --dtype.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..utils.atomic import atomic_write

__all__ = ["FORMAT", "VERSION", "SUFFIXES", "write_embeddings", "read_embeddings"]

FORMAT = "minidino-embeddings"
VERSION = 1
SUFFIXES = (".safetensors", ".npz", ".npy")


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise SystemExit(f"minidino: {path}: the output must end in {', '.join(SUFFIXES)}")
    return suffix




def write_embeddings(path: str | os.PathLike, tensors: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write tensors (float32, first dim = len(meta['names'])) and meta atomically; the format follows the suffix."""
    import numpy as np
    import torch

    path = Path(path)
    suffix = _check_suffix(path)
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
        sidecar = path.with_name(path.name + ".json")
        atomic_write(sidecar, lambda tmp: tmp.write_text(text, encoding="utf-8"))

        def save_npy(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, array.numpy())
        atomic_write(path, save_npy)
    return path


def read_embeddings(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, meta) of a file written by `minidino embed` / `merge`."""
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
            sidecar = path.with_name(path.name + ".json")
            meta_text = sidecar.read_text(encoding="utf-8") if sidecar.is_file() else None
            array = torch.from_numpy(np.load(path, allow_pickle=False).copy())
            tensors = {json.loads(meta_text)["tokens"] if meta_text else "cls": array}
        meta = json.loads(meta_text) if meta_text is not None else None
    except Exception as e:  # truncated, corrupt, not this format (safetensors, zip, numpy and JSON errors)
        raise SystemExit(f"minidino: {path} is truncated or corrupt ({' '.join(str(e).split())[:160] or type(e).__name__}); "
                         "write it again (rerun the command that made it)") from None
    if meta is None:
        raise SystemExit(f"minidino: {path} has no minidino metadata (not written by `minidino embed`)")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SystemExit(f"minidino: {path} is not a minidino embeddings file")
    return tensors, meta
