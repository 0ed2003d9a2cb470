"""Output files of the commands: planned and checked before the work, locked while it runs.

    outs = plan_outputs([(args.out, "--out"), (sidecar, "--out's metadata")],   # every file the command writes
                        inputs=[(p, "input image") for p in paths] + [(weights, "--weights")])
    out = check_output(args.out, "--out")   # the same for one file and no inputs
    out = check_output_dir(args.out)        # an output folder (depth): nothing is created
    with locked(out):                       # another run writing `out` -> one line, exit status 5
        ... compute, then write atomically (minidino.utils.atomic) ...

`plan_outputs` is the one place where every command says what it will write and what it reads,
before it reads or computes anything. It refuses (one line, nothing written):

- an output that is also an input, however it is spelled (`sub/../a.png`, a symbolic link to the
  input, a linked folder, a hard link: compared by device and inode), status 2;
- two outputs that are the same file (two inputs whose outputs would collide), status 2;
- an output whose name is taken by a folder or by anything but a regular file, status 2;
- an output folder that holds an input (embed's OUT.parts/ is removed when the run ends), status 2;
- a folder where the file cannot be created, or a file that cannot be replaced, status 7.

So a run never computes for an hour and then fails to save, and never replaces what it reads.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .errors import EXIT_BUSY, EXIT_IO, EXIT_USAGE, fail

__all__ = ["plan_outputs", "check_output", "check_output_dir", "locked", "input_files"]

Named = tuple[str | os.PathLike, str]  # (path, what it is, for messages: "--out", "input image", ...)


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


def _inode(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of the file a path names (links followed), or None when there is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def input_files(path: str | os.PathLike) -> list[str]:
    """The files an input stands for: itself, or, for a folder (a Hugging Face model folder), its files."""
    if os.path.isdir(path):
        try:
            return [os.path.join(path, n) for n in sorted(os.listdir(path))]
        except OSError:
            return []
    return [os.fspath(path)]


def plan_outputs(outputs: Sequence[Named], inputs: Iterable[Named] = (), *, folders: Sequence[Named] = ()) -> list[Path]:
    """Check every file a command will write (`outputs`) and every folder it will fill and remove
    (`folders`, e.g. OUT.parts/) against what it reads (`inputs`), before any work; see the module
    docstring. Returns the outputs as Paths. A failed check exits with one line naming the files.

    Only a file that exists can be destroyed: an output is compared with the inputs by the (device,
    inode) of the file it names, which sees every spelling (`sub/../a.png`, a symbolic link, a linked
    folder, a hard link) at one `stat` per input, whatever the number of inputs."""
    by_inode: dict[tuple[int, int], str] = {}
    for path, what in inputs:
        inode = _inode(path)
        if inode is not None:
            by_inode.setdefault(inode, f"{what} {os.fspath(path)}")
    parents: dict[Path, str] = {}  # a folder -> its resolved path (one realpath per folder)
    planned: dict[tuple[str, str], str] = {}
    result = []
    for path, what in outputs:
        path = Path(path)
        if path.is_dir():
            fail(f"minidino: {what} {path} exists and is not a file: it is a folder; give a file name "
                 f"(e.g. {path / 'out'}{path.suffix or ''})", EXIT_USAGE)
        if path.exists() and not path.is_file():
            fail(f"minidino: {what} {path} exists and is not a regular file; give another name", EXIT_USAGE)
        inode = _inode(path)
        if inode is not None and inode in by_inode:
            fail(f"minidino: {what} {path} is also an input ({by_inode[inode]}): it would be written over; choose "
                 "another output name (nothing was written)", EXIT_USAGE)
        if path.parent not in parents:
            parents[path.parent] = os.path.realpath(path.parent)
        key = (parents[path.parent], path.name)
        if key in planned:
            fail(f"minidino: {what} {path} and {planned[key]} are the same file: one would be written over the "
                 "other; choose other names (nothing was written)", EXIT_USAGE)
        planned[key] = f"{what} {path}"
        result.append(path)
    for folder, what in folders:
        folder = Path(folder)
        if folder.is_symlink():  # a folder the command makes and removes: one planted as a link is not followed
            fail(f"minidino: {what} {folder} is a symbolic link, not a folder minidino made; remove it", EXIT_USAGE)
        if folder.exists() and not folder.is_dir():
            fail(f"minidino: {what} {folder} exists and is not a folder; move it or choose another output", EXIT_USAGE)
        if folder.is_dir():
            inside = (os.path.join(root, f) for root, _, files in os.walk(folder) for f in files)
            source = next((by_inode[i] for i in map(_inode, inside) if i is not None and i in by_inode), None)
            if source is not None:
                fail(f"minidino: {what} {folder} holds an input ({source}); that folder is written and removed by "
                     "the run: choose another output (nothing was written)", EXIT_USAGE)
    checked: set[Path] = set()
    for path, (_, what) in zip(result, outputs):
        parent = path.parent
        if parent not in checked:
            checked.add(parent)
            _check_can_create_in(parent, path, what, str(parent))
        if path.exists() and not os.access(path, os.W_OK) and not os.access(parent, os.W_OK):
            fail(f"minidino: {what} {path} exists and cannot be replaced (permission denied)", EXIT_IO)
    return result


def check_output(path: str | os.PathLike, what: str = "--out") -> Path:
    """`path` as a Path, after checking that a file can be written there (nothing is left behind)."""
    return plan_outputs([(path, what)])[0]


@contextmanager
def locked(path: str | os.PathLike) -> Iterator[Path]:
    """minidino.utils.lock.output_lock, with a held lock reported as one line and exit status 5, and a
    lock name taken by something else (a planted link) as one line and exit status 7. The folders made
    for the output are removed again if the run wrote nothing in them."""
    from ..utils.lock import OutputLockedError, output_lock

    made = []
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    try:
        with ExitStack() as stack:
            try:
                lock = stack.enter_context(output_lock(path))
            except OutputLockedError as e:
                fail(f"minidino: {e}", EXIT_BUSY)
            except OSError as e:
                fail(f"minidino: cannot lock {path}: {e.strerror or e}", EXIT_IO)
            yield lock
    finally:
        for f in made:  # innermost first; one that holds something stays, with its parents
            try:
                f.rmdir()
            except OSError:
                break


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """`path` as a Path, after checking that it is (or can be made) a writable folder; nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        fail(f"minidino: {what} {path} exists and is not a folder; give a folder (created if needed)", EXIT_USAGE)
    _check_can_create_in(path, path, what, "it")
    return path
