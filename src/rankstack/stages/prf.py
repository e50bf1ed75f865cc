"""Pseudo-relevance feedback: rewrite each query from the top documents of the stage before.

``bm25 >> rm3 >> bm25`` and ``bm25 >> rocchio >> bm25`` expand the query with terms of the feedback
documents, with Anserini's arithmetic (:mod:`rankstack.text.feedback`) over the term frequencies the
index already stores; ``dense >> dense_prf >> dense`` moves the query vector towards the feedback
documents' vectors (Rocchio on vectors). The retriever after a feedback stage searches anew with the
rewritten queries. Feedback reads the current view, so it works on live indexes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from rankstack.errors import PipelineError
from rankstack.stages.base import ProgressFactory, SearchContext, Stage
from rankstack.stages.registry import register_keyword_stage
from rankstack.text.feedback import TermFilter, rm3_weights, rocchio_weights
from rankstack.types import ExpandedQuery, Query, Run, ScoredDoc

logger = logging.getLogger(__name__)


def _require_index(name: str, index: Any) -> None:
    if index is None:
        raise PipelineError(f"{name} needs an index; open one with rankstack.index.Index.open(PATH)")


MAX_FEEDBACK = 1000  # documents or terms: more makes a query as slow as a scan and helps no one


def _check_counts(name: str, **counts: int) -> None:
    for key, value in counts.items():
        if not 1 <= value <= MAX_FEEDBACK:
            raise PipelineError(f"{name}: {key} must be between 1 and {MAX_FEEDBACK}, got {value}")


def _check_weight(name: str, key: str, value: float, upper: float = 1.0) -> None:
    if not 0 <= value <= upper:
        bound = f"between 0 and {upper:g}"
        raise PipelineError(f"{name}: {key} must be {bound}, got {value}")


def _warn_without_feedback(name: str, count: int, total: int) -> None:
    if count:  # one warning per batch of queries, with the count
        logger.warning("%s: %d of %d queries had no feedback documents (the stage before returned none); "
                       "they were searched with the original query", name, count, total)


def _feedback_hits(candidates: Run | None, query: Query, depth: int, positions: dict[str, int]) -> list[ScoredDoc]:
    hits = candidates.results.get(query.query_id) if candidates is not None else None
    return [hit for hit in (hits or [])[:depth] if hit.doc_id in positions]


class _TermFeedback(Stage):
    """Shared by RM3 and Rocchio: read the feedback documents' terms, hand the weights to the next bm25."""

    expands = "terms"
    index: Any
    fb_docs: int
    filter_terms = False  # keep only [a-z0-9]+ feedback terms (RM3's setting; Rocchio keeps all)

    def candidates_needed(self) -> int | None:
        return self.fb_docs

    def _weights(self, terms: list[str], feedback: list[tuple[dict[str, int], float]], keep: TermFilter
                 ) -> dict[str, float]:
        raise NotImplementedError

    def transform(self, queries: Sequence[Query], candidates: Run | None, context: SearchContext) -> Run:
        view = self.index.view()
        # Anserini divides by the number of documents in its Lucene index, which leaves out documents without
        # text: documents with at least one term are the same count unless a text is all stop words.
        keep = TermFilter(view.doc_freq, view.indexed_doc_count(), english_only=self.filter_terms)
        positions = view.doc_positions
        expanded: dict[str, ExpandedQuery] = {}
        without_feedback = 0
        for query in queries:
            terms = self.index.analyzer.analyze(query.text)
            hits = _feedback_hits(candidates, query, self.fb_docs, positions)
            if not hits:
                without_feedback += 1
                weights = {term: float(count) for term, count in Counter(terms).items()}
            else:
                vectors = view.term_vectors([positions[hit.doc_id] for hit in hits])
                weights = self._weights(terms, [(v, hit.score) for v, hit in zip(vectors, hits, strict=True)], keep)
            expanded[query.query_id] = ExpandedQuery(terms=weights)
        _warn_without_feedback(self.name, without_feedback, len(queries))
        results = dict(candidates.results) if candidates is not None else {}
        return Run(results, expanded=expanded)


class RM3(_TermFeedback):
    """RM3 as Anserini and Pyserini compute it: ``bm25 >> rm3 >> bm25``.

    The relevance model of the ``fb_docs`` best documents (each contributes its ``fb_terms`` most frequent
    terms, weighted by its score) keeps its ``fb_terms`` heaviest terms and is mixed with the original query
    (weight ``original_weight``). ``filter_terms`` keeps only ``[a-z0-9]+`` terms, as Pyserini does.
    """

    name = "rm3"

    # Defaults chosen on SciFact's train queries (benchmarks/prf_defaults.py): Anserini's, but with the original
    # query at 0.9 instead of 0.5; rm3(original_weight=0.5) is Pyserini's set_rm3().
    def __init__(self, index: Any, fb_docs: int = 10, fb_terms: int = 10, original_weight: float = 0.9,
                 filter_terms: bool = True) -> None:
        _require_index(self.name, index)
        _check_counts(self.name, fb_docs=fb_docs, fb_terms=fb_terms)
        _check_weight(self.name, "original_weight", original_weight)
        self.index = index
        self.fb_docs = fb_docs
        self.fb_terms = fb_terms
        self.original_weight = float(original_weight)
        self.filter_terms = filter_terms

    def _weights(self, terms: list[str], feedback: list[tuple[dict[str, int], float]], keep: TermFilter
                 ) -> dict[str, float]:
        return rm3_weights(terms, feedback, keep, self.fb_terms, self.original_weight)


class Rocchio(_TermFeedback):
    """Rocchio on term vectors as Anserini computes it: ``bm25 >> rocchio >> bm25``.

    ``alpha`` times the L2-normalised query plus ``beta`` times the mean of the ``fb_docs`` best documents'
    L2-normalised term-frequency vectors, of which the ``fb_terms`` heaviest terms are kept.
    """

    name = "rocchio"

    # beta chosen on SciFact's train queries (benchmarks/prf_defaults.py); rocchio(beta=0.75) is Pyserini's
    # set_rocchio().
    def __init__(self, index: Any, fb_docs: int = 10, fb_terms: int = 10, alpha: float = 1.0,
                 beta: float = 0.25) -> None:
        _require_index(self.name, index)
        _check_counts(self.name, fb_docs=fb_docs, fb_terms=fb_terms)
        _check_weight(self.name, "alpha", alpha, upper=100.0)
        _check_weight(self.name, "beta", beta, upper=100.0)
        self.index = index
        self.fb_docs = fb_docs
        self.fb_terms = fb_terms
        self.alpha = float(alpha)
        self.beta = float(beta)

    def _weights(self, terms: list[str], feedback: list[tuple[dict[str, int], float]], keep: TermFilter
                 ) -> dict[str, float]:
        return rocchio_weights(terms, [tf for tf, _ in feedback], keep, self.fb_terms, self.alpha, self.beta)


class DensePRF(Stage):
    """Rocchio on query vectors: ``dense >> dense_prf >> dense``.

    The new query vector is ``alpha * q + beta * mean(d_1..d_k)`` over the ``fb_docs`` best documents'
    vectors (stored ones, or encoded now), searched again by the ``dense`` stage after it, which must
    use the same model.
    """

    name = "dense_prf"
    expands = "vector"
    always_shown = ("model",)

    # fb_docs and beta chosen on SciFact's train queries (benchmarks/prf_defaults.py)
    def __init__(self, index: Any, model: str = "default", fb_docs: int = 1, alpha: float = 1.0, beta: float = 0.25,
                 precision: str = "auto", device: str = "auto") -> None:
        from rankstack.stages.dense import Dense

        _require_index(self.name, index)
        _check_counts(self.name, fb_docs=fb_docs)
        _check_weight(self.name, "alpha", alpha, upper=100.0)
        _check_weight(self.name, "beta", beta, upper=100.0)
        # The dense stage it feeds encodes the same way; one instance serves query and document vectors.
        self._dense = Dense(index, model=model, precision=precision, device=device)
        self.index = index
        self.model = self._dense.model
        self.fb_docs = fb_docs
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.precision = precision
        self.device = device

    def defaults(self) -> dict[str, Any]:
        return {**super().defaults(), "model": self._dense.defaults()["model"]}

    def candidates_needed(self) -> int | None:
        return self.fb_docs

    def prepare(self, as_first_stage: bool, progress: ProgressFactory | None) -> None:
        self._dense.prepare(False, progress)  # loads and warms up the encoder

    def transform(self, queries: Sequence[Query], candidates: Run | None, context: SearchContext) -> Run:
        view = self.index.view()
        positions = view.doc_positions
        query_vectors: Any = self._dense.encoder.encode_queries([q.text for q in queries]) if queries else []
        expanded: dict[str, ExpandedQuery] = {}
        without_feedback = 0
        for query, query_vector in zip(queries, query_vectors, strict=True):
            hits = _feedback_hits(candidates, query, self.fb_docs, positions)
            vector = np.float32(self.alpha) * np.asarray(query_vector, dtype=np.float32)
            if hits:
                feedback = self._dense.doc_vectors(view, [hit.doc_id for hit in hits])
                vector = vector + np.float32(self.beta) * feedback.astype(np.float32).mean(axis=0)
            else:
                without_feedback += 1
            expanded[query.query_id] = ExpandedQuery(vector=vector, model=self.model)
        _warn_without_feedback(self.name, without_feedback, len(queries))
        results = dict(candidates.results) if candidates is not None else {}
        return Run(results, expanded=expanded)


register_keyword_stage("rm3", RM3)
register_keyword_stage("rocchio", Rocchio)
register_keyword_stage("dense_prf", DensePRF)
