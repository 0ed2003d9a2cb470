"""dino.txt's vocabulary, handled like weights, and `tokenize` with it.

CLIP's byte-pair vocabulary (`bpe_simple_vocab_16e6.txt.gz`, 1.3 MB) is a file of the dino.txt
row of the catalogue (part "vocabulary"); the official tokenizer downloads it from
<base>/thirdparty/. Its pin (weights/checkpoints.json) is the digest of the file CLIP ships
(openai/CLIP, also inside the clip-anytorch 2.6.0 wheel), with which the official tokenizer gives
the ids minidino's tests compare against.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..catalogue import DINOTXT, lookup
from ..heads.tokenizer import Tokenizer
from . import download
from .download import Pin, pin

__all__ = ["vocab_pin", "vocab_path", "get_tokenizer", "tokenize"]


def vocab_pin() -> Pin:
    """The vocabulary file under the official base URL, with its pinned size and SHA-256.

    Examples:
        >>> vocab_pin().path, vocab_pin().bytes
        ('thirdparty/bpe_simple_vocab_16e6.txt.gz', 1356917)
    """
    return pin(lookup(DINOTXT).default_weights.files["vocabulary"])


def vocab_path(*, cache_dir: str | os.PathLike | None = None, base: str | None = None, progress: bool = True) -> Path:
    """The cached vocabulary file, downloaded (once) and checked against its digest.

    Examples:
        >>> vocab_path().name                             # downloads it once  # doctest: +SKIP
        'bpe_simple_vocab_16e6.txt.gz'
    """
    return download.fetch(vocab_pin(), cache_dir=cache_dir, base=base, progress=progress)


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
