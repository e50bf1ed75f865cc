"""A contract every stage must pass; third parties can run it against their own stages.

    from rankstack.testing import check_stage_contract
    check_stage_contract(lambda: MyStage(index), queries, index=index)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rankstack.stages.base import Pipeline, SearchContext, Stage
from rankstack.stages.parse import parse_pipeline
from rankstack.types import Query, Run


def _check(condition: bool, message: str) -> None:
    """An explicit check: ``assert`` statements vanish under ``python -O``."""
    if not condition:
        raise AssertionError(message)


def _assert_sorted(run: Run) -> None:
    for query_id, hits in run.results.items():
        scores = [h.score for h in hits]
        _check(scores == sorted(scores, reverse=True), f"hits of {query_id} are not sorted by score")
        _check(all(h.query_id == query_id for h in hits), f"hits of {query_id} carry another query id")
        ids = [h.doc_id for h in hits]
        _check(len(ids) == len(set(ids)), f"hits of {query_id} repeat a document")


def check_stage_contract(make_stage: Callable[[], Stage | Pipeline], queries: Sequence[Query],
                         candidates: Run | None = None, index: Any = None) -> None:
    """Check sorted output, empty input, one-by-one equals batch, cut-offs, and string round trip."""
    _check(len(queries) >= 2, "the contract needs at least two queries")
    stage = make_stage().pipeline()
    context = SearchContext()
    batch = stage.transform(list(queries), candidates, context)
    _assert_sorted(batch)
    _check(set(batch.results) >= {q.query_id for q in queries}, "a query is missing from the output")

    empty = stage.transform([], Run() if candidates is not None else None, context)
    _check(empty.results == {}, "no queries in must give no results out")

    for query in queries:
        single = stage.transform([query], candidates, context)
        one = [(h.doc_id, round(h.score, 5)) for h in single.results[query.query_id]]
        many = [(h.doc_id, round(h.score, 5)) for h in batch.results[query.query_id]]
        _check(one == many, f"query {query.query_id}: one-by-one result differs from the batch result")

    cut = (stage % 2).transform(list(queries), candidates, context)
    for query in queries:
        _check(len(cut.results[query.query_id]) <= 2, "% 2 must keep at most 2 documents")
        expected = [h.doc_id for h in batch.results[query.query_id][:2]]
        _check([h.doc_id for h in cut.results[query.query_id]] == expected, "% k must keep the top k")

    text = str(stage)
    reparsed = parse_pipeline(text, index)
    _check(str(reparsed) == text, f"canonical string does not round-trip: {text!r} -> {str(reparsed)!r}")
    again = reparsed.transform(list(queries), candidates, context)
    _check(again.to_dict() == batch.to_dict(), "the re-parsed pipeline gives different results")
