"""SPLADE: training mechanics, impacts in the index, the stage, live changes and bad inputs, on tiny models.

The models are built here: a one-layer BERT with a tiny vocabulary (the words of the tiny collection)
whose word embeddings are one-hot and whose other weights are near zero, so that its SPLADE weights are
lexical (a text activates its own tokens) and the retrieval properties below are exact, not luck.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from rankstack.errors import ModelLoadError, PipelineError, RankstackError
from rankstack.index import Index
from rankstack.index.live import IndexWriter
from rankstack.stages import SearchContext, parse_pipeline
from rankstack.types import Doc, Query
from tests.conftest import TINY_DOCS, TINY_QUERIES

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")


def _vocabulary(extra: tuple[str, ...] = ()) -> list[str]:
    words = {w for row in TINY_DOCS + TINY_QUERIES for w in re.findall(r"[a-z]+|[^\sa-z]", (row.get("title", "") + " "
                                                                                             + row["text"]).lower())}
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words | set(extra))]


def _lexical_bert(directory: Path, extra: tuple[str, ...] = ()) -> Path:
    """A plain BertModel checkpoint (no MLM head, like the bundled MiniLM) with one-hot word embeddings."""
    vocab = _vocabulary(extra)
    directory.mkdir(parents=True)
    tokenizer = transformers.BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True)
    hidden = 4 * ((len(vocab) + 8) // 4)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=16, max_position_embeddings=64,
                                     initializer_range=1e-4)
    torch.manual_seed(0)
    model = transformers.BertModel(config)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.copy_(torch.eye(len(vocab), hidden) * 4.0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def splade_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rankstack.train.sparse import build_splade_model

    base = _lexical_bert(tmp_path_factory.mktemp("bert") / "base")
    output = tmp_path_factory.mktemp("splade") / "model"
    build_splade_model(str(base), max_length=32, head_bias=-1.0).save(str(output))
    return output


def _search(index: Index, pipeline: str, text: str, k: int = 10) -> list[str]:
    parsed = parse_pipeline(pipeline, index)
    parsed.prepare(None)
    return [h.doc_id for h in (parsed % k).transform([Query("q", text)], context=SearchContext()).results["q"]]


def test_the_lexical_model_activates_a_texts_own_terms(splade_dir: Path) -> None:
    from rankstack.models.splade import SpladeEncoder

    encoder = SpladeEncoder(str(splade_dir))
    weights = encoder.encode_queries(["parrot feathers"])
    terms = {t for t, _ in encoder.decode(weights[0], top_k=50)}
    assert {"parrot", "feathers"} <= terms
    assert "goldfish" not in terms and "dog" not in terms


def test_stage_builds_impacts_on_first_use_and_ranks_the_matching_doc_first(tiny_index: Index,
                                                                             splade_dir: Path) -> None:
    pipeline = f"splade(model={splade_dir})"
    assert _search(tiny_index, pipeline, "goldfish bowl")[0] == "d4"  # shares terms with d4 only
    assert _search(tiny_index, pipeline, "parrot feathers")[0] == "d5"
    entry = tiny_index.manifest["splade"][str(splade_dir)]
    files = [f for f in tiny_index.manifest["files"] if f.startswith(entry["dir"] + "/")]
    assert sorted(Path(f).name for f in files) == ["doc_indices.npy", "impacts.npy", "meta.json", "term_indptr.npy"]
    reopened = Index.open(tiny_index.path)  # checksums verified
    impacts = reopened.splade_impacts(str(splade_dir))
    assert impacts is not None and impacts.matrix.shape[0] == reopened.num_docs
    assert np.load(reopened.path / entry["dir"] / "impacts.npy").dtype == np.uint8
    # The canonical string round-trips, and the stage fuses with BM25.
    assert str(parse_pipeline(pipeline, tiny_index)) == pipeline
    fused = f"linear(bm25,{pipeline},norm=zscore)"
    canonical = str(parse_pipeline(fused, tiny_index))
    assert pipeline in canonical and str(parse_pipeline(canonical, tiny_index)) == canonical
    assert _search(tiny_index, fused, "parrot feathers")[0] == "d5"
    from rankstack.serve.service import SearchService

    service = SearchService.open(tiny_index)  # the service offers SPLADE once the index has impacts
    assert pipeline in service.presets and service.pipeline(fused).search("parrot feathers")[0].doc_id == "d5"


def test_quantised_scores_rank_as_the_float_weights_do(tiny_index: Index, splade_dir: Path) -> None:
    from rankstack.models.splade import SpladeEncoder

    encoder = SpladeEncoder(str(splade_dir))
    view = tiny_index.view()
    docs = view.get_docs(list(view.doc_id_array))
    doc_weights = encoder.encode_docs([docs[d].contents for d in view.doc_id_array])
    pipeline = parse_pipeline(f"splade(model={splade_dir})", tiny_index)
    pipeline.prepare(None)
    impacts = tiny_index.splade_impacts(str(splade_dir))
    assert impacts is not None
    for query in TINY_QUERIES:
        query_weights = encoder.encode_queries([query["text"]])
        exact = dict(zip(view.doc_id_array, np.asarray((doc_weights @ query_weights.T).todense()).ravel(),
                         strict=True))
        hits = pipeline.transform([Query("q", query["text"])], context=SearchContext()).results["q"]
        quantised = {h.doc_id: h.score for h in hits}
        assert set(quantised) == {d for d, score in exact.items() if score > 0}
        # Each stored weight is off by at most half a step (a whole one when rounded up to 1).
        bound = impacts.scale * float(query_weights.sum())
        assert all(abs(quantised[d] - exact[d]) <= bound for d in quantised)
        for a in quantised:  # pairs the rounding cannot swap keep their order
            for b in quantised:
                if exact[a] > exact[b] + 2 * bound:
                    assert quantised[a] > quantised[b]
        assert hits[0].doc_id == max(exact, key=lambda d: (exact[d], -int(view.doc_id_ranks[list(
            view.doc_id_array).index(d)])))


def test_live_additions_are_encoded_and_deletions_never_returned(tiny_index: Index, splade_dir: Path) -> None:
    pipeline = f"splade(model={splade_dir})"
    assert _search(tiny_index, pipeline, "parrot feathers")[0] == "d5"
    with IndexWriter(tiny_index) as writer:
        writer.add([Doc("d9", "parrot parrot feathers feathers bright parrots learn words", "Parrot feathers")])
        writer.delete(["d5"])
    hits = _search(tiny_index, pipeline, "parrot feathers")
    assert hits[0] == "d9" and "d5" not in hits
    assert _search(tiny_index, f"bm25%5>>{pipeline}", "parrot feathers")[0] == "d9"  # re-scoring sees it too
    with IndexWriter(tiny_index) as writer:  # a compaction carries the impacts into the new segment
        writer.compact()
    impacts = tiny_index.splade_impacts(str(splade_dir))
    assert impacts is not None and impacts.num_docs == tiny_index.segment.num_docs == tiny_index.num_docs
    assert _search(tiny_index, pipeline, "parrot feathers") == hits


def test_rescoring_without_stored_impacts_encodes_the_candidates(tiny_index: Index, splade_dir: Path) -> None:
    hits = (parse_pipeline(f"bm25%5>>splade(model={splade_dir})", tiny_index)).search("loyal dogs")
    assert hits[0].doc_id == "d2" and "splade" not in tiny_index.manifest


def test_a_model_without_a_sparse_head_is_refused_with_the_fix(tiny_index: Index, tmp_path: Path) -> None:
    bi_encoder = tmp_path / "bi-encoder"
    bi_encoder.mkdir()
    (bi_encoder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    with pytest.raises(ModelLoadError, match="no sparse head.*rankstack train sparse"):
        _search(tiny_index, f"splade(model={bi_encoder})", "cats")
    with pytest.raises(PipelineError, match="splade needs a SPLADE model"):
        parse_pipeline("splade", tiny_index)


def test_missing_impacts_and_a_vocabulary_mismatch_name_the_fix(tiny_index: Index, splade_dir: Path,
                                                                tmp_path: Path) -> None:
    from rankstack.models.splade import SpladeEncoder
    from rankstack.train.sparse import build_splade_model

    with pytest.raises(RankstackError, match="no SPLADE impacts.*--sparse"):
        parse_pipeline(f"splade(model={splade_dir})", tiny_index).search("cats")  # not prepared: nothing built
    _search(tiny_index, f"splade(model={splade_dir})", "cats")
    other_dir = tmp_path / "other"
    build_splade_model(str(_lexical_bert(tmp_path / "other-base", extra=("zebra",))), 32, -1.0).save(str(other_dir))
    impacts = tiny_index.splade_impacts(str(splade_dir))
    assert impacts is not None
    with pytest.raises(RankstackError, match="vocabulary.*rankstack index CORPUS"):
        impacts.check_encoder(SpladeEncoder(str(other_dir)), tiny_index.path)


def test_training_a_few_steps_saves_a_loadable_splade_model(tiny_beir: Path, tiny_index: Index,
                                                            tmp_path: Path) -> None:
    from rankstack.models.splade import SpladeEncoder
    from rankstack.train.arguments import SparseTraining
    from rankstack.train.sparse import train_sparse

    base = _lexical_bert(tmp_path / "base")
    output = tmp_path / "trained"
    card = train_sparse(tiny_beir, output, tiny_index,
                        SparseTraining(base=str(base), split="test", max_steps=2, batch_size=2, max_length=32,
                                       dev_fraction=0.5, dev_depth=3, head_bias=-1.0, save_steps=1))
    assert card["kind"] == "splade" and card["dev_ndcg@10"]["fine_tuned"] is not None
    assert json.loads((output / "rankstack_training.json").read_text())["data"]["dev_queries"] >= 1
    assert "SpladePooling" in (output / "modules.json").read_text()
    assert not (tmp_path / ".trained.checkpoints").exists()
    weights = SpladeEncoder(str(output)).encode_docs(["parrot feathers"])
    assert weights.shape[0] == 1 and weights.nnz > 0


def test_training_with_a_teacher_fits_its_margins_and_refuses_a_bi_encoder_teacher(
        tiny_beir: Path, tiny_index: Index, tmp_path: Path) -> None:
    from rankstack.train.arguments import SparseTraining
    from rankstack.train.sparse import train_sparse
    from tests.component._distillation import check_teacher_distillation

    settings = dict(base=str(_lexical_bert(tmp_path / "base")), split="test", max_steps=2, batch_size=2,
                    max_length=32, dev_fraction=0.5, dev_depth=3, head_bias=-1.0, negatives=2, device="cpu")
    card = check_teacher_distillation(train_sparse, SparseTraining, settings, tiny_beir, tiny_index, tmp_path,
                                      loss="SparseMarginMSELoss", documents_per_example=3)
    assert card["data"]["negatives_per_example"] == 2


def test_the_margin_loss_is_logged_apart_and_moves_with_the_teachers_margins(splade_dir: Path) -> None:
    from sentence_transformers import SparseEncoder

    from rankstack.train.sparse import _ranking_loss

    model = SparseEncoder(str(splade_dir), device="cpu")
    loss = _ranking_loss(model, distil_weight=2.0, with_teacher=True)
    texts = (["parrot feathers", "river boat"], ["parrot feathers bright", "river boat trip"],
             ["stock market", "parrot feathers"])
    embeddings = [model.encode_document(list(t), convert_to_tensor=True, convert_to_sparse_tensor=False)
                  for t in texts]
    agreeing = loss.compute_loss_from_embeddings(embeddings, torch.tensor([[5.0, 0.0], [5.0, 0.0]]))
    assert set(agreeing) == {"contrastive_loss", "margin_mse_loss"}
    margins = [float(torch.dot(embeddings[0][i], embeddings[1][i] - embeddings[2][i])) for i in range(2)]
    expected = 2.0 * float(np.mean([(m - 5.0) ** 2 for m in margins]))
    assert float(agreeing["margin_mse_loss"]) == pytest.approx(expected, rel=1e-4)
    plain = _ranking_loss(model, distil_weight=2.0, with_teacher=False)
    assert float(plain.compute_loss_from_embeddings(embeddings, None)) == pytest.approx(
        float(agreeing["contrastive_loss"]), rel=1e-5)


def test_inference_free_queries_train_and_search_without_the_transformer(tiny_beir: Path, tiny_index: Index,
                                                                         tmp_path: Path) -> None:
    from rankstack.models.splade import SpladeEncoder
    from rankstack.train.arguments import SparseTraining
    from rankstack.train.sparse import train_sparse

    output = tmp_path / "free"
    card = train_sparse(tiny_beir, output, tiny_index,
                        SparseTraining(base=str(_lexical_bert(tmp_path / "base")), split="test", max_steps=2,
                                       batch_size=2, max_length=32, dev_fraction=0.5, dev_depth=3, head_bias=-1.0,
                                       inference_free_queries=True))
    assert card["parameters"]["inference_free_queries"] is True
    encoder = SpladeEncoder(str(output))
    assert encoder.inference_free_queries
    weights = encoder.encode_queries(["parrot feathers"])
    assert {t for t, _ in encoder.decode(weights[0])} >= {"parrot", "feathers"}  # the query's own tokens
    assert _search(tiny_index, f"splade(model={output})", "parrot feathers")[0] == "d5"


def test_an_interrupted_impact_build_resumes_without_encoding_finished_chunks(tiny_index: Index,
                                                                              splade_dir: Path) -> None:
    from rankstack.index.splade import SpladeImpacts, build_splade
    from rankstack.models.splade import SpladeEncoder

    class Counting(SpladeEncoder):
        encoded: list[int] = []
        stop_after: int | None = None

        def encode_docs(self, texts, report=None):  # type: ignore[no-untyped-def, override]
            if self.stop_after is not None and len(self.encoded) >= self.stop_after:
                raise KeyboardInterrupt
            self.encoded.append(len(texts))
            return super().encode_docs(texts, report)

    encoder = Counting(str(splade_dir))
    encoder.stop_after = 1
    with pytest.raises(KeyboardInterrupt):
        build_splade(tiny_index, encoder, chunk=2)
    building = list((tiny_index.path / "splade").glob("*.building"))
    assert len(building) == 1 and sorted(p.name for p in building[0].glob("chunk-*")) == ["chunk-000000.npz"]
    assert "splade" not in tiny_index.manifest  # nothing half-written is listed
    encoder.stop_after = None
    final = build_splade(tiny_index, encoder, chunk=2)
    assert encoder.encoded == [2, 2, 2]  # the first chunk once, then only the two left
    assert not list((tiny_index.path / "splade").glob("*.building"))
    resumed = SpladeImpacts.load(final).matrix.toarray()
    clean = Counting(str(splade_dir))
    clean.encoded = []
    again = SpladeImpacts.load(build_splade(tiny_index, clean, chunk=6)).matrix.toarray()
    assert clean.encoded == [6] and np.array_equal(resumed, again)


def test_a_compaction_rescales_when_an_added_document_outweighs_every_stored_one(
        tiny_index: Index, splade_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rankstack.models.splade as splade_models

    pipeline = f"splade(model={splade_dir})"
    _search(tiny_index, pipeline, "parrot")  # stores the impacts
    before = tiny_index.splade_impacts(str(splade_dir))
    assert before is not None
    old_d5 = before.matrix.tocsr()[list(tiny_index.segment.doc_id_array).index("d5")].toarray() * before.scale
    loaded = splade_models.load_splade(str(splade_dir))

    class Heavier:  # the compaction's encoder weighs the added document three times as much as any stored one
        def encode_docs(self, texts, windows=None):  # type: ignore[no-untyped-def]
            return loaded.encode_docs(texts, windows=windows) * 3.0

    monkeypatch.setattr(splade_models, "load_splade", lambda model: Heavier())
    text = "parrot feathers bright"
    weights = Heavier().encode_docs([text])
    assert float(weights.data.max()) > before.scale * 255
    with IndexWriter(tiny_index) as writer:
        writer.add([Doc("d9", text)])
        writer.compact()
    after = tiny_index.splade_impacts(str(splade_dir))
    assert after is not None and after.scale == pytest.approx(float(weights.data.max()) / 255)
    row = after.matrix.tocsr()[list(tiny_index.segment.doc_id_array).index("d9")]
    assert row.max() == 255  # its largest weight is kept, not clipped to the old scale's maximum
    assert np.allclose(np.sort(row.data) * after.scale, np.sort(weights.data), atol=after.scale / 2 + 1e-6)
    new_d5 = after.matrix.tocsr()[list(tiny_index.segment.doc_id_array).index("d5")].toarray() * after.scale
    assert np.allclose(new_d5, old_d5, atol=after.scale / 2 + 1e-6)  # stored ones re-quantised on the new steps


def test_a_long_document_is_encoded_in_windows_whose_weights_are_max_pooled(splade_dir: Path) -> None:
    from rankstack.models.encoder import TruncationReport
    from rankstack.models.splade import SpladeEncoder

    encoder = SpladeEncoder(str(splade_dir))  # a 32-token window: 30 words and [CLS], [SEP]
    words = ["dog"] * 40 + ["parrot"]  # the parrot comes after the first window
    text = " ".join(words)
    column = encoder.vocab.index("parrot")
    cut, report_cut = encoder.encode_docs([text], TruncationReport(), windows=1), TruncationReport()
    encoder.encode_docs([text], report_cut, windows=1)
    whole, report_whole = encoder.encode_docs([text], windows=2), TruncationReport()
    encoder.encode_docs([text], report_whole, windows=2)
    assert cut[0, column] == 0 and whole[0, column] > 0  # the late term is kept only with a second window
    assert report_cut.truncated == 1 and report_whole.truncated == 0
    first = cut.toarray()[0]
    assert np.all(whole.toarray()[0] >= first - 1e-6)  # the first window is the truncated text: max keeps it
    assert encoder.encode_docs([" ".join(["dog"] * 70 + ["parrot"])], windows=2)[0, column] == 0  # cut after 2
    short = ["parrot feathers", "a dog barks"]  # one window each: the same rows whatever the limit
    assert np.allclose(encoder.encode_docs(short, windows=1).toarray(), encoder.encode_docs(short, windows=4).toarray())
    with pytest.raises(ValueError, match="at least 1"):
        SpladeEncoder(str(splade_dir), document_windows=0)


def test_impacts_record_their_windows_and_added_documents_are_encoded_the_same_way(
        tiny_index: Index, splade_dir: Path) -> None:
    from rankstack.index.splade import build_splade
    from rankstack.models.splade import SpladeEncoder

    build_splade(tiny_index, SpladeEncoder(str(splade_dir), document_windows=3))
    tiny_index.reload_manifest()
    impacts = tiny_index.splade_impacts(str(splade_dir))
    assert impacts is not None and impacts.meta["document_windows"] == 3
    late = " ".join(["dog"] * 40 + ["goldfish"])  # the loaded encoder's default would cut the goldfish off
    with IndexWriter(tiny_index) as writer:
        writer.add([Doc("d9", late)])
    hits = _search(tiny_index, f"splade(model={splade_dir})", "goldfish")
    assert "d9" in hits


def test_inference_free_queries_start_from_the_collections_idf(tmp_path: Path) -> None:
    from rankstack.train.sparse import build_splade_model, corpus_idf

    base = _lexical_bert(tmp_path / "base", extra=("beak", "song", "green", "unseen"))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(base))
    texts = ["parrot feathers", "parrot beak", "parrot song", "green feathers"]
    idf = corpus_idf(tokenizer, texts)
    vocab = tokenizer.get_vocab()
    # BM25's idf: parrot in 3 of 4 texts, feathers in 2, beak in 1, a word in none the most.
    for word, df in (("parrot", 3), ("feathers", 2), ("beak", 1), ("unseen", 0)):
        assert float(idf[vocab[word]]) == pytest.approx(np.log1p((4 - df + 0.5) / (df + 0.5)), rel=1e-6)
    assert float(idf[vocab["[CLS]"]]) == 0.0 and float(idf[vocab["[PAD]"]]) == 0.0
    model = build_splade_model(str(base), max_length=32, head_bias=-1.0, inference_free_queries=True,
                               query_weights=idf)
    query = model.encode_query(["parrot beak"], convert_to_tensor=True).to_dense()[0]
    assert float(query[vocab["beak"]]) > float(query[vocab["parrot"]]) > 0.0
    assert int((query > 0).sum()) == 2  # the query's own tokens, nothing else
