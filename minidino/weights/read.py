"""Reading checkpoint files safely: .pth, .bin, .safetensors, sharded indexes, Hugging Face folders.

Safety: files are read with `torch.load(..., weights_only=True)` or safetensors, never with
plain unpickling, so a checkpoint cannot run code. Empty, truncated, HTML and otherwise
corrupt files raise `CheckpointError` naming the file and what is wrong with it. What the
tensors mean is not looked at here (see layouts.py and load.py).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["CheckpointError", "UnsafeCheckpointError", "read_checkpoint", "StateDict"]

StateDict = dict[str, Tensor]


class CheckpointError(ValueError):
    """A checkpoint file is empty, truncated, corrupt or not a checkpoint at all.

    Examples:
        >>> _ = open("empty.pth", "wb").close()
        >>> try:
        ...     read_checkpoint("empty.pth")
        ... except CheckpointError as e:
        ...     print(type(e).__name__)
        CheckpointError
    """


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint holds pickled Python objects other than tensors; it is refused, never unpickled.

    Examples:
        >>> import collections
        >>> torch.save({"w": torch.zeros(1), "note": collections.OrderedDict(a=print)}, "unsafe.pth")
        >>> try:
        ...     read_checkpoint("unsafe.pth")
        ... except UnsafeCheckpointError as e:
        ...     print("refused")
        refused
    """


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a .pth / .bin / .safetensors file, a sharded checkpoint's `*.index.json`, or a Hugging Face
    folder (single file or shards) without running any code.

    Examples:
        >>> from minidino.conformance.golden import generate_for
        >>> sd = generate_for(minidino.create_model("dinov2_vits14", depth=1, device="meta"), 0)   # official keys
        >>> minidino.save_weights(sd, "w.safetensors").name
        'w.safetensors'
        >>> tuple(read_checkpoint("w.safetensors")["cls_token"].shape)
        (1, 1, 384)
    """
    p = Path(path).expanduser()
    if p.is_dir():
        names = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
        for name in names:
            if (p / name).is_file():
                return read_checkpoint(p / name)
        raise FileNotFoundError(f"{p} is a folder without {', '.join(names)}; pass the checkpoint file itself")
    if p.name.endswith(".index.json") and p.is_file():
        return _read_sharded(p)
    if not p.is_file():
        if p.exists():  # a FIFO (which would block), a device, a socket: never opened
            from ..utils.files import kind_problem

            raise CheckpointError(f"{p} {kind_problem(p.stat().st_mode, 'a checkpoint file')}")
        raise FileNotFoundError(f"checkpoint file {p} does not exist")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"{p} is empty (0 bytes): an interrupted download or copy; delete it and fetch it again")
    with open(p, "rb") as f:
        head = f.read(64)
    if head.lstrip()[:1] == b"<" or b"<html" in head.lower():
        text = head.lstrip()[:40].decode("ascii", "replace")
        raise CheckpointError(f"{p} is an HTML or XML page (starts with {text!r}), not a checkpoint: the server returned "
                              "an error or login page instead of the file; download it again from the right URL")
    header_len = int.from_bytes(head[:8], "little") if len(head) >= 9 else 0
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch.save zip archive, or legacy pickle
        obj = _torch_load(p, mmap=head[:4] == b"PK\x03\x04")
    elif 0 < header_len < size and head[8:9] == b"{":  # safetensors: u64 header length, then JSON
        obj = _safetensors_load(p)
    else:
        raise CheckpointError(f"{p} is neither a PyTorch checkpoint (.pth, a zip or pickle file) nor a safetensors "
                              f"file (it starts with {head[:16]!r}); check that it is the file you meant")
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p} holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors)")
    return dict(obj)


def _read_sharded(index: Path) -> dict[str, Any]:
    """A sharded Hugging Face checkpoint: `*.index.json` maps every key to the shard file holding it
    (`save_pretrained(max_shard_size=...)` writes model-00001-of-0000N.safetensors and the index)."""
    import json

    from ..utils.files import UnreadableFile, read_limited

    try:
        weight_map = json.loads(read_limited(index, 64 * 2**20))["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) and Path(v).name == v for v in weight_map.values()):
            raise TypeError
    except (UnreadableFile, ValueError, KeyError, TypeError):
        raise CheckpointError(f"{index} is not a sharded-checkpoint index (a JSON object with a 'weight_map' of "
                              "key -> shard file name in its folder)") from None
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        raise FileNotFoundError(f"{index} lists shard files that are not in {index.parent}: {_listing(missing)}")
    out: dict[str, Any] = {}
    for shard in shards:
        out.update(read_checkpoint(index.parent / shard))
    absent = [k for k in weight_map if k not in out]
    if absent:
        raise CheckpointError(f"{index}: {len(absent)} keys of its weight_map are in none of the shards "
                              f"({_listing(absent)}): a shard is from another checkpoint or incomplete")
    return out


def _torch_load(p: Path, mmap: bool) -> Any:
    try:
        # weights_only=True: only tensors and plain containers are rebuilt; any other pickled
        # object (a class, a function call) is refused before it can run. mmap avoids a copy.
        return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        detail = next((line.strip() for line in str(e).splitlines() if "Unsupported" in line), str(e).splitlines()[0])
        detail = detail.removeprefix("WeightsUnpickler error:").strip()
        raise UnsafeCheckpointError(
            f"refusing to load {p}: it is not a plain tensor checkpoint ({detail}). minidino only reads tensors "
            "(torch.load weights_only=True) and never unpickles other Python objects, which could run code. If the "
            "file comes from a trusted source, re-save its state dict (a dict of tensors) and load that."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{p} is truncated or corrupt ({first}); delete it and download it again") from None


def _safetensors_load(p: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{p} is a truncated or corrupt safetensors file ({e}); delete it and download it again") from None


def _listing(keys: list[str], n: int = 5) -> str:
    more = f", ... ({len(keys)} in all)" if len(keys) > n else f" ({len(keys)})"
    return ", ".join(keys[:n]) + more
