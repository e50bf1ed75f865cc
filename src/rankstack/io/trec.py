"""TREC qrels and run files, and BEIR qrels TSVs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from rankstack.errors import DataFormatError
from rankstack.io._files import iter_lines
from rankstack.types import Qrel, Run


def read_qrels(path: str | Path) -> list[Qrel]:
    """Read TREC qrels (``qid iter docid rel``) or BEIR qrels (``query-id corpus-id score`` with header)."""
    path = Path(path)
    qrels: list[Qrel] = []
    for line, text in iter_lines(path):
        fields = text.split()
        if not fields:
            continue
        if line == 1 and fields[0].lower() in ("query-id", "query_id", "qid"):
            continue  # BEIR header
        if len(fields) == 4:
            query_id, _, doc_id, relevance = fields
        elif len(fields) == 3:
            query_id, doc_id, relevance = fields
        else:
            raise DataFormatError(f"expected 3 (BEIR) or 4 (TREC) columns, found {len(fields)}",
                                  path=path, line=line, hint="TREC qrels: 'qid 0 docid relevance'")
        try:
            value = int(float(relevance))
        except ValueError:
            raise DataFormatError(f"relevance '{relevance}' is not a number", path=path, line=line) from None
        qrels.append(Qrel(query_id, doc_id, value))
    return qrels


def read_run(path: str | Path) -> Run:
    """Read a TREC run file (``qid Q0 docid rank score tag``)."""
    path = Path(path)
    scores: dict[str, dict[str, float]] = {}
    for line, text in iter_lines(path):
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise DataFormatError(f"expected 6 columns 'qid Q0 docid rank score tag', found {len(fields)}",
                                  path=path, line=line)
        query_id, _, doc_id, _, score, _ = fields
        try:
            value = float(score)
        except ValueError:
            raise DataFormatError(f"score '{score}' is not a number", path=path, line=line) from None
        per_query = scores.setdefault(query_id, {})
        if doc_id in per_query:
            raise DataFormatError(f"document '{doc_id}' appears twice for query '{query_id}'",
                                  path=path, line=line)
        per_query[doc_id] = value
    return Run.from_scores(scores)


def format_run_lines(run: Run, tag: str) -> Iterable[str]:
    tag = "_".join(tag.split()) or "rankstack"  # the tag column must not contain whitespace
    for query_id, hits in run.results.items():
        for rank, hit in enumerate(hits, start=1):
            yield f"{query_id} Q0 {hit.doc_id} {rank} {hit.score:.6f} {tag}\n"


def write_run(run: Run, path: str | Path, tag: str = "rankstack") -> None:
    """Write a TREC run file atomically: readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            handle.writelines(format_run_lines(run, tag))
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise

