"""Writing files safely: readers see the old file or the complete new one, never half of one,
and nothing anyone planted in the output folder is followed or written through.

    atomic_write(path, write)                   # write(staged) in a private folder, then rename onto path
    atomic_write_all({array: w1, sidecar: w2})  # files that belong together: all written before any is moved
    atomic_write_files(path, write)             # a writer that puts side files beside its output (ONNX .data)
    fd, tmp = create_exclusive(folder, ".name.", ".part")   # a new file under a name nobody could predict

How. Every file is first written under its final name inside a private folder made beside the
destination by `tempfile.mkdtemp` (a random name, created exclusively, mode 0700: nobody else can
create, link or rename anything in it), given the usual permissions there, and only then renamed
into place with `os.replace`, which replaces whatever is at the destination (a file, or a symbolic
link: the link is replaced, never followed). So a symbolic link or a hard link planted at a
predictable temporary name, the classic attack on `NAME.tmp-PID`, finds nothing to point at:
there is no predictable name. Writers that take a path (safetensors, Pillow, torch.onnx) can
reopen the staged name freely, since nobody else can touch the private folder.

Failures. A write that fails (disk full, file-size limit, permissions, a quota) raises
`WriteError`, an OSError naming the destination file; every staged file and the private folder
are removed, and the destination files are left as they were. Files written together change
together: all of them are written completely before the first is moved into place.

Durability. Each staged file is flushed to the disk (`os.fsync`) before it is renamed, and the
folder after the renames, so a power cut leaves the old file or the new one, never a renamed but
empty one (what a rename over unflushed data can leave on some filesystems).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["WriteError", "atomic_write", "atomic_write_all", "atomic_write_files", "create_exclusive", "save_npy"]


class WriteError(OSError):
    """A file could not be written (disk full, file-size limit, permissions...): `filename` is the
    destination, `strerror` why. The destination is unchanged.

    Examples:
        >>> e = WriteError("out/emb.npz", "No space left on device", errno.ENOSPC)
        >>> str(e), e.errno == errno.ENOSPC
        ('cannot write out/emb.npz: No space left on device', True)
    """

    def __init__(self, path: str | os.PathLike, reason: str, code: int | None = None) -> None:
        super().__init__(code if code is not None else errno.EIO, reason, os.fspath(path))

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


def _write_error(e: BaseException, path: Path) -> WriteError | None:
    """The WriteError that `e`, raised while writing `path`, stands for; None when `e` is not an I/O failure.
    Besides OSError, the writers' own wrappers of one: safetensors' SafetensorError says
    'I/O error: File too large (os error 27)'."""
    if isinstance(e, WriteError):
        return e
    if isinstance(e, OSError):
        code = e.errno if isinstance(e.errno, int) else None
        return WriteError(path, e.strerror or " ".join(str(e).split()) or type(e).__name__, code)
    m = re.search(r"os error (\d+)", str(e))
    if m is not None:
        code = int(m.group(1))
        return WriteError(path, os.strerror(code), code)
    return None


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def create_exclusive(folder: str | os.PathLike, prefix: str = ".", suffix: str = ".tmp") -> tuple[int, Path]:
    """A new, empty file in `folder` under a random name: (open fd for writing, path). Created with
    O_EXCL and O_NOFOLLOW (an existing file or link at that name is an error, never opened), then
    given the usual permissions on the fd (0666 minus the umask), never through the name.

    Examples:
        >>> fd, tmp = create_exclusive(".", ".out.", ".part")
        >>> os.write(fd, b"data"), os.close(fd), tmp.read_bytes()
        (4, None, b'data')
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = Path(folder) / f"{prefix}{secrets.token_hex(8)}{suffix}"
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            continue
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        return fd, path
    raise FileExistsError(errno.EEXIST, "no free temporary name", os.fspath(folder))


def _fsync(path: Path) -> None:
    """Flush a file's data (or a folder's entries) to the disk; a folder that cannot be opened for it
    (some filesystems, Windows) is left to the filesystem.

    Examples:
        >>> _ = Path("flushed.txt").write_text("data")
        >>> _fsync(Path("flushed.txt"))                       # returns once the data is on the disk
    """
    if path.is_dir():
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)
        return
    if path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def atomic_write_all(writes: Mapping[str | os.PathLike, Callable[[Path], Any]]) -> list[Path]:
    """Write several files that belong together (an array and its sidecar, a model and its config):
    each `write(staged)` runs on a staged file in a private folder beside its destination; once ALL
    have succeeded, the files are moved into place in the order given (put last the one whose presence
    says "complete"). If any write fails, no destination changes and WriteError names the file.

    Examples:
        >>> a, b = atomic_write_all({"x.npy": lambda p: p.write_bytes(b"array"), "x.npy.json": lambda p: p.write_text("{}")})
        >>> a.read_bytes(), b.read_text()
        (b'array', '{}')
    """
    targets = [Path(p) for p in writes]
    staging: dict[Path, Path] = {}
    try:
        for path, write in zip(targets, writes.values()):
            try:
                folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
            except OSError as e:
                raise _write_error(e, path) from None  # type: ignore[misc]
            staging[path] = folder
            staged = folder / path.name
            try:
                write(staged)
                mode = 0o666 & ~_umask()
                for f in folder.iterdir():  # the output and any side file its writer made
                    os.chmod(f, mode)  # inside our 0700 folder: no link can be there but the writer's own
                    for sub in ([f] if f.is_file() else [*sorted(f.rglob("*")), f]):  # a package folder: all of it
                        _fsync(sub)
            except Exception as e:
                wrapped = _write_error(e, path)
                if wrapped is None:
                    raise
                raise wrapped from None
        for path in targets:
            folder = staging[path]
            staged = folder / path.name
            for f in sorted(folder.iterdir(), key=lambda f: f == staged):  # side files first, the output last
                try:
                    os.replace(f, path.with_name(f.name))
                except OSError as e:
                    raise _write_error(e, path.with_name(f.name)) from None  # type: ignore[misc]
        for parent in dict.fromkeys(p.parent for p in targets):
            _fsync(parent)  # the renames themselves
    finally:
        for folder in staging.values():
            shutil.rmtree(folder, ignore_errors=True)
    return targets


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call write(staged) on a new file in a private folder beside `path`, then rename it onto `path`.

    A failure leaves `path` as it was, removes what was staged, and raises WriteError naming `path`
    when it is a write failure (the writer's own exception otherwise).

    Examples:
        >>> p = atomic_write("out.txt", lambda tmp: tmp.write_text("all or nothing"))
        >>> p.read_text()
        'all or nothing'
    """
    return atomic_write_all({path: write})[0]


def atomic_write_files(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """atomic_write, for writers that put side files next to their output (an ONNX exporter stores
    the weights of a large model in `NAME.onnx.data` beside `NAME.onnx`, and the .onnx file refers to
    it by name): the side files are moved beside `path` first, `path` last.

    Examples:
        >>> def write(p):  # an output and a side file it names
        ...     p.with_name(p.name + ".data").write_text("weights")
        ...     p.write_text("model -> " + p.name + ".data")
        >>> atomic_write_files("m.onnx", write).read_text(), Path("m.onnx.data").read_text()
        ('model -> m.onnx.data', 'weights')
    """
    return atomic_write(path, write)


class _Stream:
    """A file seen by numpy as a plain stream, so that np.save writes through Python's buffered file,
    which reports every failed write. (On a real file numpy writes with C stdio, whose last buffered
    write fails only when numpy closes its copy of the stream, and that error is lost: a file-size
    limit then gave a truncated array and a successful save.)"""

    def __init__(self, f: Any) -> None:
        self.f = f

    def write(self, data: bytes) -> int:
        return self.f.write(data)


def save_npy(path: str | os.PathLike, array: Any) -> None:
    """np.save(path, array) without pickles, reporting every write failure (see `_Stream`).

    Examples:
        >>> import numpy as np
        >>> save_npy("a.npy", np.arange(3)); np.load("a.npy").tolist()
        [0, 1, 2]
    """
    import numpy as np

    with open(path, "wb") as f:
        np.save(_Stream(f), array, allow_pickle=False)
