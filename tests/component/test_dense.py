"""Dense retrieval with the bundled all-MiniLM-L6-v2 weights on a handful of documents."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sentence_transformers", reason="the dense extra is not installed")
pytest.importorskip("faiss", reason="the dense extra is not installed")

from rankstack.index import Index, build_index  # noqa: E402
from rankstack.index.dense import DenseVectors, HnswParams, build_dense  # noqa: E402
from rankstack.models.encoder import load_encoder  # noqa: E402
from rankstack.models.loading import ModelLoadError  # noqa: E402
from rankstack.stages import SearchContext  # noqa: E402
from rankstack.stages.dense import Dense  # noqa: E402
from rankstack.testing import check_stage_contract  # noqa: E402
from rankstack.types import Doc, Query  # noqa: E402

QUERIES = [Query("q1", "a cat sitting on a mat"), Query("q2", "loyal dogs"), Query("q3", "bright feathers")]


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("default", precision="fp32")


@pytest.fixture
def dense_index(tiny_index: Index, encoder) -> Index:
    build_dense(tiny_index, encoder, shard_size=2)
    tiny_index.reload_manifest()
    return tiny_index


def test_dense_retrieval_passes_the_stage_contract(dense_index: Index) -> None:
    check_stage_contract(lambda: Dense(dense_index, precision="fp32"), QUERIES, index=dense_index)
    hits = (Dense(dense_index, precision="fp32") % 2).search("parrot plumage")
    assert hits[0].doc_id == "d5"


def test_dense_rescoring_passes_the_contract_with_and_without_stored_vectors(tiny_index: Index, encoder) -> None:
    from rankstack.stages import BM25

    candidates = BM25(tiny_index).pipeline().transform(QUERIES)
    check_stage_contract(lambda: Dense(tiny_index, precision="fp32"), QUERIES, candidates, index=tiny_index)
    on_the_fly = Dense(tiny_index, precision="fp32").pipeline().transform(QUERIES, candidates)
    build_dense(tiny_index, encoder)
    tiny_index.reload_manifest()
    stored = Dense(tiny_index, precision="fp32").pipeline().transform(QUERIES, candidates)
    for query in QUERIES:
        assert [h.doc_id for h in stored[query.query_id]] == [h.doc_id for h in on_the_fly[query.query_id]]
        assert np.allclose(stored[query.query_id].scores, on_the_fly[query.query_id].scores, atol=1e-5)


def test_manifest_records_the_vectors(dense_index: Index) -> None:
    entry = dense_index.manifest["dense"]["sentence-transformers/all-MiniLM-L6-v2@fp32"]
    assert entry["dimension"] == 384 and entry["storage"] == "float32"
    assert any(name.startswith(entry["dir"]) for name in dense_index.manifest["files"])
    assert Index.open(dense_index.path).dense_keys() == ["sentence-transformers/all-MiniLM-L6-v2@fp32"]


def test_interrupted_encoding_resumes_from_finished_shards(tiny_index: Index, encoder, monkeypatch) -> None:
    calls = {"n": 0}

    def stop_after_two_shards(_: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dense(tiny_index, encoder, shard_size=2, progress=stop_after_two_shards)
    building = tiny_index.path / "dense" / "sentence-transformers--all-MiniLM-L6-v2--fp32.building"
    assert len(list(building.glob("shard-*.npy"))) == 2
    assert Index.open(tiny_index.path).dense_keys() == []  # nothing half-written is visible

    encoded: list[int] = []
    original = encoder.encode_docs
    monkeypatch.setattr(encoder, "encode_docs", lambda texts, report=None: encoded.append(len(texts))
                        or original(texts, report))
    build_dense(tiny_index, encoder, shard_size=2)
    assert encoded == [2]  # only the third shard of six documents was encoded again
    tiny_index.reload_manifest()
    resumed = tiny_index.dense_vectors(encoder.model_id, "fp32").vectors
    fresh = encoder.encode_docs([d.contents for d in tiny_index.docstore.range(0, 6)])
    assert np.allclose(resumed, fresh, atol=1e-5)
    assert not building.exists()


@pytest.mark.parametrize(("storage", "tolerance"), [("float16", 1e-3), ("int8", 2e-2)])
def test_compact_storage_stays_close(tiny_index: Index, encoder, storage: str, tolerance: float) -> None:
    directory = build_dense(tiny_index, encoder, storage=storage, hnsw=HnswParams(m=8, ef_construction=40))
    vectors = DenseVectors(directory)
    exact = encoder.encode_docs([d.contents for d in tiny_index.docstore.range(0, 6)])
    assert np.abs(vectors.vectors - exact).max() < tolerance
    scores, rows = vectors.search(encoder.encode_queries(["cat"]), 3, method="hnsw")
    assert rows.shape == (1, 3) and (rows >= 0).all()


def test_dimension_mismatch_is_refused(dense_index: Index) -> None:
    class Wide:
        dimension = 768
        model_id = "some/wide-model"

    vectors = dense_index.dense_vectors("sentence-transformers/all-MiniLM-L6-v2", "fp32")
    with pytest.raises(Exception, match="dimension 384, but the model loaded now produces 768"):
        vectors.check_encoder(Wide())


def test_missing_vectors_say_how_to_add_them(tiny_index: Index) -> None:
    with pytest.raises(Exception, match="has no vectors for 'sentence-transformers/all-MiniLM-L6-v2'.*--dense"):
        Dense(tiny_index, precision="fp32").pipeline().transform(QUERIES)


def test_unknown_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="model directory ./no/such/model does not exist"):
        load_encoder("./no/such/model")
    with pytest.raises(ModelLoadError, match="could not load model 'no-such-org/no-such-model-xyz'"):
        load_encoder("no-such-org/no-such-model-xyz")


def test_empty_and_long_documents(encoder, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    long_text = "word " * 2000
    index = Index.open(build_index([Doc("empty", ""), Doc("long", long_text), Doc("ok", "short text")],
                                   tmp_path / "idx"))
    with caplog.at_level(logging.WARNING):
        build_dense(index, encoder)
    assert "1 of 3 documents were longer than the model's 256-token window" in caplog.text
    index.reload_manifest()
    vectors = index.dense_vectors(encoder.model_id, "fp32").vectors
    assert vectors.shape == (3, 384) and np.isfinite(vectors).all()


def test_dense_prf_moves_the_query_towards_its_feedback_documents(dense_index: Index, encoder) -> None:
    from rankstack.stages import parse_pipeline
    from rankstack.stages.prf import DensePRF

    query = Query("q", "parrot plumage")
    first = (Dense(dense_index, precision="fp32") % 1).transform([query])
    top = first.results["q"][0].doc_id
    prf = DensePRF(dense_index, fb_docs=1, alpha=1.0, beta=0.5, precision="fp32")
    expanded = prf.transform([query], first, SearchContext()).expanded["q"]
    stored = dense_index.dense_vectors(prf.model, "fp32")
    document = dense_index.view().dense_rows(stored, [dense_index.doc_positions[top]])[0]
    assert np.allclose(expanded.vector, encoder.encode_queries(["parrot plumage"])[0] + 0.5 * document, atol=1e-5)
    pipeline = parse_pipeline("dense(precision=fp32)>>dense_prf(fb_docs=1,precision=fp32)>>dense(precision=fp32)",
                              dense_index)
    check_stage_contract(lambda: pipeline, QUERIES, index=dense_index)
    assert pipeline.search("parrot plumage")[0].doc_id == top  # feedback from the top hit keeps it on top
