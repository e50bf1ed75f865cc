"""Plain typed records shared by the library, the CLI, files and the service.

Field names follow ir_measures / ir_datasets (``query_id``, ``doc_id``, ``relevance``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np


@dataclass(frozen=True, slots=True)
class Doc:
    doc_id: str
    text: str
    title: str = ""

    @property
    def contents(self) -> str:
        """Title and text joined by a space, as Pyserini's BEIR "flat" indexes do."""
        if self.title:
            return f"{self.title} {self.text}" if self.text else self.title
        return self.text


@dataclass(frozen=True, slots=True)
class Query:
    query_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ScoredDoc:
    query_id: str
    doc_id: str
    score: float


@dataclass(frozen=True, slots=True)
class Qrel:
    query_id: str
    doc_id: str
    relevance: int


class Hits(Sequence[ScoredDoc]):
    """One query's ranked documents, stored as arrays; :class:`ScoredDoc` objects are made on access.

    A first stage returns about a thousand hits per query; building a Python object for each costs
    more than the retrieval itself, so rankings stay compact until someone reads them one by one.
    """

    __slots__ = ("query_id", "doc_ids", "scores")

    def __init__(self, query_id: str, doc_ids: Sequence[str] | np.ndarray, scores: Sequence[float] | np.ndarray
                 ) -> None:
        self.query_id = query_id
        self.doc_ids = doc_ids
        self.scores = scores

    @classmethod
    def sorted_from(cls, query_id: str, hits: Iterable[ScoredDoc]) -> Hits:
        ordered = sorted(hits, key=lambda h: (-h.score, h.doc_id))
        return cls(query_id, [h.doc_id for h in ordered], np.array([h.score for h in ordered], dtype=np.float64))

    def __len__(self) -> int:
        return len(self.doc_ids)

    @overload
    def __getitem__(self, position: int) -> ScoredDoc: ...

    @overload
    def __getitem__(self, position: slice) -> Hits: ...

    def __getitem__(self, position: int | slice) -> ScoredDoc | Hits:
        if isinstance(position, slice):
            return Hits(self.query_id, self.doc_ids[position], self.scores[position])
        return ScoredDoc(self.query_id, str(self.doc_ids[position]), float(self.scores[position]))

    def __iter__(self) -> Iterator[ScoredDoc]:
        query_id = self.query_id
        for doc_id, score in zip(self.doc_ids, np.asarray(self.scores).tolist(), strict=True):
            yield ScoredDoc(query_id, str(doc_id), score)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequence, like list

    def __repr__(self) -> str:
        return f"Hits({self.query_id!r}, {len(self)} docs)"

    def to_dict(self) -> dict[str, float]:
        return dict(zip(map(str, self.doc_ids), np.asarray(self.scores).tolist(), strict=True))


@dataclass(frozen=True)
class ExpandedQuery:
    """A query rewritten by feedback (``rm3``, ``rocchio``, ``dense_prf``) for the retriever that follows.

    ``terms`` maps analysed terms to weights (for ``bm25``); ``vector`` is a query vector of the dense
    model ``model`` (for ``dense``).
    """

    terms: Mapping[str, float] | None = None
    vector: np.ndarray | None = None
    model: str | None = None


@dataclass
class Run:
    """Ranked lists per query, plus the wall time each stage spent producing them.

    ``results[query_id]`` is a :class:`Hits` sequence sorted by descending score; ties are ordered
    by doc id so that runs are reproducible byte for byte. ``stage_seconds`` maps a stage label to
    its total wall time over ``len(results)`` queries.
    """

    results: dict[str, Hits] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # Queries rewritten by a feedback stage, read by the retriever after it (see ExpandedQuery).
    expanded: dict[str, ExpandedQuery] = field(default_factory=dict)

    @classmethod
    def from_scores(cls, scores: Mapping[str, Mapping[str, float]]) -> Run:
        run = cls()
        for query_id, doc_scores in scores.items():
            run.set(query_id, [ScoredDoc(query_id, d, float(s)) for d, s in doc_scores.items()])
        return run

    def set(self, query_id: str, hits: Iterable[ScoredDoc]) -> None:
        """Store hits in any order; they are sorted by (score descending, doc id)."""
        self.results[query_id] = Hits.sorted_from(query_id, hits)

    def set_sorted(self, query_id: str, doc_ids: Sequence[str] | np.ndarray, scores: np.ndarray) -> None:
        """Store hits that the caller has already sorted by (score descending, doc id)."""
        self.results[query_id] = Hits(query_id, doc_ids, scores)

    def __getitem__(self, query_id: str) -> Hits:
        return self.results[query_id]

    def __contains__(self, query_id: object) -> bool:
        return query_id in self.results

    def __iter__(self) -> Iterator[ScoredDoc]:
        for hits in self.results.values():
            yield from hits

    def __len__(self) -> int:
        return len(self.results)

    @property
    def query_ids(self) -> list[str]:
        return list(self.results)

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {q: hits.to_dict() for q, hits in self.results.items()}

    def cut(self, top_k: int) -> Run:
        return Run({q: hits[:top_k] for q, hits in self.results.items()}, dict(self.stage_seconds),
                   dict(self.expanded))

    def latency_ms(self) -> dict[str, float]:
        """Mean wall time per query of each stage, in milliseconds."""
        n = max(len(self.results), 1)
        return {stage: seconds * 1000.0 / n for stage, seconds in self.stage_seconds.items()}
