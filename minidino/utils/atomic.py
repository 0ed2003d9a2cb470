"""Atomic file writes: readers see the old file or the complete new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_files"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call write(tmp) on a temporary name beside `path`, then rename it onto `path`.

    A crash or an exception leaves `path` as it was and removes the temporary file.

    Examples:
        >>> p = atomic_write("out.txt", lambda tmp: tmp.write_text("all or nothing"))
        >>> p.read_text()
        'all or nothing'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # the usual permissions (some writers create 0600 files)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_files(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Like atomic_write, for writers that may put side files next to their output (an ONNX
    exporter stores the weights of a large model in `NAME.onnx.data` beside `NAME.onnx`, and the
    .onnx file refers to it by name): write(tmp) runs in a private folder beside `path` under the
    final file name; then the side files, and `path` last, are moved beside `path`. A crash or an
    exception leaves `path` as it was and removes the folder.

    Examples:
        >>> def write(p):  # an output and a side file it names
        ...     p.with_name(p.name + ".data").write_text("weights")
        ...     p.write_text("model -> " + p.name + ".data")
        >>> atomic_write_files("m.onnx", write).read_text(), Path("m.onnx.data").read_text()
        ('model -> m.onnx.data', 'weights')
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        write(staged)
        for f in sorted(Path(tmp).iterdir(), key=lambda f: f == staged):  # side files first, the output last
            os.chmod(f, 0o666 & ~_umask())
            os.replace(f, path.with_name(f.name))
    return path


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask
