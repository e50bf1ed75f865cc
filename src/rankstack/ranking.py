"""Ranking helpers below both the index and the stages: a score per row to a ranked, tie-stable list of rows."""

from __future__ import annotations

import numpy as np


def rank_key(scores: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """One uint64 key per hit ordering (score descending, doc-id rank ascending).

    A float32's bits read as int32 order like the float for positives; flipping the low 31 bits of
    negatives fixes their order. That fills the high 32 bits, the doc-id rank the low ones: one
    argsort on this key replaces a slower two-key lexsort.
    """
    bits = scores.astype(np.float32, copy=False).view(np.int32)
    if bits.size and bits.min() < 0:
        bits = np.where(bits < 0, bits ^ np.int32(0x7FFFFFFF), bits)
    high = (np.int64(2**31 - 1) - bits.astype(np.int64)).view(np.uint64)
    return (high << np.uint64(32)) | ranks.astype(np.uint64, copy=False)


def top_rows(scores: np.ndarray, count: int, ranks: np.ndarray, minimum: float | None = None) -> np.ndarray:
    """Rows of the ``count`` best scores (ties at the boundary all kept), ordered best first.

    Taking every row tied with the weakest selected one makes the result independent of how a
    partial sort splits ties; the caller cuts to the length it needs.
    """
    threshold = -np.inf if minimum is None else minimum
    if count < len(scores):
        threshold = max(threshold, float(np.partition(scores, len(scores) - count)[len(scores) - count]))
    candidates = np.flatnonzero(scores >= threshold)
    order = np.argsort(rank_key(scores[candidates], ranks[candidates]))
    return candidates[order]
