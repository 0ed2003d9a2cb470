"""An exclusive lock on an output path, so two runs never write the same file at once.

    with output_lock("emb.safetensors"):   # or raise OutputLockedError naming the other run
        ... write emb.safetensors, its checkpoints ...

The lock is `fcntl.flock` on a lock file beside the output (`.emb.safetensors.lock`), which
holds the holder's PID, host and command line for the message. The kernel drops a flock when
its process ends, however it ends (SIGKILL included), so a killed run never leaves a lock
stuck: a lock file left behind is simply taken by the next run. The lock file is removed on
release (after checking that it is still the file we locked). It is opened without following
links and only when it is a plain file of ours (see `output_lock`): a link planted at its name
is never written through. Where fcntl does not exist (Windows), no lock is taken.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OutputLockedError", "output_lock", "lock_path"]


class OutputLockedError(RuntimeError):
    """Another process (or another `output_lock` of this one) holds the lock of this output.

    Examples:
        >>> with output_lock("a.npz"):
        ...     try:
        ...         with output_lock("a.npz"):
        ...             pass
        ...     except OutputLockedError:
        ...         print("busy")
        busy
    """


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of an output: a hidden file beside it.

    Examples:
        >>> str(lock_path("out/emb.safetensors"))
        'out/.emb.safetensors.lock'
    """
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def _holder(fd: int) -> str:
    """Who holds the lock, from the lock file we opened (read through our fd: no link followed; bounded)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        return f"process {info['pid']} on {info['host']} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _open_lock(lock: Path) -> int:
    """Open (or create) the lock file without following a link, and check that it is one minidino could
    have made: a regular file of ours with no other name. Anything else planted there (a symbolic link,
    a hard link to a file elsewhere, a FIFO, another user's file) is refused, never written through."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(lock, flags, 0o666)
    except OSError as e:
        if os.path.islink(lock):
            raise OSError(e.errno, f"{lock} is a symbolic link, not a lock file of minidino: it is not followed; "
                                   "remove it if you did not put it there", os.fspath(lock)) from None
        raise
    st = os.fstat(fd)
    problem = ("is not a regular file" if not stat.S_ISREG(st.st_mode)
               else "has other names (a hard link)" if st.st_nlink != 1
               else "belongs to another user" if hasattr(os, "geteuid") and st.st_uid != os.geteuid() else None)
    if problem:
        os.close(fd)
        raise OSError(errno.EPERM, f"{lock} {problem}: not a lock file of minidino; it is left untouched "
                                   "(remove it if you did not put it there)", os.fspath(lock))
    return fd


@contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of `path` for the block; raise OutputLockedError at once if another run holds it.

    The lock file is opened without following links and must be a regular file of this user with one
    name: anything else at its name raises OSError naming it (nothing is written through it).

    Examples:
        >>> with output_lock("emb.safetensors") as lock:
        ...     print(lock.name, lock.exists())
        .emb.safetensors.lock True
        >>> lock.exists()  # removed on release
        False
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        yield lock_path(path)
        return
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = _open_lock(lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputLockedError(
                f"{path} is being written by {holder}: wait for it to finish, or write to another --out "
                f"(if no such process runs, delete {lock})") from None
        except OSError:
            os.close(fd)  # a file system without flock (some network mounts): go on unlocked
            yield lock
            return
        # The holder before us may have removed the file after we opened it: then ours is an orphan.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock, follow_symlinks=False))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield lock
    finally:
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock, follow_symlinks=False)):  # still ours
                os.unlink(lock)
        except OSError:
            pass
        os.close(fd)
