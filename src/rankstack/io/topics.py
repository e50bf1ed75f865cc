"""Query readers: BEIR queries.jsonl and tab-separated topic files (``qid<TAB>text``)."""

from __future__ import annotations

from pathlib import Path

from rankstack.errors import DataFormatError, DuplicateIdError, EmptyInputError
from rankstack.ids import check_id
from rankstack.io._files import iter_lines
from rankstack.io.jsonl import iter_json_records, require_string
from rankstack.types import Query


def read_queries(path: str | Path, query_ids: set[str] | None = None) -> list[Query]:
    """Read queries, keeping only ``query_ids`` when given. Empty query text is an error."""
    path = Path(path)
    if path.is_dir():
        path = path / "queries.jsonl"
    if not path.exists():
        raise DataFormatError("queries file not found", path=path)
    queries: list[Query] = []
    seen: set[str] = set()
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json")):
        records = (
            (line, require_string(rec, ("_id", "query_id", "qid", "id"), path=path, line=line, allow_empty=False),
             require_string(rec, ("text", "query", "title"), path=path, line=line))
            for line, rec in iter_json_records(path)
        )
    else:
        records = (_tsv_query(path, line, text) for line, text in iter_lines(path) if text.strip())
    for line, query_id, text in records:
        query_id = check_id(query_id, "query id", path=path, line=line)
        if query_ids is not None and query_id not in query_ids:
            continue
        if query_id in seen:
            raise DuplicateIdError(f"duplicate query id '{query_id}'", path=path, line=line)
        if not text.strip():
            raise EmptyInputError(f"query '{query_id}' has empty text", path=path, line=line,
                                  hint="remove the query or give it text")
        seen.add(query_id)
        queries.append(Query(query_id, text))
    return queries


def _tsv_query(path: Path, line: int, text: str) -> tuple[int, str, str]:
    fields = text.split("\t")
    if len(fields) < 2:
        raise DataFormatError("expected 'query_id<TAB>text'", path=path, line=line)
    return line, fields[0], " ".join(fields[1:])
