"""The ``rankstack`` command: thin commands over the library. Data on stdout, logs on stderr."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from rankstack._console import ProgressBars, progress_bar, stderr, stdout
from rankstack._version import __version__
from rankstack.errors import DiskFullError, EmptyInputError, RankstackError, exit_code_for
from rankstack.types import Doc, Run

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Multi-stage text ranking: index, search, run and evaluate pipelines.")
logger = logging.getLogger("rankstack")

PipelineOption = Annotated[str, typer.Option("--pipeline", "-p", help="Pipeline string, e.g. 'bm25%100'.")]
RayOption = Annotated[str | None, typer.Option("--ray", help="Run on Ray: a cluster address (host:port) or 'local' "
                                               "to start a local instance for this command.")]
RayWorkersOption = Annotated[int | None, typer.Option("--ray-workers", min=1,
                                                      help="Ray actors (default: one per CPU).")]


@contextlib.contextmanager
def _maybe_ray(address: str | None, workers: int | None):  # noqa: ANN202
    """Inside: encoding and query runs go to Ray when ``address`` is given; otherwise nothing changes."""
    if not address:
        yield False
        return
    from rankstack.distributed.ray_backend import RayShardEncoder, ray_session
    from rankstack.index.dense import remote_shard_encoding

    with ray_session(address), remote_shard_encoding(lambda config: RayShardEncoder(config, workers)):
        stderr.print(f"running on Ray ({address})")
        yield True


def _version(value: bool) -> None:
    if value:
        stdout.print(f"rankstack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details to stderr.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


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
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or int8 (encoding speed vs exactness).")] = "auto",
    storage: Annotated[str, typer.Option(help="Vector storage on disk: float32, float16 or int8.")] = "float32",
    hnsw: Annotated[bool, typer.Option("--hnsw", help="Also build and store an HNSW graph.")] = False,
    hnsw_m: Annotated[int, typer.Option(help="HNSW M (links per node).")] = 32,
    hnsw_ef_construction: Annotated[int, typer.Option(help="HNSW efConstruction.")] = 200,
    ray: RayOption = None,
    ray_workers: RayWorkersOption = None,
) -> None:
    """Build an index directory from a corpus; --dense adds vectors (to an existing index too)."""
    from rankstack.index import Index, build_index

    started = time.perf_counter()
    if not (dense and output.exists() and not overwrite):
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

        encoder = load_encoder(model, precision)
        started = time.perf_counter()
        with _maybe_ray(ray, ray_workers), \
                progress_bar(f"encoding with {encoder.model_id} ({encoder.precision})", total=opened.num_docs) as adv:
            build_dense(opened, encoder, storage, HnswParams(hnsw_m, hnsw_ef_construction) if hnsw else None,
                        progress=adv)
        stderr.print(f"added {opened.num_docs:,} {encoder.dimension}-d vectors ({storage}) in "
                     f"{time.perf_counter() - started:.1f} s")


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
    with _maybe_ray(ray, ray_workers) as on_ray, \
            progress_bar("searching", total=len(query_list), unit="queries") as advance:
        result = _run_pipeline(opened, parsed, query_list, context, top_k, on_ray, ray_workers, advance)
    write_run(result, output, tag or str(parsed))
    latency = ", ".join(f"{s} {ms:.2f} ms" for s, ms in result.latency_ms().items())
    stderr.print(f"wrote {sum(len(h) for h in result.results.values()):,} hits for {len(query_list):,} "
                 f"queries to {output} ({latency} per query)")


def _run_pipeline(opened, pipeline, queries, context, top_k: int, on_ray: bool,  # noqa: ANN001
                  workers: int | None, advance) -> Run:  # noqa: ANN001
    """Run one pipeline over queries, in this process or partitioned across Ray actors."""
    from rankstack.experiment import run_queries

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
    from rankstack.evaluate.measures import parse_measures
    from rankstack.evaluate.table import experiment_table
    from rankstack.experiment import compare_systems, judged_queries
    from rankstack.index.cache import has_live_changes, open_or_build
    from rankstack.io import BeirDataset, read_run
    from rankstack.stages import SearchContext, parse_pipeline

    parse_measures(metrics)  # fail on a bad measure before any expensive work
    if not pipelines and not runs:
        pipelines = ["bm25"]
    collection = BeirDataset.open(dataset)
    qrels = collection.qrels(split)
    named_runs = []
    warnings: list[str] = []
    if pipelines:
        queries, qrels, warnings = judged_queries(collection.queries(), qrels, collection.qrels_path(split))
        for warning in warnings:
            stderr.print(f"[yellow]warning:[/] {warning}")
        with progress_bar(f"indexing {collection.name}") as advance:
            opened, built = open_or_build(collection.root, index_dir, advance)
        stderr.print(f"{'built' if built else 'reusing'} index {opened.path}")
        if has_live_changes(opened.path):
            stderr.print(f"[yellow]warning:[/] {opened.path} has live changes since it was built from the dataset; "
                         "the figures are for the changed corpus")
        parsed = [parse_pipeline(p, opened) for p in pipelines]  # parse all before running any
        context = SearchContext(ignore_identical_ids=ignore_identical_ids)
        with _maybe_ray(ray, ray_workers) as on_ray:
            with ProgressBars() as bars:
                for pipeline in parsed:
                    pipeline.prepare(bars)
            for pipeline in parsed:
                with progress_bar(str(pipeline), total=len(queries), unit="queries") as advance:
                    named_runs.append((str(pipeline), _run_pipeline(opened, pipeline, queries, context, top_k,
                                                                    on_ray, ray_workers, advance)))
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
    if report is not None:
        from rankstack.evaluate.report import write_report

        written = write_report(result, report, f"{collection.name} ({split})",
                               {"dataset": str(dataset), "split": split})
        stderr.print(f"wrote {written} (+ report.json, tradeoff.png, per_query.png)")
    if as_json:
        stdout.print_json(data={"dataset": str(dataset), "split": split, **result.to_json()})
    else:
        stdout.print(experiment_table(result, f"{collection.name} ({split})"))


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


train_app = typer.Typer(no_args_is_help=True, help="Fine-tune rankers on a collection's relevance judgements.")
app.add_typer(train_app, name="train")


def _mining_index(dataset: Path) -> Any:
    """The collection's BM25 index (built once and cached), which mines negatives and dev candidates."""
    from rankstack.index.cache import open_or_build
    from rankstack.io import BeirDataset

    with progress_bar("indexing for negative mining") as advance:
        opened, _ = open_or_build(BeirDataset.open(dataset).root, None, advance)
    return opened


@train_app.command("bi-encoder")
def train_bi_encoder_command(
    dataset: Annotated[Path, typer.Argument(help="BEIR directory with qrels for the training split.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the trained model.")],
    base: Annotated[str, typer.Option(help="Starting model: local path or Hugging Face id.")] = "default",
    split: Annotated[str, typer.Option(help="Qrels split to train on.")] = "train",
    epochs: Annotated[int, typer.Option(min=1)] = 1,
    batch_size: Annotated[int, typer.Option(min=2)] = 32,
    learning_rate: Annotated[float, typer.Option()] = 2e-5,
    seed: Annotated[int, typer.Option()] = 42,
    miner: Annotated[str, typer.Option(help="Pipeline that mines hard negatives.")] = "bm25%30",
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: all epochs).")] = -1,
) -> None:
    """Fine-tune a bi-encoder (in-batch + mined hard negatives); resumes from checkpoints if interrupted."""
    from rankstack.train.bi_encoder import train_bi_encoder

    opened = _mining_index(dataset)
    card = train_bi_encoder(dataset, output, opened, base, split, epochs, batch_size, learning_rate, seed, miner,
                            max_steps=max_steps)
    stderr.print(f"saved {card['kept']} model to {output} in {card['train_seconds']:.0f} s; dev nDCG@10 "
                 f"{card['dev_ndcg@10']}")



@train_app.command("cross-encoder")
def train_cross_encoder_command(
    dataset: Annotated[Path, typer.Argument(help="BEIR directory with qrels for the training split.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the trained model.")],
    base: Annotated[str, typer.Option(help="Starting transformer: local path or Hugging Face id.")] = "default",
    split: Annotated[str, typer.Option(help="Qrels split to train on.")] = "train",
    epochs: Annotated[int, typer.Option(min=1)] = 2,
    batch_size: Annotated[int, typer.Option(min=1, help="Queries per step.")] = 8,
    learning_rate: Annotated[float, typer.Option()] = 3e-5,
    negatives: Annotated[int, typer.Option(min=1, help="Mined hard negatives per positive.")] = 7,
    max_length: Annotated[int, typer.Option(min=16, help="Tokens per (query, document) input.")] = 256,
    seed: Annotated[int, typer.Option()] = 42,
    miner: Annotated[str, typer.Option(help="Pipeline that mines hard negatives and gives the dev candidates.")]
    = "bm25%30",
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: all epochs).")] = -1,
) -> None:
    """Fine-tune a cross-encoder reranker (listwise loss over mined hard negatives); resumes if interrupted."""
    from rankstack.train.cross_encoder import train_cross_encoder

    opened = _mining_index(dataset)
    card = train_cross_encoder(dataset, output, opened, base, split, epochs, batch_size, learning_rate, seed, miner,
                               negatives, max_length, max_steps=max_steps)
    stderr.print(f"saved {card['kept']} model to {output} in {card['train_seconds']:.0f} s; dev nDCG@10 "
                 f"{card['dev_ndcg@10']}")



@train_app.command("distil")
def train_distil_command(
    teacher: Annotated[str, typer.Argument(help="Trained cross-encoder to compress: local path or Hugging Face id.")],
    dataset: Annotated[Path, typer.Argument(help="BEIR directory whose training queries drive the distillation.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the smaller model.")],
    keep_layers: Annotated[int, typer.Option(min=1, help="Transformer layers the student keeps.")] = 3,
    split: Annotated[str, typer.Option(help="Qrels split whose queries are used.")] = "train",
    epochs: Annotated[int, typer.Option(min=1)] = 2,
    batch_size: Annotated[int, typer.Option(min=1, help="Queries per step.")] = 16,
    learning_rate: Annotated[float, typer.Option()] = 5e-5,
    negatives: Annotated[int, typer.Option(min=1, help="Mined documents per positive scored by the teacher.")] = 7,
    max_length: Annotated[int, typer.Option(min=16)] = 256,
    seed: Annotated[int, typer.Option()] = 42,
    miner: Annotated[str, typer.Option(help="Pipeline that mines the documents to distil on.")] = "bm25%30",
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: all epochs).")] = -1,
    hidden_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the hidden-state loss against the "
                                                 "score margins (0: margins only).")] = 20.0,
    pseudo_queries: Annotated[int, typer.Option(min=0, help="Also distil on this many unlabelled lists: sampled "
                                                "documents' titles as queries, with the miner's candidates.")] = 0,
) -> None:
    """Compress a cross-encoder: drop layers, then distil the teacher's score margins and hidden states into it."""
    from rankstack.train.compress import distil_cross_encoder

    opened = _mining_index(dataset)
    card = distil_cross_encoder(teacher, dataset, output, opened, keep_layers, split, epochs, batch_size,
                                learning_rate, seed, miner, negatives, max_length, max_steps=max_steps,
                                hidden_weight=hidden_weight, pseudo_queries=pseudo_queries)
    stderr.print(f"saved a {len(card['layers']['kept'])}-layer student to {output} in {card['train_seconds']:.0f} s; "
                 f"dev nDCG@10 {card['dev_ndcg@10']}")


@train_app.command("split")
def train_split_command(
    teacher: Annotated[str, typer.Argument(help="Trained cross-encoder (rankstack train cross-encoder) to split.")],
    dataset: Annotated[Path, typer.Argument(help="BEIR directory whose training queries drive the distillation.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the split model.")],
    local_layers: Annotated[int, typer.Option(min=1, help="Lower layers that read query and document apart "
                                              "(their document side is computed before any query).")] = 3,
    query_tokens: Annotated[int, typer.Option(min=3, help="Longest query, in tokens; documents start here.")] = 64,
    document_tokens: Annotated[int, typer.Option(min=2, help="Longest document, in tokens.")] = 224,
    split: Annotated[str, typer.Option(help="Qrels split whose queries are used.")] = "train",
    epochs: Annotated[int, typer.Option(min=1)] = 1,
    list_size: Annotated[int, typer.Option(min=2, help="Documents per training list: a positive and the miner's "
                                           "best unjudged others.")] = 16,
    learning_rate: Annotated[float, typer.Option()] = 5e-5,
    seed: Annotated[int, typer.Option()] = 42,
    miner: Annotated[str, typer.Option(help="Pipeline that mines the documents to distil on.")] = "bm25%30",
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: all epochs).")] = -1,
    pseudo_queries: Annotated[int, typer.Option(min=0, help="Also distil on this many unlabelled lists (sampled "
                                                "documents give the queries).")] = 0,
    pseudo_query_source: Annotated[str, typer.Option(help="What of a sampled document is its pseudo-query: "
                                                     "'title', or a random 'sentence' of its text.")] = "title",
    hidden_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the loss on the teacher's token states "
                                                 "(last split layer and every joint layer) next to the score "
                                                 "margins (0: margins only).")] = 1.0,
    init: Annotated[str | None, typer.Option(help="Start from this split model (same layout) instead of a "
                                             "copy of the teacher: a second round of distillation.")] = None,
    prune_stopwords: Annotated[bool, typer.Option(help="Drop documents' stopwords and punctuation after the split "
                                                  "layers: the joint layers read about 30% fewer tokens.")] = False,
    query_reads_document: Annotated[bool, typer.Option(help="Let the query's tokens read the document's in the "
                                                       "split layers too (the document's still read only "
                                                       "the document, so it is still precomputed).")] = False,
) -> None:
    """Make a cross-encoder faster by splitting its lower layers by segment (PreTTR), distilled from itself."""
    from rankstack.train.split import train_split_cross_encoder

    opened = _mining_index(dataset)
    card = train_split_cross_encoder(teacher, dataset, output, opened, local_layers, query_tokens, document_tokens,
                                     split, epochs, list_size, learning_rate, seed, miner, max_steps=max_steps,
                                     pseudo_queries=pseudo_queries, pseudo_query_source=pseudo_query_source,
                                     hidden_weight=hidden_weight, init=init, prune=prune_stopwords,
                                     query_reads_document=query_reads_document)
    stderr.print(f"saved a split cross-encoder ({local_layers} of {card['layout']['layers']} layers split) to "
                 f"{output} in {card['train_seconds']:.0f} s; dev nDCG@10 {card['dev_ndcg@10']}")


@train_app.command("soup")
def train_soup_command(
    models: Annotated[list[str], typer.Argument(help="Split cross-encoders of one layout, distilled from one "
                                                "teacher (rankstack train split).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the averaged model.")],
    dataset: Annotated[Path | None, typer.Option(help="BEIR directory the models were trained on: score the "
                                                 "soup on their held-out dev queries.")] = None,
    query_reads_document: Annotated[bool, typer.Option(help="Let the soup's query read the document in the "
                                                       "split layers, however its ingredients were trained "
                                                       "(documents are still precomputed).")] = False,
) -> None:
    """Average the weights of several split cross-encoders into one (a model soup); query time is unchanged."""
    from rankstack.train.soup import average_split_models

    card = average_split_models(models, output, dataset, _mining_index(dataset) if dataset else None,
                                query_reads_document=query_reads_document)
    stderr.print(f"saved the average of {len(models)} split cross-encoders to {output}; "
                 f"dev nDCG@10 {card.get('dev_ndcg@10', 'not scored (no --dataset)')}")


@dataclass(frozen=True)
class _ClientFreedom:
    """What HTTP clients may choose beyond the presets (see rankstack.serve.policy)."""

    allow_any_pipeline: bool = False
    data_root: Path | None = None
    model_root: Path | None = None


def _serve(index_dir: Path, host: str, port: int, pipelines: list[str] | None, api_key: str | None = None,
           freedom: _ClientFreedom = _ClientFreedom()) -> None:
    from rankstack.index import Index
    from rankstack.models.loading import require

    uvicorn = require("uvicorn", "serve", "The web service")
    require("fastapi", "serve", "The web service")
    from rankstack.serve.app import create_app
    from rankstack.serve.service import SearchService

    service = SearchService.open(Index.open(index_dir), presets=pipelines or (), api_key=api_key,
                                 allow_any_pipeline=freedom.allow_any_pipeline, data_root=freedom.data_root,
                                 model_root=freedom.model_root)
    stderr.print(f"serving {service.index.num_docs:,} documents from {index_dir} on http://{host}:{port}/ "
                 f"(API under /v1, schema at /docs); Ctrl-C stops")
    uvicorn.run(create_app(service), host=host, port=port, log_level="warning")


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
) -> None:
    """Serve the HTTP API and the web search page for an index."""
    if (data_root or model_root) and not allow_any_pipeline:
        raise typer.BadParameter("--data-root and --model-root only apply with --allow-any-pipeline")
    _serve(index_dir, host, port, pipelines, api_key, _ClientFreedom(allow_any_pipeline, data_root, model_root))


@app.command()
def demo(
    serve_page: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve the web page (default) or print "
                                             "results for example queries.")] = True,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8000,
    top_k: Annotated[int, typer.Option("-k", "--top-k", min=1, max=50)] = 5,
) -> None:
    """Search the documentation shipped with this Python interpreter (no download, no data needed)."""
    from rankstack.demo import EXAMPLE_QUERIES, demo_index

    opened, pipelines = demo_index(ProgressBars)
    stderr.print(f"{opened.num_docs:,} documents from the Python {sys.version.split()[0]} documentation "
                 f"in {opened.path}")
    if serve_page:
        _serve(opened.path, host, port, pipelines)
        return
    _print_examples(opened, pipelines[-1], EXAMPLE_QUERIES, top_k)


def _print_examples(opened, pipeline_text: str, queries: Sequence[str], top_k: int) -> None:  # noqa: ANN001
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
        table = Table(title=f"{query.text!r}  [{pipeline}]", title_justify="left")
        table.add_column("rank", justify="right")
        table.add_column("score", justify="right")
        table.add_column("document")
        table.add_column("text")
        for rank, hit in enumerate(hits, start=1):
            text = " ".join(docs[hit.doc_id].text.split())
            table.add_row(str(rank), f"{hit.score:.3f}", docs[hit.doc_id].title, text[:90])
        stdout.print(table)


def main() -> None:
    try:
        app()
    except RankstackError as error:
        stderr.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(exit_code_for(error))
    except KeyboardInterrupt:
        stderr.print("interrupted; nothing half-written was kept")
        sys.exit(130)


if __name__ == "__main__":
    main()
