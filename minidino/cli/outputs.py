"""Output files of the commands: checked before the work, locked while it runs.

    out = check_output(args.out, "--out")   # before any work: not a folder, its folder writable
    out = check_output_dir(args.out)        # the same for an output folder (depth): nothing is created
    with locked(out):                       # another run writing `out` -> one line, exit status 5
        ... compute, then write atomically (minidino.utils.atomic) ...

A failed check exits with a one-line message (status 2 for a wrong path, 7 for a folder that
cannot be written), so a run never computes for an hour and then fails to save.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .errors import EXIT_BUSY, EXIT_IO, EXIT_USAGE, fail

__all__ = ["check_output", "check_output_dir", "locked"]


def _write_error(folder: Path) -> OSError | None:
    """Why a file cannot be created in `folder`, or None. The real test, by creating and removing a probe
    file: os.access is wrong on read-only mounts and for root."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".minidino.", suffix=".probe", dir=folder)
    except OSError as e:
        return e
    os.close(fd)
    os.unlink(probe)
    return None


def _check_can_create_in(folder: Path, path: Path, what: str, it: str) -> None:
    """Fail (one line) unless files can be written in `folder`: by a probe when it exists, else by
    the rights on its nearest existing ancestor, where it would be created. `it` names the folder."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        fail(f"minidino: {what} {path}: {existing} is not a folder", EXIT_USAGE)
    if existing == folder:
        e = _write_error(folder)
        if e is not None:
            fail(f"minidino: {what} {path}: cannot write in {it} ({e.strerror or e}); choose a writable folder", EXIT_IO)
    elif not os.access(existing, os.W_OK):
        fail(f"minidino: {what} {path}: cannot create {it} ({existing} is not writable); choose a writable folder",
             EXIT_IO)


def check_output(path: str | os.PathLike, what: str = "--out") -> Path:
    """`path` as a Path, after checking that a file can be written there (nothing is left behind)."""
    path = Path(path)
    if path.is_dir():
        fail(f"minidino: {what} {path} is a folder; give a file name (e.g. {path / 'out'}{path.suffix or ''})", EXIT_USAGE)
    if path.exists() and not path.is_file():
        fail(f"minidino: {what} {path} exists and is not a regular file; give another name", EXIT_USAGE)
    parent = path.parent
    _check_can_create_in(parent, path, what, str(parent))
    if path.exists() and not os.access(path, os.W_OK) and not os.access(parent, os.W_OK):
        fail(f"minidino: {what} {path} exists and cannot be replaced (permission denied)", EXIT_IO)
    return path


@contextmanager
def locked(path: str | os.PathLike) -> Iterator[Path]:
    """minidino.utils.lock.output_lock, with a held lock reported as one line and exit status 5."""
    from ..utils.lock import OutputLockedError, output_lock

    with ExitStack() as stack:
        try:
            lock = stack.enter_context(output_lock(path))
        except OutputLockedError as e:
            fail(f"minidino: {e}", EXIT_BUSY)
        except OSError as e:
            fail(f"minidino: cannot lock {path} ({e.strerror or e}); choose a writable folder", EXIT_IO)
        yield lock


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """`path` as a Path, after checking that it is (or can be made) a writable folder; nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        fail(f"minidino: {what} {path} exists and is not a folder; give a folder (created if needed)", EXIT_USAGE)
    _check_can_create_in(path, path, what, "it")
    return path
