"""A live snapshot: a segment, deletion marks over its rows, and the documents added since.

Scores are computed at query time from raw term frequencies with statistics over the whole live corpus
(document count, average length, document frequencies), so they equal those of an index built from
scratch on the same documents.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from rankstack.index.dense import DenseVectors
from rankstack.index.lucene_bm25 import boosted_scores, idf, posting_scores
from rankstack.index.segment import Segment
from rankstack.ranking import top_rows
from rankstack.text.analyzer import Analyzer
from rankstack.types import Doc


@dataclass(frozen=True)
class AddedDoc:
    doc: Doc
    term_freqs: dict[str, int]
    length: int
    vectors: dict[str, np.ndarray]  # dense key (model@precision) -> vector


@dataclass
class LiveView:
    """An immutable snapshot: a segment, deletion marks over its rows, and the documents added since.

    Rows 0..n-1 are the segment's, n.. the added documents' (a deleted or replaced added document
    keeps its row, marked dead), so row numbers never move within a snapshot.
    """

    segment: Segment
    dead_segment_rows: np.ndarray
    added: tuple[AddedDoc, ...]
    dead_added: frozenset[int] = frozenset()
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # --- identity of rows ---
    @cached_property
    def doc_id_array(self) -> np.ndarray:
        return np.concatenate([self.segment.doc_id_array,
                               np.array([a.doc.doc_id for a in self.added], dtype=object)])

    @cached_property
    def doc_id_ranks(self) -> np.ndarray:
        ranks = np.empty(len(self.doc_id_array), dtype=np.int64)
        ranks[np.argsort(self.doc_id_array, kind="stable")] = np.arange(len(self.doc_id_array))
        return ranks

    @cached_property
    def alive(self) -> np.ndarray:
        added_alive = np.array([i not in self.dead_added for i in range(len(self.added))], dtype=bool)
        return np.concatenate([~self.dead_segment_rows, added_alive])

    @cached_property
    def doc_positions(self) -> dict[str, int]:
        ids = self.doc_id_array
        return {ids[row]: int(row) for row in np.flatnonzero(self.alive)}

    @property
    def num_docs(self) -> int:
        return len(self.doc_positions)

    # --- documents ---
    def get_docs(self, doc_ids: list[str]) -> dict[str, Doc]:
        positions = self.doc_positions
        base_rows = self.segment.num_docs
        wanted = [d for d in doc_ids if d in positions]
        found = {d: self.added[positions[d] - base_rows].doc for d in wanted if positions[d] >= base_rows}
        found.update(self.segment.get_docs([d for d in wanted if positions[d] < base_rows]))
        return found

    def get_doc(self, doc_id: str) -> Doc | None:
        return self.get_docs([doc_id]).get(doc_id)

    def live_docs(self, chunk: int = 1000) -> Iterator[Doc]:
        """Every live document: the segment's in row order, then the added ones."""
        dead = self.dead_segment_rows
        for start in range(0, self.segment.num_docs, chunk):
            for offset, doc in enumerate(self.segment.docstore.range(start, start + chunk)):
                if not dead[start + offset]:
                    yield doc
        for i, added in enumerate(self.added):
            if i not in self.dead_added:
                yield added.doc

    # --- BM25 with statistics over the live corpus ---
    @cached_property
    def _lengths(self) -> np.ndarray:
        return np.concatenate([self.segment.sparse.doc_lengths.astype(np.int64),
                               np.array([a.length for a in self.added], dtype=np.int64)])

    @cached_property
    def _added_postings(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        rows: dict[str, list[int]] = {}
        freqs: dict[str, list[int]] = {}
        base_rows = self.segment.num_docs
        for i, added in enumerate(self.added):
            if i in self.dead_added:
                continue
            for term, tf in added.term_freqs.items():
                rows.setdefault(term, []).append(base_rows + i)
                freqs.setdefault(term, []).append(tf)
        return {t: (np.array(rows[t], dtype=np.int64), np.array(freqs[t], dtype=np.int32)) for t in rows}

    @cached_property
    def _collection_stats(self) -> tuple[int, float]:
        live_lengths = self._lengths[self.alive]
        doc_count = int(np.count_nonzero(live_lengths))
        return doc_count, float(live_lengths.sum()) / max(doc_count, 1)

    def _postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """Live rows containing ``term`` and its frequencies there (segment rows first, then added ones)."""
        rows, freqs = self.segment.sparse.postings(term)
        keep = ~self.dead_segment_rows[rows]
        rows, freqs = rows[keep].astype(np.int64), freqs[keep]
        added_rows, added_freqs = self._added_postings.get(term, (rows[:0], freqs[:0]))
        return np.concatenate([rows, added_rows]), np.concatenate([freqs, added_freqs])

    def bm25_scores(self, terms: list[str], k1: float, b: float) -> np.ndarray | None:
        doc_count, avg_length = self._collection_stats
        scores = np.zeros(len(self.doc_id_array), dtype=np.float32)
        matched = False
        for term in terms:  # repeated terms count again, as in the segment path (and Lucene's boosts)
            rows, freqs = self._postings(term)
            if len(rows) == 0:
                continue
            matched = True
            term_idf = np.repeat(idf(np.array([len(rows)]), doc_count), len(rows))
            scores[rows] += posting_scores(term_idf, freqs, self._lengths[rows], avg_length, k1, b)
        return scores if matched else None

    def weighted_bm25_scores(self, weights: Mapping[str, float], k1: float, b: float) -> np.ndarray | None:
        doc_count, avg_length = self._collection_stats
        postings = ((weight, *self._postings(term)) for term, weight in weights.items())
        return boosted_scores(len(self.doc_id_array), postings, self._lengths, doc_count, avg_length, k1, b)

    # --- what query expansion reads ---
    def term_vectors(self, rows: Sequence[int]) -> list[dict[str, int]]:
        base_rows = self.segment.num_docs
        sparse = self.segment.sparse
        return [sparse.term_vector(row) if row < base_rows else dict(self.added[row - base_rows].term_freqs)
                for row in rows]

    def indexed_doc_count(self) -> int:
        return self._collection_stats[0]

    def average_doc_length(self) -> float:
        return self._collection_stats[1]

    def doc_freq(self, term: str) -> int:
        return len(self._postings(term)[0])

    # --- dense: exact search over live rows (an HNSW graph covers only a segment) ---
    def _dense_matrix(self, vectors: DenseVectors) -> np.ndarray:
        key = f"{vectors.meta['model']}@{vectors.meta['precision']}"
        cache_key = f"dense:{key}"
        if cache_key not in self._cache:
            added = [a.vectors[key] for a in self.added] if self.added else []
            matrix = np.vstack([vectors.vectors, *[v[None, :] for v in added]]) if added else vectors.vectors
            self._cache[cache_key] = matrix
        return np.asarray(self._cache[cache_key])

    def dense_search(self, vectors: DenseVectors, queries: np.ndarray, count: int, method: str, ef_search: int
                     ) -> tuple[np.ndarray, np.ndarray]:
        matrix = self._dense_matrix(vectors)
        alive_rows = np.flatnonzero(self.alive)
        count = min(count, len(alive_rows))
        all_scores = np.full((len(queries), count), -np.inf, dtype=np.float32)
        all_rows = np.full((len(queries), count), -1, dtype=np.int64)
        for i, query in enumerate(np.asarray(queries, dtype=np.float32)):
            scores = matrix[alive_rows] @ query
            best = top_rows(scores, count, self.doc_id_ranks[alive_rows])[:count]
            all_scores[i, :len(best)] = scores[best]
            all_rows[i, :len(best)] = alive_rows[best]
        return all_scores, all_rows

    def dense_rows(self, vectors: DenseVectors, rows: list[int]) -> np.ndarray:
        return self._dense_matrix(vectors)[rows]

    # --- changes ---
    def apply(self, records: Sequence[dict[str, Any]], analyzer: Analyzer) -> LiveView:
        """A new snapshot with ``records`` applied (this one is left unchanged)."""
        dead_segment = self.dead_segment_rows.copy()
        added = list(self.added)
        dead_added = set(self.dead_added)
        positions = dict(self.doc_positions)
        base_rows = self.segment.num_docs
        for record in records:
            doc_id = record["doc"]["doc_id"] if record["op"] == "put" else record["doc_id"]
            row = positions.pop(doc_id, None)
            if row is not None:  # an update or a delete retires the current copy
                if row < base_rows:
                    dead_segment[row] = True
                else:
                    dead_added.add(row - base_rows)
            if record["op"] == "put":
                doc = Doc(doc_id, record["doc"]["text"], record["doc"].get("title", ""))
                terms = analyzer.analyze(doc.contents)
                vectors = {k: np.frombuffer(base64.b64decode(v), dtype=np.float32) for k, v in
                           record.get("vectors", {}).items()}
                added.append(AddedDoc(doc, dict(Counter(terms)), len(terms), vectors))
                positions[doc_id] = base_rows + len(added) - 1
        return LiveView(self.segment, dead_segment, tuple(added), frozenset(dead_added))


def empty_view(segment: Segment) -> LiveView:
    return LiveView(segment, np.zeros(segment.num_docs, dtype=bool), ())
