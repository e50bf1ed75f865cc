from __future__ import annotations

import pytest

from rankstack.errors import PipelineError, UnknownStageError
from rankstack.index import Index
from rankstack.stages import BM25, Cutoff, Pipeline, SearchContext, parse_pipeline
from rankstack.testing import check_stage_contract
from rankstack.types import Query

QUERIES = [Query("q1", "cat on a mat"), Query("q2", "loyal dogs"), Query("q3", "the of and")]


def test_bm25_passes_the_stage_contract(tiny_index: Index) -> None:
    check_stage_contract(lambda: BM25(tiny_index), QUERIES, index=tiny_index)


def test_bm25_as_a_reranker_passes_the_stage_contract(tiny_index: Index) -> None:
    candidates = BM25(tiny_index, k1=1.2, b=0.75).pipeline().transform(QUERIES)
    check_stage_contract(lambda: BM25(tiny_index), QUERIES, candidates=candidates, index=tiny_index)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("bm25", "bm25(k1=0.9,b=0.4)"),
        ("bm25 % 100", "bm25(k1=0.9,b=0.4)%100"),
        ("bm25(b=0.75, k1=1.2)%100 >> bm25%10", "bm25(k1=1.2,b=0.75)%100>>bm25(k1=0.9,b=0.4)%10"),
        ("(bm25 >> bm25(k1=2.0)) % 5", "bm25(k1=0.9,b=0.4)>>bm25(k1=2.0,b=0.4)%5"),
        ("bm25(k1='1.5')", "bm25(k1=1.5,b=0.4)"),
    ],
)
def test_canonical_string_round_trips(tiny_index: Index, text: str, canonical: str) -> None:
    pipeline = parse_pipeline(text, tiny_index)
    assert str(pipeline) == canonical
    assert str(parse_pipeline(canonical, tiny_index)) == canonical


def test_operators_build_the_same_pipeline_as_strings(tiny_index: Index) -> None:
    built = BM25(tiny_index) % 100 >> BM25(tiny_index, k1=1.2) % 10
    assert isinstance(built, Pipeline)
    assert built == parse_pipeline("bm25%100>>bm25(k1=1.2)%10", tiny_index)
    assert isinstance(built.stages[1], Cutoff)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty pipeline"),
        ("bm25(", "expected a stage name"),
        ("bm25 % 0", "positive whole number"),
        ("bm25 >> ", "expected a stage name"),
        ("bm25(k1=abc)", "k1 must be float"),
        ("bm25(k3=1)", "unknown parameter k3; accepted: k1, b"),
        ("bm25(b=2)", "0 <= b <= 1"),
        ("bm25(k1=1, k1=2)", "given twice"),
        ("bm25 bm25", "unexpected 'bm25'"),
        ("% 10", "expected a stage name"),
    ],
)
def test_bad_pipelines_are_explained(tiny_index: Index, text: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        parse_pipeline(text, tiny_index)


def test_syntax_errors_point_at_the_column(tiny_index: Index) -> None:
    with pytest.raises(PipelineError) as caught:
        parse_pipeline("bm25 % x", tiny_index)
    assert "column 8" in str(caught.value) and "^" in str(caught.value)


def test_unknown_stage_lists_the_known_ones(tiny_index: Index) -> None:
    with pytest.raises(UnknownStageError, match="unknown stage 'bm52'; known stages: .*bm25"):
        parse_pipeline("bm52", tiny_index)


def test_identical_ids_are_dropped_when_asked(tiny_index: Index) -> None:
    query = [Query("q1", "cats")]
    kept = BM25(tiny_index).pipeline().transform(query, context=SearchContext())
    dropped = BM25(tiny_index).pipeline().transform(query, context=SearchContext(ignore_identical_ids=True))
    assert "q1" in [h.doc_id for h in kept["q1"]]
    assert "q1" not in [h.doc_id for h in dropped["q1"]]
    assert len(dropped["q1"]) == len(kept["q1"]) - 1


def test_stop_word_query_has_no_hits_but_is_present(tiny_index: Index) -> None:
    run = BM25(tiny_index).pipeline().transform([Query("q", "the of and")])
    assert run.results == {"q": []}


def test_per_stage_timings_are_recorded(tiny_index: Index) -> None:
    run = (BM25(tiny_index) % 3 >> BM25(tiny_index, k1=1.2)).transform(QUERIES)
    assert list(run.stage_seconds) == ["bm25(k1=0.9,b=0.4)", "bm25(k1=1.2,b=0.4)"]
    assert all(ms >= 0 for ms in run.latency_ms().values())


def test_cutoff_pushdown_gives_the_same_top_k(tiny_index: Index) -> None:
    full = BM25(tiny_index).pipeline().transform(QUERIES)
    cut = (BM25(tiny_index) % 2).transform(QUERIES)
    for query in QUERIES:
        assert cut[query.query_id] == full[query.query_id][:2]


def test_bm25_ranks_the_matching_document_first(tiny_index: Index) -> None:
    hits = (BM25(tiny_index) % 3).search("parrot feathers")
    assert hits[0].doc_id == "d5"
