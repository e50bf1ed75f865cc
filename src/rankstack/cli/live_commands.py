"""Commands that change a live index: add, delete, compact, repair."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from rankstack._console import progress_bar, stderr
from rankstack.cli._app import app
from rankstack.errors import DiskFullError
from rankstack.types import Doc


@app.command()
def add(
    index_dir: Annotated[Path, typer.Argument(help="Index directory.")],
    corpus: Annotated[Path, typer.Argument(help="Documents to add or replace (any corpus format).")],
    batch_size: Annotated[int, typer.Option(min=1, help="Documents per durable log write.")] = 256,
) -> None:
    """Add documents to an index (same id: replace) without a rebuild."""
    from rankstack.index import Index
    from rankstack.index.live import IndexWriter
    from rankstack.io import read_corpus

    added = 0
    with IndexWriter(Index.open(index_dir)) as writer, progress_bar(f"adding {corpus.name}") as advance:
        batch: list[Doc] = []
        try:
            for doc in read_corpus(corpus):
                batch.append(doc)
                if len(batch) >= batch_size:
                    added += writer.add(batch)
                    advance(len(batch))
                    batch = []
            added += writer.add(batch)
            advance(len(batch))
        except DiskFullError as error:
            raise DiskFullError(f"{error} ({added:,} documents of {corpus} were added before and are kept; "
                                f"rerun the command to add the rest: documents with the same id are replaced)"
                                ) from None
    stderr.print(f"added {added:,} documents to {index_dir}; rankstack compact folds them into the index files")


@app.command()
def delete(
    index_dir: Annotated[Path, typer.Argument(help="Index directory.")],
    doc_ids: Annotated[list[str], typer.Argument(help="Document ids to delete.")],
) -> None:
    """Delete documents by id; unknown ids are reported and the rest are deleted."""
    from rankstack.index import Index
    from rankstack.index.live import IndexWriter

    with IndexWriter(Index.open(index_dir)) as writer:
        report = writer.delete(doc_ids)
    stderr.print(f"deleted {len(report.deleted):,} documents")
    if report.unknown:
        stderr.print(f"[yellow]not in the index (nothing to delete):[/] {', '.join(report.unknown)}")
        raise typer.Exit(code=2 if not report.deleted else 0)


@app.command()
def compact(index_dir: Annotated[Path, typer.Argument(help="Index directory.")]) -> None:
    """Fold logged changes into new index files (atomically; searches continue meanwhile)."""
    from rankstack.index import Index
    from rankstack.index.live import IndexWriter

    started = time.perf_counter()
    with IndexWriter(Index.open(index_dir)) as writer, progress_bar("compacting") as advance:
        writer.compact(progress=advance)
    stderr.print(f"compacted {index_dir} in {time.perf_counter() - started:.1f} s")


@app.command()
def repair(index_dir: Annotated[Path, typer.Argument(help="Index directory.")]) -> None:
    """Repair a damaged change log: keep every intact change, report what is lost."""
    from rankstack.index.live import repair as repair_index

    report = repair_index(index_dir)
    if report.backup is None:
        stderr.print(f"{index_dir}: the change log is intact ({report.kept:,} changes); nothing to repair")
        return
    stderr.print(f"kept {report.kept:,} intact changes ({report.salvaged_after_damage:,} of them after the damage); "
                 f"saved the damaged log as {report.backup}")
    if report.lost_records:
        stderr.print(f"[yellow]lost:[/] {report.lost_records:,} acknowledged change(s) (counted from the sequence "
                     "numbers); they must be made again")
    for line in report.lost_lines:
        stderr.print(f"[yellow]damage at:[/] {escape(line)}")
    if report.torn_tail_bytes:
        stderr.print(f"dropped an incomplete last write of {report.torn_tail_bytes} bytes (never acknowledged)")
