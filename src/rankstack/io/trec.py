"""TREC qrels and run files, and BEIR qrels TSVs."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from rankstack.errors import DataFormatError
from rankstack.ids import check_id
from rankstack.io._files import iter_lines
from rankstack.types import Qrel, Run

MAX_RELEVANCE_GRADE = 1000  # graded judgements use a handful of levels; more is a broken file


def _relevance_grade(text: str, path: Path, line: int) -> int:
    """A relevance grade: a whole number (negative grades are judged non-relevant, as trec_eval reads them)."""
    try:
        value = float(text)
    except ValueError:
        raise DataFormatError(f"relevance '{text}' is not a number", path=path, line=line) from None
    if not math.isfinite(value) or value != int(value):
        raise DataFormatError(f"relevance '{text}' is not a whole number", path=path, line=line,
                              hint="grades are integers such as 0, 1, 2, 3; trec_eval would truncate it silently")
    if abs(value) > MAX_RELEVANCE_GRADE:
        raise DataFormatError(f"relevance {text} is out of range", path=path, line=line,
                              hint=f"grades are integers between -{MAX_RELEVANCE_GRADE} and {MAX_RELEVANCE_GRADE}")
    return int(value)


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
        value = _relevance_grade(relevance, path, line)
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
        check_id(query_id, "query id")  # a space or line break would make a file no reader can parse
        for rank, hit in enumerate(hits, start=1):
            if " " in hit.doc_id or not hit.doc_id.isprintable():
                check_id(hit.doc_id)
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

