"""The boundary between stages and the index: what a stage may ask of an index snapshot.

A stage takes ``view = index.view()`` once per batch and reads everything from it, so a concurrent
writer cannot change the documents between two of its reads. Both snapshot kinds implement it: a
:class:`rankstack.index.segment.Segment` (no live changes) and a
:class:`rankstack.index.live_view.LiveView` (a segment plus the changes logged since).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rankstack.types import Doc

if TYPE_CHECKING:
    from rankstack.index.dense import DenseVectors


class IndexView(Protocol):
    """Documents, BM25 scores and dense search over one consistent state of an index."""

    @property
    def num_docs(self) -> int: ...

    @property
    def doc_id_array(self) -> np.ndarray:
        """Doc id of every row (rows of deleted documents included)."""

    @property
    def doc_id_ranks(self) -> np.ndarray:
        """Rank of each row's doc id in sorted order: the tie-breaker of every ranking."""

    @property
    def doc_positions(self) -> dict[str, int]:
        """Doc id -> row, for live documents only."""

    def bm25_scores(self, terms: list[str], k1: float, b: float) -> np.ndarray | None:
        """BM25 score of every row for the analyzed query ``terms``; None when no term is indexed."""

    def weighted_bm25_scores(self, weights: Mapping[str, float], k1: float, b: float) -> np.ndarray | None:
        """BM25 score of every row for analysed terms with query weights (Lucene boosts); None when no
        term is indexed."""

    def term_vectors(self, rows: Sequence[int]) -> list[dict[str, int]]:
        """Term frequencies of the documents in ``rows`` (query expansion reads its feedback from here)."""

    def indexed_doc_count(self) -> int:
        """Live documents with at least one indexed term (Lucene's ``docCount``)."""

    def average_doc_length(self) -> float:
        """Analysed terms per live document with at least one (BM25's ``avgdl``)."""

    def doc_freq(self, term: str) -> int:
        """Number of live documents containing the analysed ``term``."""

    def get_docs(self, doc_ids: list[str]) -> dict[str, Doc]: ...

    def get_doc(self, doc_id: str) -> Doc | None: ...

    def dense_search(self, vectors: DenseVectors, queries: np.ndarray, count: int, method: str,
                     ef_search: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``count`` rows and scores per query vector, ties settled by doc id."""

    def dense_rows(self, vectors: DenseVectors, rows: list[int]) -> np.ndarray:
        """The stored vectors of ``rows``."""
