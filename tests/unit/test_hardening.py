"""Hostile and careless input: ids, pipelines, qrels, indexes eval must not touch, server errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rankstack.errors import DataFormatError, DiskFullError, PipelineError, WriterLockedError
from rankstack.ids import id_from_path, id_problem
from rankstack.index import Index, build_index
from rankstack.index.live import IndexWriter
from rankstack.io import read_corpus, read_qrels, read_queries, read_run, write_run
from rankstack.stages import parse_pipeline
from rankstack.types import Doc, Run
from tests.conftest import write_jsonl
from tests.unit.test_cli import invoke


# --- one rule for ids ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", " 1", "1 ", "a b", "a\tb", "a\nb", "a\x00b", "x" * 1001, "\u00a0x", ".", ".."])
def test_ids_breaking_the_rule_are_refused(bad: str) -> None:
    assert id_problem(bad) is not None


@pytest.mark.parametrize("good", ["1", "MED-10", "doc/1", "../x", "é", "a,b;c", "x" * 1000])
def test_ids_within_the_rule_are_kept_byte_for_byte(good: str) -> None:
    assert id_problem(good) is None


def test_readers_refuse_an_id_with_surrounding_whitespace_naming_file_and_line(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "1", "text": "a"}, {"_id": " 1", "text": "b"}])
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:2: document id ' 1' has a space .* at its start"):
        list(read_corpus(corpus))
    tsv = tmp_path / "docs.tsv"
    tsv.write_text("1\tfirst\n2 \tsecond\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"docs\.tsv:2: document id '2 ' has a space"):
        list(read_corpus(tsv))
    queries = write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q\t1", "text": "x"}])
    with pytest.raises(DataFormatError, match=r"queries\.jsonl:1: query id 'q\\t1'"):
        read_queries(queries)


def test_folder_corpus_ids_encode_spaces_so_they_stay_valid(tmp_path: Path) -> None:
    (tmp_path / "My Notes").mkdir()
    (tmp_path / "My Notes" / "a b.md").write_text("# Title\nbody", encoding="utf-8")
    (tmp_path / "100%.txt").write_text("percent", encoding="utf-8")
    ids = sorted(doc.doc_id for doc in read_corpus(tmp_path))
    assert ids == ["100%25.txt", "My%20Notes/a%20b.md"]
    assert all(id_problem(i) is None for i in ids) and id_from_path("plain/a.md") == "plain/a.md"


def test_writer_and_builder_refuse_rather_than_trim(tmp_path: Path) -> None:
    path = build_index([Doc("1", "first")], tmp_path / "idx")
    with IndexWriter(Index.open(path)) as writer, pytest.raises(DataFormatError, match="' 1' has a space"):
        writer.add([Doc(" 1", "would have replaced document 1")])
    assert Index.open(path).view().get_doc("1").text == "first"
    with pytest.raises(DataFormatError, match=r"<python iterable>:2: document id 'a\\nb'"):
        build_index([Doc("ok", "x"), Doc("a\nb", "y")], tmp_path / "other")


def test_run_files_never_hold_an_id_they_cannot_read_back(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="'a b' has a space"):
        write_run(Run.from_scores({"q1": {"a b": 1.0}}), tmp_path / "bad.run")
    assert not (tmp_path / "bad.run").exists()
    write_run(Run.from_scores({"q1": {"../x": 2.0, "é,1": 1.0}}), tmp_path / "good.run")
    assert [h.doc_id for h in read_run(tmp_path / "good.run").results["q1"]] == ["../x", "é,1"]


# --- pipelines and qrels ------------------------------------------------------------------------------
def test_deeply_nested_pipeline_is_a_clear_error_not_a_recursion_error(tiny_index: Index) -> None:
    with pytest.raises(PipelineError, match="nested more than 32 levels"):
        parse_pipeline("(" * 600 + "bm25" + ")" * 600, tiny_index)
    assert str(parse_pipeline("(" * 10 + "bm25" + ")" * 10, tiny_index)) == "bm25(k1=0.9,b=0.4)"


@pytest.mark.parametrize("text", ["bm25(k1=inf)", "bm25(k1=nan)", "bm25(b=-inf)", "bm25(k1=1e9)",
                                  "rrf(bm25,bm25,k=99999999999999999999)"])
def test_parameters_must_be_finite_and_in_bounds(tiny_index: Index, text: str) -> None:
    with pytest.raises(PipelineError):
        parse_pipeline(text, tiny_index)


@pytest.mark.parametrize(("grade", "message"), [("1e20", "out of range"), ("inf", "not a whole number"),
                                                ("nan", "not a whole number"), ("1.5", "not a whole number")])
def test_qrels_grades_must_be_whole_numbers_in_range(tmp_path: Path, grade: str, message: str) -> None:
    qrels = tmp_path / "qrels.txt"
    qrels.write_text(f"q1 0 d1 1\nq1 0 d2 {grade}\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"qrels\.txt:2: relevance '?{re.escape(grade)}'? (is )?{message}"):
        read_qrels(qrels)
    qrels.write_text("q1 0 d1 2.0\nq1 0 d2 -1\n", encoding="utf-8")
    assert [q.relevance for q in read_qrels(qrels)] == [2, -1]


# --- eval --index never destroys an index it did not create ------------------------------------------
def _eval(dataset: Path, index: Path, monkeypatch, capsys) -> tuple[int, str]:
    code, _, err = invoke(["eval", str(dataset), "--index", str(index), "--metrics", "nDCG@10", "--json"],
                          monkeypatch, capsys)
    return code, err


def test_eval_refuses_to_rebuild_a_live_index_of_a_changed_dataset(tiny_beir: Path, tmp_path: Path,
                                                                   monkeypatch, capsys) -> None:
    index = tmp_path / "mine"
    assert _eval(tiny_beir, index, monkeypatch, capsys)[0] == 0  # a new path: eval may create it
    with IndexWriter(Index.open(index)) as writer:
        writer.add([Doc("added", "a document added after the build")])
    corpus = tiny_beir / "corpus.jsonl"
    corpus.write_text(corpus.read_text() + json.dumps({"_id": "d9", "text": "newer"}) + "\n")
    code, err = _eval(tiny_beir, index, monkeypatch, capsys)
    assert code != 0 and "does not overwrite" in err and "live changes" in err and "--overwrite" in err
    assert "added" in Index.open(index).view().doc_positions


def test_eval_refuses_an_index_of_another_dataset(tiny_beir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    other = build_index([Doc("x", "some other collection")], tmp_path / "other")
    before = (other / "manifest.json").read_bytes()
    code, err = _eval(tiny_beir, other, monkeypatch, capsys)
    assert code != 0 and "is an index of <python iterable>" in err
    assert (other / "manifest.json").read_bytes() == before


# --- the service --------------------------------------------------------------------------------------
fastapi = pytest.importorskip("fastapi", reason="the serve extra is not installed")


@pytest.fixture
def writable(tiny_index: Index):
    from fastapi.testclient import TestClient

    from rankstack.serve.app import create_app
    from rankstack.serve.service import SearchService

    with TestClient(create_app(SearchService.open(tiny_index, api_key="k"))) as client:
        yield client


AUTH = {"Authorization": "Bearer k"}


def test_http_ids_are_the_same_ids_everywhere(writable) -> None:
    answer = writable.put("/v1/docs/%201", json={"text": "x"}, headers=AUTH)
    assert answer.status_code == 400 and "has a space" in answer.json()["error"]["message"]
    assert writable.get("/v1/docs/d1").json()["text"].startswith("The cat")  # not replaced
    assert writable.put("/v1/docs/..%2Fodd", json={"text": "odd id"}, headers=AUTH).status_code == 200
    assert writable.get("/v1/docs/..%2Fodd").json()["doc_id"] == "../odd"


def test_result_links_reach_documents_whatever_their_id(writable) -> None:
    for doc_id in ("../escape", "a/../b", "a#b?c&d"):
        quoted = doc_id.replace("/", "%2F").replace("#", "%23").replace("?", "%3F")
        assert writable.put(f"/v1/docs/{quoted}", json={"text": "zebra crossing"}, headers=AUTH).status_code == 200
    page = writable.get("/", params={"q": "zebra"}).text
    links = re.findall(r'class="title" href="([^"]+)"', page)
    assert len(links) == 3
    for link in links:
        document = writable.get(link.replace("&amp;", "&"))
        assert document.status_code == 200 and "zebra" in document.text


def test_a_write_during_another_writer_is_409_with_retry_after(writable, tiny_index: Index) -> None:
    with IndexWriter(Index.open(tiny_index.path)):  # e.g. a compaction in another process
        answer = writable.put("/v1/docs/n1", json={"text": "x"}, headers=AUTH)
    assert answer.status_code == 409 and answer.headers["Retry-After"] == "1"
    assert answer.json()["error"]["type"] == WriterLockedError.__name__
    assert writable.put("/v1/docs/n1", json={"text": "x"}, headers=AUTH).status_code == 200


def test_a_full_disk_is_507_and_nothing_is_half_written(writable, tiny_index: Index, monkeypatch) -> None:
    from rankstack.index import changelog

    def full(self, records):  # noqa: ANN001, ANN202
        raise DiskFullError("no space left on the device; none of them was applied")

    monkeypatch.setattr(changelog.ChangeLogWriter, "append", full)
    answer = writable.put("/v1/docs/n2", json={"text": "x"}, headers=AUTH)
    assert answer.status_code == 507 and "none of them was applied" in answer.json()["error"]["message"]
    assert writable.get("/v1/docs/n2").status_code == 404
