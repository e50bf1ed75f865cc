"""Plain typed records shared by the library, the CLI, files and the service.

Field names follow ir_measures / ir_datasets (``query_id``, ``doc_id``, ``relevance``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field


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


@dataclass
class Run:
    """Ranked lists per query, plus the wall time each stage spent producing them.

    ``results[query_id]`` is a list of :class:`ScoredDoc` sorted by descending score; ties keep
    a stable order (doc id ascending) so that runs are reproducible byte for byte.
    ``stage_seconds`` maps a stage label to its total wall time over ``len(results)`` queries.
    """

    results: dict[str, list[ScoredDoc]] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_scores(cls, scores: Mapping[str, Mapping[str, float]]) -> Run:
        run = cls()
        for query_id, doc_scores in scores.items():
            run.set(query_id, [ScoredDoc(query_id, d, float(s)) for d, s in doc_scores.items()])
        return run

    def set(self, query_id: str, hits: Iterable[ScoredDoc]) -> None:
        self.results[query_id] = sorted(hits, key=lambda h: (-h.score, h.doc_id))

    def __getitem__(self, query_id: str) -> list[ScoredDoc]:
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
        return {q: {h.doc_id: h.score for h in hits} for q, hits in self.results.items()}

    def cut(self, top_k: int) -> Run:
        return Run({q: hits[:top_k] for q, hits in self.results.items()}, dict(self.stage_seconds))

    def latency_ms(self) -> dict[str, float]:
        """Mean wall time per query of each stage, in milliseconds."""
        n = max(len(self.results), 1)
        return {stage: seconds * 1000.0 / n for stage, seconds in self.stage_seconds.items()}
