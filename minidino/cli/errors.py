"""Exit statuses and one-line error messages of the `minidino` command (docs/cli-errors.md).

Every failure ends as ONE line on stderr, `minidino: WHAT: WHICH FILE: WHAT TO DO`, and an
exit status that says which kind of failure it was. A traceback is printed only with
`minidino --debug ...` or MINIDINO_DEBUG=1 (for a bug report).

Commands signal failures by raising: `SystemExit("minidino ...: message")` (a wrong argument or
input, status 2), or the library's own exceptions, mapped here by `exit_status`. A command
that finished but skipped some inputs returns EXIT_PARTIAL itself.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

__all__ = [
    "EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "EXIT_WEIGHTS", "EXIT_DOWNLOAD", "EXIT_BUSY", "EXIT_RESOURCES", "EXIT_IO",
    "EXIT_MISMATCH", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_STATUSES", "CliExit", "debug_enabled", "exit_status", "run_guarded",
    "ResumeHint", "fail",
]

EXIT_OK = 0
EXIT_PARTIAL = 1  # finished, but some inputs could not be read: each is named on stderr, the rest is written
EXIT_USAGE = 2  # a wrong argument, option or input file (argparse's own status for usage errors)
EXIT_WEIGHTS = 3  # the weights cannot be used: unreadable, unsafe, corrupt, not finite, do not fit the model; NaN results
EXIT_DOWNLOAD = 4  # a download failed: no network, HTTP error, timeout, checksum mismatch
EXIT_BUSY = 5  # another minidino run is writing the same output
EXIT_RESOURCES = 6  # not enough memory (or a device that is not there)
EXIT_IO = 7  # a file cannot be read or written: permissions, disk full, read-only folder
EXIT_MISMATCH = 8  # a comparison found a tensor past the tolerance (compare; accuracy with --min-cosine)
EXIT_INTERNAL = 70  # a bug in minidino: rerun with --debug and report the traceback
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as shells report it

EXIT_STATUSES = {
    EXIT_OK: "success",
    EXIT_PARTIAL: "finished, but some inputs could not be read (each named on stderr); the rest is written",
    EXIT_USAGE: "a wrong argument, option or input file; nothing was written",
    EXIT_WEIGHTS: "the weights cannot be used (unreadable, unsafe, corrupt, non-finite, or not this model's), or the "
                  "model gives NaN/Inf results (nothing written)",
    EXIT_DOWNLOAD: "a download failed (network, HTTP error, timeout, checksum); nothing bad was cached",
    EXIT_BUSY: "another minidino run is writing the same output (named in the message)",
    EXIT_RESOURCES: "not enough memory, or the --device asked for is not available",
    EXIT_IO: "a file or folder cannot be read or written (permissions, disk full, read-only); the file is named",
    EXIT_MISMATCH: "compared, and a tensor is past the tolerance (compare; accuracy --min-cosine): the port differs",
    EXIT_INTERNAL: "a bug in minidino: rerun with --debug and report the traceback",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); where a command can resume, the message says how",
}


class CliExit(SystemExit):
    """SystemExit whose `code` is the exit status and whose str() is the message (already printed)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.code = status
        self.message = message


class ResumeHint(KeyboardInterrupt):
    """A KeyboardInterrupt that knows how to resume: raised by commands that checkpoint their work."""

    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint


def fail(message: str, status: int) -> "NoReturn":
    """Print `message` (one line) on stderr and exit with `status`."""
    msg = _one_line(message)
    print(_prefixed(msg), file=sys.stderr, flush=True)
    raise CliExit(msg, status)


def debug_enabled() -> bool:
    """MINIDINO_DEBUG set to anything but '', 0, false, no."""
    return os.environ.get("MINIDINO_DEBUG", "").strip() not in ("", "0", "false", "no")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def exit_status(e: BaseException) -> tuple[int, str]:
    """(status, message) for an exception escaping a command."""
    from ..weights.download import ChecksumError, DownloadError
    from ..utils.viz import NotFiniteError
    from ..weights.load import CheckpointError, WeightsMismatchError

    msg = _one_line(str(e)) or type(e).__name__
    if isinstance(e, (DownloadError, ChecksumError)) or type(e).__name__ in ("URLError", "HTTPError", "TimeoutError"):
        return EXIT_DOWNLOAD, msg
    if isinstance(e, (CheckpointError, WeightsMismatchError)):
        return EXIT_WEIGHTS, msg
    if isinstance(e, NotFiniteError):  # results are never written or printed when they are not finite
        return EXIT_WEIGHTS, (f"{msg}: the weights, --config or --dtype (e.g. a float16 overflow) give numbers out of "
                              "range; nothing was written")
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and "out of memory" in msg.lower()):
        return EXIT_RESOURCES, f"out of memory ({msg}); use a smaller --batch-size or --size, or a larger machine"
    if isinstance(e, FileNotFoundError):
        return EXIT_USAGE, f"{msg}; check the path"
    if isinstance(e, PermissionError):
        return EXIT_IO, f"{msg}; check the permissions of that file or folder"
    if isinstance(e, OSError):  # WriteError (minidino.utils.atomic) names the file it could not write
        if getattr(e, "errno", None) in _FULL:
            return EXIT_IO, f"{msg}; free some space (or raise the file-size limit), or write elsewhere"
        return EXIT_IO, msg
    if isinstance(e, (ValueError, TypeError)):
        return EXIT_USAGE, msg
    return EXIT_INTERNAL, (f"internal error {type(e).__name__}: {msg}. This is a bug: rerun with --debug (or "
                           "MINIDINO_DEBUG=1) and report the traceback")


_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}  # disk full, file-size limit, quota


def _prefixed(msg: str) -> str:
    return msg if msg.startswith("minidino") else f"minidino: {msg}"


def run_guarded(func: Callable[[], Any], *, debug: bool = False) -> int:
    """Run a command; turn its failures into one stderr line and a CliExit carrying the status.

    With debug=True, exceptions other than SystemExit propagate with their traceback.
    """
    try:
        return int(func() or 0)
    except CliExit:
        raise
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            raise
        msg = _one_line(str(e.code))
        print(_prefixed(msg), file=sys.stderr, flush=True)
        raise CliExit(msg, EXIT_USAGE) from None
    except KeyboardInterrupt as e:
        if debug:
            raise
        hint = getattr(e, "hint", None)
        msg = "interrupted" + (f"; {hint}" if hint else "")
        print(_prefixed(msg), file=sys.stderr, flush=True)
        raise CliExit(msg, EXIT_INTERRUPTED) from None
    except Exception as e:
        if debug:
            raise
        status, msg = exit_status(e)
        print(_prefixed(msg), file=sys.stderr, flush=True)
        raise CliExit(msg, status) from None
