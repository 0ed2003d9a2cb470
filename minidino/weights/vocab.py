"""dino.txt's vocabulary, handled like weights, and `tokenize` with it.

CLIP's byte-pair vocabulary (`bpe_simple_vocab_16e6.txt.gz`, 1.3 MB) is a file of the dino.txt
row of the catalogue (part "vocabulary"); the official tokenizer downloads it from
<base>/thirdparty/. Its pin (download.EXTRA_PINS) is the digest of the file CLIP ships
(openai/CLIP, also inside the clip-anytorch 2.6.0 wheel), with which the official tokenizer gives
the ids minidino's tests compare against.

Where it comes from, in order (`vocab_path`): the cache (MINIDINO_HOME), else a copy an installed
CLIP package ships (clip-anytorch, openai's clip, open_clip), used only if its SHA-256 is the pinned
one, else one download into the cache. Offline without a copy, the error says in one line how to
get one.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..catalogue import DINOTXT, lookup
from ..heads.tokenizer import Tokenizer
from . import download
from .download import Pin, pin

__all__ = ["vocab_pin", "find_vocab", "vocab_path", "get_tokenizer", "tokenize"]

# Installed packages that ship CLIP's vocabulary beside their code (located, never imported).
_SHIPPED_BY = ("clip", "open_clip")


def vocab_pin() -> Pin:
    """The vocabulary file under the official base URL, with its pinned size and SHA-256.

    Examples:
        >>> vocab_pin().path, vocab_pin().bytes
        ('thirdparty/bpe_simple_vocab_16e6.txt.gz', 1356917)
    """
    return pin(lookup(DINOTXT).default_weights.files["vocabulary"])


def find_vocab(cache_dir: str | os.PathLike | None = None) -> Path | None:
    """A copy of the vocabulary already on this machine (the cache, or an installed CLIP package's whose
    size and SHA-256 are the pinned ones), or None. Nothing is downloaded or imported.

    Examples:
        >>> found = find_vocab()                          # e.g. .../site-packages/clip/bpe_simple_vocab_16e6.txt.gz
        >>> found is None or found.name == "bpe_simple_vocab_16e6.txt.gz"
        True
    """
    p = vocab_pin()
    cached = download.default_cache_dir(cache_dir) / p.path
    if cached.is_file():
        return cached
    for package in _SHIPPED_BY:
        try:
            spec = importlib.util.find_spec(package)  # a top-level name: located, not imported
        except (ImportError, ValueError):
            continue
        for folder in (spec.submodule_search_locations or []) if spec else []:
            copy = Path(folder) / p.filename
            if copy.is_file() and copy.stat().st_size == p.bytes and download.sha256_file(copy) == p.sha256:
                return copy
    return None


def vocab_path(*, cache_dir: str | os.PathLike | None = None, base: str | None = None, progress: bool = True) -> Path:
    """The vocabulary file: a copy on this machine (`find_vocab`), else downloaded once into the cache and
    checked against its digest. Offline without a copy: a DownloadError saying how to get one.

    Examples:
        >>> vocab_path().name                             # found, or downloaded once  # doctest: +SKIP
        'bpe_simple_vocab_16e6.txt.gz'
    """
    found = find_vocab(cache_dir)
    if found is not None and not found.is_relative_to(download.default_cache_dir(cache_dir)):
        return found  # an installed package's copy, digest checked
    try:
        return download.fetch(vocab_pin(), cache_dir=cache_dir, base=base, progress=progress)  # (re)checks a cached copy
    except download.DownloadError as e:
        raise download.DownloadError(
            f"dino.txt needs CLIP's vocabulary {vocab_pin().filename} and none is on this machine; the download failed "
            f"({' '.join(str(e).split('. Without network')[0].split())}). Get it offline with `pip install --no-deps "
            "clip-anytorch` (it ships the file), or download it once, or pass --vocab FILE / vocab_file=") from None


@functools.lru_cache(maxsize=4)
def _tokenizer_for(path: str) -> Tokenizer:
    return Tokenizer(path)


def get_tokenizer(vocab_file: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None) -> Tokenizer:
    """The tokenizer over `vocab_file`, or over the cached official vocabulary (downloaded once if absent).

    One Tokenizer per file is kept (reading the vocabulary takes a moment).

    Examples:
        >>> tok = get_tokenizer()                         # the cached vocabulary  # doctest: +SKIP
        >>> tok is get_tokenizer(), tok.vocab_size        # doctest: +SKIP
        (True, 49408)
        >>> get_tokenizer("missing.txt.gz")
        Traceback (most recent call last):
        ...
        FileNotFoundError: vocabulary file missing.txt.gz does not exist
    """
    path = Path(vocab_file) if vocab_file is not None else vocab_path(cache_dir=cache_dir)
    if not path.exists():
        raise FileNotFoundError(f"vocabulary file {path} does not exist")
    return _tokenizer_for(str(path.resolve()))


def tokenize(texts: str | Sequence[str], context_length: int = 77, *, vocab_file: str | os.PathLike | None = None,
             cache_dir: str | os.PathLike | None = None) -> torch.Tensor:
    """Texts -> (B, context_length) int64 token ids for DinoTxt.encode_text (the official tokenizer's output).

    Examples:
        The vocabulary is downloaded once (or give vocab_file=), hence skipped here:

        >>> ids = tokenize(["a photo of a cat", "a dog"])    # doctest: +SKIP
        >>> tuple(ids.shape), ids[:, :8].tolist()            # (B, 77): <sot> ... <eot>, zeros  # doctest: +SKIP
        ((2, 77), [[49406, 320, 1125, 539, 320, 2368, 49407, 0], [49406, 320, 1929, 49407, 0, 0, 0, 0]])
        >>> tokenize("a dog", context_length=3).tolist()     # cut, still ending in <eot>  # doctest: +SKIP
        [[49406, 320, 49407]]
    """
    return get_tokenizer(vocab_file, cache_dir=cache_dir).tokenize(texts, context_length)
