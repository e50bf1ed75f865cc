"""The BM25 part of an index: postings on disk, a bm25s retriever in memory.

On disk we keep raw statistics (term frequencies and document lengths), not scores, so ``k1`` and
``b`` stay search-time settings as they are in Lucene. Loading computes the score matrix once per
(k1, b) with Lucene's arithmetic and hands it to ``bm25s`` for retrieval.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import bm25s
import numpy as np

from rankstack.index.lucene_bm25 import idf, posting_scores

SPARSE_FILES = ("vocab.json", "term_indptr.npy", "doc_indices.npy", "term_freqs.npy", "doc_lengths.npy")


class PostingsBuilder:
    """Accumulates postings document by document in compact arrays (no per-term Python objects)."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self._term_ids = array("i")
        self._doc_ids = array("i")
        self._freqs = array("i")
        self._lengths = array("i")

    def add(self, terms: list[str]) -> None:
        doc_number = len(self._lengths)
        vocab = self.vocab
        counts = Counter(terms)
        for term, count in counts.items():
            term_id = vocab.get(term)
            if term_id is None:
                term_id = vocab[term] = len(vocab)
            self._term_ids.append(term_id)
            self._freqs.append(count)
        self._doc_ids.extend([doc_number] * len(counts))
        self._lengths.append(len(terms))

    def write(self, directory: Path) -> dict[str, int]:
        """Write term-major postings (CSC by term) and return counts for the manifest."""
        directory.mkdir(parents=True, exist_ok=True)
        term_ids = np.frombuffer(self._term_ids, dtype=np.int32)
        order = np.argsort(term_ids, kind="stable")  # stable: doc numbers stay ascending per term
        counts_per_term = np.bincount(term_ids, minlength=len(self.vocab))
        indptr = np.concatenate([[0], np.cumsum(counts_per_term)]).astype(np.int64)
        np.save(directory / "term_indptr.npy", indptr)
        np.save(directory / "doc_indices.npy", np.frombuffer(self._doc_ids, dtype=np.int32)[order])
        np.save(directory / "term_freqs.npy", np.frombuffer(self._freqs, dtype=np.int32)[order])
        lengths = np.frombuffer(self._lengths, dtype=np.int32)
        np.save(directory / "doc_lengths.npy", lengths)
        terms = sorted(self.vocab, key=self.vocab.__getitem__)
        (directory / "vocab.json").write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
        return {"terms": len(terms), "postings": int(len(term_ids)),
                "docs_with_terms": int(np.count_nonzero(lengths)), "total_terms": int(lengths.sum())}


@dataclass
class SparseIndex:
    vocab: dict[str, int]
    term_indptr: np.ndarray
    doc_indices: np.ndarray
    term_freqs: np.ndarray
    doc_lengths: np.ndarray

    @classmethod
    def load(cls, directory: Path) -> SparseIndex:
        terms = json.loads((directory / "vocab.json").read_text(encoding="utf-8"))
        return cls(
            vocab={term: i for i, term in enumerate(terms)},
            term_indptr=np.load(directory / "term_indptr.npy"),
            doc_indices=np.load(directory / "doc_indices.npy"),
            term_freqs=np.load(directory / "term_freqs.npy"),
            doc_lengths=np.load(directory / "doc_lengths.npy"),
        )

    @property
    def num_docs(self) -> int:
        return len(self.doc_lengths)

    @cached_property
    def collection_stats(self) -> tuple[int, float]:
        """Lucene's ``docCount`` (documents with at least one term) and average document length."""
        doc_count = int(np.count_nonzero(self.doc_lengths))
        return doc_count, float(self.doc_lengths.sum()) / max(doc_count, 1)

    @cached_property
    def terms(self) -> list[str]:
        """Term of each term id."""
        return sorted(self.vocab, key=self.vocab.__getitem__)

    @cached_property
    def doc_freqs(self) -> np.ndarray:
        return np.diff(self.term_indptr)

    @cached_property
    def _by_document(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The postings transposed to document-major order (row pointer, term ids, frequencies), for
        reading whole documents' term vectors (query expansion). Built on first use."""
        term_ids = np.repeat(np.arange(len(self.doc_freqs), dtype=np.int32), self.doc_freqs)
        order = np.argsort(self.doc_indices, kind="stable")  # stable: term ids stay ascending per document
        counts = np.bincount(self.doc_indices, minlength=self.num_docs)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return indptr, term_ids[order], self.term_freqs[order]

    def term_vector(self, row: int) -> dict[str, int]:
        """Term frequencies of the document in ``row`` (what Lucene stores as a document's term vector)."""
        indptr, term_ids, freqs = self._by_document
        start, end = indptr[row], indptr[row + 1]
        terms = self.terms
        return {terms[t]: int(f) for t, f in zip(term_ids[start:end].tolist(), freqs[start:end].tolist(),
                                                 strict=True)}

    def postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows and frequencies of ``term`` (empty arrays when it is not indexed)."""
        term_id = self.vocab.get(term)
        if term_id is None:
            return self.doc_indices[:0], self.term_freqs[:0]
        start, end = self.term_indptr[term_id], self.term_indptr[term_id + 1]
        return self.doc_indices[start:end], self.term_freqs[start:end]

    def retriever(self, k1: float, b: float) -> bm25s.BM25:
        """A bm25s retriever whose precomputed scores follow Lucene's BM25 exactly."""
        doc_count = int(np.count_nonzero(self.doc_lengths))
        avg_doc_length = float(self.doc_lengths.sum()) / max(doc_count, 1)
        doc_freqs = np.diff(self.term_indptr)
        per_posting_idf = np.repeat(idf(doc_freqs, doc_count), doc_freqs)
        data = posting_scores(per_posting_idf, self.term_freqs, self.doc_lengths[self.doc_indices],
                              avg_doc_length, k1, b)
        retriever = bm25s.BM25(k1=k1, b=b, method="lucene", backend="numpy")
        retriever.scores = {"data": data, "indices": self.doc_indices, "indptr": self.term_indptr,
                            "num_docs": self.num_docs}
        retriever.vocab_dict = self.vocab
        retriever.unique_token_ids_set = set(self.vocab.values())
        retriever.nonoccurrence_array = None
        return retriever
