"""Streaming corpus readers: BEIR directories, JSONL(.gz), TSV, CSV and folders of text files.

Every reader yields ``(Doc, SourceLocation)`` lazily, so an index can be built from a corpus larger
than memory and every error can name the file and line it came from.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rankstack.errors import DataFormatError
from rankstack.ids import check_id, id_from_path
from rankstack.io._files import iter_lines
from rankstack.io.jsonl import iter_json_records, require_string
from rankstack.types import Doc

ID_KEYS = ("_id", "doc_id", "docid", "id")
TEXT_KEYS = ("text", "contents", "body")
TITLE_KEYS = ("title",)
TEXT_FILE_SUFFIXES = (".txt", ".md")


@dataclass(frozen=True, slots=True)
class SourceLocation:
    path: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path


def find_beir_corpus(directory: Path) -> Path | None:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def is_beir_directory(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and find_beir_corpus(path) is not None


def iter_corpus(path: str | Path) -> Iterator[tuple[Doc, SourceLocation]]:
    """Yield the documents of a corpus file or directory, detecting its format from its name."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError("corpus not found", path=path,
                              hint="give a BEIR directory, a .jsonl/.tsv/.csv file or a folder of .txt/.md")
    if path.is_dir():
        beir_corpus = find_beir_corpus(path)
        if beir_corpus is not None:
            return _iter_jsonl_docs(beir_corpus)
        return _iter_text_folder(path)
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".ndjson")):
        return _iter_jsonl_docs(path)
    if name.endswith((".tsv", ".tsv.gz")):
        return _iter_tsv_docs(path)
    if name.endswith((".csv", ".csv.gz")):
        return _iter_csv_docs(path)
    if name.endswith(TEXT_FILE_SUFFIXES):
        return iter([(_read_text_file(path, path.name), SourceLocation(str(path)))])
    raise DataFormatError("unknown corpus format", path=path,
                          hint="use .jsonl, .jsonl.gz, .tsv, .csv, a BEIR directory or a folder of .txt/.md")


def read_corpus(path: str | Path) -> Iterator[Doc]:
    """Stream the documents of a corpus (see :func:`iter_corpus` for the formats)."""
    for doc, _ in iter_corpus(path):
        yield doc


def _iter_jsonl_docs(path: Path) -> Iterator[tuple[Doc, SourceLocation]]:
    for line, record in iter_json_records(path):
        doc_id = check_id(require_string(record, ID_KEYS, path=path, line=line, allow_empty=False),
                          path=path, line=line)
        text = require_string(record, TEXT_KEYS, path=path, line=line)
        title = record.get("title") or ""
        if not isinstance(title, str):
            raise DataFormatError(f"field 'title' must be a string, found {type(title).__name__}",
                                  path=path, line=line)
        yield Doc(doc_id, text, title), SourceLocation(str(path), line)


def _split_header(fields: list[str]) -> bool:
    lowered = [f.strip().lower() for f in fields]
    return bool(lowered) and lowered[0] in ID_KEYS + ("query-id", "corpus-id", "pid")


def _iter_tsv_docs(path: Path) -> Iterator[tuple[Doc, SourceLocation]]:
    columns: list[str] | None = None
    for line, text in iter_lines(path):
        if not text.strip():
            continue
        fields = text.split("\t")
        if columns is None and line == 1 and _split_header(fields):
            columns = [f.strip().lower() for f in fields]
            continue
        yield _doc_from_fields(fields, columns, path, line), SourceLocation(str(path), line)


def _doc_from_fields(fields: list[str], columns: list[str] | None, path: Path, line: int) -> Doc:
    if columns is not None:
        if len(fields) != len(columns):
            raise DataFormatError(f"expected {len(columns)} columns ({', '.join(columns)}), found {len(fields)}",
                                  path=path, line=line)
        record = dict(zip(columns, fields, strict=True))
        doc_id = check_id(require_string(record, ID_KEYS, path=path, line=line, allow_empty=False),
                          path=path, line=line)
        text = require_string(record, TEXT_KEYS, path=path, line=line)
        return Doc(doc_id, text, record.get("title", ""))
    if len(fields) == 2:
        doc_id, text, title = fields[0], fields[1], ""
    elif len(fields) == 3:
        doc_id, title, text = fields
    else:
        raise DataFormatError(f"expected 2 columns (id, text) or 3 (id, title, text), found {len(fields)}",
                              path=path, line=line, hint="or add a header row naming the columns")
    return Doc(check_id(doc_id, path=path, line=line), text, title)


def _iter_csv_docs(path: Path) -> Iterator[tuple[Doc, SourceLocation]]:
    lines = (text + "\n" for _, text in iter_lines(path))
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    columns = [c.strip().lower() for c in header]
    if not any(c in ID_KEYS for c in columns) or not any(c in TEXT_KEYS for c in columns):
        raise DataFormatError(f"CSV header must name an id column ({'/'.join(ID_KEYS)}) and a text column "
                              f"({'/'.join(TEXT_KEYS)}); found {', '.join(columns)}", path=path, line=1)
    for fields in reader:
        line = reader.line_num
        if not fields:
            continue
        yield _doc_from_fields(fields, columns, path, line), SourceLocation(str(path), line)


def _read_text_file(path: Path, doc_id: str) -> Doc:
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataFormatError("bytes that are not valid UTF-8", path=path, line=line,
                              hint="re-encode the file as UTF-8") from None
    title = ""
    if path.suffix.lower() == ".md":
        for first in io.StringIO(content):
            if first.strip():
                if first.startswith("#"):
                    title = first.lstrip("#").strip()
                break
    return Doc(doc_id, content, title)


def _iter_text_folder(directory: Path) -> Iterator[tuple[Doc, SourceLocation]]:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_FILE_SUFFIXES)
    for file in files:
        doc_id = id_from_path(file.relative_to(directory).as_posix())
        yield _read_text_file(file, doc_id), SourceLocation(str(file))
