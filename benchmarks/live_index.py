"""Live index on SciFact: build from half, add the rest in batches, delete 10 %, re-add, compare.

    python benchmarks/live_index.py [--data DIR] [--output FILE]

Measures add throughput (docs/s, each batch durable in the log before the call returns), BM25 query
latency with the changes live and after compaction, compaction time, and checks that nDCG@10 (and
every score) equals that of an index built from scratch on the final corpus. Results go to
results/live_index_<cpu class>.json (variant ``default``; see ``_common.write_result``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import require_data, result_machine, write_result

from rankstack.evaluate import evaluate
from rankstack.index import Index, build_index
from rankstack.index.live import IndexWriter
from rankstack.io import BeirDataset, read_corpus
from rankstack.stages import BM25, SearchContext

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
LIVE_EQUALS_FRESH = ("nDCG@10 of the live index before compaction == after compaction == an index built from "
                     "scratch on the final corpus")


def query_latency_ms(index: Index, queries: list, repeats: int = 3) -> float:
    pipeline = BM25(index) % 1000
    pipeline.transform(queries[:10])
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for query in queries:
            pipeline.transform([query], context=SearchContext(ignore_identical_ids=True))
        best = min(best, (time.perf_counter() - started) * 1000 / len(queries))
    return best


def effectiveness(index: Index, queries: list, qrels: list) -> tuple[float, dict]:
    run = (BM25(index) % 1000).transform(queries, context=SearchContext(ignore_identical_ids=True))
    return evaluate(run, qrels, ["nDCG@10"]).aggregate["nDCG@10"], run.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=None, help="default: results/live_index_<cpu class>.json")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    require_data(args.data)
    dataset = BeirDataset.open(args.data)
    docs = list(read_corpus(dataset.root))
    qrels = dataset.qrels("test")
    queries = dataset.queries({q.query_id for q in qrels})
    half = len(docs) // 2
    rng = random.Random(42)
    with tempfile.TemporaryDirectory() as work:
        live = Index.open(build_index(docs[:half], Path(work) / "live"))
        added_seconds = 0.0
        with IndexWriter(live) as writer:
            for start in range(half, len(docs), args.batch_size):
                batch = docs[start:start + args.batch_size]
                started = time.perf_counter()
                writer.add(batch)
                added_seconds += time.perf_counter() - started
            victims = rng.sample(docs, len(docs) // 10)
            started = time.perf_counter()
            report = writer.delete([d.doc_id for d in victims])
            delete_seconds = time.perf_counter() - started
            deleted_ndcg, _ = effectiveness(live, queries, qrels)
            started = time.perf_counter()
            for start in range(0, len(victims), args.batch_size):
                writer.add(victims[start:start + args.batch_size])
            readd_seconds = time.perf_counter() - started
            live_ndcg, live_run = effectiveness(live, queries, qrels)
            latency_live = query_latency_ms(live, queries)
            started = time.perf_counter()
            writer.compact()
            compact_seconds = time.perf_counter() - started
        compacted_ndcg, compacted_run = effectiveness(live, queries, qrels)
        latency_compacted = query_latency_ms(live, queries)
        fresh = Index.open(build_index(docs, Path(work) / "fresh"))
        fresh_ndcg, fresh_run = effectiveness(fresh, queries, qrels)
        latency_fresh = query_latency_ms(fresh, queries)

    def max_score_difference(run: dict) -> float:
        worst = 0.0
        for query_id, scores in fresh_run.items():
            assert list(run[query_id]) == list(scores), f"ranking differs for query {query_id}"
            difference = np.abs(np.array(list(run[query_id].values())) - np.array(list(scores.values())))
            worst = max(worst, float(difference.max()) if difference.size else 0.0)
        return worst

    figures = {
        "add": {"docs": len(docs) - half, "batch_size": args.batch_size, "seconds": added_seconds,
                "docs_per_s": (len(docs) - half) / added_seconds},
        "delete": {"docs": len(report.deleted), "seconds": delete_seconds},
        "re_add": {"docs": len(victims), "seconds": readd_seconds, "docs_per_s": len(victims) / readd_seconds},
        "compact_seconds": compact_seconds,
        "ndcg@10": {"with_10pct_deleted": deleted_ndcg, "live_before_compaction": live_ndcg,
                    "after_compaction": compacted_ndcg, "fresh_build": fresh_ndcg},
        "max_abs_score_difference_vs_fresh": {"live": max_score_difference(live_run),
                                              "compacted": max_score_difference(compacted_run)},
        "query_latency_ms": {"live_before_compaction": latency_live, "after_compaction": latency_compacted,
                             "fresh_build": latency_fresh, "note": "BM25, top 1000, one query per call, best of 3"},
    }
    output = write_result(
        "live_index", settings={"dataset": "scifact", "docs": len(docs), "initial_docs": half},
        systems={"rankstack": figures}, ratios={},
        targets={"ndcg_equals_fresh": LIVE_EQUALS_FRESH},
        targets_met={"ndcg_equals_fresh": live_ndcg == fresh_ndcg == compacted_ndcg},
        machine=result_machine(), output=args.output)
    print(json.dumps({k: figures[k] for k in ("add", "re_add", "compact_seconds", "ndcg@10",
                                              "max_abs_score_difference_vs_fresh", "query_latency_ms")}, indent=1),
          file=sys.stderr)
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
