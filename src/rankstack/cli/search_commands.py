"""Commands that build indexes and run pipelines: index, search, run, eval."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from rankstack._console import ProgressBars, progress_bar, stderr, stdout
from rankstack.cli._app import PipelineOption, RayOption, RayWorkersOption, app, maybe_ray
from rankstack.errors import EmptyInputError, RankstackError
from rankstack.types import Run


@app.command()
def index(
    corpus: Annotated[Path, typer.Argument(help="BEIR directory, .jsonl[.gz], .tsv, .csv or folder of .txt/.md")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Index directory to create.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an existing index (atomically).")] = False,
    ignore_identical_ids: Annotated[bool | None, typer.Option(
        "--ignore-identical-ids/--keep-identical-ids",
        help="Default for searches: drop hits whose doc id equals the query id (on for BEIR dirs).")] = None,
    dense: Annotated[bool, typer.Option("--dense", help="Also encode dense vectors (resumable).")] = False,
    model: Annotated[str, typer.Option(help="Bi-encoder for --dense: local path or Hugging Face id.")] = "default",
    precision: Annotated[str, typer.Option(help="auto (by machine), fp32, bf16, fp16 or int8 (speed vs exactness).")
                         ] = "auto",
    device: Annotated[str, typer.Option(help="auto (a GPU when torch sees one), cpu, cuda or cuda:N.")] = "auto",
    storage: Annotated[str, typer.Option(help="Vector storage on disk: float32, float16 or int8.")] = "float32",
    hnsw: Annotated[bool, typer.Option("--hnsw", help="Also build and store an HNSW graph.")] = False,
    hnsw_m: Annotated[int, typer.Option(help="HNSW M (links per node).")] = 32,
    hnsw_ef_construction: Annotated[int, typer.Option(help="HNSW efConstruction.")] = 200,
    sparse: Annotated[str | None, typer.Option("--sparse", help="Also encode SPLADE impacts with this model "
                                               "(rankstack train sparse), to an existing index too.")] = None,
    late_interaction: Annotated[str | None, typer.Option(
        "--late-interaction", help="Also store token vectors of this late-interaction model (resumable).")] = None,
    token_storage: Annotated[str, typer.Option(help="Token vector storage: int8 (1 byte per dimension), float16 "
                                               "or float32.")] = "int8",
    centroids: Annotated[bool | None, typer.Option(
        "--centroids/--no-centroids", help="With --late-interaction: build the approximate index (centroids of the "
        "token vectors) for colbert as a first stage; by default only for large collections (2M+ tokens). On an "
        "index that has the token vectors, only the centroids are built.")] = None,
    ray: RayOption = None,
    ray_workers: RayWorkersOption = None,
) -> None:
    """Build an index directory from a corpus; --dense and --late-interaction add vectors (to an existing index too)."""
    from rankstack.index import Index, build_index

    started = time.perf_counter()
    if not ((dense or sparse or late_interaction) and output.exists() and not overwrite):
        with progress_bar(f"indexing {corpus.name}") as advance:
            build_index(corpus, output, overwrite=overwrite, progress=advance,
                        ignore_identical_ids=ignore_identical_ids)
    opened = Index.open(output)
    counts = opened.manifest["counts"]
    stderr.print(f"indexed {counts['docs']:,} documents ({counts['terms']:,} terms) into {output} "
                 f"in {time.perf_counter() - started:.1f} s", soft_wrap=True)
    if dense:
        from rankstack.index.dense import HnswParams, build_dense
        from rankstack.models.encoder import load_encoder

        encoder = load_encoder(model, precision, device=device)
        started = time.perf_counter()
        with maybe_ray(ray, ray_workers), \
                progress_bar(f"encoding with {encoder.model_id} ({encoder.precision})", total=opened.num_docs) as adv:
            build_dense(opened, encoder, storage, HnswParams(hnsw_m, hnsw_ef_construction) if hnsw else None,
                        progress=adv)
        stderr.print(f"added {opened.num_docs:,} {encoder.dimension}-d vectors ({storage}) in "
                     f"{time.perf_counter() - started:.1f} s")
    if sparse:
        _add_splade(opened, sparse)
    if late_interaction:
        with maybe_ray(ray, ray_workers):
            _add_token_vectors(opened, late_interaction, token_storage, centroids)


def _add_splade(opened: Any, model: str) -> None:
    from rankstack.index.splade import build_splade
    from rankstack.models.splade import load_splade

    encoder = load_splade(model)
    started = time.perf_counter()
    rows = opened.segment.num_docs
    with progress_bar(f"encoding with {encoder.model_id} (SPLADE)", total=rows) as advance:
        final = build_splade(opened, encoder, progress=advance)
    opened.reload_manifest()
    meta = opened.manifest["splade"][encoder.model_id]
    stored = sum(f.stat().st_size for f in final.iterdir())
    stderr.print(f"added SPLADE impacts for {rows:,} documents ({meta['postings'] / max(rows, 1):.1f} terms per "
                 f"document, {stored:,} bytes) in {time.perf_counter() - started:.1f} s")


def _add_token_vectors(opened: Any, model: str, storage: str, centroids: bool | None) -> None:
    from rankstack.index.token_centroids import AUTO_FROM_TOKENS
    from rankstack.index.token_vectors import build_token_vectors, stored_token_vectors
    from rankstack.models.late_interaction import load_late_interaction

    encoder = load_late_interaction(model)
    stored = stored_token_vectors(opened.segment, encoder.model_id)
    if not (centroids and stored is not None and stored.num_rows == opened.segment.num_docs
            and opened.view() is opened.segment):
        started = time.perf_counter()
        with progress_bar(f"token vectors of {model}", total=opened.num_docs) as advance:
            final = build_token_vectors(opened, encoder, storage, progress=advance)
        meta = json.loads((final / "meta.json").read_text(encoding="utf-8"))
        stderr.print(f"added {meta['tokens']:,} {encoder.dimension}-d token vectors ({storage}, "
                     f"{meta['bytes_per_token']} bytes per token, {meta['tokens'] / max(1, meta['docs']):.0f} "
                     f"tokens per document) in {time.perf_counter() - started:.1f} s")
        opened.reload_manifest()
        stored = stored_token_vectors(opened.segment, encoder.model_id)
    if stored is None:
        return
    tokens = int(stored.offsets[-1])
    if centroids is False or (centroids is None and tokens < AUTO_FROM_TOKENS):
        return
    _add_token_centroids(stored, tokens)


def _add_token_centroids(stored: Any, tokens: int) -> None:
    from rankstack.index.token_centroids import build_token_centroids

    started = time.perf_counter()
    with progress_bar("clustering token vectors (approximate index)", total=tokens) as advance:
        built = build_token_centroids(stored, progress=advance)
    stderr.print(f"added {len(built.centroids):,} centroids and their inverted file "
                 f"({len(built.ivf_rows):,} entries) in {time.perf_counter() - started:.1f} s")


def _open_pipeline(index_dir: Path, pipeline: str):  # noqa: ANN202 - returns (Index, Pipeline)
    from rankstack.index import Index
    from rankstack.stages import parse_pipeline

    opened = Index.open(index_dir)
    return opened, parse_pipeline(pipeline, opened)


@app.command()
def search(
    index_dir: Annotated[Path, typer.Argument(help="Index directory.")],
    query: Annotated[str, typer.Argument(help="Query text.")],
    top_k: Annotated[int, typer.Option("-k", "--top-k", min=1, max=10000, help="Hits to show.")] = 10,
    pipeline: PipelineOption = "bm25",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Search an index with one query."""
    from rich.table import Table

    from rankstack.stages import SearchContext
    from rankstack.types import Query

    if not query.strip():
        raise EmptyInputError("the query is empty; give some words to search for")
    opened, parsed = _open_pipeline(index_dir, pipeline)
    run = (parsed % top_k).transform([Query("query", query)], context=SearchContext())
    hits = run.results["query"]
    docs = opened.view().get_docs([h.doc_id for h in hits])
    if as_json:
        payload = {"query": query, "pipeline": str(parsed), "latency_ms": run.latency_ms(), "hits": [
            {"rank": r, "doc_id": h.doc_id, "score": h.score, "title": docs[h.doc_id].title}
            for r, h in enumerate(hits, start=1)]}
        stdout.print_json(data=payload)
        return
    table = Table(title=f"{query!r} — {parsed}")
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("doc id")
    table.add_column("title / text")
    for rank, hit in enumerate(hits, start=1):
        doc = docs[hit.doc_id]
        preview = doc.title or " ".join(doc.text.split()[:20])
        table.add_row(str(rank), f"{hit.score:.4f}", hit.doc_id, preview[:100])
    stdout.print(table)


@app.command()
def run(
    index_dir: Annotated[Path, typer.Argument(help="Index directory.")],
    queries: Annotated[Path, typer.Option("--queries", "-q", help="queries.jsonl or TSV (qid<TAB>text).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="TREC run file to write.")],
    pipeline: PipelineOption = "bm25",
    top_k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="Hits per query.")] = 1000,
    tag: Annotated[str, typer.Option(help="Run tag (last column).")] = "",
    ignore_identical_ids: Annotated[bool | None, typer.Option(
        "--ignore-identical-ids/--keep-identical-ids", help="Default: as recorded in the index.")] = None,
    ray: RayOption = None,
    ray_workers: RayWorkersOption = None,
) -> None:
    """Run a pipeline over a query file and write a TREC run file."""
    from rankstack.io import read_queries, write_run
    from rankstack.stages import SearchContext

    opened, parsed = _open_pipeline(index_dir, pipeline)
    query_list = read_queries(queries)
    if not query_list:
        raise EmptyInputError("no queries in the file", path=queries)
    ignore = opened.ignore_identical_ids if ignore_identical_ids is None else ignore_identical_ids
    context = SearchContext(ignore_identical_ids=ignore)
    with maybe_ray(ray, ray_workers) as on_ray, \
            progress_bar("searching", total=len(query_list), unit="queries") as advance:
        result = _run_pipeline(opened, parsed, query_list, context, top_k, on_ray, ray_workers, advance)
    write_run(result, output, tag or str(parsed))
    latency = ", ".join(f"{s} {ms:.2f} ms" for s, ms in result.latency_ms().items())
    stderr.print(f"wrote {sum(len(h) for h in result.results.values()):,} hits for {len(query_list):,} "
                 f"queries to {output} ({latency} per query)")


def _run_pipeline(opened, pipeline, queries, context, top_k: int, on_ray: bool,  # noqa: ANN001
                  workers: int | None, advance) -> Run:  # noqa: ANN001
    """Run one pipeline over queries, in this process or partitioned across Ray actors."""
    from rankstack.evaluate.experiment import run_queries

    if on_ray:
        from rankstack.distributed.ray_backend import run_queries_on_ray

        return run_queries_on_ray(str(opened.path.resolve()), str(pipeline), queries, top_k,
                                  context.ignore_identical_ids, workers, progress=advance)
    return run_queries(pipeline % top_k, queries, context, advance)


@app.command("eval")
def eval_(
    dataset: Annotated[Path, typer.Argument(help="BEIR directory (corpus, queries.jsonl, qrels/).")],
    pipelines: Annotated[list[str] | None, typer.Option("--pipeline", "-p", help="Pipeline; repeatable.")] = None,
    runs: Annotated[list[Path] | None, typer.Option("--run", help="Existing TREC run file; repeatable.")] = None,
    split: Annotated[str, typer.Option(help="Qrels split.")] = "test",
    metrics: Annotated[str, typer.Option("--metrics", "-m", help="Comma-separated measures.")] = "nDCG@10,R@100",
    baseline: Annotated[int, typer.Option(help="System number to test the others against.")] = 0,
    relevance_threshold: Annotated[int | None, typer.Option(
        "--relevance-threshold", help="Minimum grade counted relevant by binary measures (TREC DL: 2).")] = None,
    index_dir: Annotated[Path | None, typer.Option("--index", help="Index to use or build (default: cache).")] = None,
    top_k: Annotated[int, typer.Option("-k", "--top-k", min=1, help="Hits per query.")] = 1000,
    ignore_identical_ids: Annotated[bool, typer.Option(
        "--ignore-identical-ids/--keep-identical-ids", help="Drop hits whose doc id equals the query id.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write an HTML report, JSON and PNG plots here.")] = None,
    save_runs: Annotated[Path | None, typer.Option(help="Write each system's TREC run file into this folder.")
                         ] = None,
    ray: RayOption = None,
    ray_workers: RayWorkersOption = None,
) -> None:
    """Evaluate pipelines (and/or run files) on a test collection, with significance tests."""
    from rankstack.evaluate.experiment import compare_systems
    from rankstack.evaluate.measures import parse_measures
    from rankstack.io import BeirDataset, read_run

    parse_measures(metrics)  # fail on a bad measure before any expensive work
    if not pipelines and not runs:
        pipelines = ["bm25"]
    collection = BeirDataset.open(dataset)
    qrels = collection.qrels(split)
    named_runs: list[tuple[str, Run]] = []
    warnings: list[str] = []
    if pipelines:
        named_runs, qrels, warnings = _run_on_collection(
            collection, split, qrels, pipelines, _EvalRunSettings(index_dir, ignore_identical_ids, top_k, ray,
                                                                  ray_workers))
        if save_runs is not None:
            from rankstack.io import write_run

            for position, (name, system_run) in enumerate(named_runs):
                write_run(system_run, save_runs / f"system-{position}.run", name)
    for run_path in runs or []:
        named_runs.append((str(run_path), read_run(run_path)))
    if baseline < 0 or baseline >= len(named_runs):
        raise RankstackError(f"--baseline {baseline} is not a system number (0..{len(named_runs) - 1})")
    result = compare_systems(named_runs, qrels, metrics.split(","), baseline, relevance_threshold)
    result.warnings.extend(warnings)
    _show_result(result, collection.name, dataset, split, report, as_json)


@dataclass(frozen=True)
class _EvalRunSettings:
    index_dir: Path | None
    ignore_identical_ids: bool
    top_k: int
    ray: str | None
    ray_workers: int | None


def _run_on_collection(collection: Any, split: str, qrels: list[Any], pipelines: list[str],
                       settings: _EvalRunSettings) -> tuple[list[tuple[str, Run]], list[Any], list[str]]:
    """Index the collection (or reuse its index) and run every pipeline on its judged queries."""
    from rankstack.evaluate.experiment import judged_queries
    from rankstack.index.cache import has_live_changes, open_or_build
    from rankstack.stages import SearchContext, parse_pipeline

    queries, qrels, warnings = judged_queries(collection.queries(), qrels, collection.qrels_path(split))
    for warning in warnings:
        stderr.print(f"[yellow]warning:[/] {warning}")
    with progress_bar(f"indexing {collection.name}") as advance:
        opened, built = open_or_build(collection.root, settings.index_dir, advance)
    stderr.print(f"{'built' if built else 'reusing'} index {opened.path}")
    if has_live_changes(opened.path):
        stderr.print(f"[yellow]warning:[/] {opened.path} has live changes since it was built from the dataset; "
                     "the figures are for the changed corpus")
    parsed = [parse_pipeline(p, opened) for p in pipelines]  # parse all before running any
    context = SearchContext(ignore_identical_ids=settings.ignore_identical_ids)
    named_runs = []
    with maybe_ray(settings.ray, settings.ray_workers) as on_ray:
        with ProgressBars() as bars:
            for pipeline in parsed:
                pipeline.prepare(bars)
        for pipeline in parsed:
            with progress_bar(str(pipeline), total=len(queries), unit="queries") as advance:
                named_runs.append((str(pipeline), _run_pipeline(opened, pipeline, queries, context, settings.top_k,
                                                                on_ray, settings.ray_workers, advance)))
    return named_runs, qrels, warnings


def _show_result(result: Any, name: str, dataset: Path, split: str, report: Path | None, as_json: bool) -> None:
    from rankstack.evaluate.table import experiment_table

    if report is not None:
        from rankstack.evaluate.report import write_report

        written = write_report(result, report, f"{name} ({split})", {"dataset": str(dataset), "split": split})
        stderr.print(f"wrote {written} (+ report.json, tradeoff.png, per_query.png)")
    if as_json:
        stdout.print_json(data={"dataset": str(dataset), "split": split, **result.to_json()})
    else:
        stdout.print(experiment_table(result, f"{name} ({split})"))
