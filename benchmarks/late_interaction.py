"""Late interaction on SciFact: stored token vectors compressed against uncompressed, first stage and reranker.

    python benchmarks/late_interaction.py MODEL [--data DIR] [--split test] [--storages int8 float32]

The collection is encoded once with MODEL (a ``rankstack train late-interaction`` output); the same token
vectors are written into one copy of the BM25 index per storage, and each copy runs ``colbert(model=MODEL)``
as a first stage (exact MaxSim over every token) and ``bm25%100>>colbert(model=MODEL)`` over the split's
queries. Reported per storage: bytes per token and per document, nDCG@10 and ms per query (one batch of all
queries, model loaded and warmed up). Results go to results/late_interaction_<cpu class>.json.
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
from _common import result_machine, write_result

from rankstack._console import progress_bar
from rankstack.evaluate import evaluate
from rankstack.index import Index
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


def measure(index: Index, pipeline: str, dataset: BeirDataset, split: str) -> dict[str, Any]:
    stages = parse_pipeline(pipeline, index)
    stages.prepare()
    queries = [q for q in dataset.queries() if q.query_id in {r.query_id for r in dataset.qrels(split)}]
    started = time.perf_counter()
    run = stages.transform(queries, context=SearchContext(ignore_identical_ids=True))
    seconds = time.perf_counter() - started
    ndcg = evaluate(run, dataset.qrels(split), ["nDCG@10"]).aggregate["nDCG@10"]
    return {"nDCG@10": round(ndcg, 4), "ms_per_query": round(1000 * seconds / len(queries), 1),
            "queries": len(queries)}


def describe(model: str) -> dict[str, Any]:
    """The model by its training card (no machine paths in results)."""
    card_path = Path(model) / "rankstack_training.json"
    if not card_path.is_file():
        return {"name": Path(model).name}
    card = json.loads(card_path.read_text(encoding="utf-8"))
    return {"kind": card.get("kind"), "base": card.get("base"), "teacher": card.get("teacher") is not None,
            "model": card.get("model"), "parameters": card.get("parameters"), "data": card.get("data"),
            "dev_ndcg@10": card.get("dev_ndcg@10")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="test")
    parser.add_argument("--storages", nargs="+", default=["int8", "float32"])
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    dataset = BeirDataset.open(args.data)
    base, _ = open_or_build(dataset.root)
    shards, lengths, encode_seconds = encode_collection(base, args.model)
    model_id = load_late_interaction(args.model).config()
    systems: dict[str, Any] = {"bm25": measure(base, "bm25", dataset, args.split)}
    work = Path(tempfile.mkdtemp(prefix="late-interaction-"))
    try:
        for storage in args.storages:
            copy = work / storage
            shutil.copytree(base.path, copy, ignore=shutil.ignore_patterns("live", "*.lock"))
            final = write_token_vectors(copy, model_id, storage, shards, lengths)
            index = Index.open(copy)
            stored_bytes = (final / "tokens.npy").stat().st_size
            facts = {"bytes_per_token": int(model_id["dimension"]) * np.dtype(storage).itemsize,
                     "bytes_per_document": round(stored_bytes / len(lengths), 1),
                     "tokens_per_document": round(float(lengths.mean()), 1)}
            for name, pipeline in (("first_stage", f"colbert(model={args.model})"),
                                   ("rerank_bm25_100", f"bm25%100>>colbert(model={args.model})")):
                systems[f"{storage}/{name}"] = {**facts, **measure(index, pipeline, dataset, args.split)}
                print(storage, name, systems[f"{storage}/{name}"], flush=True)
            index.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("bm25", systems["bm25"])
    path = write_result("late_interaction", variant=f"scifact_{args.split}",
                        settings={"dataset": "scifact", "split": args.split, "model": describe(args.model),
                                  "encode_seconds": round(encode_seconds, 1), "documents": int(len(lengths))},
                        systems=systems, ratios={}, targets={"first_stage_nDCG@10": 0.70},
                        targets_met={"first_stage_nDCG@10": bool(
                            systems.get("int8/first_stage", {}).get("nDCG@10", 0) >= 0.70)},
                        machine=result_machine(), output=args.output)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
