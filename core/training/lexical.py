"""Lexical features of the shared preprocessing: evasion-normalised text to hashed word and character n-grams.

The model's lexical branch (`core.training.model.LexicalBranch`) weighs these like TF-IDF does, which
recovers the signals n-gram baselines catch (URLs, sender patterns, slurs, obfuscated words) that a frozen,
truncated sentence encoder averages away. Pure Python and numpy: the Triton python backend imports it.

Hashing is CRC-32 of the UTF-8 n-gram (stable across processes and machines, unlike `hash()`); bucket 0 is
padding, so ids are in [1, buckets).
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Iterable

import numpy as np

# Characters that render as nothing and are used to split words past filters.
ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e"))
# Latin look-alikes from Cyrillic and Greek, as used to dodge word filters (after NFKC and casefolding).
HOMOGLYPHS = str.maketrans(
    {
        "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
        "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ɡ": "g", "α": "a", "ε": "e", "ι": "i",
        "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    }
)  # fmt: skip
# Leetspeak, applied only inside words that also hold letters (so that numbers stay numbers).
LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"}
)
_WORD = re.compile(r"[\w@$!]+")
_HAS_LETTER = re.compile(r"[^\W\d_]")
_REPEATS = re.compile(r"([^\W\d_])\1{2,}")


def normalize_text(text: str) -> str:
    """The evasion-normalised form of a text: NFKC, case-folded, zero-width characters removed, Cyrillic and
    Greek look-alikes mapped to Latin, leetspeak undone inside words, runs of 3+ equal letters cut to 2."""
    text = unicodedata.normalize("NFKC", text).translate(ZERO_WIDTH).casefold().translate(HOMOGLYPHS)
    text = _WORD.sub(
        lambda m: m.group(0).translate(LEET) if _HAS_LETTER.search(m.group(0)) else m.group(0), text
    )
    return _REPEATS.sub(r"\1\1", text)


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"\w+", text) if w]


def ngrams(
    text: str, word_orders: tuple[int, int], char_orders: tuple[int, int], max_chars: int, normalize: bool
) -> Iterable[str]:
    """Word n-grams and character n-grams inside word boundaries (like scikit-learn's `char_wb`) of the
    (normalised) text, each prefixed by its kind so the two never share a hash."""
    text = text[:max_chars]
    words = _words(normalize_text(text) if normalize else text)
    low, high = word_orders
    for n in range(low, high + 1):
        for i in range(len(words) - n + 1):
            yield "w " + " ".join(words[i : i + n])
    low, high = char_orders
    for word in words:
        padded = f" {word} "
        for n in range(low, high + 1):
            for i in range(len(padded) - n + 1):
                yield "c" + padded[i : i + n]


def ngram_ids(
    text: str | None,
    buckets: int,
    max_ngrams: int,
    word_orders: tuple[int, int] = (1, 2),
    char_orders: tuple[int, int] = (3, 5),
    max_chars: int = 20_000,
    normalize: bool = True,
) -> np.ndarray:
    """Distinct hashed n-gram ids of a text in order of first appearance (at most `max_ngrams`), int64 in
    [1, buckets); empty for no text. `normalize=False` when the text is already `normalize_text`ed."""
    if not text:
        return np.zeros(0, dtype=np.int64)
    seen: dict[int, None] = {}
    for gram in ngrams(text, word_orders, char_orders, max_chars, normalize):
        seen.setdefault(1 + zlib.crc32(gram.encode("utf-8")) % (buckets - 1))
        if len(seen) >= max_ngrams:
            break
    return np.fromiter(seen, dtype=np.int64, count=len(seen))


def document_frequency(ids: np.ndarray, buckets: int) -> tuple[int, np.ndarray]:
    """(documents with an n-gram, documents per bucket as float64 of shape (buckets,)) from padded id rows
    (N, K) with 0 as padding: sums over parts of a corpus add up to the corpus's."""
    documents = int((ids > 0).any(axis=1).sum()) if ids.size else 0
    return documents, np.bincount(ids[ids > 0].ravel(), minlength=buckets).astype(np.float64)


def idf_from_frequency(documents: int, frequency: np.ndarray) -> np.ndarray:
    """Smoothed IDF per bucket: log((1 + n) / (1 + df)) + 1, as scikit-learn's `TfidfVectorizer`; float32, 0 for
    the padding bucket."""
    idf = np.log((1.0 + documents) / (1.0 + frequency)) + 1.0
    idf[0] = 0.0
    return idf.astype(np.float32)


def inverse_document_frequency(ids: np.ndarray, buckets: int) -> np.ndarray:
    """Smoothed IDF per bucket of padded id rows (N, K) (see `idf_from_frequency`)."""
    return idf_from_frequency(*document_frequency(ids, buckets))
