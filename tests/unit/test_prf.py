"""Pseudo-relevance feedback: Anserini's RM3 / Rocchio arithmetic, the stages, live indexes, bad pipelines."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rankstack.errors import PipelineError
from rankstack.index import Index, build_index
from rankstack.index.live import IndexWriter
from rankstack.stages import BM25, SearchContext, parse_pipeline
from rankstack.stages.prf import RM3, Rocchio
from rankstack.text.feedback import TermFilter, prune, rm3_weights, rocchio_weights
from rankstack.types import Doc, Query

KEEP_ALL = TermFilter(lambda term: 1, num_docs=100, english_only=True)

# 20 documents, so that a feedback term may occur in at most 2 of them (Anserini's 10% cut).
FILLER = ["apple orchard", "river delta", "copper wire", "violin bow", "glacier ice", "desert dune", "harbor crane",
          "pepper sauce", "marble statue", "comet tail", "velvet curtain", "lantern oil", "walnut shell",
          "thunder storm", "cactus spine", "saddle leather"]
DOCS = [Doc("d1", "zebra stripes on the savanna"), Doc("d2", "zebra stripes grazing on the savanna"),
        Doc("d3", "herds grazing on the savanna"), Doc("d4", "savanna sunset"),
        *[Doc(f"f{i:02d}", text) for i, text in enumerate(FILLER)]]


@pytest.fixture
def savanna(tmp_path: Path) -> Index:
    index = Index.open(build_index(DOCS, tmp_path / "idx"))
    yield index
    index.close()


def test_rm3_weights_follow_the_relevance_model_by_hand() -> None:
    feedback = [({"alpha": 2, "beta": 1}, 2.0), ({"beta": 1, "gamma": 1}, 1.0)]
    weights = rm3_weights(["alpha"], feedback, KEEP_ALL, fb_terms=10, original_weight=0.5)
    # relevance model: alpha 2/3*2, beta 1/3*2 + 1/2*1, gamma 1/2*1, then L1-normalised (sum 3)
    assert weights["alpha"] == pytest.approx(0.5 * 1.0 + 0.5 * (4 / 3) / 3, rel=1e-6)
    assert weights["beta"] == pytest.approx(0.5 * (7 / 6) / 3, rel=1e-6)
    assert weights["gamma"] == pytest.approx(0.5 * 0.5 / 3, rel=1e-6)
    assert sum(weights.values()) == pytest.approx(1.0, rel=1e-6)


def test_ties_are_broken_by_the_term_as_in_anserini() -> None:
    assert list(prune({"zeta": 1.0, "eta": 1.0, "beta": 1.0, "omega": 2.0}, 2)) == ["omega", "beta"]
    weights = rm3_weights(["q"], [({"zeta": 1, "eta": 1}, 1.0)], KEEP_ALL, fb_terms=1, original_weight=0.5)
    assert set(weights) == {"q", "eta"}


def test_feedback_terms_are_filtered_like_anserini() -> None:
    keep = TermFilter(lambda term: 30 if term == "common" else 1, num_docs=100, english_only=True)
    feedback = [({"x": 5, "héllo": 5, "common": 5, "a" * 21: 5, "rare": 1}, 1.0)]
    assert set(rm3_weights(["q"], feedback, keep, fb_terms=10, original_weight=0.5)) == {"q", "rare"}
    # Rocchio keeps non-English terms (Anserini has no such filter there) but not the others
    keep_any_script = TermFilter(lambda term: 30 if term == "common" else 1, num_docs=100, english_only=False)
    assert set(rocchio_weights(["q"], [feedback[0][0]], keep_any_script, fb_terms=10, alpha=1.0, beta=0.75)) == \
        {"q", "héllo", "rare"}


def test_rocchio_mixes_the_normalised_query_and_mean_document() -> None:
    weights = rocchio_weights(["aa", "aa"], [{"aa": 3, "bb": 4}], KEEP_ALL, fb_terms=10, alpha=1.0, beta=0.5)
    assert weights["aa"] == pytest.approx(1.0 + 0.5 * 0.6, rel=1e-6)
    assert weights["bb"] == pytest.approx(0.5 * 0.8, rel=1e-6)


def test_rm3_finds_documents_that_share_no_word_with_the_query(savanna: Index) -> None:
    plain = parse_pipeline("bm25", savanna).search("zebra")
    expanded = parse_pipeline("bm25>>rm3(fb_docs=2)>>bm25", savanna).search("zebra")
    assert [h.doc_id for h in plain] == ["d1", "d2"] or [h.doc_id for h in plain] == ["d2", "d1"]
    assert "d3" in [h.doc_id for h in expanded]  # via "grazing", a feedback term of d2
    assert {h.doc_id for h in expanded[:2]} == {"d1", "d2"}  # the feedback documents stay on top


def test_feedback_skips_terms_in_more_than_a_tenth_of_the_documents(savanna: Index) -> None:
    first = BM25(savanna).pipeline().transform([Query("q", "zebra")])
    run = RM3(savanna, fb_docs=2).transform([Query("q", "zebra")], first, SearchContext())
    terms = run.expanded["q"].terms
    assert terms is not None and "stripe" in terms and "graze" in terms
    assert "savanna" not in terms  # in 4 of 20 documents


def test_the_stage_before_is_asked_only_for_the_feedback_documents(savanna: Index) -> None:
    pipeline = parse_pipeline("bm25>>rocchio(fb_docs=3)>>bm25", savanna)
    assert pipeline.stages[1].candidates_needed() == 3
    assert isinstance(pipeline.stages[1], Rocchio)


def test_feedback_reads_live_changes(savanna: Index) -> None:
    with IndexWriter(savanna) as writer:
        writer.add([Doc("d5", "zebra foals grazing")])
        writer.delete(["d2"])
    view = savanna.view()
    assert view.term_vectors([view.doc_positions["d5"]]) == [{"zebra": 1, "foal": 1, "graze": 1}]
    assert view.doc_freq("zebra") == 2 and view.doc_freq("stripe") == 1  # d5 counted, d2 no longer
    hits = [h.doc_id for h in parse_pipeline("bm25>>rm3(fb_docs=2)>>bm25", savanna).search("zebra")]
    assert "d2" not in hits and {"d1", "d5", "d3"} <= set(hits)


def test_no_feedback_documents_falls_back_to_the_query_with_a_counted_warning(savanna: Index, caplog) -> None:
    pipeline = parse_pipeline("bm25>>rm3>>bm25", savanna)
    with caplog.at_level(logging.WARNING, logger="rankstack.stages.prf"):
        run = pipeline.transform([Query("q1", "unicorn"), Query("q2", "zebra")])
    assert len(run.results["q1"]) == 0 and len(run.results["q2"]) >= 2
    assert "1 of 2 queries had no feedback documents" in caplog.text


@pytest.mark.parametrize(("text", "message"), [
    ("rm3", "cannot start a pipeline; write e.g. bm25>>rm3>>bm25"),
    ("bm25>>rm3", "but nothing follows"),
    ("bm25>>rocchio>>bm25>>rm3%5", "but 'cutoff"),
    ("bm25>>rm3>>dense", "rewrites the query for a bm25 stage right after it"),
    ("rrf(bm25>>rm3, bm25)", "but nothing follows"),
    ("bm25>>rm3(fb_docs=0)>>bm25", "fb_docs must be between 1 and 1000"),
    ("bm25>>rocchio(fb_terms=100000)>>bm25", "fb_terms must be between 1 and 1000"),
    ("bm25>>rocchio(beta=-1.0)>>bm25", "beta must be between 0 and 100"),
    ("bm25>>rm3(original_weight=1.5)>>bm25", "original_weight must be between 0 and 1"),
    ("dense>>dense_prf(model=other)>>dense", "give both the same model="),
])
def test_misplaced_or_misconfigured_feedback_is_refused(savanna: Index, text: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace(")", r"\)").replace("'", "'")):
        parse_pipeline(text, savanna)


def test_canonical_strings_round_trip(savanna: Index) -> None:
    text = "bm25(k1=0.9,b=0.4)>>rm3(fb_docs=5,fb_terms=20,original_weight=0.3,filter_terms=true)>>bm25(k1=0.9,b=0.4)"
    assert str(parse_pipeline(text, savanna)) == text


@pytest.mark.parametrize("text", ["bm25>>rm3(fb_docs=2)>>bm25", "bm25>>rocchio(fb_docs=3)>>bm25"])
def test_feedback_pipelines_pass_the_stage_contract(savanna: Index, text: str) -> None:
    from rankstack.testing import check_stage_contract

    queries = [Query("q1", "zebra"), Query("q2", "grazing herds"), Query("q3", "unicorn")]
    check_stage_contract(lambda: parse_pipeline(text, savanna), queries, index=savanna)
