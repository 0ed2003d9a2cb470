"""An exclusive lock on an output path, so two runs never write the same file at once.

    with output_lock("emb.safetensors"):   # or raise OutputLockedError naming the other run
        ... write emb.safetensors, its checkpoints ...

The lock is `fcntl.flock` on a lock file beside the output (`.emb.safetensors.lock`), which
holds the holder's PID, host and command line for the message. The kernel drops a flock when
its process ends, however it ends (SIGKILL included), so a killed run never leaves a lock
stuck: a lock file left behind is simply taken by the next run. The lock file is removed on
release (after checking that it is still the file we locked). Where fcntl does not exist
(Windows), no lock is taken.
"""

from __future__ import annotations

import json
import os
import socket
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


def _holder(lock: Path) -> str:
    try:
        info = json.loads(lock.read_text())
        return f"process {info['pid']} on {info['host']} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of `path` for the block; raise OutputLockedError at once if another run holds it.

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
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLockedError(
                f"{path} is being written by {_holder(lock)}: wait for it to finish, or write to another --out "
                f"(if no such process runs, delete {lock})") from None
        except OSError:
            os.close(fd)  # a file system without flock (some network mounts): go on unlocked
            yield lock
            return
        # The holder before us may have removed the file after we opened it: then ours is an orphan.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        yield lock
    finally:
        try:
            os.unlink(lock)
        except OSError:
            pass
        os.close(fd)
