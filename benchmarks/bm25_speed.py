"""Indexing and query speed of rankstack BM25 against bm25s and rank_bm25 on SciFact, in one run.

    python benchmarks/bm25_speed.py [--data DIR] [--output FILE]

Results go to results/bm25_speed_<cpu class>.json (variant ``default``; see ``_common.write_result``).

All systems get the same in-memory documents (title + " " + text), k1=0.9, b=0.4, top-1000 per
query, one thread. Query timings include each system's query tokenization; each query loop is
warmed up once and the best of ``--repeats`` runs is kept. nDCG@10 is computed for every system
with rankstack's ``evaluate`` on the 300 SciFact test queries, so all are scored identically.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import rank_bm25
import Stemmer
from _common import best_time, result_machine, write_result
from bm25s.stopwords import STOPWORDS_EN

from rankstack.evaluate import evaluate
from rankstack.index import Index, build_index
from rankstack.io import BeirDataset, read_corpus
from rankstack.stages import BM25, SearchContext
from rankstack.types import Doc, Qrel, Query, Run

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"

K1, B = 0.9, 0.4
# Lucene/Pyserini single-thread BM25 on SciFact, measured elsewhere on this kind of machine; not run here.
PYSERINI_REFERENCE_QPS = 56.0
TARGET_VS_BM25S = 0.8
TARGET_VS_PYSERINI = 10.0

Scores = dict[str, dict[str, float]]


def ndcg10(scores: Scores, qrels: Sequence[Qrel]) -> float:
    return evaluate(Run.from_scores(scores), qrels, ["nDCG@10"]).aggregate["nDCG@10"]


def hits_to_scores(doc_ids: list[str], positions: np.ndarray, values: np.ndarray) -> dict[str, float]:
    # Zero scores are padding (fewer than k matching docs); rankstack drops them too.
    return {doc_ids[i]: float(s) for i, s in zip(positions.tolist(), values.tolist(), strict=True) if s > 0}


def bench_rankstack(docs: list[Doc], queries: list[Query], k: int, repeats: int,
                    work_dir: Path) -> tuple[dict[str, Any], Scores]:
    started = time.perf_counter()
    path = build_index(docs, work_dir / "rankstack-index", overwrite=True)
    built = time.perf_counter()
    index = Index.open(path)
    # The score matrix and doc ids load lazily on first search; count them as indexing, not querying.
    index.bm25_retriever(K1, B)
    _ = index.doc_ids
    ready = time.perf_counter()

    pipeline = BM25(index, k1=K1, b=B) % k
    context = SearchContext()
    batch_seconds = best_time(lambda: pipeline.transform(queries, context=context), repeats)

    def one_at_a_time() -> None:
        for query in queries:
            pipeline.transform([query], context=context)

    single_seconds = best_time(one_at_a_time, repeats)
    scores = pipeline.transform(queries, context=context).to_dict()
    index.close()
    index_seconds = ready - started
    return {
        "index_seconds": index_seconds,
        "index_docs_per_s": len(docs) / index_seconds,
        "index_breakdown_seconds": {"build_index": built - started, "open_and_load_scores": ready - built},
        "queries_per_s": len(queries) / batch_seconds,
        "query_count_timed": len(queries),
        "query_mode": "one pipeline.transform(all queries) call",
        "single_call_queries_per_s": len(queries) / single_seconds,
        "single_call_mode": "pipeline.transform([query]) per query",
    }, scores


def bench_bm25s(docs: list[Doc], queries: list[Query], k: int, repeats: int) -> tuple[dict[str, Any], Scores]:
    stemmer = Stemmer.Stemmer("english")
    texts = [doc.contents for doc in docs]
    started = time.perf_counter()
    corpus_tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
    retriever = bm25s.BM25(k1=K1, b=B, method="lucene", backend="numpy")
    retriever.index(corpus_tokens, show_progress=False)
    index_seconds = time.perf_counter() - started

    def search(batch: list[Query]) -> tuple[np.ndarray, np.ndarray]:
        tokens = bm25s.tokenize([q.text for q in batch], stopwords="en", stemmer=stemmer,
                                return_ids=False, show_progress=False)
        return retriever.retrieve(tokens, k=k, show_progress=False, n_threads=0, backend_selection="numpy")

    def one_at_a_time() -> None:
        for query in queries:
            search([query])

    batch_seconds = best_time(lambda: search(queries), repeats)
    single_seconds = best_time(one_at_a_time, repeats)
    positions, values = search(queries)
    doc_ids = [doc.doc_id for doc in docs]
    scores = {q.query_id: hits_to_scores(doc_ids, row_pos, row_val)
              for q, row_pos, row_val in zip(queries, positions, values, strict=True)}
    return {
        "index_seconds": index_seconds,
        "index_docs_per_s": len(docs) / index_seconds,
        "queries_per_s": len(queries) / batch_seconds,
        "query_count_timed": len(queries),
        "query_mode": "bm25s.tokenize(all queries) + one retrieve() call, numpy backend, n_threads=0",
        "single_call_queries_per_s": len(queries) / single_seconds,
        "single_call_mode": "tokenize + retrieve per query",
        "note": "timed retrieve() returns row numbers; mapping them to doc ids is not timed",
    }, scores


class SimpleTokenizer:
    """bm25s's tokenizer rules (sklearn token pattern, its English stop words, Snowball English).

    rank_bm25 brings no tokenizer; this one gives it the same terms as bm25s, per text, cheaply.
    """

    def __init__(self) -> None:
        self._split = re.compile(r"(?u)\b\w\w+\b").findall
        self._stop = frozenset(STOPWORDS_EN)
        self._stemmer = Stemmer.Stemmer("english")

    def __call__(self, text: str) -> list[str]:
        return self._stemmer.stemWords([t for t in self._split(text.lower()) if t not in self._stop])


def bench_rank_bm25(docs: list[Doc], queries: list[Query], eval_queries: list[Query], k: int,
                    repeats: int, subset: int) -> tuple[dict[str, Any], Scores]:
    tokenize = SimpleTokenizer()
    started = time.perf_counter()
    model = rank_bm25.BM25Okapi([tokenize(doc.contents) for doc in docs], k1=K1, b=B)
    index_seconds = time.perf_counter() - started
    k = min(k, len(docs))

    def search(query: Query) -> tuple[np.ndarray, np.ndarray]:
        scores = model.get_scores(tokenize(query.text))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return top, scores[top]

    timed = queries[:subset]

    def loop() -> None:
        for query in timed:
            search(query)

    seconds = best_time(loop, repeats)
    doc_ids = [doc.doc_id for doc in docs]
    scores: Scores = {}
    for query in eval_queries:
        positions, values = search(query)
        scores[query.query_id] = hits_to_scores(doc_ids, positions, values)
    return {
        "index_seconds": index_seconds,
        "index_docs_per_s": len(docs) / index_seconds,
        "queries_per_s": len(timed) / seconds,
        "query_count_timed": len(timed),
        "query_mode": f"get_scores + argpartition per query, first {len(timed)} queries of queries.jsonl "
                      "only (rank_bm25 scores every document in Python per query term)",
        "note": "BM25Okapi's idf (floored at epsilon * mean idf) differs from Lucene's; "
                "tokenizer mimics bm25s's",
    }, scores


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SciFact in BEIR layout")
    parser.add_argument("--output", type=Path, default=None, help="default: results/bm25_speed_<cpu class>.json")
    parser.add_argument("--k", type=int, default=1000, help="hits per query")
    parser.add_argument("--repeats", type=int, default=3, help="timed query loops; the best is kept")
    parser.add_argument("--rank-bm25-queries", type=int, default=50, help="queries timed for rank_bm25")
    args = parser.parse_args(argv)

    if not (args.data / "queries.jsonl").is_file():
        print(f"error: SciFact not found at {args.data} (need corpus.jsonl[.gz], queries.jsonl, "
              "qrels/test.tsv); pass --data DIR", file=sys.stderr)
        return 2
    dataset = BeirDataset.open(args.data)
    docs = list(read_corpus(dataset.corpus_path))  # read once, untimed: we time indexing, not gzip+json
    queries = dataset.queries()
    qrels = dataset.qrels("test")
    test_ids = {q.query_id for q in qrels}
    test_queries = [q for q in queries if q.query_id in test_ids]
    print(f"SciFact: {len(docs)} docs, {len(queries)} queries ({len(test_queries)} test)", file=sys.stderr)

    systems: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rankstack-bench-") as work_dir:
        figures, scores = bench_rankstack(docs, queries, args.k, args.repeats, Path(work_dir))
    systems["rankstack"] = {**figures, "ndcg@10": ndcg10(scores, qrels)}
    figures, scores = bench_bm25s(docs, queries, args.k, args.repeats)
    systems["bm25s"] = {**figures, "ndcg@10": ndcg10(scores, qrels)}
    figures, scores = bench_rank_bm25(docs, queries, test_queries, args.k, args.repeats,
                                      args.rank_bm25_queries)
    systems["rank_bm25"] = {**figures, "ndcg@10": ndcg10(scores, qrels)}

    ours = systems["rankstack"]["queries_per_s"]
    vs_bm25s = ours / systems["bm25s"]["queries_per_s"]
    vs_pyserini = ours / PYSERINI_REFERENCE_QPS
    output = write_result(
        "bm25_speed",
        settings={"k1": K1, "b": B, "k": args.k, "repeats": args.repeats, "threads": 1,
                  "timing": "time.perf_counter, one warm-up, best of repeats, query tokenization included"},
        systems=systems,
        ratios={"rankstack_vs_bm25s_query_throughput": vs_bm25s, "rankstack_vs_pyserini_reference": vs_pyserini},
        targets={"rankstack_vs_bm25s_query_throughput": TARGET_VS_BM25S,
                 "rankstack_vs_pyserini_reference": TARGET_VS_PYSERINI},
        targets_met={"rankstack_vs_bm25s_query_throughput": vs_bm25s >= TARGET_VS_BM25S,
                     "rankstack_vs_pyserini_reference": vs_pyserini >= TARGET_VS_PYSERINI},
        extra={"dataset": {"name": "scifact", "docs": len(docs), "queries": len(queries),
                           "test_queries": len(test_queries)},
               "pyserini_reference": {"queries_per_s": PYSERINI_REFERENCE_QPS, "measured_in_this_run": False,
                                      "note": "Lucene/Pyserini single-thread BM25 on SciFact, a reference figure "
                                              "for this kind of machine; not measured in this run"}},
        machine=result_machine(("bm25s", "rank-bm25", "scipy", "PyStemmer", "numba")),
        output=args.output)

    for name, s in systems.items():
        single = s.get("single_call_queries_per_s")
        extra = f" (single calls {single:8.1f} q/s)" if single else ""
        print(f"{name:10s} index {s['index_seconds']:6.2f}s ({s['index_docs_per_s']:7.0f} docs/s)  "
              f"query {s['queries_per_s']:8.1f} q/s over {s['query_count_timed']}{extra}  "
              f"nDCG@10 {s['ndcg@10']:.4f}", file=sys.stderr)
    print(f"rankstack / bm25s query throughput: {vs_bm25s:.2f} (target >= {TARGET_VS_BM25S})",
          file=sys.stderr)
    print(f"rankstack / Pyserini reference ({PYSERINI_REFERENCE_QPS:g} q/s, not measured): {vs_pyserini:.1f} "
          f"(target >= {TARGET_VS_PYSERINI:g})", file=sys.stderr)
    print(f"wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
