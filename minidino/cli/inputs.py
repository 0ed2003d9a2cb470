"""Reading the images a command is given, safely: one bad input is named and skipped, never fatal.

Every command that reads image files (embed, similar, pca, attention, depth, zeroshot,
segment, ...) goes through this module, so they all hold the same promise: an input that
cannot be opened, decoded or preprocessed, for any reason, is reported as (path, reason) and
the others go on; no single input can end, hang or exhaust the memory of a run.

    paths, failures = expand_inputs(args.inputs)          # files, folders, .txt lists
    items, more = read_images(paths, transform)           # [(path, transform(img))], [(path, reason)]
    items, more = read_images(paths, dense_transform_checked(size, mode, patch), limits=DENSE_LIMITS)
    report_failures(failures + more)                      # one stderr line per failure
    ... compute on items, write the output ...
    return EXIT_PARTIAL if failures + more else 0         # minidino.cli.errors

    value, reason = read_one(path, transform)             # one input (e.g. in a worker thread)
    img = open_image(path)                                # or raise InputError(path, reason)

Contract of `read_one` / `read_images` (what a caller can rely on):
- They never raise for a bad input (only KeyboardInterrupt / SystemExit pass through). The
  reason is one line of plain text, e.g. "is a directory", "truncated or corrupt (image file is
  truncated)", "12000x12000 = 144.0 Mpx, more than the limit 89.5 Mpx (decompression bomb?)".
- Before anything is opened, the path must be a regular file: directories, FIFOs (which would
  block the run forever), sockets, devices, broken symbolic links, missing and unreadable
  files and empty files are refused from their `stat`. The file is then opened non-blocking
  and checked again with `fstat` (no race with a file swapped for a FIFO).
- Before any pixel is decoded, the header's size is checked against `Limits`: at most
  `max_pixels` pixels (Pillow's own MAX_IMAGE_PIXELS, 89.5 Mpx, by default), at most
  `max_side` pixels per side and an aspect ratio of at most `max_aspect` (default 50:1). So
  neither a decompression bomb nor a 100000x1 strip (whose shorter side scaled to 256 would
  ask for a 25600000x256 image) reaches a resize. Where the whole image goes through the
  model (pca, attention, depth, segment), use DENSE_LIMITS and `dense_transform_checked`,
  which also refuses, before resizing, an image whose resized H*W exceeds `max_output_pixels`.
- A transform may raise InputError itself: its reason is reported as the input's.
- Decoding: the first frame of animations and multi-page files; EXIF orientation applied
  (a corrupt EXIF block is ignored, the pixels are kept); CMYK, palette, 16-bit, greyscale,
  alpha: converted to 8-bit RGB by `minidino.utils.transforms.to_rgb` (alpha on white). Truncated
  files fail (Pillow's LOAD_TRUNCATED_IMAGES is not touched).
- The transform's own failures (any Exception, MemoryError included) are failures of that
  input. The value returned is whatever `transform(img)` returned (a PIL image when
  transform is None).
- Thread-safe: `read_one` may run in worker threads (embed decodes in a pool).
- Names are printed with `display_name`, which escapes control characters and undecodable
  bytes, so a file called "a\\nb.png" still gives one line on stderr.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..utils.files import UnreadableFile, display_name, open_regular, read_lines, stat_regular

__all__ = [
    "Limits", "DEFAULT_LIMITS", "DENSE_LIMITS", "InputError", "expand_inputs", "check_file", "open_image", "read_one",
    "read_images", "display_name", "report_failures", "dense_transform_checked", "read_text_file", "TEXT_LIMIT",
    "LIST_LIMIT",
]

T = TypeVar("T")
Failure = tuple[str, str]  # (path, reason)


@dataclass(frozen=True)
class Limits:
    """Bounds checked on an image's header before it is decoded (see the module docstring)."""

    max_pixels: int = 89_478_485  # Pillow's MAX_IMAGE_PIXELS default (beyond it Pillow itself warns)
    max_side: int = 65_500  # the largest JPEG/WebP side; no sensible photo is larger
    max_aspect: float = 50.0  # long side / short side; a 100000x1 strip is refused before the resize
    max_output_pixels: int | None = None  # H*W of the transformed tensor (dense commands), None: unchecked


DEFAULT_LIMITS = Limits()
# For commands that run the whole image through the model (pca, attention, depth, segment): a
# 10:1 panorama is fine, a 50:1 strip gives thousands of tokens in a row; and the resized image
# must stay under 4.2 Mpx (2048x2048; e.g. 2044x2044 = 146x146 patches). Use them through
# `dense_transform_checked`, which checks the resized size before resizing.
DENSE_LIMITS = Limits(max_aspect=10.0, max_output_pixels=2**22)


class InputError(UnreadableFile):
    """An input that cannot be used; `path` and `reason` say which and why (minidino.utils.files)."""


def report_failures(failures: Iterable[Failure], *, stream: Any = None, what: str = "skipped") -> int:
    """Print one line per failure, `minidino: skipped PATH: REASON`; returns how many."""
    stream = stream if stream is not None else sys.stderr
    n = 0
    for path, reason in failures:
        print(f"minidino: {what} {display_name(path)}: {reason}", file=stream, flush=True)
        n += 1
    return n


# ------------------------------------------------------------------ lists of inputs
TEXT_LIMIT = 64 * 2**20  # --texts-file, --labels-file: about a million sentences
LIST_LIMIT = 2**30  # a .txt list of image paths: about 20 million paths


def read_text_file(path: str | os.PathLike, option: str, max_bytes: int = TEXT_LIMIT) -> list[str]:
    """The lines of a text file an option names (--texts-file, --labels-file), read safely
    (minidino.utils.files: a regular file, at most `max_bytes`, never blocking); any problem is one
    line naming the option and the file, exit status 2."""
    try:
        return read_lines(path, max_bytes, noun="a text file")
    except UnreadableFile as e:
        raise SystemExit(f"minidino: {option} {e}") from None


def _inside(path: str, folders: Sequence[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == f or real.startswith(f + os.sep) for f in folders)


def expand_inputs(inputs: Sequence[str], extensions: Sequence[str] | None = None, *,
                  exclude: Sequence[str | os.PathLike] = ()) -> tuple[list[str], list[Failure]]:
    """Files, folders and .txt lists -> (ordered paths without duplicates, failures).

    Folders are walked recursively in sorted order, keeping files whose name ends in one of
    `extensions` (default: minidino.utils.transforms.IMAGE_EXTENSIONS); symbolic links to folders are
    not followed (no loops); a sub-folder that cannot be listed is a failure; the folders in `exclude`
    (a command's output folders) are never entered, so a rerun does not read its own outputs. A .txt
    file lists one path a line (blank lines and lines starting with # ignored, relative paths relative
    to the list's folder; bytes that are not UTF-8 are kept as they are); it is read like every text
    file (minidino.utils.files: a regular file of at most LIST_LIMIT bytes), or is a failure. Anything
    else is taken as a file: whether it can be read is `read_one`'s business.
    """
    from ..utils.transforms import IMAGE_EXTENSIONS

    exts = tuple(e.lower() for e in (extensions or IMAGE_EXTENSIONS))
    skip = [os.path.realpath(f) for f in exclude]
    out: list[str] = []
    failures: list[Failure] = []
    for item in inputs:
        item = os.fspath(item)
        if os.path.isdir(item):
            def onerror(e: OSError) -> None:
                failures.append((e.filename or item, f"cannot list this folder ({e.strerror or e})"))

            for root, dirs, files in os.walk(item, onerror=onerror):
                dirs[:] = sorted(d for d in dirs if not (skip and _inside(os.path.join(root, d), skip)))
                out += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(exts)]
        elif item.lower().endswith(".txt") and os.path.lexists(item) and not os.path.isdir(item):
            try:
                lines = read_lines(item, LIST_LIMIT, noun="a list of paths", strict=False)
            except UnreadableFile as e:
                failures.append((item, f"cannot read this list: {e.reason}"))
                continue
            base = os.path.dirname(item)
            for line in lines:
                line = line.strip()
                if line and not line.startswith("#"):
                    out.append(line if os.path.isabs(line) or not base else os.path.join(base, line))
        else:
            out.append(item)  # a file, or a path read_one will name as missing
    return list(dict.fromkeys(out)), failures


# ------------------------------------------------------------------ one input
def check_file(path: str | os.PathLike) -> None:
    """Raise InputError unless `path` is an existing, readable, non-empty regular file (from stat alone)."""
    st = stat_regular(path, "an image file", InputError)
    if st.st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise InputError(path, "permission denied (not readable)")


def _check_header(path: str, size: tuple[int, int], limits: Limits) -> None:
    W, H = size
    if W < 1 or H < 1:
        raise InputError(path, f"the image is {W}x{H} pixels (empty)")
    if W * H > limits.max_pixels:
        raise InputError(path, f"{W}x{H} = {W * H / 1e6:.1f} Mpx, more than the limit {limits.max_pixels / 1e6:.1f} Mpx "
                               "(a decompression bomb, or an image to downscale first)")
    if max(W, H) / min(W, H) > limits.max_aspect:
        raise InputError(path, f"{W}x{H}: aspect ratio {max(W, H) / min(W, H):.0f}:1, more than {limits.max_aspect:g}:1 "
                               "(resizing it would need an absurdly large image); crop it first")
    if max(W, H) > limits.max_side:
        raise InputError(path, f"{W}x{H}: a side longer than {limits.max_side} pixels")


_WARNING_LOCK = threading.Lock()
_warning_silenced = False


def _quiet_pillow_bomb_warning() -> None:
    """Our header check refuses what Pillow would only warn about: silence that warning, once per
    process and under a lock (the warnings filter list is not safe to change from two threads)."""
    global _warning_silenced
    if _warning_silenced:
        return
    import warnings

    from PIL import Image

    with _WARNING_LOCK:
        if not _warning_silenced:
            warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
            _warning_silenced = True


def open_image(path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode one image file to an upright 8-bit RGB PIL image, or raise InputError (see the module docstring)."""
    from PIL import Image, ImageOps

    from ..utils.transforms import to_rgb

    path = os.fspath(path)
    check_file(path)
    fd = open_regular(path, "an image file", InputError)
    try:
        _quiet_pillow_bomb_warning()
        with os.fdopen(fd, "rb", closefd=False) as f:
            try:
                with Image.open(f) as im:
                    _check_header(path, im.size, limits)
                    im.seek(0)  # first frame of an animation / multi-page file
                    im.load()  # decode now: a truncated file fails here
                    try:
                        img = ImageOps.exif_transpose(im)  # a copy, upright
                    except Exception:  # a corrupt EXIF block: keep the pixels as stored
                        img = None
                    if img is None or img is im:
                        img = im.copy()
                    _check_header(path, img.size, limits)
                    return to_rgb(img)
            except InputError:
                raise
            except Image.UnidentifiedImageError:
                raise InputError(path, "not an image (Pillow cannot identify the format)") from None
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:  # the warning: if made an error
                raise InputError(path, f"refused as a decompression bomb ({e})") from None
            except MemoryError:
                raise InputError(path, "out of memory while decoding it") from None
            except Exception as e:  # OSError (truncated), SyntaxError, ValueError, struct.error, ... from a plugin
                raise InputError(path, _reason(e)) from None
    finally:
        os.close(fd)


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return f"truncated or corrupt ({text[:200]})"


def read_one(path: str | os.PathLike, transform: Callable[[Any], T] | None = None, limits: Limits = DEFAULT_LIMITS
             ) -> tuple[T | Any, None] | tuple[None, str]:
    """(transform(open_image(path)), None), or (None, reason): never raises for a bad input."""
    try:
        img = open_image(path, limits)
    except InputError as e:
        return None, e.reason
    except Exception as e:  # a failure nobody foresaw is still this input's, not the run's
        return None, f"cannot read it ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
    if transform is None:
        return img, None
    try:
        value = transform(img)
    except InputError as e:  # a transform's own refusal (e.g. dense_transform_checked)
        return None, e.reason
    except MemoryError:
        return None, "out of memory while preprocessing it"
    except Exception as e:
        return None, f"cannot preprocess it ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
    if limits.max_output_pixels is not None:
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) >= 2 and shape[-1] * shape[-2] > limits.max_output_pixels:
            return None, (f"preprocessed to {shape[-2]}x{shape[-1]} pixels, more than {limits.max_output_pixels} "
                          "(choose a smaller --size)")
    return value, None


def dense_transform_checked(size: int | None, mode: str = "resize", patch_size: int = 14,
                            limits: Limits = DENSE_LIMITS, *, preprocessing: Any = None) -> Callable[[Any], Any]:
    """minidino.utils.transforms.dense_transform(size=, mode=, patch_size=) as a transform for `read_one`, which
    refuses an image whose resized size would exceed `limits.max_output_pixels` BEFORE resizing it. Normalised
    with `preprocessing`'s mean and std (a minidino.catalogue.Preprocessing; None: ImageNet's)."""
    from ..catalogue import IMAGENET
    from ..utils.transforms import dense_size, dense_transform

    stats = preprocessing or IMAGENET

    def transform(img: Any) -> Any:
        W0, H0 = img.size
        H, W = dense_size((H0, W0), size, patch_size)
        if limits.max_output_pixels is not None and H * W > limits.max_output_pixels:
            raise InputError(getattr(img, "filename", "") or "image",
                             f"{W0}x{H0} would be resized to {W}x{H} = {H * W / 1e6:.1f} Mpx, more than "
                             f"{limits.max_output_pixels / 1e6:.1f} Mpx; choose a smaller --size")
        return dense_transform(img, size=size, mode=mode, patch_size=patch_size, mean=stats.mean, std=stats.std)
    return transform


def read_images(paths: Sequence[str], transform: Callable[[Any], T] | None = None, *, limits: Limits = DEFAULT_LIMITS,
                workers: int = 1) -> tuple[list[tuple[str, T]], list[Failure]]:
    """[(path, value)] of the inputs that could be read, in order, and [(path, reason)] of the others."""
    if workers > 1 and len(paths) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(lambda p: read_one(p, transform, limits), paths))
    else:
        results = [read_one(p, transform, limits) for p in paths]
    items: list[tuple[str, T]] = []
    failures: list[Failure] = []
    for path, (value, reason) in zip(paths, results):
        if reason is None:
            items.append((path, value))
        else:
            failures.append((path, reason))
    return items, failures
