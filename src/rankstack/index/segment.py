"""The immutable part of an index directory, written by a build or a compaction.

A :class:`Segment` opens the manifest, the document store, the BM25 postings and any dense vectors, and
answers the reads stages make (see :class:`rankstack.index.view.IndexView`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from threading import Lock
from typing import Any

import bm25s
import numpy as np

from rankstack._bounded import BoundedCache
from rankstack.errors import IndexFormatError
from rankstack.index.dense import DenseVectors
from rankstack.index.docstore import DocStore
from rankstack.index.lucene_bm25 import boosted_scores
from rankstack.index.manifest import read_manifest
from rankstack.index.sparse import SparseIndex
from rankstack.index.splade import SpladeImpacts
from rankstack.ranking import top_rows
from rankstack.text.analyzer import ANALYZER_VERSION, LuceneEnglishAnalyzer
from rankstack.types import Doc

MAX_BM25_VARIANTS = 8  # score matrices kept per segment (one per k1, b)


def _analyzer_of(path: Path, manifest: dict[str, Any]) -> LuceneEnglishAnalyzer:
    """The analyzer an index was built with; an index from another analyzer version is refused.

    The analyzer is part of the index format: terms written by one version are not the terms another
    version makes of a query, so such an index would return quietly different results.
    """
    config = manifest["analyzer"]
    version = config.get("version", 1)
    if version != ANALYZER_VERSION:
        raise IndexFormatError(
            f"{path} was built with analyzer version {version}, but this rankstack analyzes text with "
            f"version {ANALYZER_VERSION} (token-exact Lucene EnglishAnalyzer); its terms would not match "
            f"queries. Rebuild it: rankstack index CORPUS -o {path} --overwrite "
            "(rankstack eval rebuilds the indexes it keeps in its own cache by itself)")
    return LuceneEnglishAnalyzer(stem=config.get("stem") == "porter", stop_words=frozenset(config["stop_words"]))


class Segment:
    """The immutable files of an index directory, and the read interface stages use."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.docstore = DocStore(path / "docs.sqlite")
        # Identifies this generation of the directory: a compaction swaps in a new manifest file.
        # Held open so that no other file can take its inode while this segment is in use.
        self._manifest_handle = open(path / "manifest.json", "rb")
        self.manifest_inode = os.fstat(self._manifest_handle.fileno()).st_ino
        self.analyzer = _analyzer_of(path, manifest)
        # One score matrix per (k1, b) asked for; bounded, since a server builds them on request.
        self._retrievers: BoundedCache[tuple[float, float], bm25s.BM25] = BoundedCache(MAX_BM25_VARIANTS)
        self._dense: dict[str, DenseVectors] = {}
        self._splade: dict[str, SpladeImpacts] = {}
        self._lock = Lock()

    @classmethod
    def open(cls, path: str | Path, verify_checksums: bool = True) -> Segment:
        path = Path(path)
        return cls(path, read_manifest(path, verify_checksums))

    @property
    def num_docs(self) -> int:
        return int(self.manifest["counts"]["docs"])

    @property
    def ignore_identical_ids(self) -> bool:
        return bool(self.manifest.get("ignore_identical_ids", False))

    @cached_property
    def doc_ids(self) -> list[str]:
        return self.docstore.doc_ids()

    @cached_property
    def doc_id_array(self) -> np.ndarray:
        """Doc ids as a numpy object array, for fancy indexing by row number."""
        return np.array(self.doc_ids, dtype=object)

    @cached_property
    def doc_id_ranks(self) -> np.ndarray:
        """Rank of each row's doc id in sorted order: the tie-breaker of every ranking."""
        ranks = np.empty(len(self.doc_ids), dtype=np.int64)
        ranks[np.argsort(self.doc_id_array)] = np.arange(len(self.doc_ids))
        return ranks

    @cached_property
    def doc_positions(self) -> dict[str, int]:
        """Doc id -> row number in the sparse and dense arrays."""
        return {doc_id: i for i, doc_id in enumerate(self.doc_ids)}

    @cached_property
    def sparse(self) -> SparseIndex:
        return SparseIndex.load(self.path / "sparse")

    def bm25_retriever(self, k1: float, b: float) -> bm25s.BM25:
        return self._retrievers.get_or_create((float(k1), float(b)), lambda: self.sparse.retriever(k1, b))

    # The read interface stages use, shared with live snapshots (rankstack.index.live.LiveView).
    # A stage takes ``view = index.view()`` once per batch, so a concurrent writer cannot change
    # the documents between two of its reads.

    def view(self) -> Segment:
        return self

    def bm25_scores(self, terms: list[str], k1: float, b: float) -> np.ndarray | None:
        """BM25 score of every row for the analyzed query ``terms``; None when no term is indexed."""
        vocab = self.sparse.vocab
        term_ids = [vocab[t] for t in terms if t in vocab]
        if not term_ids:
            return None
        return np.asarray(self.bm25_retriever(k1, b).get_scores_from_ids(term_ids), dtype=np.float32)

    def weighted_bm25_scores(self, weights: Mapping[str, float], k1: float, b: float) -> np.ndarray | None:
        """BM25 score of every row for a query whose analysed terms carry weights (query expansion)."""
        sparse = self.sparse
        doc_count, avg_length = sparse.collection_stats
        postings = ((weight, *sparse.postings(term)) for term, weight in weights.items())
        return boosted_scores(self.num_docs, postings, sparse.doc_lengths, doc_count, avg_length, k1, b)

    def term_vectors(self, rows: Sequence[int]) -> list[dict[str, int]]:
        """Term frequencies of the documents in ``rows``."""
        return [self.sparse.term_vector(row) for row in rows]

    def indexed_doc_count(self) -> int:
        """Documents with at least one indexed term (Lucene's ``docCount``)."""
        return self.sparse.collection_stats[0]

    def average_doc_length(self) -> float:
        return self.sparse.collection_stats[1]

    def doc_freq(self, term: str) -> int:
        """Number of (live) documents containing ``term``."""
        term_id = self.sparse.vocab.get(term)
        return 0 if term_id is None else int(self.sparse.doc_freqs[term_id])

    def get_docs(self, doc_ids: list[str]) -> dict[str, Doc]:
        return self.docstore.get_many(doc_ids)

    def get_doc(self, doc_id: str) -> Doc | None:
        return self.docstore.get(doc_id)

    def dense_search(self, vectors: DenseVectors, queries: np.ndarray, count: int, method: str, ef_search: int
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``count`` rows per query, ties at the boundary settled by doc id (not by FAISS's whim)."""
        total = len(vectors.vectors)
        fetch = min(count, total)
        while True:
            scores, rows = vectors.search(queries, fetch, method, ef_search)
            # A tie between the last hit and the next one means FAISS chose among equals; look further.
            if fetch >= total or method != "exact" or not np.any(scores[:, -1] == scores[:, min(count, fetch) - 1]):
                break
            fetch = min(total, fetch * 2)
        if fetch == count:
            return scores, rows
        out_scores = np.full((len(queries), count), -np.inf, dtype=np.float32)
        out_rows = np.full((len(queries), count), -1, dtype=np.int64)
        for i in range(len(queries)):
            valid = rows[i] >= 0
            query_rows, query_scores = rows[i][valid], scores[i][valid]
            best = top_rows(query_scores, count, self.doc_id_ranks[query_rows])[:count]
            out_scores[i, :len(best)], out_rows[i, :len(best)] = query_scores[best], query_rows[best]
        return out_scores, out_rows

    def dense_rows(self, vectors: DenseVectors, rows: list[int]) -> np.ndarray:
        return vectors.vectors[rows]

    def dense_keys(self) -> list[str]:
        return sorted(self.manifest.get("dense", {}))

    def dense_vectors(self, model_id: str, precision: str | None = None, exact: bool = False
                      ) -> DenseVectors | None:
        """Stored vectors of ``model_id``: those encoded at ``precision`` if present, else (unless
        ``exact``) those of another precision of the same model; None when there are none."""
        entries = self.manifest.get("dense", {})
        key = f"{model_id}@{precision}"
        if key not in entries:
            if exact:
                return None
            key = next((k for k, e in sorted(entries.items()) if e.get("model") == model_id), "")
            if not key:
                return None
        with self._lock:
            if key not in self._dense:
                self._dense[key] = DenseVectors(self.path / entries[key]["dir"])
            return self._dense[key]

    def splade_keys(self) -> list[str]:
        return sorted(self.manifest.get("splade", {}))

    def late_interaction_keys(self) -> list[str]:
        return sorted(self.manifest.get("late_interaction", {}))

    def splade_impacts(self, model_id: str) -> SpladeImpacts | None:
        """Stored SPLADE impacts of ``model_id`` (loaded on first use); None when there are none."""
        entry = self.manifest.get("splade", {}).get(model_id)
        if entry is None:
            return None
        with self._lock:
            if model_id not in self._splade:
                self._splade[model_id] = SpladeImpacts.load(self.path / entry["dir"])
            return self._splade[model_id]

    def reload_manifest(self) -> None:
        """Pick up parts added to the directory (dense vectors, SPLADE impacts) since the index was opened."""
        self.manifest = read_manifest(self.path, verify_checksums=False)
        self._dense.clear()
        self._splade.clear()

    def close(self) -> None:
        self.docstore.close()
        self._manifest_handle.close()
