"""Commands that serve an index over HTTP: serve, demo."""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from rankstack._console import ProgressBars, stderr, stdout
from rankstack.cli._app import app


@dataclass(frozen=True)
class _ClientFreedom:
    """What HTTP clients may choose beyond the presets (see rankstack.serve.policy)."""

    allow_any_pipeline: bool = False
    data_root: Path | None = None
    model_root: Path | None = None


def _serve(index_dir: Path, host: str, port: int, pipelines: list[str] | None, api_key: str | None = None,
           freedom: _ClientFreedom = _ClientFreedom(), workers: str = "auto") -> None:
    from rankstack._optional import require

    require("uvicorn", "serve", "The web service")
    require("fastapi", "serve", "The web service")
    from rankstack.serve import workers as worker_processes

    try:
        count = worker_processes.resolve_workers(workers, writes_enabled=bool(api_key))
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    settings = worker_processes.ServeSettings(
        str(index_dir), list(pipelines or ()), api_key or None, freedom.allow_any_pipeline,
        str(freedom.data_root) if freedom.data_root else None, str(freedom.model_root) if freedom.model_root else None)
    service = settings.open_service()  # here first: a bad index or pipeline fails now, with its message
    documents = service.index.num_docs
    if count > 1:  # each worker opens its own; this one only supervises them
        del service
        gc.collect()
    stderr.print(f"serving {documents:,} documents from {index_dir} on http://{host}:{port}/ "
                 f"(API under /v1, schema at /docs; {count} worker{'s' if count > 1 else ''}); Ctrl-C stops")
    worker_processes.run(settings, host, port, count, service if count == 1 else None)


@app.command()
def serve(
    index_dir: Annotated[Path, typer.Argument(help="Index directory.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8000,
    pipelines: Annotated[list[str] | None, typer.Option("--pipeline", "-p", help="Preset pipeline; repeatable.")
                         ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="RANKSTACK_API_KEY", help="Key that PUT/DELETE of "
                                                "documents must present; without one the server is read-only.")
                       ] = None,
    allow_any_pipeline: Annotated[bool, typer.Option(help="Let clients compose any pipeline, not only the presets "
                                                     "with tuned parameters (files and models stay within the "
                                                     "roots below).")] = False,
    data_root: Annotated[Path | None, typer.Option(help="With --allow-any-pipeline: the folder whose files "
                                                   "clients may name (run(path=...)).")] = None,
    model_root: Annotated[Path | None, typer.Option(help="With --allow-any-pipeline: the folder whose model "
                                                    "directories clients may name, besides the presets' models.")
                          ] = None,
    workers: Annotated[str, typer.Option(help="Worker processes: 'auto' (one per usable core, up to 8; one "
                                         "when --api-key allows writes) or a number.")] = "auto",
) -> None:
    """Serve the HTTP API and the web search page for an index."""
    if (data_root or model_root) and not allow_any_pipeline:
        raise typer.BadParameter("--data-root and --model-root only apply with --allow-any-pipeline")
    _serve(index_dir, host, port, pipelines, api_key, _ClientFreedom(allow_any_pipeline, data_root, model_root),
           workers)


@app.command()
def demo(
    serve_page: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the web page (default) or print "
                                             "results for example queries.")] = True,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8000,
    top_k: Annotated[int, typer.Option("-k", "--top-k", min=1, max=50)] = 5,
) -> None:
    """Search the documentation shipped with this Python interpreter (no download, no data needed).

    A first run shows BM25 results as soon as the index is built, then encodes the documents (once,
    cached) and shows the hybrid; later runs show everything at once.
    """
    from rankstack import demo as demo_
    from rankstack.demo.vectors import DOC_TEXT

    opened = demo_.open_demo_index(ProgressBars)
    stderr.print(f"{opened.num_docs:,} documents from the Python {sys.version.split()[0]} documentation "
                 f"in {opened.path}")
    dense = demo_.dense_available()
    build = demo_.start_vectors(opened) if dense else None  # the model loads while BM25 results print
    if build is not None:
        stderr.print(f"the vectors for the hybrid are built meanwhile from the documents' {DOC_TEXT}, once "
                     f"(later runs reuse them){'' if serve_page else '; BM25 results first'}")
    try:
        if not serve_page:
            _print_examples(opened, demo_.BM25, demo_.EXAMPLE_QUERIES, top_k)
        if build is not None:
            _finish_vectors(build, opened.num_docs)
            opened.reload_manifest()
    finally:
        if build is not None:
            build.cancel()  # a no-op once finished; stops the thread after an error here
    pipelines = [demo_.BM25, *demo_.DENSE_PIPELINES] if dense else [demo_.BM25]
    if serve_page:
        _serve(opened.path, host, port, pipelines)
    elif dense:
        _print_examples(opened, pipelines[-1], demo_.EXAMPLE_QUERIES, top_k)


def _finish_vectors(build, num_docs: int) -> None:  # noqa: ANN001
    from rankstack.models.loading import canonical_model_id

    try:
        with ProgressBars() as bars:
            build.finish(bars(f"encoding {num_docs:,} docs with {canonical_model_id(build.model)}", num_docs))
    except KeyboardInterrupt:
        stderr.print("interrupted: the vectors encoded so far are kept, and the next run resumes from them")
        raise


def _print_examples(opened, pipeline_text: str, queries: Sequence[str], top_k: int) -> None:  # noqa: ANN001
    from rich.markup import escape
    from rich.table import Table

    from rankstack.stages import SearchContext, parse_pipeline
    from rankstack.types import Query

    pipeline = parse_pipeline(pipeline_text, opened)
    pipeline.prepare(None)
    query_list = [Query(str(i), text) for i, text in enumerate(queries, start=1)]
    run_ = (pipeline % top_k).transform(query_list, context=SearchContext())
    for query in query_list:
        hits = run_.results[query.query_id]
        docs = opened.view().get_docs([h.doc_id for h in hits])
        table = Table(title=escape(f"{query.text!r}  [{pipeline}]"), title_justify="left")  # [..] is no markup
        table.add_column("rank", justify="right")
        table.add_column("score", justify="right")
        table.add_column("document")
        table.add_column("text")
        for rank, hit in enumerate(hits, start=1):
            text = " ".join(docs[hit.doc_id].text.split())
            table.add_row(str(rank), f"{hit.score:.3f}", docs[hit.doc_id].title, text[:90])
        stdout.print(table)
