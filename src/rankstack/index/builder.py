"""Building an index directory atomically: a temporary directory, renamed into place when complete."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from rankstack._version import __version__
from rankstack.errors import EmptyInputError, RankstackError
from rankstack.ids import check_id
from rankstack.index.docstore import DocStoreWriter
from rankstack.index.manifest import write_manifest
from rankstack.index.sparse import PostingsBuilder
from rankstack.index.staging import staged
from rankstack.io.corpus import SourceLocation, is_beir_directory, iter_corpus
from rankstack.text.analyzer import LuceneEnglishAnalyzer
from rankstack.types import Doc

ProgressCallback = Callable[[int], None]


def build_index(
    corpus: str | Path | Iterable[Doc],
    output: str | Path,
    *,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
    ignore_identical_ids: bool | None = None,
) -> Path:
    """Index a corpus (a path in any supported format, or an iterable of :class:`Doc`) into ``output``.

    Nothing appears at ``output`` until the index is complete: an error or Ctrl-C leaves the old
    index (if any) untouched and removes the partial one.

    ``ignore_identical_ids`` is the default for searches on this index (drop a hit whose doc id equals
    the query id); ``None`` means "on for BEIR directories", as BEIR evaluates them.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise RankstackError(f"{output} already exists; pass --overwrite to replace it")
    if isinstance(corpus, (str, Path)):
        source = str(Path(corpus).resolve())
        fingerprint = corpus_fingerprint(corpus)
        records = iter_corpus(corpus)
        if ignore_identical_ids is None:
            ignore_identical_ids = is_beir_directory(corpus)
    else:
        source = "<python iterable>"
        fingerprint = None
        records = ((doc, SourceLocation(source, i + 1)) for i, doc in enumerate(corpus))
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.building-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    kept = f"the index at {output} is unchanged" if output.exists() else "nothing was written"
    with staged(staging, output, "building the index", kept, "Free some space and rerun the command"):
        started = time.perf_counter()
        counts = _write_contents(records, staging, progress)
        analyzer = LuceneEnglishAnalyzer()
        write_manifest(staging, {
            "created_by": f"rankstack {__version__}",
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": source,
            "source_fingerprint": fingerprint,
            "fields": "title+text",
            "analyzer": analyzer.config(),
            "bm25": {"k1": 0.9, "b": 0.4},
            "ignore_identical_ids": bool(ignore_identical_ids),
            "counts": counts,
            "build_seconds": round(time.perf_counter() - started, 3),
        })
        _swap_into_place(staging, output)
    return output


def corpus_fingerprint(corpus: str | Path) -> dict[str, int]:
    """Size and modification time of the corpus files, to tell whether a cached index is stale."""
    path = Path(corpus)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and "qrels" not in p.parts
                       and p.name != "queries.jsonl")
    else:
        files = [path]
    stats = [f.stat() for f in files]
    return {"files": len(files), "bytes": sum(s.st_size for s in stats),
            "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}


def _write_contents(records: Iterable[tuple[Doc, SourceLocation]], staging: Path,
                    progress: ProgressCallback | None) -> dict[str, int]:
    analyzer = LuceneEnglishAnalyzer()
    docstore = DocStoreWriter(staging / "docs.sqlite")
    postings = PostingsBuilder()
    pending = 0
    first_location: SourceLocation | None = None
    try:
        for doc, location in records:
            first_location = first_location or location
            check_id(doc.doc_id, path=location.path, line=location.line)  # readers check; Python input too
            docstore.add(doc, location)
            postings.add(analyzer.analyze(doc.contents))
            pending += 1
            if progress is not None and pending >= 256:
                progress(pending)
                pending = 0
    finally:
        docstore.close()
    if progress is not None and pending:
        progress(pending)
    if docstore.count == 0:
        raise EmptyInputError("the corpus has no documents", hint="check the path and the file format")
    counts = postings.write(staging / "sparse")
    return {"docs": docstore.count, **counts}


def _swap_into_place(staging: Path, output: Path) -> None:
    if not output.exists():
        os.rename(staging, output)
        return
    retired = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(output, retired)
    try:
        os.rename(staging, output)
    except BaseException:
        os.rename(retired, output)
        raise
    shutil.rmtree(retired, ignore_errors=True)
