"""Late interaction on SciFact beside BM25, dense and the cross-encoder, in one run.

    python benchmarks/late_interaction.py MODEL [--dense DENSE ...] [--cross-encoder CE] [--rerank-queries 40]
        [--data DIR] [--split test] [--storages int8 float32] [--variant NAME]

- BM25: the index is built anew (docs/s) and its postings measured (bytes per document).
- dense (each ``--dense`` model; ``default`` is the bundled one): the collection encoded into a copy of the
  index as ``dense`` does on first use (docs/s, bytes per document), then ``dense(model=...)`` as a first stage
  and fused with BM25 (``linear(bm25,dense(model=...),norm=zscore)``).
- late interaction: the collection is encoded once with MODEL (a ``rankstack train late-interaction``
  output, docs/s); the same token vectors are written into one copy per storage, and each copy runs
  ``colbert(model=MODEL)`` as a first stage (exact MaxSim over every token) and ``bm25%100>>colbert``.
- rerankers at the same depth on the same first ``--rerank-queries`` queries, taking turns:
  ``bm25%100>>colbert(model=MODEL)`` against ``bm25%100>>cross_encoder(model=CE)`` (ms per query, scoring only:
  the shared BM25 part is timed apart and subtracted), and their nDCG@10 on those queries.

Every first stage runs all the split's judged queries in one batch, model loaded and warmed up. Results go to
results/late_interaction_<cpu class>.json, one variant per run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import describe_base, result_machine, score_pipeline, write_result

from rankstack._console import progress_bar
from rankstack.evaluate import evaluate
from rankstack.index import Index
from rankstack.index.builder import build_index
from rankstack.index.cache import open_or_build
from rankstack.index.token_vectors import write_token_vectors
from rankstack.io import BeirDataset
from rankstack.models.late_interaction import load_late_interaction
from rankstack.stages import SearchContext, parse_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"


def encode_collection(index: Index, model: str) -> tuple[list[np.ndarray], np.ndarray, float]:
    encoder = load_late_interaction(model)
    segment = index.segment
    shards, lengths = [], []
    started = time.perf_counter()
    with progress_bar("encoding the collection", total=segment.num_docs) as advance:
        for start in range(0, segment.num_docs, 256):
            docs = segment.docstore.range(start, start + 256)
            vectors = encoder.encode_docs([d.contents for d in docs])
            shards.append(np.concatenate(vectors))
            lengths += [len(v) for v in vectors]
            advance(len(docs))
    return shards, np.array(lengths, dtype=np.int64), time.perf_counter() - started


def judged_queries(dataset: BeirDataset, split: str) -> list[Any]:
    judged = {r.query_id for r in dataset.qrels(split)}
    return [q for q in dataset.queries() if q.query_id in judged]


def measure(index: Index, pipeline: str, dataset: BeirDataset, split: str, queries: list[Any] | None = None,
            progress: Any = None) -> dict[str, Any]:
    return score_pipeline(index, pipeline, dataset, split, queries=queries, progress=progress)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def bm25_facts(dataset: BeirDataset, work: Path) -> dict[str, Any]:
    """Build the BM25 index anew: docs/s, and bytes per document of its postings (the text store apart)."""
    started = time.perf_counter()
    built = build_index(dataset.root, work / "bm25-build")
    seconds = time.perf_counter() - started
    index = Index.open(built)
    documents = index.num_docs
    index.close()
    return {"build_docs_per_s": round(documents / seconds, 1),
            "bytes_per_document": round(folder_bytes(built / "sparse") / documents, 1),
            "text_store_bytes_per_document": round((built / "docs.sqlite").stat().st_size / documents, 1)}


def dense_facts(fresh: Path, model: str, work: Path, dataset: BeirDataset, split: str) -> dict[str, Any]:
    """Encode the collection into a copy of the freshly built index (``fresh``: no vectors yet, unlike a cached
    index that earlier runs added vectors to) as ``dense`` does on first use, then search with it."""
    copy = work / f"dense-{len(list(work.glob('dense-*')))}"
    shutil.copytree(fresh, copy, ignore=shutil.ignore_patterns("live", "*.lock"))
    index = Index.open(copy)
    before = folder_bytes(copy)
    pipeline = f"dense(model={model})"
    started = time.perf_counter()
    with progress_bar(f"encoding with {Path(model).name}", total=index.num_docs) as advance:
        parse_pipeline(pipeline, index).prepare(lambda description, total: advance)
    seconds = time.perf_counter() - started
    facts = {"build_docs_per_s": round(index.num_docs / seconds, 2),
             "bytes_per_document": round((folder_bytes(copy) - before) / index.num_docs, 1),
             **measure(index, pipeline, dataset, split),
             "hybrid": measure(index, f"linear(bm25,{pipeline},norm=zscore)", dataset, split)}
    index.close()
    return facts


def rerank_in_turns(index: Index, pipelines: dict[str, str], dataset: BeirDataset, split: str, count: int,
                    turn: int = 10) -> dict[str, Any]:
    """Each pipeline over the same first ``count`` judged queries, ``turn`` queries at a time in turn (so drift
    in the machine's speed weighs on all alike); the shared ``bm25%100`` is timed the same way and subtracted."""
    queries = judged_queries(dataset, split)[:count]
    every = {"first_stage": "bm25%100", **pipelines}
    stages = {name: parse_pipeline(p, index) for name, p in every.items()}
    for stage in stages.values():
        stage.prepare()
    seconds = dict.fromkeys(every, 0.0)
    runs: dict[str, dict[str, Any]] = {name: {} for name in every}
    for start in range(0, len(queries), turn):
        batch = queries[start:start + turn]
        for name, stage in stages.items():
            began = time.perf_counter()
            run = stage.transform(batch, context=SearchContext(ignore_identical_ids=True))
            seconds[name] += time.perf_counter() - began
            runs[name].update({q: {h.doc_id: h.score for h in run[q]} for q in run.query_ids})
    from rankstack.types import Run

    wanted = {q.query_id for q in queries}
    qrels = [r for r in dataset.qrels(split) if r.query_id in wanted]
    result: dict[str, Any] = {}
    for name in every:
        ndcg = evaluate(Run.from_scores(runs[name]), qrels, ["nDCG@10"]).aggregate["nDCG@10"]
        total_ms = 1000 * seconds[name] / len(queries)
        scoring_ms = total_ms - (1000 * seconds["first_stage"] / len(queries) if name != "first_stage" else 0.0)
        result[name] = {"pipeline": every[name], "nDCG@10": round(ndcg, 4), "ms_per_query": round(total_ms, 1),
                        "scoring_ms_per_query": round(scoring_ms, 1), "queries": len(queries)}
    return result


def describe(model: str) -> dict[str, Any]:
    """The model by its training card (no machine paths in results)."""
    card_path = Path(model) / "rankstack_training.json"
    if not card_path.is_file():
        return {"name": Path(model).name}
    card = json.loads(card_path.read_text(encoding="utf-8"))
    return {"kind": card.get("kind"), "base": describe_base(card.get("base")),
            "teacher": card.get("teacher") is not None, "model": card.get("model"),
            "parameters": card.get("parameters"), "data": card.get("data"), "dev_ndcg@10": card.get("dev_ndcg@10")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="test")
    parser.add_argument("--storages", nargs="+", default=["int8", "float32"])
    parser.add_argument("--dense", nargs="*", default=["default"], help="bi-encoders compared (none: skip)")
    parser.add_argument("--cross-encoder", default=None, help="cross-encoder the colbert reranker is timed against")
    parser.add_argument("--rerank-queries", type=int, default=40)
    parser.add_argument("--variant", default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    dataset = BeirDataset.open(args.data)
    base, _ = open_or_build(dataset.root)
    work = Path(tempfile.mkdtemp(prefix="late-interaction-"))
    systems: dict[str, Any] = {"bm25": {**bm25_facts(dataset, work), **measure(base, "bm25", dataset, args.split)}}
    print("bm25", systems["bm25"], flush=True)
    for model in args.dense:
        systems[f"dense/{Path(model).name}"] = dense_facts(work / "bm25-build", model, work, dataset, args.split)
        print("dense", model, systems[f"dense/{Path(model).name}"], flush=True)
    shards, lengths, encode_seconds = encode_collection(base, args.model)
    model_id = load_late_interaction(args.model).config()
    try:
        for storage in args.storages:
            copy = work / storage
            shutil.copytree(base.path, copy, ignore=shutil.ignore_patterns("live", "*.lock"))
            final = write_token_vectors(copy, model_id, storage, shards, lengths)
            index = Index.open(copy)
            stored_bytes = (final / "tokens.npy").stat().st_size
            facts = {"bytes_per_token": int(model_id["dimension"]) * np.dtype(storage).itemsize,
                     "bytes_per_document": round(stored_bytes / len(lengths), 1),
                     "tokens_per_document": round(float(lengths.mean()), 1),
                     "build_docs_per_s": round(len(lengths) / encode_seconds, 2)}
            for name, pipeline in (("first_stage", f"colbert(model={args.model})"),
                                   ("rerank_bm25_100", f"bm25%100>>colbert(model={args.model})")):
                systems[f"{storage}/{name}"] = {**facts, **measure(index, pipeline, dataset, args.split)}
                print(storage, name, systems[f"{storage}/{name}"], flush=True)
            if storage == args.storages[0] and args.cross_encoder:
                pipelines = {"colbert": f"bm25%100>>colbert(model={args.model})",
                             "cross_encoder": f"bm25%100>>cross_encoder(model={args.cross_encoder})"}
                rerank = rerank_in_turns(index, pipelines, dataset, args.split, args.rerank_queries)
                for entry in rerank.values():  # model directories are this machine's; results name roles
                    entry["pipeline"] = entry["pipeline"].replace(args.model, "MODEL").replace(
                        args.cross_encoder, "CROSS_ENCODER")
                systems["rerank_top100"] = rerank
                print("rerank_top100", systems["rerank_top100"], flush=True)
            index.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios: dict[str, Any] = {}
    if "rerank_top100" in systems:
        rerank = systems["rerank_top100"]
        ratios["cross_encoder_over_colbert_scoring_ms"] = round(
            rerank["cross_encoder"]["scoring_ms_per_query"] / max(rerank["colbert"]["scoring_ms_per_query"], 1e-9), 1)
    first = f"{args.storages[0]}/first_stage"
    targets = {"first_stage_nDCG@10": 0.70, "reranker_speedup_over_cross_encoder": 10.0}
    met = {"first_stage_nDCG@10": bool(systems.get(first, {}).get("nDCG@10", 0) >= 0.70)}
    if ratios:
        met["reranker_speedup_over_cross_encoder"] = ratios["cross_encoder_over_colbert_scoring_ms"] >= 10.0
    path = write_result("late_interaction", variant=args.variant or f"scifact_{args.split}",
                        settings={"dataset": "scifact", "split": args.split, "model": describe(args.model),
                                  "dense": [describe(m) if m != "default" else "bundled" for m in args.dense],
                                  "cross_encoder": describe(args.cross_encoder) if args.cross_encoder else None,
                                  "rerank_queries": args.rerank_queries,
                                  "encode_seconds": round(encode_seconds, 1), "documents": int(len(lengths))},
                        systems=systems, ratios=ratios, targets=targets, targets_met=met,
                        machine=result_machine(), output=args.output)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
