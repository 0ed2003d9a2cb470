"""Atomic file writes: readers see the old file or the complete new one, never half of one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write"]


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


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask
