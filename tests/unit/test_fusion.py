from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from rankstack.errors import PipelineError
from rankstack.stages import SearchContext, Stage, parse_pipeline
from rankstack.stages.fusion import LinearFusion, ReciprocalRankFusion
from rankstack.types import Query, Run


class FixedRun(Stage):
    """A fake retriever returning a fixed ranking (no index, no model)."""

    name = "fixed"

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    def params(self):
        return {"docs": ";".join(self.scores)}

    def transform(self, queries: Sequence[Query], candidates: Run | None, context: SearchContext) -> Run:
        return Run.from_scores({q.query_id: dict(self.scores) for q in queries})


QUERY = [Query("q", "anything")]
FIRST = FixedRun({"a": 10.0, "b": 8.0, "c": 2.0})
SECOND = FixedRun({"c": 0.9, "d": 0.5, "a": 0.1})


def test_rrf_sums_reciprocal_ranks() -> None:
    run = ReciprocalRankFusion(FIRST, SECOND, k=60).pipeline().transform(QUERY)
    scores = run["q"].to_dict()
    assert math.isclose(scores["a"], 1 / 61 + 1 / 63)
    assert math.isclose(scores["c"], 1 / 63 + 1 / 61)
    assert math.isclose(scores["d"], 1 / 62)
    assert [h.doc_id for h in run["q"]] == ["a", "c", "b", "d"]  # a and c tie: doc id decides


def test_linear_minmax_with_missing_documents_at_the_floor() -> None:
    run = LinearFusion(FIRST, SECOND, alpha=0.7).pipeline().transform(QUERY)
    scores = run["q"].to_dict()
    # first list normalised: a=1, b=0.75, c=0; second: c=1, d=0.5, a=0; missing -> 0
    assert math.isclose(scores["a"], 0.7 * 1 + 0.3 * 0)
    assert math.isclose(scores["b"], 0.7 * 0.75 + 0.3 * 0)
    assert math.isclose(scores["c"], 0.7 * 0 + 0.3 * 1)
    assert math.isclose(scores["d"], 0.7 * 0 + 0.3 * 0.5)


def test_linear_zscore_and_cutoff() -> None:
    run = (LinearFusion(FIRST, SECOND, alpha=0.5, norm="zscore") % 2).transform(QUERY)
    # z-scores: first a=0.98 b=0.39 c=-1.37, second c=1.22 d=0 a=-1.22; missing -> the list minimum
    assert [h.doc_id for h in run["q"]] == ["c", "a"]


def test_fusion_rejects_bad_settings() -> None:
    with pytest.raises(PipelineError, match="two or more"):
        ReciprocalRankFusion(FIRST)
    with pytest.raises(PipelineError, match="exactly two"):
        LinearFusion(FIRST, SECOND, FIRST)
    with pytest.raises(PipelineError, match="alpha must be between 0 and 1"):
        LinearFusion(FIRST, SECOND, alpha=1.5)
    with pytest.raises(PipelineError, match="norm must be one of"):
        LinearFusion(FIRST, SECOND, norm="rank")


def test_fusion_strings_round_trip(tiny_index) -> None:
    text = "rrf(bm25(k1=0.9,b=0.4)%50,bm25(k1=1.2,b=0.75),k=60)%10"
    assert str(parse_pipeline(text, tiny_index)) == text
    text = "linear(bm25(k1=0.9,b=0.4),bm25(k1=2.0,b=0.4),alpha=0.3,norm=zscore)"
    assert str(parse_pipeline(text, tiny_index)) == text
    with pytest.raises(PipelineError, match="positional arguments must come before"):
        parse_pipeline("rrf(k=60, bm25, bm25)", tiny_index)
