"""Lucene's BM25 arithmetic, reproduced exactly so that our scores equal Pyserini's.

Two details matter beyond the textbook formula (Lucene >= 8, ``BM25Similarity``):

* document lengths are stored lossily in one byte (``SmallFloat.intToByte4``): lengths of 24 or
  more keep only their 4 most significant bits, and scoring uses the decoded length;
* the computation is in float32: ``score = w - w / (1 + tf * normInverse)`` with
  ``w = idf = log(1 + (N - df + 0.5) / (df + 0.5))`` and
  ``normInverse = 1 / (k1 * ((1 - b) + b * decodedLength / avgdl))``.

``N`` counts documents with at least one indexed term (Lucene's ``docCount``), and ``avgdl`` is the
exact ``sumTotalTermFreq / docCount``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

_NUM_FREE_VALUES = 24  # 255 - longToInt4(Integer.MAX_VALUE)


def _int4_to_long(value: np.ndarray) -> np.ndarray:
    bits = value & 0x07
    shift = (value >> 3) - 1
    return np.where(shift == -1, bits, (bits | 0x08) << np.maximum(shift, 0))


def _long_to_int4(value: np.ndarray) -> np.ndarray:
    value = value.astype(np.int64)
    num_bits = np.zeros_like(value)
    positive = value > 0
    num_bits[positive] = np.floor(np.log2(value[positive])).astype(np.int64) + 1
    shift = np.maximum(num_bits - 4, 0)
    encoded = ((value >> shift) & 0x07) | ((shift + 1) << 3)
    return np.where(num_bits < 4, value, encoded)


def encode_lengths(lengths: np.ndarray) -> np.ndarray:
    """``SmallFloat.intToByte4`` for an array of document lengths (returns values 0..255)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    lossy = _NUM_FREE_VALUES + _long_to_int4(np.maximum(lengths - _NUM_FREE_VALUES, 0))
    return np.where(lengths < _NUM_FREE_VALUES, lengths, lossy).astype(np.uint8)


def decode_lengths(norms: np.ndarray) -> np.ndarray:
    """``SmallFloat.byte4ToInt``."""
    norms = np.asarray(norms, dtype=np.int64)
    lossy = _NUM_FREE_VALUES + _int4_to_long(np.maximum(norms - _NUM_FREE_VALUES, 0))
    return np.where(norms < _NUM_FREE_VALUES, norms, lossy)


def idf(doc_freqs: np.ndarray, doc_count: int) -> np.ndarray:
    df = doc_freqs.astype(np.float64)
    return np.log1p((doc_count - df + 0.5) / (df + 0.5)).astype(np.float32)


def posting_scores(term_idf: np.ndarray, term_freqs: np.ndarray, doc_lengths: np.ndarray,
                   avg_doc_length: float, k1: float, b: float) -> np.ndarray:
    """BM25 contribution of each posting, given per-posting idf, tf and (exact) document length."""
    f32 = np.float32
    decoded = decode_lengths(encode_lengths(doc_lengths)).astype(f32)
    k1_, b_, avgdl = f32(k1), f32(b), f32(avg_doc_length)
    norm_inverse = f32(1.0) / (k1_ * ((f32(1.0) - b_) + b_ * decoded / avgdl))
    weight = term_idf.astype(f32)
    return weight - weight / (f32(1.0) + term_freqs.astype(f32) * norm_inverse)


def boosted_scores(num_rows: int, postings: Iterable[tuple[float, np.ndarray, np.ndarray]], doc_lengths: np.ndarray,
                   doc_count: int, avg_doc_length: float, k1: float, b: float) -> np.ndarray | None:
    """Scores of a weighted query (Lucene's ``BoostQuery`` of each term under a ``BooleanQuery``).

    ``postings`` gives (boost, rows, term frequencies) per term. As in Lucene the boost multiplies the
    idf in float32 before the term-frequency part; clause scores are summed in float64 and the total
    rounded to float32. Returns None when no term has postings.
    """
    total = np.zeros(num_rows, dtype=np.float64)
    matched = False
    for boost, rows, freqs in postings:
        if len(rows) == 0:
            continue
        matched = True
        weight = np.float32(boost) * idf(np.array([len(rows)]), doc_count)
        total[rows] += posting_scores(np.repeat(weight, len(rows)), freqs, doc_lengths[rows], avg_doc_length, k1, b)
    return total.astype(np.float32) if matched else None
