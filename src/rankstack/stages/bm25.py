"""BM25 retrieval (and BM25 re-scoring of earlier candidates) with Lucene-identical scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rankstack.errors import PipelineError
from rankstack.ranking import top_rows
from rankstack.stages.base import DEFAULT_RETRIEVAL_DEPTH, ProgressFactory, SearchContext, Stage
from rankstack.stages.registry import register_keyword_stage
from rankstack.types import ExpandedQuery, Query, Run, ScoredDoc

if TYPE_CHECKING:
    from rankstack.index.view import IndexView

_MIN_SCORE = float(np.finfo(np.float32).tiny)  # a document matching no query term scores 0: never a hit
_NO_DOC_IDS = np.array([], dtype=object)
_NO_SCORES = np.array([], dtype=np.float32)


class BM25(Stage):
    """BM25 over an index's postings; as a later stage it re-scores the candidates it is given.

    >>> # pipeline = BM25(index) % 100 >> reranker
    """

    name = "bm25"
    reads_expansion = "terms"

    def __init__(self, index: Any, k1: float = 0.9, b: float = 0.4) -> None:
        if index is None:
            raise PipelineError("bm25 needs an index; open one with rankstack.index.Index.open(PATH)")
        if not (0 <= k1 <= 1000 and 0 <= b <= 1):  # also refuses nan; inf is above the bound
            raise PipelineError(f"bm25: need 0 <= k1 <= 1000 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.index = index
        self.k1 = float(k1)
        self.b = float(b)

    def prepare(self, as_first_stage: bool, progress: ProgressFactory | None) -> None:
        """Compute the score matrix for (k1, b) now, so the first query's timing does not include it."""
        self.index.bm25_retriever(self.k1, self.b)

    def score_all(self, view: IndexView, text: str, expanded: ExpandedQuery | None = None) -> np.ndarray | None:
        """Scores of every row of ``view`` for one query, or None when no query term is indexed.

        An expanded query (after ``rm3`` or ``rocchio``) is searched with its weighted terms instead.
        """
        if expanded is not None and expanded.terms is not None:
            return view.weighted_bm25_scores(expanded.terms, self.k1, self.b)
        return view.bm25_scores(self.index.analyzer.analyze(text), self.k1, self.b)

    def transform(self, queries: Sequence[Query], candidates: Run | None, context: SearchContext) -> Run:
        run = Run()
        view = self.index.view()
        # After a feedback stage this stage retrieves anew with the rewritten queries (as in PyTerrier's
        # bm25 >> rm3 >> bm25); otherwise, given candidates, it re-scores them.
        expansions = candidates.expanded if candidates is not None else {}
        for query in queries:
            if candidates is None or expansions:
                doc_ids, scores = self._retrieve(view, query, context, expansions.get(query.query_id))
                run.set_sorted(query.query_id, doc_ids, scores)
            else:
                run.set(query.query_id, self._rescore(view, query, candidates.results.get(query.query_id, [])))
        return run

    def _retrieve(self, view: Any, query: Query, context: SearchContext, expanded: ExpandedQuery | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        scores = self.score_all(view, query.text, expanded)
        if scores is None:
            return _NO_DOC_IDS, _NO_SCORES
        wanted = context.top_k or DEFAULT_RETRIEVAL_DEPTH
        fetch = min(wanted + (1 if context.ignore_identical_ids else 0), len(scores))
        selected = top_rows(scores, fetch, view.doc_id_ranks, minimum=_MIN_SCORE)
        selected_scores = scores[selected]
        doc_ids = view.doc_id_array[selected]
        if context.ignore_identical_ids:
            keep = doc_ids != query.query_id
            doc_ids, selected_scores = doc_ids[keep], selected_scores[keep]
        return doc_ids[:wanted], selected_scores[:wanted]

    def _rescore(self, view: Any, query: Query, previous: Sequence[ScoredDoc]) -> list[ScoredDoc]:
        scores = self.score_all(view, query.text)
        positions = view.doc_positions
        result = []
        for hit in previous:
            position = positions.get(hit.doc_id)
            score = 0.0 if scores is None or position is None else float(scores[position])
            result.append(ScoredDoc(query.query_id, hit.doc_id, score))
        return result


register_keyword_stage("bm25", BM25)
