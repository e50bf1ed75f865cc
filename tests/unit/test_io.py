from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rankstack.errors import DataFormatError, DuplicateIdError, EmptyInputError
from rankstack.io import BeirDataset, read_corpus, read_qrels, read_queries, read_run, write_run
from rankstack.types import Doc, Run


def test_beir_directory_plain_and_gzip(tmp_path: Path, tiny_beir: Path) -> None:
    docs = list(read_corpus(tiny_beir))
    assert len(docs) == 6 and docs[0] == Doc("d1", docs[0].text, "Cats")
    gz_root = tmp_path / "gz"
    gz_root.mkdir()
    with gzip.open(gz_root / "corpus.jsonl.gz", "wb") as handle:
        handle.write((tiny_beir / "corpus.jsonl").read_bytes())
    assert list(read_corpus(gz_root)) == docs


def test_beir_dataset_queries_and_qrels(tiny_beir: Path) -> None:
    dataset = BeirDataset.open(tiny_beir)
    assert [q.query_id for q in dataset.queries()] == ["q1", "q2", "q3", "q4"]
    assert dataset.splits() == ["test"]
    assert len(dataset.qrels("test")) == 5
    with pytest.raises(DataFormatError, match="available splits: test"):
        dataset.qrels("train")


def test_malformed_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "a", "text": "ok"}\n{"_id": "b", "text": \n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"corpus\.jsonl:2: malformed JSON"):
        list(read_corpus(path))


@pytest.mark.parametrize(("record", "missing"), [({"text": "x"}, "'_id'"), ({"_id": "a"}, "'text'")])
def test_missing_field_is_named(tmp_path: Path, record: dict, missing: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"c\.jsonl:1: missing field {missing}"):
        list(read_corpus(path))


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(DataFormatError, match=r"c\.jsonl:2: bytes that are not valid UTF-8"):
        list(read_corpus(path))


def test_tsv_csv_and_text_folder(tmp_path: Path) -> None:
    tsv = tmp_path / "c.tsv"
    tsv.write_text("1\tfirst text\n2\tA title\tsecond text\n", encoding="utf-8")
    assert list(read_corpus(tsv)) == [Doc("1", "first text"), Doc("2", "second text", "A title")]
    csv_path = tmp_path / "c.csv"
    csv_path.write_text('id,title,text\n7,T,"a, quoted\ntext"\n', encoding="utf-8")
    assert list(read_corpus(csv_path)) == [Doc("7", "a, quoted\ntext", "T")]
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# Heading\nbody\n", encoding="utf-8")
    (folder / "sub" / "b.txt").write_text("plain", encoding="utf-8")
    (folder / "ignored.bin").write_bytes(b"\x00")
    docs = list(read_corpus(folder))
    assert [(d.doc_id, d.title) for d in docs] == [("a.md", "Heading"), ("sub/b.txt", "")]


def test_tsv_with_wrong_column_count(tmp_path: Path) -> None:
    tsv = tmp_path / "c.tsv"
    tsv.write_text("1\ta\tb\tc\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"c\.tsv:1: expected 2 columns"):
        list(read_corpus(tsv))


def test_missing_corpus_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="corpus not found"):
        list(read_corpus(tmp_path / "nope.jsonl"))
    odd = tmp_path / "c.xml"
    odd.write_text("<x/>", encoding="utf-8")
    with pytest.raises(DataFormatError, match="unknown corpus format"):
        list(read_corpus(odd))


def test_queries_reject_empty_text_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "queries.jsonl"
    path.write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "  "}\n', encoding="utf-8")
    with pytest.raises(EmptyInputError, match=r"queries\.jsonl:2: query '2' has empty text"):
        read_queries(path)
    path.write_text('{"_id": "1", "text": "ok"}\n{"_id": "1", "text": "again"}\n', encoding="utf-8")
    with pytest.raises(DuplicateIdError, match=r"queries\.jsonl:2"):
        read_queries(path)
    tsv = tmp_path / "topics.tsv"
    tsv.write_text("101\tfirst query\n102\tsecond\n", encoding="utf-8")
    assert [q.text for q in read_queries(tsv)] == ["first query", "second"]


def test_qrels_trec_and_beir(tmp_path: Path) -> None:
    trec = tmp_path / "qrels.txt"
    trec.write_text("q1 0 d1 2\nq1 0 d2 0\n", encoding="utf-8")
    assert [(q.doc_id, q.relevance) for q in read_qrels(trec)] == [("d1", 2), ("d2", 0)]
    bad = tmp_path / "bad.txt"
    bad.write_text("q1 0 d1 high\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"bad\.txt:1: relevance 'high'"):
        read_qrels(bad)


def test_run_round_trip_and_errors(tmp_path: Path) -> None:
    run = Run.from_scores({"q1": {"d1": 1.5, "d2": 2.5}, "q2": {"d3": 0.1}})
    path = tmp_path / "runs" / "x.run"
    write_run(run, path, tag="my tag")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "q1 Q0 d2 1 2.500000 my_tag"
    assert read_run(path).to_dict() == run.to_dict()
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    broken = tmp_path / "broken.run"
    broken.write_text("q1 Q0 d1 1 1.0\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"broken\.run:1: expected 6 columns"):
        read_run(broken)
