"""Downloads: the pins, the cache, SHA-256 verification and a progress bar.

Over 400 lines on purpose: one concern, getting a file safely. Pins, cache, timeouts, retries,
checksums and sidecars are each a few lines, and a reviewer checks the guarantees below best
with all of them on one page.

The official DINOv2 files live at https://dl.fbaipublicfiles.com/dinov2 (SPEC.md section 6).
Meta publishes no checksums; the sizes and SHA-256 digests in `checkpoints.json` (next to
this module, keyed by the paths minidino/catalogue.py names) are third-party pins (see docs/weights.md for where each comes from).

Guarantees:
* A download goes to a temporary file in the cache folder and is renamed into place only
  after its size and SHA-256 match the pin, so an interrupted or corrupt download never
  leaves a file that a later run would trust.
* A file already in the cache is used without any request. A file that was downloaded and
  verified here carries a `.sha256` sidecar; a file put there by hand is hashed once on first
  use and checked against the pin.
* Only the URL asked for is contacted. `MINIDINO_BASE_URL` replaces the base URL (a mirror,
  an air-gapped server), `MINIDINO_HOME` the cache folder.
* A stalled server fails in seconds, not minutes: connecting gives up after
  `MINIDINO_CONNECT_TIMEOUT` seconds (default 10), and a connection on which nothing arrives
  for `MINIDINO_READ_TIMEOUT` seconds (default 30) is closed (`download(connect_timeout=,
  read_timeout=)` set them per call). A timeout is not retried; a connection reset is.
* Nothing enters the cache unless it is a complete tensor checkpoint: a file without a pinned
  SHA-256 is read as a checkpoint (minidino.weights.read_checkpoint) before it is renamed into
  place, so an HTML page served with status 200, or a body cut short without Content-Length,
  is refused and not kept. A cached file of an unpinned URL is checked against its `.sha256`
  sidecar on every use; a mismatch names the file to delete.
* A file whose name carries the start of its SHA-256 (`...-08c60483.pth`, torch.hub's naming, the
  DINOv3 files') is checked against it: downloaded, cached or local (`verify_file`), one rule
  (`name_hash`); `check_hash=False` skips it.
* Files are written with the usual permissions (0666 minus the umask).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..catalogue import FAMILIES, file_hash
from ..utils.atomic import WriteError, atomic_write, create_exclusive
from ..utils.progress import ProgressBar
from .read import read_checkpoint

__all__ = [
    "Pin", "DownloadError", "ChecksumError", "default_cache_dir", "base_url", "load_pins", "pin", "pin_for",
    "download", "fetch", "fetch_url", "sha256_file", "ProgressBar", "name_hash", "verify_file", "content_url",
    "DownloadTimeout", "BadDownload", "timeouts",
]

CHUNK = 1 << 20  # 1 MiB per read
CONNECT_TIMEOUT = 10.0  # seconds to establish a connection ($MINIDINO_CONNECT_TIMEOUT)
READ_TIMEOUT = 30.0  # seconds without a byte from the server ($MINIDINO_READ_TIMEOUT)


def timeouts(connect: float | None = None, read: float | None = None) -> tuple[float, float]:
    """(connect, read) timeouts in seconds: the arguments, else the environment, else 10 and 30.

    Examples:
        >>> timeouts(connect=5, read=20)
        (5.0, 20.0)
    """
    out = []
    for value, env, default in ((connect, "MINIDINO_CONNECT_TIMEOUT", CONNECT_TIMEOUT),
                                (read, "MINIDINO_READ_TIMEOUT", READ_TIMEOUT)):
        if value is None:
            text = os.environ.get(env, "").strip()
            try:
                value = float(text) if text else default
            except ValueError:
                raise ValueError(f"${env}={text!r} is not a number of seconds") from None
        if not value > 0:
            raise ValueError(f"{env.split('_', 1)[1].lower().replace('_', ' ')} must be > 0 seconds, got {value}")
        out.append(float(value))
    return out[0], out[1]


def _opener(connect: float, read: float) -> urllib.request.OpenerDirector:
    """urllib with a connect timeout and a separate read timeout (urllib itself has one for both)."""
    import http.client

    def connection(base: type) -> type:
        class Connection(base):  # type: ignore[misc, valid-type]
            def connect(self) -> None:
                self.timeout = connect
                super().connect()
                self.sock.settimeout(read)  # from now on: seconds without data
        return Connection

    http_conn, https_conn = connection(http.client.HTTPConnection), connection(http.client.HTTPSConnection)

    class HTTP(urllib.request.HTTPHandler):
        def http_open(self, req: Any) -> Any:
            return self.do_open(http_conn, req)

    class HTTPS(urllib.request.HTTPSHandler):
        def https_open(self, req: Any) -> Any:
            return self.do_open(https_conn, req, context=self._context, check_hostname=getattr(self, "_check_hostname", None))

    return urllib.request.build_opener(HTTP, HTTPS)


class DownloadError(ConnectionError):
    """A file could not be downloaded (no network, HTTP error, connection closed early).

    Examples:
        >>> try:
        ...     fetch_url("http://127.0.0.1:9/missing.pth", progress=False, retries=0)
        ... except DownloadError as e:
        ...     print(type(e).__name__)
        DownloadError
    """


class DownloadTimeout(DownloadError):
    """The server did not connect or stopped sending within the timeout (not retried).

    Examples:
        >>> issubclass(DownloadTimeout, DownloadError)
        True
    """


class BadDownload(DownloadError):
    """The server sent something that is not a checkpoint (an HTML page, a cut-short body); not cached.

    Examples:
        >>> issubclass(BadDownload, DownloadError)
        True
    """


class ChecksumError(ValueError):
    """A file's size or SHA-256 is not the pinned one.

    Examples:
        >>> import pathlib
        >>> _ = pathlib.Path("f.bin").write_bytes(b"abc")
        >>> try:
        ...     download(pathlib.Path("f.bin").resolve().as_uri(), "copy.bin", size=4, progress=False)
        ... except ChecksumError as e:
        ...     print("refused")
        refused
    """


@dataclass(frozen=True)
class Pin:
    """A file of the catalogue: its path under the base URL, and what is known of its contents.

    Examples:
        >>> p = pin("dinov2_vits14/dinov2_vits14_pretrain.pth")
        >>> p.path, p.bytes
        ('dinov2_vits14/dinov2_vits14_pretrain.pth', 88283115)
    """

    path: str  # e.g. "dinov2_vits14/dinov2_vits14_pretrain.pth"
    bytes: int | None = None  # None: size not pinned
    sha256: str | None = None  # None: digest not pinned

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str | None:
        """The start of the SHA-256 the file name carries (`...-08c60483.pth`), else None."""
        return file_hash(self.filename)


# ---------------------------------------------------------------------------- pins
def load_pins() -> dict[str, Any]:
    """The vendored pins (weights/checkpoints.json: third-party digests, the file shared/ gives, verbatim).

    Examples:
        >>> load_pins()["backbones"]["dinov2_vits14"]["sha256"][:16]
        'b938bf1bc15cd2ec'
    """
    return json.loads(resources.files(__package__).joinpath("checkpoints.json").read_text())


# Pins that checkpoints.json does not hold. CLIP's vocabulary (dino.txt's tokenizer; the official one
# downloads it from <base>/thirdparty/): the size and digest of the file CLIP ships (openai/CLIP, also in
# the clip-anytorch 2.6.0 wheel), with which the official tokenizer gives the ids the tests compare against.
EXTRA_PINS = {
    "thirdparty/bpe_simple_vocab_16e6.txt.gz": {
        "bytes": 1356917, "sha256": "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"},
}


def _pins_by_path() -> dict[str, dict[str, Any]]:
    """Every pinned file, keyed by its path under the base URL."""
    out = dict(EXTRA_PINS)
    for group in load_pins().values():
        if isinstance(group, dict):
            out.update({e["path"]: e for k, e in group.items() if not k.startswith("_") and isinstance(e, dict) and "path" in e})
    return out


def base_url(override: str | None = None, family: str = "dinov2") -> str:
    """The base URL: the argument, else $MINIDINO_BASE_URL, else the family's official one.

    Examples:
        >>> base_url()            # unless $MINIDINO_BASE_URL is set
        'https://dl.fbaipublicfiles.com/dinov2'
    """
    url = override or os.environ.get("MINIDINO_BASE_URL") or FAMILIES[family].base_url
    if url is None:
        raise DownloadError(f"the {family} weights have no public URL: {FAMILIES[family].access}")
    return url.rstrip("/")


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where checkpoints are kept: the argument, else $MINIDINO_HOME, else <user cache>/minidino.

    Examples:
        >>> default_cache_dir("/data/ckpt")
        PosixPath('/data/ckpt')
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("MINIDINO_HOME"):
        return Path(os.environ["MINIDINO_HOME"]).expanduser()
    root = os.environ.get("XDG_CACHE_HOME") or (
        os.environ.get("LOCALAPPDATA") if sys.platform == "win32" else None) or Path.home() / ".cache"
    return Path(root).expanduser() / "minidino"


def pin(path: str) -> Pin:
    """The file at `path` under the base URL, with its size and SHA-256 where they are pinned.

    Examples:
        >>> pin("dinov2_vits14/dinov2_vits14_pretrain.pth").bytes
        88283115
        >>> pin("dinov2_vitl14/dinov2_vitl14_nyu_linear_head.pth").sha256 is None     # none published: unverified
        True
    """
    entry = _pins_by_path().get(path, {})
    return Pin(path=path, bytes=entry.get("bytes"), sha256=entry.get("sha256"))


def pin_for(filename: str) -> Pin | None:
    """The pin whose file name is `filename` (so a URL to an official file is still verified).

    Examples:
        >>> pin_for("dinov2_vitb14_pretrain.pth").bytes
        346378731
    """
    for path in _pins_by_path():
        if path.rsplit("/", 1)[-1] == filename:
            return pin(path)
    return None


# ---------------------------------------------------------------------------- download
def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file as 64 hex digits, read in chunks (files of several GB are fine).

    Examples:
        >>> import pathlib
        >>> _ = pathlib.Path("empty.bin").write_bytes(b"")
        >>> sha256_file("empty.bin")[:16]
        'e3b0c44298fc1c14'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _check(what: str, size: int, digest: str, want_size: int | None, want_sha: str | None,
           want_prefix: str | None = None) -> None:
    """Raise ChecksumError, naming the expected and actual size and SHA-256, unless both match their pins
    and the digest starts with `want_prefix` (the 8 hex digits a file name carries, `...-08c60483.pth`)."""
    bad_size = want_size is not None and size != want_size
    bad_sha = want_sha is not None and digest != want_sha.lower()
    if bad_size or bad_sha:
        sizes = f"size {size} bytes, expected {want_size} (pinned); " if bad_size else ""
        shas = f"SHA-256 mismatch: expected {want_sha.lower()} (pinned), got {digest}" if want_sha else f"SHA-256 {digest}"
        raise ChecksumError(f"{what}: {sizes}{shas}. The file is incomplete or not the official one")
    if want_prefix is not None and not digest.startswith(want_prefix.lower()):
        raise ChecksumError(
            f"{what}: SHA-256 mismatch: its name says the digest starts with {want_prefix.lower()}, but it is {digest}. "
            "The file is incomplete or not the one its name says: download it again (check_hash=False skips this "
            "check, for a name whose last 8 hex digits are not a digest)")


def name_hash(name: str, check_hash: bool = True) -> str | None:
    """The SHA-256 prefix a file name (or URL) carries, which the file must match; None when it carries
    none or check_hash is False. The one rule for downloads, cached files and local files alike.

    Examples:
        >>> name_hash("https://host/dinov3_vits16_pretrain_lvd1689m-08c60483.pth?Policy=x"), name_hash("a.pth")
        ('08c60483', None)
    """
    return file_hash(urllib.parse.urlsplit(name).path if "://" in name else name) if check_hash else None


def content_url(url: str) -> str:
    """A URL to record (in an output file, a log): without the query string when its file name carries a
    digest (`-08c60483.pth`): the name says which file it is, and a signed URL's query is a credential
    that expires. Other URLs and paths are returned unchanged.

    Examples:
        >>> content_url("https://h/dinov3_vits16_pretrain_lvd1689m-08c60483.pth?Policy=abc&Signature=xyz")
        'https://h/dinov3_vits16_pretrain_lvd1689m-08c60483.pth'
    """
    if "://" not in url or file_hash(urllib.parse.urlsplit(url).path) is None:
        return url
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(query="", fragment=""))


def verify_file(path: str | os.PathLike, *, check_hash: bool = True) -> None:
    """A local checkpoint whose name ends in `-<8 hex>.pth`: its SHA-256 must start with those digits
    (ChecksumError naming both otherwise). Files whose names carry no digest pass unread.

    Examples:
        >>> import pathlib
        >>> _ = pathlib.Path("w-00000000.pth").write_bytes(b"abc")
        >>> try:
        ...     verify_file("w-00000000.pth")
        ... except ChecksumError as e:
        ...     print("refused")
        refused
    """
    prefix = name_hash(Path(path).name, check_hash)
    if prefix is not None and Path(path).is_file():
        _check(str(path), Path(path).stat().st_size, sha256_file(path), None, None, prefix)


def download(
    url: str, dest: str | os.PathLike, *, size: int | None = None, sha256: str | None = None, progress: bool = True,
    timeout: float | None = None, retries: int = 2, connect_timeout: float | None = None,
    read_timeout: float | None = None, validate: Any = "checkpoint", sha256_prefix: str | None = None,
) -> Path:
    """Download `url` to `dest` atomically, verifying `size` and `sha256` (or its first digits,
    `sha256_prefix`) when given.

    The bytes go to a temporary file beside `dest`, renamed onto `dest` only once complete and
    verified; on any failure the temporary file is removed, so nothing half-written remains.
    Without a pinned sha256, the file must read as a tensor checkpoint (`validate`: a callable
    that raises on a bad file, "checkpoint" for minidino.weights.read_checkpoint, None to skip).
    Timeouts in seconds (see `timeouts`): `connect_timeout` to connect, `read_timeout` without
    data; `timeout` sets both. A connection that fails or closes early is retried `retries`
    times (1 s, 2 s pauses); a timeout, a checksum mismatch or a file that is not a checkpoint
    is not (the server is stalled or holds the wrong file). Returns `dest`.

    Examples:
        >>> import pathlib
        >>> _ = pathlib.Path("src.bin").write_bytes(b"weights")
        >>> download(pathlib.Path("src.bin").resolve().as_uri(), "dst.bin", size=7, progress=False,
        ...          validate=None).read_bytes()  # not a checkpoint: skip that check
        b'weights'
    """
    connect, read = timeouts(connect_timeout if connect_timeout is not None else timeout,
                             read_timeout if read_timeout is not None else timeout)
    if validate == "checkpoint":
        validate = _read_as_checkpoint if sha256 is None else None
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            return _download_once(url, dest, size, sha256, progress, connect, read, validate, sha256_prefix)
        except (DownloadTimeout, BadDownload):
            raise
        except DownloadError:
            if attempt == retries:
                raise
            time.sleep(1.0 * (attempt + 1))
    raise AssertionError("unreachable")


def _read_as_checkpoint(path: Path) -> None:
    read_checkpoint(path)


def _download_once(url: str, dest: Path, size: int | None, sha256: str | None, progress: bool, connect: float,
                   read: float, validate: Any, prefix: str | None = None) -> Path:
    import socket

    fd, tmp = create_exclusive(dest.parent, f".{dest.name}.", ".part")  # a new file, no link followed, usual mode
    try:
        h, got = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out:
            try:
                request = urllib.request.Request(url, headers={"User-Agent": "minidino"})
                with _opener(connect, read).open(request) as resp:
                    length = resp.headers.get("Content-Length")
                    total = int(length) if length is not None and length.isdigit() else size
                    bar = ProgressBar(dest.name, total, unit="bytes", enabled=progress)
                    while chunk := resp.read(CHUNK):
                        try:
                            out.write(chunk)
                        except OSError as e:  # the cache's disk, not the network: not retried
                            raise WriteError(dest, e.strerror or str(e), e.errno) from None
                        h.update(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
                    bar.close()
            except WriteError:
                raise
            except urllib.error.HTTPError as e:
                raise DownloadError(f"{_shown(url)}: HTTP {e.code} {e.reason}{_by_hand(url, dest)}") from e
            except (urllib.error.URLError, OSError, ValueError) as e:  # no network, refused, reset, IncompleteRead
                reason = getattr(e, "reason", e)
                if isinstance(reason, (socket.timeout, TimeoutError)) or isinstance(e, (socket.timeout, TimeoutError)):
                    raise DownloadTimeout(
                        f"could not download {_shown(url)}: the server did not answer within the timeout (connect {connect:g} s, "
                        f"read {read:g} s; set MINIDINO_CONNECT_TIMEOUT / MINIDINO_READ_TIMEOUT to wait longer)"
                        f"{_by_hand(url, dest)}") from e
                raise DownloadError(f"could not download {_shown(url)}: {reason}{_by_hand(url, dest)}") from e
            if length is not None and length.isdigit() and got != int(length):
                raise DownloadError(f"{_shown(url)}: connection closed after {got} of {length} bytes{_by_hand(url, dest)}")
        _check(f"downloaded {_shown(url)}", got, h.hexdigest(), size, sha256, prefix)
        if validate is not None:
            try:
                validate(tmp)
            except ValueError as e:  # CheckpointError
                detail = " ".join(str(e).replace(str(tmp), "the downloaded file").split())
                raise BadDownload(f"{_shown(url)} did not give a complete checkpoint ({detail}); nothing was cached") from None
        _write_sidecar(dest, h.hexdigest(), got)  # before the rename: a cached file always has its sidecar
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def _by_hand(url: str, dest: Path) -> str:
    return (f". Without network, download {_shown(url)} elsewhere and put it at {dest} (or set MINIDINO_HOME to the folder "
            f"that holds it, or MINIDINO_BASE_URL to a mirror).")


def _shown(url: str) -> str:
    """A URL for messages: without its query string, which in a signed URL (DINOv3's) is a credential."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(query="<query hidden>" if parts.query else "", fragment=""))


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_sidecar(path: Path, digest: str, size: int | None = None) -> None:
    size = path.stat().st_size if size is None else size
    atomic_write(_sidecar(path), lambda tmp: tmp.write_text(f"{digest}  {size}\n"))


def _read_sidecar(side: Path) -> list[str]:
    """The words of a sidecar (`DIGEST  SIZE`), read safely; one that cannot be read says nothing."""
    from ..utils.files import UnreadableFile, read_limited

    try:
        return read_limited(side, 4096).decode("ascii", "replace").split()
    except UnreadableFile:
        return []


def _check_sidecar(path: Path) -> None:
    """A cached file without a pinned digest: hashed and compared with the sidecar written at download."""
    side = _sidecar(path)
    if not side.is_file():
        _write_sidecar(path, sha256_file(path))  # put there by hand: trusted from now on
        return
    parts = _read_sidecar(side)
    digest = sha256_file(path)
    if len(parts) != 2 or parts[0] != digest or parts[1] != str(path.stat().st_size):
        raise ChecksumError(f"{path}: the cached file changed since it was downloaded (SHA-256 {digest}, its sidecar "
                            f"{side} says {parts[0] if parts else 'nothing'}); delete {path} to download it again")


def _verified_digest(path: Path) -> str:
    """The file's SHA-256: from its sidecar when the sidecar matches the file's size, else hashed now."""
    side = _sidecar(path)
    if side.is_file():
        parts = _read_sidecar(side)
        if len(parts) == 2 and parts[1] == str(path.stat().st_size):
            return parts[0]
    digest = sha256_file(path)
    _write_sidecar(path, digest)
    return digest


def fetch(pin: Pin, *, cache_dir: str | os.PathLike | None = None, base: str | None = None, progress: bool = True,
          retries: int = 2, check_hash: bool = True) -> Path:
    """The cached file of `pin`, downloading it from `base` (see `base_url`) if absent.

    Examples:
        >>> path = fetch(pin("dinov2_vits14/dinov2_vits14_pretrain.pth"))     # doctest: +SKIP
        >>> path.stat().st_size                              # doctest: +SKIP
        88283115

        (Needs the network once; later calls find the file in the cache.)
    """
    dest = default_cache_dir(cache_dir) / pin.path
    prefix = name_hash(pin.filename, check_hash)
    if dest.is_file():
        size = dest.stat().st_size
        if pin.sha256 is not None or prefix is not None or (pin.bytes is not None and size != pin.bytes):
            _check(f"{dest} (delete it to download it again)", size, _verified_digest(dest), pin.bytes, pin.sha256, prefix)
        else:
            _check_sidecar(dest)
        return dest
    url = f"{base_url(base)}/{pin.path}"
    if pin.sha256 is None and prefix is None:
        known = "its size" if pin.bytes is not None else "nothing"
        print(f"note: {pin.filename} has no pinned SHA-256; only {known} can be verified", file=sys.stderr)
    return download(url, dest, size=pin.bytes, sha256=pin.sha256, progress=progress, retries=retries, sha256_prefix=prefix)


def fetch_url(url: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True, retries: int = 2,
              check_hash: bool = True) -> Path:
    """Download any http(s) URL into the cache (once). A file name of the catalogue is verified against its pin;
    one ending in `-<8 hex>.pth` against those digits. Such a name is content-addressed, so its cache
    entry ignores the URL's query string: a new signed URL of the same file (DINOv3's expire) finds it.

    Examples:
        >>> path = fetch_url("https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth")  # doctest: +SKIP
        >>> path.name                                                                                     # doctest: +SKIP
        'dinov2_vits14_pretrain.pth'
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme in {url!r}: use http(s):// or a local file path")
    filename = parts.path.rsplit("/", 1)[-1] or "checkpoint"
    pin = pin_for(filename)
    prefix = name_hash(filename, check_hash)
    # One folder per URL (same names from different hosts never clash); without the query for a name with a digest.
    keyed = content_url(url)
    key = hashlib.sha256(keyed.encode()).hexdigest()[:16]
    dest = default_cache_dir(cache_dir) / "urls" / key / filename
    if dest.is_file():
        if (pin is not None and pin.sha256 is not None) or prefix is not None:
            _check(f"{dest} (delete it to download it again)", dest.stat().st_size, _verified_digest(dest),
                   pin.bytes if pin else None, pin.sha256 if pin else None, prefix)
        else:
            _check_sidecar(dest)
        return dest
    return download(url, dest, size=pin.bytes if pin else None, sha256=pin.sha256 if pin else None,
                    progress=progress, retries=retries, sha256_prefix=prefix)
