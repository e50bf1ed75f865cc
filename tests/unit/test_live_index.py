"""Live indexes: changes give exactly the scores of a fresh build; durability; one writer; compaction."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankstack.errors import DataFormatError
from rankstack.index import Index, build_index
from rankstack.index.dense import write_dense_vectors
from rankstack.index.live import IndexWriter, WriterLockedError
from rankstack.stages import BM25
from rankstack.types import Doc, Query

WORDS = "cat dog bird fish mat loyal bark swim feather bright small pet water bowl words learn".split()
KEY = "fake-encoder@fp32"
QUERIES = [Query("q1", "cat mat"), Query("q2", "loyal dog bark"), Query("q3", "bright bird feather fish"),
           Query("q4", "water water bowl"), Query("q5", "small pet")]


def fake_vectors(docs: list[Doc]) -> np.ndarray:
    """A deterministic bag-of-words 'encoder' (16-d, normalised): no model needed."""
    matrix = np.zeros((len(docs), 16), dtype=np.float32)
    for row, doc in enumerate(docs):
        for word in doc.contents.split():
            matrix[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % 16] += 1.0
        norm = np.linalg.norm(matrix[row])
        matrix[row] /= norm if norm else 1.0
    return matrix


def build_with_vectors(docs: list[Doc], path: Path) -> Index:
    build_index(docs, path, overwrite=True)
    meta = {"model": "fake-encoder", "precision": "fp32", "dimension": 16, "storage": "float32"}
    write_dense_vectors(path, KEY, meta, fake_vectors(docs))
    return Index.open(path)


def bm25_top(index: Index, k: int = 5) -> dict[str, list[tuple[str, float]]]:
    run = (BM25(index) % k).transform(QUERIES)
    return {q: [(h.doc_id, h.score) for h in hits] for q, hits in run.results.items()}


def dense_top(index: Index, k: int = 5) -> dict[str, list[tuple[str, float]]]:
    view = index.view()
    vectors = index.dense_vectors("fake-encoder", "fp32")
    queries = fake_vectors([Doc(q.query_id, q.text) for q in QUERIES])
    scores, rows = view.dense_search(vectors, queries, k, "exact", 16)
    # The dense stage orders ties by doc id; FAISS's own order among ties is not part of the contract.
    return {q.query_id: sorted(((view.doc_id_array[r], round(float(s), 6)) for s, r in zip(scores[i], rows[i],
                                                                                           strict=True) if r >= 0),
                               key=lambda hit: (-hit[1], hit[0]))
            for i, q in enumerate(QUERIES)}


def assert_same(live: dict, fresh: dict) -> None:
    for query_id in fresh:
        assert [d for d, _ in live[query_id]] == [d for d, _ in fresh[query_id]], query_id
        assert np.allclose([s for _, s in live[query_id]], [s for _, s in fresh[query_id]], atol=1e-6)


doc_ids = st.sampled_from([f"d{i}" for i in range(12)])
texts = st.lists(st.sampled_from(WORDS), min_size=0, max_size=12).map(" ".join)
operations = st.lists(st.one_of(st.tuples(st.just("put"), doc_ids, texts), st.tuples(st.just("delete"), doc_ids,
                                                                                      st.just(""))),
                      min_size=1, max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(initial=st.lists(texts, min_size=1, max_size=8), changes=operations, compact_midway=st.booleans())
def test_any_sequence_of_changes_scores_like_a_fresh_build(tmp_path_factory, initial, changes,
                                                            compact_midway) -> None:
    root = tmp_path_factory.mktemp("live")
    corpus = {f"d{i}": text for i, text in enumerate(initial)}
    index = build_with_vectors([Doc(d, t) for d, t in corpus.items()], root / "live")
    with IndexWriter(index) as writer:
        for position, (op, doc_id, text) in enumerate(changes):
            if op == "put":
                doc = Doc(doc_id, text)
                writer.add([doc], {KEY: fake_vectors([doc])})
                corpus[doc_id] = text
            else:
                report = writer.delete([doc_id])
                assert report.unknown == ([] if doc_id in corpus else [doc_id])
                corpus.pop(doc_id, None)
            if compact_midway and position == len(changes) // 2 and corpus:
                writer.compact()
    if not corpus:
        assert index.view().num_docs == 0
        return
    fresh = build_with_vectors([Doc(d, t) for d, t in corpus.items()], root / "fresh")
    assert index.num_docs == len(corpus)
    assert_same(bm25_top(index), bm25_top(fresh))
    assert_same(dense_top(index), dense_top(fresh))
    reopened = Index.open(root / "live")  # replays the log from disk
    assert_same(bm25_top(reopened), bm25_top(fresh))


def test_changes_are_visible_and_documents_readable(tmp_path: Path) -> None:
    index = build_with_vectors([Doc("a", "cat mat"), Doc("b", "dog bark")], tmp_path / "idx")
    with IndexWriter(index) as writer:
        writer.add([Doc("c", "bright bird", "Birds")], {KEY: fake_vectors([Doc("c", "bright bird")])})
        writer.add([Doc("a", "fish water")], {KEY: fake_vectors([Doc("a", "fish water")])})  # update
        assert writer.delete(["b", "zzz"]).unknown == ["zzz"]
    view = index.view()
    assert sorted(view.doc_positions) == ["a", "c"]
    assert view.get_doc("a").text == "fish water" and view.get_doc("b") is None
    assert view.get_doc("c").title == "Birds"
    assert (BM25(index) % 3).search("cat")[:] == []  # the old text of "a" is gone


def test_bad_changes_are_refused_and_change_nothing(tmp_path: Path) -> None:
    index = build_with_vectors([Doc("a", "cat mat")], tmp_path / "idx")
    with IndexWriter(index) as writer:
        with pytest.raises(DataFormatError, match="has a space .* at its start; nothing was added"):
            writer.add([Doc("ok", "x"), Doc("  ", "y")], {KEY: np.zeros((2, 16), dtype=np.float32)})
        with pytest.raises(DataFormatError, match=r"shape \(1, 8\), but the index needs \(1, 16\)"):
            writer.add([Doc("b", "dog")], {KEY: np.zeros((1, 8), dtype=np.float32)})
    assert sorted(index.view().doc_positions) == ["a"]


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    index = build_with_vectors([Doc("a", "cat")], tmp_path / "idx")
    with IndexWriter(index):
        with pytest.raises(WriterLockedError, match="another writer"):
            IndexWriter(Index.open(tmp_path / "idx"))
    IndexWriter(index).close()  # free again once the first one closed


def test_torn_log_tail_is_ignored(tmp_path: Path) -> None:
    index = build_with_vectors([Doc("a", "cat")], tmp_path / "idx")
    with IndexWriter(index) as writer:
        writer.add([Doc("b", "dog")], {KEY: fake_vectors([Doc("b", "dog")])})
    log = tmp_path / "idx" / "live" / "changes.log"
    with open(log, "ab") as handle:
        handle.write(b'0badf00d {"op":"put","doc":{"doc_id":"c"')  # a crash in mid-write
    assert sorted(Index.open(tmp_path / "idx").view().doc_positions) == ["a", "b"]
    with IndexWriter(Index.open(tmp_path / "idx")) as writer:  # the writer trims the torn tail
        writer.add([Doc("d", "fish")], {KEY: fake_vectors([Doc("d", "fish")])})
    assert sorted(Index.open(tmp_path / "idx").view().doc_positions) == ["a", "b", "d"]


def test_compaction_folds_changes_into_a_new_segment(tmp_path: Path) -> None:
    index = build_with_vectors([Doc("a", "cat mat"), Doc("b", "dog")], tmp_path / "idx")
    reader = Index.open(tmp_path / "idx")
    with IndexWriter(index) as writer:
        writer.add([Doc("c", "bird")], {KEY: fake_vectors([Doc("c", "bird")])})
        writer.delete(["a"])
        before = bm25_top(index)
        writer.compact()
    assert not (tmp_path / "idx" / "live" / "changes.log").exists() or \
        (tmp_path / "idx" / "live" / "changes.log").stat().st_size == 0
    assert Index.open(tmp_path / "idx").manifest["counts"]["docs"] == 2
    assert bm25_top(index) == before
    assert sorted(reader.view().doc_positions) == ["b", "c"]  # another reader follows the swap
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]
