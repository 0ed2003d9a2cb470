"""CLIP's byte-pair tokenizer, as dino.txt uses it: texts -> (B, 77) token ids.

    ids = minidino.tokenize(["a photo of a cat", "a dog"])     # (2, 77) int64

The steps, for each text:
1. clean: ftfy.fix_text (mojibake, curly quotes, full-width letters, NFC), HTML entities
   unescaped twice, whitespace runs collapsed to one space, stripped, lower-cased;
2. split into words, numbers (one digit each) and runs of punctuation (a regular expression
   with Unicode classes: the `regex` package);
3. each piece as UTF-8 bytes, each byte as one printable character, then merged by the
   byte-pair rules of the vocabulary file (the last symbol of a word carries "</w>");
4. ids framed by <start of text> (49406) and <end of text> (49407), zero-padded to the context
   length. A text longer than that is cut and its last id replaced by <end of text>, so the
   text encoder's end-of-text pooling still finds it.

The vocabulary is CLIP's `bpe_simple_vocab_16e6.txt.gz` (1.3 MB), handled like weights:
downloaded once into the cache (see minidino.weights.download) from the official dinov2 URL and checked
against its SHA-256. `ftfy` and `regex` are the optional extra `minidino[text]`.
"""

from __future__ import annotations

import functools
import html
import os
import re
from collections.abc import Sequence
from typing import Any

import torch


__all__ = ["Tokenizer", "bytes_to_unicode", "read_vocabulary", "SOT", "EOT", "VOCAB_SIZE"]
NUM_MERGES = 49152 - 256 - 2  # merges used from the file: 48894 (the vocabulary is 49408 in all)
VOCAB_SIZE = 2 * 256 + NUM_MERGES + 2  # byte symbols, the same ending a word, the merges, <sot> and <eot>
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _optional(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        raise ImportError(f"the dino.txt tokenizer needs the `{name}` package, as the official one does: "
                          "pip install 'minidino[text]' (or: pip install ftfy regex)") from None


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Each of the 256 bytes as a printable character: printable Latin-1 bytes stand for
    themselves, the others (controls, space...) are moved to chr(256 + n), in byte order.

    The order of the entries matters: the printable bytes come first, then the moved ones,
    and the vocabulary's first 256 ids follow this order ("a" is id 320 = 256 + 64, not 97).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    moved = [b for b in range(256) if b not in chars]
    chars.update({b: chr(256 + n) for n, b in enumerate(moved)})
    return chars


VOCAB_LIMIT = 16 * 2**20  # CLIP's file: 1.36 MB gzipped, 1.6 MB of text; anything far larger is not it


def read_vocabulary(vocab_file: str | os.PathLike) -> str:
    """The text of a gzipped vocabulary file, read safely: a regular file of at most VOCAB_LIMIT bytes,
    decompressed to at most VOCAB_LIMIT bytes (a gzip bomb stops there), UTF-8; else ValueError naming it.

    Examples:
        >>> import gzip
        >>> _ = open("v.txt.gz", "wb").write(gzip.compress(b"#version: 0.2\\na b\\n"))
        >>> read_vocabulary("v.txt.gz").splitlines()
        ['#version: 0.2', 'a b']
        >>> _ = open("plain.txt.gz", "wb").write(b"not gzip")
        >>> read_vocabulary("plain.txt.gz")
        Traceback (most recent call last):
        ...
        ValueError: vocabulary file plain.txt.gz is not a gzipped text file (...): give CLIP's bpe_simple_vocab_16e6.txt.gz
    """
    import zlib

    from ..utils.files import UnreadableFile, read_limited

    try:
        data = read_limited(vocab_file, VOCAB_LIMIT, noun="a vocabulary file")
    except UnreadableFile as e:
        raise ValueError(f"vocabulary file {e}") from None
    try:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # gzip framing
        text = d.decompress(data, VOCAB_LIMIT)
        if d.unconsumed_tail:
            raise ValueError(f"vocabulary file {vocab_file} decompresses to more than {VOCAB_LIMIT >> 20} MiB: "
                             "it is not CLIP's byte-pair vocabulary (bpe_simple_vocab_16e6.txt.gz)")
        if not d.eof:
            raise ValueError(f"vocabulary file {vocab_file} is a truncated gzip file: download it again")
        return text.decode("utf-8")
    except (zlib.error, UnicodeDecodeError) as e:
        raise ValueError(f"vocabulary file {vocab_file} is not a gzipped text file ({e}): give CLIP's "
                         "bpe_simple_vocab_16e6.txt.gz") from None


class Tokenizer:
    """CLIP's byte-pair tokenizer over a vocabulary file (the official `get_tokenizer()` equivalent).

    Examples:
        The vocabulary is CLIP's file (minidino.weights.vocab.vocab_path(), or a local copy), hence skipped here:

        >>> tok = Tokenizer("bpe_simple_vocab_16e6.txt.gz")                  # doctest: +SKIP
        >>> tok.vocab_size, tok.bpe("dog"), tok.encode("a dog"), tok.decode([320, 1929])   # doctest: +SKIP
        (49408, 'dog</w>', [320, 1929], 'a dog ')
        >>> tok.tokenize(["a dog"], context_length=8).tolist()              # (B, L)  # doctest: +SKIP
        [[49406, 320, 1929, 49407, 0, 0, 0, 0]]

        The first 512 ids are the 256 byte symbols, then the same with "</w>" (end of word):

        >>> list(bytes_to_unicode()).index(ord("a")) + 256                   # the id of "a</w>"
        320
    """

    def __init__(self, vocab_file: str | os.PathLike) -> None:
        lines = read_vocabulary(vocab_file).split("\n")
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]  # line 0 is a version header
        if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"{vocab_file} is not CLIP's byte-pair vocabulary (expected {NUM_MERGES} merges of two symbols)")
        symbols = list(bytes_to_unicode().values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder = {token: i for i, token in enumerate(vocab)}  # 49408 entries
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}  # lower rank: merged first
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        self.sot_id, self.eot_id = self.encoder[SOT], self.encoder[EOT]
        self.cache = {SOT: SOT, EOT: EOT}
        self.pattern = _optional("regex").compile(_PATTERN, _optional("regex").IGNORECASE)
        self._ftfy = _optional("ftfy")

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def bpe(self, token: str) -> str:
        """Merge the characters of one word by rank, until no known pair is left; symbols joined by spaces."""
        if token in self.cache:
            return self.cache[token]
        word = [*token[:-1], token[-1] + "</w>"]  # the end of a word is part of its last symbol
        while len(word) > 1:
            pairs = {(a, b) for a, b in zip(word, word[1:])}
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):  # merge every occurrence of the best pair, left to right
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self.cache[token] = " ".join(word)
        return self.cache[token]

    def clean(self, text: str) -> str:
        text = self._ftfy.fix_text(text)
        text = html.unescape(html.unescape(text)).strip()  # twice: "&amp;amp;" is common in scraped captions
        return re.sub(r"\s+", " ", text).strip().lower()

    def encode(self, text: str) -> list[int]:
        """Byte-pair ids of one text, without <start of text> / <end of text>."""
        ids: list[int] = []
        for piece in self.pattern.findall(self.clean(text)):
            chars = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(chars).split(" "))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text = "".join(self.decoder[int(i)] for i in ids)
        return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")

    def tokenize(self, texts: str | Sequence[str], context_length: int = 77) -> torch.Tensor:
        """(B, context_length) int64 ids: [<sot>, ..., <eot>, 0, 0, ...]; over-long texts are cut, ending in <eot>."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or isinstance(texts, (bytes, bytearray)):
            raise TypeError(f"texts must be a string or a list of strings, got {type(texts).__name__}")
        if len(texts) == 0:
            raise ValueError("texts is empty: give at least one string")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] is a {type(t).__name__}, not a string")
        if not isinstance(context_length, int) or isinstance(context_length, bool) or context_length < 2:
            raise ValueError(f"context_length must be an integer >= 2 (room for <sot> and <eot>), got {context_length!r}")
        out = torch.zeros(len(texts), context_length, dtype=torch.long)  # (B, L), 0 = padding
        for i, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.eot_id  # keep the <end of text> the pooling looks for
            out[i, : len(ids)] = torch.tensor(ids)
        return out
