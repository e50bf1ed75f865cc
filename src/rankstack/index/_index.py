"""An opened index directory: manifest, document store, sparse postings."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from threading import Lock
from typing import Any

import bm25s
import numpy as np

from rankstack.index.dense import DenseVectors
from rankstack.index.docstore import DocStore
from rankstack.index.manifest import read_manifest
from rankstack.index.sparse import SparseIndex
from rankstack.text.analyzer import LuceneEnglishAnalyzer
from rankstack.types import Doc


class Index:
    """A read-only index directory. Open with :meth:`Index.open`; the manifest is checked first."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.docstore = DocStore(path / "docs.sqlite")
        self.analyzer = LuceneEnglishAnalyzer(stem=manifest["analyzer"].get("stem") == "porter",
                                              stop_words=frozenset(manifest["analyzer"]["stop_words"]))
        self._retrievers: dict[tuple[float, float], bm25s.BM25] = {}
        self._dense: dict[str, DenseVectors] = {}
        self._lock = Lock()

    @classmethod
    def open(cls, path: str | Path, verify_checksums: bool = True) -> Index:
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
        key = (float(k1), float(b))
        with self._lock:  # several service threads may ask for the same parameters at once
            if key not in self._retrievers:
                self._retrievers[key] = self.sparse.retriever(k1, b)
            return self._retrievers[key]

    # The read interface stages use, shared with live snapshots (rankstack.index.live.LiveView).
    # A stage takes ``view = index.view()`` once per batch, so a concurrent writer cannot change
    # the documents between two of its reads.

    def view(self) -> Index:
        return self

    def bm25_scores(self, terms: list[str], k1: float, b: float) -> np.ndarray | None:
        """BM25 score of every row for the analyzed query ``terms``; None when no term is indexed."""
        vocab = self.sparse.vocab
        term_ids = [vocab[t] for t in terms if t in vocab]
        if not term_ids:
            return None
        return self.bm25_retriever(k1, b).get_scores_from_ids(term_ids)

    def get_docs(self, doc_ids: list[str]) -> dict[str, Doc]:
        return self.docstore.get_many(doc_ids)

    def get_doc(self, doc_id: str) -> Doc | None:
        return self.docstore.get(doc_id)

    def dense_search(self, vectors: DenseVectors, queries: np.ndarray, count: int, method: str, ef_search: int
                     ) -> tuple[np.ndarray, np.ndarray]:
        return vectors.search(queries, count, method, ef_search)

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

    def reload_manifest(self) -> None:
        """Pick up parts added to the directory (dense vectors) since the index was opened."""
        self.manifest = read_manifest(self.path, verify_checksums=False)
        self._dense.clear()

    def close(self) -> None:
        self.docstore.close()
