"""Reading small files safely: a regular file, of a bounded size, opened without blocking.

    data = read_limited("labels.txt", 64 * 2**20)          # bytes, or UnreadableFile naming the file
    lines = read_lines("list.txt", 2**30, what="list")     # UTF-8 lines (undecodable bytes kept as escapes)

Every text or JSON file minidino reads besides images and checkpoints (--texts-file,
--labels-file, .txt lists of images, the metadata beside an .npy, embed's manifest, a golden
index) goes through here, so none of them can hang a run (a FIFO blocks on open and read), read a
device for ever (/dev/zero), or exhaust the memory (a sparse 20 GB file): the path must be a
regular file by its `stat`, it is opened non-blocking and checked again by `fstat` (no swap for a
FIFO in between), and at most `max_bytes` are read.
"""

from __future__ import annotations

import os
import stat

__all__ = ["UnreadableFile", "kind_problem", "display_name", "read_limited", "read_lines", "check_unpacked_size", "open_regular", "stat_regular"]

_KINDS = ((stat.S_ISDIR, "is a directory"), (stat.S_ISFIFO, "is a FIFO (named pipe)"), (stat.S_ISSOCK, "is a socket"),
          (stat.S_ISCHR, "is a character device"), (stat.S_ISBLK, "is a block device"))


def display_name(path: str | os.PathLike) -> str:
    """The path as one printable line: control characters and undecodable bytes escaped.

    Examples:
        >>> display_name("a\\nb.png")
        'a\\\\nb.png'
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1])  # '\n', '\x1b', '\udcff'
    return "".join(out)


class UnreadableFile(OSError):
    """A file that cannot be used; `path` and `reason` say which and why.

    Examples:
        >>> str(UnreadableFile("labels.txt", "is a FIFO (named pipe), not a regular file"))
        'labels.txt: is a FIFO (named pipe), not a regular file'
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = os.fspath(path), reason
        super().__init__(f"{display_name(self.path)}: {reason}")

    def __str__(self) -> str:
        return f"{display_name(self.path)}: {self.reason}"


def kind_problem(mode: int, noun: str = "a regular file") -> str | None:
    """Why a file of this st_mode cannot be read as `noun`, or None for a regular file.

    Examples:
        >>> kind_problem(stat.S_IFIFO | 0o644, "an image file")
        'is a FIFO (named pipe), not an image file'
    """
    for test, reason in _KINDS:
        if test(mode):
            return f"{reason}, not {noun}"
    return None if stat.S_ISREG(mode) else f"is not {noun}"


def _size(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n:,} bytes"


def stat_regular(path: str | os.PathLike, noun: str = "a regular file", error: type[UnreadableFile] = UnreadableFile) -> os.stat_result:
    """`os.stat(path)`, refused unless it names an existing `noun` (a regular file): a broken link, a
    missing file, a path that cannot be searched, a folder, a FIFO or a device raise `error(path, reason)`.

    Examples:
        >>> with open("notes.txt", "w") as f:
        ...     _ = f.write("hello")
        >>> stat_regular("notes.txt").st_size
        5
        >>> stat_regular("missing.txt")
        Traceback (most recent call last):
        ...
        minidino.utils.files.UnreadableFile: missing.txt: no such file
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        reason = "broken symbolic link (its target does not exist)" if os.path.islink(path) else "no such file"
        raise error(path, reason) from None
    except OSError as e:  # permission denied on a folder on the way, name too long, symlink loop...
        raise error(path, f"cannot access it ({e.strerror or e})") from None
    problem = kind_problem(st.st_mode, noun)
    if problem:
        raise error(path, problem)
    return st


def open_regular(path: str | os.PathLike, noun: str = "a regular file", error: type[UnreadableFile] = UnreadableFile) -> int:
    """Open `path` for reading without blocking and check, on the open file, that it is still `noun`
    (a FIFO or a device swapped in since an earlier stat is refused); returns the descriptor to close.
    Failures raise `error(path, reason)`.

    Examples:
        >>> with open("notes.txt", "w") as f:
        ...     _ = f.write("hello")
        >>> fd = open_regular("notes.txt"); os.read(fd, 5); os.close(fd)
        b'hello'
        >>> open_regular(".")
        Traceback (most recent call last):
        ...
        minidino.utils.files.UnreadableFile: .: is a directory, not a regular file
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise error(path, f"cannot open it ({e.strerror or e})") from None
    problem = kind_problem(os.fstat(fd).st_mode, noun)  # swapped for a FIFO or a device since the stat?
    if problem:
        os.close(fd)
        raise error(path, problem)
    return fd


def read_limited(path: str | os.PathLike, max_bytes: int, *, noun: str = "a regular file", empty_ok: bool = False) -> bytes:
    """The bytes of `path`, or UnreadableFile when it is not a regular file, is empty (unless `empty_ok`),
    holds more than `max_bytes`, or cannot be read (see the module docstring).

    Examples:
        >>> _ = open("t.txt", "w").write("hello")
        >>> read_limited("t.txt", 100)
        b'hello'
        >>> read_limited("t.txt", 3)
        Traceback (most recent call last):
        ...
        minidino.utils.files.UnreadableFile: t.txt: 5 bytes, more than the limit of 3 bytes
        >>> read_limited("/dev/zero", 100)
        Traceback (most recent call last):
        ...
        minidino.utils.files.UnreadableFile: /dev/zero: is a character device, not a regular file
    """
    st = stat_regular(path, noun)
    if st.st_size > max_bytes:
        raise UnreadableFile(path, f"{_size(st.st_size)}, more than the limit of {_size(max_bytes)}")
    fd = open_regular(path, noun)
    try:
        chunks, total = [], 0
        while chunk := os.read(fd, min(2**20, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # it grew since the stat
                raise UnreadableFile(path, f"more than the limit of {_size(max_bytes)}")
    except OSError as e:
        if isinstance(e, UnreadableFile):
            raise
        raise UnreadableFile(path, f"cannot read it ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if total == 0 and not empty_ok:
        raise UnreadableFile(path, "empty file (0 bytes)")
    return b"".join(chunks)


def read_lines(path: str | os.PathLike, max_bytes: int, *, noun: str = "a text file", strict: bool = True) -> list[str]:
    """The lines of a UTF-8 text file read with `read_limited`. strict=False keeps bytes that are not
    UTF-8 as surrogate escapes (file names); strict=True refuses them (sentences, labels).

    Examples:
        >>> _ = open("labels.txt", "w").write("a cat\\na dog\\n")
        >>> read_lines("labels.txt", 2**20)
        ['a cat', 'a dog']
    """
    data = read_limited(path, max_bytes, noun=noun, empty_ok=True)
    try:
        text = data.decode("utf-8", errors="strict" if strict else "surrogateescape")
    except UnicodeDecodeError as e:
        raise UnreadableFile(path, f"not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r})") from None
    return text.splitlines()


def check_unpacked_size(unpacked: int, packed: int) -> None:
    """Refuse (ValueError) an archive whose contents, once decompressed, would take more than half the
    free memory: a few KB of compressed zeros can declare gigabytes. `unpacked` is the archive's own
    record of its sizes (a zip's file_size, which zipfile holds the inflation to), read before a byte
    is inflated.

    Examples:
        >>> check_unpacked_size(2**20, 2**10)                   # 1 MiB: fine on any machine
        >>> check_unpacked_size(2**62, 2**10)                   # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: its arrays take 4294967296.0 GiB once decompressed (the file is 0.0 MiB), ...
    """
    import torch

    from .memory import available_memory

    free = available_memory(torch.device("cpu"))
    if free is not None and unpacked > free // 2:
        raise ValueError(f"its arrays take {unpacked / 2**30:.1f} GiB once decompressed (the file is "
                         f"{packed / 2**20:.1f} MiB), more than half the memory available ({free / 2**30:.1f} GiB)")
