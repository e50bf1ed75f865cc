from __future__ import annotations

import json
from pathlib import Path

import pytest

from rankstack.errors import (
    DuplicateIdError,
    EmptyInputError,
    IndexCorruptError,
    IndexFormatError,
    IndexNotFoundError,
)
from rankstack.index import Index, build_index
from rankstack.index.manifest import seal_manifest
from rankstack.text.analyzer import ANALYZER_VERSION
from rankstack.types import Doc


def test_manifest_records_counts_parameters_and_checksums(tiny_index: Index) -> None:
    manifest = tiny_index.manifest
    assert manifest["format_version"] == 2
    assert manifest["counts"]["docs"] == 6
    assert manifest["bm25"] == {"k1": 0.9, "b": 0.4}
    assert manifest["analyzer"]["name"] == "lucene-english"
    assert manifest["ignore_identical_ids"] is True  # a BEIR directory
    assert {"docs.sqlite", "sparse/vocab.json", "sparse/term_freqs.npy"} <= set(manifest["files"])
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())
    assert tiny_index.docstore.get("d2").title == "Dogs"
    assert tiny_index.docstore.get("missing") is None


def test_missing_index_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="rankstack index CORPUS -o"):
        Index.open(tmp_path / "none")


def test_newer_format_is_refused(tiny_index: Index) -> None:
    path = tiny_index.path / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="format 99.*pip install -U rankstack"):
        Index.open(tiny_index.path)


@pytest.mark.parametrize(("old", "new"), [('"porter"', '"qorter"'), ('"and"', '"aNd"'), ('"docs": 6', '"docs": 7'),
                                          ('"sha256"', '"sha2=6"'), ('"analyzer"', '"anamyzer"')])
def test_a_damaged_manifest_value_is_refused_not_used(tiny_index: Index, old: str, new: str) -> None:
    # Such values parse fine; only the manifest's checksum of itself tells them apart from the real ones.
    path = tiny_index.path / "manifest.json"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(IndexCorruptError, match="does not match its own checksum"):
        Index.open(tiny_index.path)


def test_an_older_index_format_is_refused_with_the_rebuild_command(tiny_index: Index) -> None:
    path = tiny_index.path / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 1
    path.write_text(json.dumps(seal_manifest(manifest)))
    with pytest.raises(IndexFormatError, match="older rankstack .*--overwrite"):
        Index.open(tiny_index.path)


def _set_analyzer_version(index_path: Path, version: int | None) -> None:
    path = index_path / "manifest.json"
    manifest = json.loads(path.read_text())
    if version is None:
        manifest["analyzer"].pop("version")  # as written before the analyzer had versions
    else:
        manifest["analyzer"]["version"] = version
    path.write_text(json.dumps(seal_manifest(manifest)))  # a consistent manifest, only of another version


@pytest.mark.parametrize("version", [None, 1, 99])
def test_index_of_another_analyzer_version_is_refused(tiny_index: Index, version: int | None) -> None:
    assert tiny_index.manifest["analyzer"]["version"] == ANALYZER_VERSION
    _set_analyzer_version(tiny_index.path, version)
    with pytest.raises(IndexFormatError, match=rf"analyzer version {version or 1}.*--overwrite"):
        Index.open(tiny_index.path)


def test_cached_index_of_an_old_analyzer_is_rebuilt(tiny_beir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from rankstack.index.cache import IndexMismatchError, open_or_build

    monkeypatch.setenv("RANKSTACK_CACHE", str(tmp_path / "cache"))
    index, built = open_or_build(tiny_beir)  # eval's own cache
    assert built
    index.close()
    _set_analyzer_version(index.path, None)
    index, built = open_or_build(tiny_beir)
    assert built and index.manifest["analyzer"]["version"] == ANALYZER_VERSION
    index.close()
    # An index at a path the user chose is never replaced: the error says how to rebuild it.
    _set_analyzer_version(index.path, None)
    with pytest.raises(IndexMismatchError, match="analyzer version 1.*--overwrite"):
        open_or_build(tiny_beir, index.path)


def test_checksum_mismatch_names_the_file(tiny_index: Index) -> None:
    vocab = tiny_index.path / "sparse" / "vocab.json"
    data = bytearray(vocab.read_bytes())
    data[2] = ord("X") if data[2] != ord("X") else ord("Y")  # same size, different content
    vocab.write_bytes(bytes(data))
    with pytest.raises(IndexCorruptError, match=r"vocab\.json does not match the checksum"):
        Index.open(tiny_index.path)


def test_interrupted_build_leaves_nothing_that_loads(tmp_path: Path) -> None:
    docs = [Doc(str(i), f"document number {i}") for i in range(2000)]

    def interrupt(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_index(docs, tmp_path / "idx", progress=interrupt)
    assert list(tmp_path.iterdir()) == []  # no index and no leftover staging directory


def test_failed_rebuild_keeps_the_old_index(tmp_path: Path) -> None:
    path = build_index([Doc("a", "alpha text")], tmp_path / "idx")
    with pytest.raises(DuplicateIdError):
        build_index([Doc("b", "x"), Doc("b", "y")], path, overwrite=True)
    assert Index.open(path).doc_ids == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_duplicate_ids_name_the_line(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "x", "text": "a"}\n{"_id": "y", "text": "b"}\n{"_id": "x", "text": "c"}\n')
    with pytest.raises(DuplicateIdError, match=r"c\.jsonl:3: duplicate document id 'x'"):
        build_index(corpus, tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


def test_empty_corpus_is_refused(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n")
    with pytest.raises(EmptyInputError, match="no documents"):
        build_index(corpus, tmp_path / "idx")
    assert list(tmp_path.iterdir()) == [corpus]


def test_existing_index_needs_overwrite(tmp_path: Path) -> None:
    path = build_index([Doc("a", "alpha")], tmp_path / "idx")
    with pytest.raises(Exception, match="--overwrite"):
        build_index([Doc("b", "beta")], path)
    build_index([Doc("b", "beta")], path, overwrite=True)
    assert Index.open(path).doc_ids == ["b"]
