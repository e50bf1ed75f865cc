"""SPLADE on SciFact: quality alone and fused (fusion chosen on the dev queries, then test once), index size,
active terms, indexing and query speed against BM25 in the same run.

    python benchmarks/splade.py --model DIR [--data DIR] [--work DIR] [--variant NAME] [--dev-only]

DIR is a model made by ``rankstack train sparse``. The dev queries are the held-out 10 % of the train
queries that every trainer holds out (``rankstack.train.data.dev_queries``): fusions with and without
SPLADE are compared there, and only the best of each (and SPLADE alone) is run on the test queries. The
index (BM25, SPLADE impacts, dense vectors for the comparison) is built in ``--work`` (a temporary folder
by default; a kept one is reused, with the build times it recorded). Results go to
results/splade_<cpu class>.json (see ``_common.write_result``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import describe_model, require_data, result_machine, write_result

from rankstack.evaluate import evaluate
from rankstack.evaluate.experiment import judged_queries, run_queries
from rankstack.index import Index, build_index
from rankstack.index.splade import build_splade, document_windows
from rankstack.io import BeirDataset
from rankstack.models.splade import load_splade
from rankstack.stages import SearchContext, parse_pipeline
from rankstack.train.data import dev_queries
from rankstack.types import Query

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
TARGET = 0.70  # the target for splade alone on SciFact test
ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7)
CONTEXT = SearchContext(ignore_identical_ids=True)


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def ndcg(index: Index, pipeline: str, queries: list[Query], qrels: list[Any]) -> float:
    parsed = parse_pipeline(pipeline, index)
    run = run_queries(parsed % 1000, queries, CONTEXT)
    return round(float(evaluate(run, qrels, ["nDCG@10"]).aggregate["nDCG@10"]), 4)


def queries_per_second(index: Index, pipeline: str, queries: list[Query]) -> float:
    parsed = parse_pipeline(pipeline, index) % 1000
    parsed.transform(queries[:5], context=CONTEXT)  # warm-up
    started = time.perf_counter()
    for query in queries:  # one at a time, as a service answers them
        parsed.transform([query], context=CONTEXT)
    return round(len(queries) / (time.perf_counter() - started), 2)


def _per_second(count: int, seconds: float | None) -> float | None:
    return None if not seconds else round(count / seconds, 2)


def build(data: Path, work: Path, model: str) -> tuple[Index, dict[str, float | None]]:
    timings_file = work / "timings.json"
    timings: dict[str, float | None] = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    index_dir = work / "index"
    if not (index_dir / "manifest.json").is_file():
        started = time.perf_counter()
        build_index(data, index_dir, overwrite=True)
        timings["bm25_index_seconds"] = time.perf_counter() - started
    index = Index.open(index_dir)
    encoder = load_splade(model)
    stored = index.splade_impacts(encoder.model_id)
    if stored is None or document_windows(stored.meta) != encoder.document_windows:
        started = time.perf_counter()
        build_splade(index, encoder)
        timings[f"splade_index_seconds:{encoder.model_id}:windows={encoder.document_windows}"] = \
            time.perf_counter() - started
        index.reload_manifest()
    timings_file.write_text(json.dumps(timings))
    # A kept work folder holds several models' impacts: report this model's own build time.
    # (None where the impacts were built before build times were kept per model.)
    timings["splade_index_seconds"] = timings.get(f"splade_index_seconds:{encoder.model_id}:windows="
                                                  f"{encoder.document_windows}")
    return index, timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a SPLADE model directory (rankstack train sparse)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=None, help="keep the index here (reused when present)")
    parser.add_argument("--variant", default="default")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--dev-only", action="store_true",
                        help="score the dev queries only (to choose among models before any test figure is seen); "
                             "speeds are then measured on the dev queries")
    parser.add_argument("--skip-dense", action="store_true",
                        help="compare with BM25 only (no dense vectors to encode: minutes fewer on a small CPU)")
    args = parser.parse_args()
    require_data(args.data)
    work = args.work or Path(tempfile.mkdtemp(prefix="splade-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    index, timings = build(args.data, work, args.model)
    encoder = load_splade(args.model)
    splade = f"splade(model={encoder.model_id})"
    docs = index.num_docs
    impacts = index.splade_impacts(encoder.model_id)
    assert impacts is not None
    dataset = BeirDataset.open(args.data)
    dev = dev_queries(dataset, index)
    dev_ids = {q.query_id for q in dev}
    dev_qrels = [q for q in dataset.qrels("train") if q.query_id in dev_ids]
    test, test_qrels, _ = judged_queries(dataset.queries(), dataset.qrels("test"))
    print(f"{docs} docs, {len(dev)} dev queries, {len(test)} test queries", file=sys.stderr)

    with_splade = [splade, f"rrf(bm25,{splade})", *[f"linear(bm25,{splade},alpha={a},norm=zscore)" for a in ALPHAS]]
    without = ["bm25"]
    if not args.skip_dense:
        with_splade += [f"linear(linear(bm25,dense,norm=zscore),{splade},alpha={a},norm=zscore)" for a in (0.5, 0.6)]
        without += ["dense", "rrf(bm25,dense)", *[f"linear(bm25,dense,alpha={a},norm=zscore)" for a in ALPHAS]]
        parse_pipeline("dense", index).prepare()  # encode the corpus for the comparison (timed apart)
    dev_scores = {p: ndcg(index, p, dev, dev_qrels) for p in [*with_splade, *without]}
    for pipeline, score in dev_scores.items():
        print(f"dev {score:.4f} {pipeline}", file=sys.stderr)
    best_with = max((p for p in with_splade if p != splade), key=lambda p: dev_scores[p])
    best_without = max(without, key=lambda p: dev_scores[p])
    if args.dev_only:
        test, test_scores = dev, {}
    else:
        test_scores = {p: ndcg(index, p, test, test_qrels) for p in (splade, best_with, best_without)}
    for pipeline, score in test_scores.items():
        print(f"test {score:.4f} {pipeline}", file=sys.stderr)

    query_weights = encoder.encode_queries([q.text for q in test])
    dev_weights = encoder.encode_queries([q.text for q in dev])
    bm25_qps = queries_per_second(index, "bm25", test)
    splade_qps = queries_per_second(index, splade, test)
    started = time.perf_counter()
    for query in test:
        encoder.encode_queries([query.text])
    encode_ms = (time.perf_counter() - started) * 1000 / len(test)
    started = time.perf_counter()
    for row in range(len(test)):
        impacts.scores(query_weights[row])
    score_ms = (time.perf_counter() - started) * 1000 / len(test)
    splade_dir = index.path / index.manifest["splade"][encoder.model_id]["dir"]
    seconds = timings["splade_index_seconds"]
    systems = {
        "bm25": {"index_docs_per_s": _per_second(docs, timings["bm25_index_seconds"]),
                 "index_bytes": directory_bytes(index.path / "sparse"),
                 "postings": int(index.manifest["counts"]["postings"]),
                 "queries_per_s": bm25_qps},
        "splade": {"index_docs_per_s": _per_second(docs, timings["splade_index_seconds"]),
                   "index_seconds": None if seconds is None else round(seconds, 1),
                   "index_bytes": directory_bytes(splade_dir), "postings": int(impacts.matrix.nnz),
                   "mean_active_terms_per_doc": round(impacts.matrix.nnz / docs, 1),
                   "mean_active_terms_per_test_query": round(float(np.diff(query_weights.indptr).mean()), 1),
                   "mean_active_terms_per_dev_query": round(float(np.diff(dev_weights.indptr).mean()), 1),
                   "queries_per_s": splade_qps, "query_encode_ms": round(encode_ms, 2),
                   "query_score_ms": round(score_ms, 2), "test_ndcg@10": test_scores.get(splade),
                   "dev_ndcg@10": dev_scores[splade]},
    }
    def label(pipeline: str) -> str:  # the results name the model by its training card, not its folder
        return pipeline.replace(encoder.model_id, "MODEL")

    dev_scores = {label(p): score for p, score in dev_scores.items()}
    test_scores = {label(p): score for p, score in test_scores.items()}
    best_with, best_without, splade = label(best_with), label(best_without), label(splade)
    with_splade, without = [label(p) for p in with_splade], [label(p) for p in without]
    output = write_result(
        "splade", variant=args.variant,
        settings={"data": args.data.name, "dev_queries": len(dev), "test_queries": 0 if args.dev_only else len(test),
                  "speeds_on": "dev queries" if args.dev_only else "test queries",
                  "fusions_compared_on_dev": [*with_splade, *without], "threads": "torch default",
                  "dense_compared": not args.skip_dense, "document_windows": encoder.document_windows},
        systems=systems,
        ratios={"splade_over_bm25_index_docs_per_s": round(systems["splade"]["index_docs_per_s"]
                                                           / systems["bm25"]["index_docs_per_s"], 5),
                "splade_over_bm25_queries_per_s": round(splade_qps / bm25_qps, 4)},
        targets={} if args.dev_only else {"splade_test_ndcg@10": TARGET},
        targets_met={} if args.dev_only else {"splade_test_ndcg@10": test_scores[splade] >= TARGET},
        extra={"model": describe_model(args.model), "dev_ndcg@10": dev_scores,
               "chosen_on_dev": {"with_splade": best_with, "without_splade": best_without},
               "test_ndcg@10": test_scores},
        machine=result_machine(("torch", "sentence-transformers", "scipy")), output=args.output)
    print(json.dumps({"systems": systems, "test": test_scores}, indent=1))
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
