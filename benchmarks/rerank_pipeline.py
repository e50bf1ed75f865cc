"""The recommended reranking pipeline end to end: a hybrid first stage, then a trained cross-encoder over its
top 30 (and top 100), in each precision, on SciFact's held-out dev queries or its test queries, in one run.

    python benchmarks/rerank_pipeline.py --model DIR [--split dev|test] [--variants fp32,auto]
                                         [--depths 30,100] [--deep-variants auto] [--first-stage PIPELINE]

``--split dev`` takes the train queries that ``rankstack train cross-encoder`` held out for model selection
(same fraction and seed), so variants can be compared there; ``--split test`` the 300 test queries, to report
the chosen variant once. The first stage runs once (its time is reported apart); each variant then reranks
the same candidates: ms/query is the wall time of the reranking stage alone (scoring included: tokenising,
the model, sorting), after one untimed warm-up query. nDCG@10 is over the queries of the split. Results go to
results/rerank_pipeline_<cpu class>.json, one variant per split.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from _common import describe_model, require_data, result_machine, write_result

from rankstack.evaluate import evaluate
from rankstack.index.cache import open_or_build
from rankstack.io import BeirDataset
from rankstack.models.encoder import resolve_precision
from rankstack.stages import Pipeline, SearchContext, parse_pipeline
from rankstack.stages.rerank import CrossEncoderReranker
from rankstack.train.data import dev_queries
from rankstack.types import Run

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
FIRST_STAGE = "linear(bm25,dense,norm=zscore)"
TARGET_MS = 1000.0  # mean ms/query at depth 30, the precision ``auto`` chooses
TARGET_NDCG_DELTA = 0.01  # |nDCG@10 of that precision - fp32's|


def queries_of(dataset: BeirDataset, index: Any, split: str, limit: int | None) -> tuple[list[Any], list[Any]]:
    if split == "dev":
        queries = dev_queries(dataset, index)
        wanted = {q.query_id for q in queries}
        qrels = [q for q in dataset.qrels("train") if q.query_id in wanted]
    else:
        qrels = dataset.qrels("test")
        queries = dataset.queries({q.query_id for q in qrels})
    queries = queries[:limit] if limit else queries
    wanted = {q.query_id for q in queries}
    return queries, [q for q in qrels if q.query_id in wanted]


def rerank(index: Any, model: str, precision: str, queries: list[Any], candidates: Run, context: SearchContext,
           window: int = 0) -> tuple[Run, float, str]:
    stage = CrossEncoderReranker(index, model, precision=precision, max_length=window)
    pipeline = Pipeline([stage])
    pipeline.prepare(None)
    pipeline.transform(queries[:1], candidates)  # warm-up: kernels, caches
    started = time.perf_counter()
    run = pipeline.transform(queries, candidates, context)
    return run, (time.perf_counter() - started) * 1000 / len(queries), stage.loaded.precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", required=True, help="a cross-encoder trained by rankstack train cross-encoder")
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--variants", default="fp32,auto", help="precisions to compare at every depth")
    parser.add_argument("--depths", default="30,100")
    parser.add_argument("--deep-variants", default="",
                        help="precisions to run at depths over 30 (default: all of --variants)")
    parser.add_argument("--first-stage", default=FIRST_STAGE)
    parser.add_argument("--windows", default="0", help="cross_encoder max_length values to try (0: the window "
                                                       "the model was trained with)")
    parser.add_argument("--queries", type=int, default=None, help="only the first N queries of the split")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--variant", default=None, help="name in the results file (default: the split)")
    args = parser.parse_args()
    require_data(args.data)
    dataset = BeirDataset.open(args.data)
    index, _ = open_or_build(dataset.root)
    queries, qrels = queries_of(dataset, index, args.split, args.queries)
    context = SearchContext(ignore_identical_ids=True)
    depths = [int(d) for d in args.depths.split(",")]
    first = parse_pipeline(f"{args.first_stage}%{max(depths)}", index)
    first.prepare(None)
    first.transform(queries[:1], context=context)
    started = time.perf_counter()
    pool = first.transform(queries, context=context)
    first_ms = (time.perf_counter() - started) * 1000 / len(queries)
    ndcg = evaluate(pool, qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    print(f"{args.split}: {len(queries)} queries; first stage {first_ms:.1f} ms/query, nDCG@10 {ndcg:.4f}",
          file=sys.stderr)
    systems: dict[str, Any] = {"first_stage": {"pipeline": args.first_stage, "ms_per_query": first_ms,
                                               "ndcg@10": ndcg}}
    for depth in depths:
        candidates = parse_pipeline(f"{args.first_stage}%{depth}", index).transform(queries, context=context)
        names = args.deep_variants if depth > 30 and args.deep_variants else args.variants
        for precision in names.split(","):
            for window in [int(w) for w in args.windows.split(",")]:
                if precision == "fp32" and window:
                    continue  # the reference reads the trained window
                run, ms, label = rerank(index, args.model, precision, queries, candidates, context, window)
                figures = {"depth": depth, "precision": label, "max_length": window, "ms_per_query": ms,
                           "ndcg@10": evaluate(run, qrels, ["nDCG@10"]).aggregate["nDCG@10"]}
                systems[f"{label}@{depth}" + (f"/window{window}" if window else "")] = figures
                print(f"  top {depth:3d} {label:10s} window {window or 'trained':>7} {ms:8.1f} ms/query  "
                      f"nDCG@10 {figures['ndcg@10']:.4f}", file=sys.stderr)
    chosen = resolve_precision("auto")
    ratios: dict[str, Any] = {}
    for name, figures in systems.items():
        reference = systems.get(f"fp32@{figures.get('depth')}")
        if name != "first_stage" and reference is not None:
            ratios[name] = {"speedup_vs_fp32": reference["ms_per_query"] / figures["ms_per_query"],
                            "ndcg_delta_vs_fp32": figures["ndcg@10"] - reference["ndcg@10"]}
    target_names = (f"auto_ms_per_query_at_depth_30_at_most_{TARGET_MS:g}", f"auto_ndcg_within_{TARGET_NDCG_DELTA:g}")
    auto = next((n for n, f in systems.items()
                 if f.get("precision") == chosen and f.get("depth") == 30 and not f.get("max_length")), None)
    met = {target_names[0]: bool(auto and systems[auto]["ms_per_query"] <= TARGET_MS),
           target_names[1]: bool(auto and abs(ratios[auto]["ndcg_delta_vs_fp32"]) <= TARGET_NDCG_DELTA)}
    output = write_result(
        "rerank_pipeline", variant=args.variant or args.split,
        settings={"dataset": "scifact", "split": args.split, "queries": len(queries), "depths": depths,
                  "first_stage": args.first_stage, "model": describe_model(args.model), "auto_precision": chosen,
                  "timing": "wall time of the reranking stage over all queries after one warm-up query; "
                            "the first stage timed apart"},
        systems=systems, ratios=ratios,
        targets={target_names[0]: TARGET_MS, target_names[1]: f"|ndcg_delta_vs_fp32| <= {TARGET_NDCG_DELTA:g}"},
        targets_met=met, machine=result_machine(("torch", "sentence-transformers", "transformers", "onnxruntime")),
        output=args.output)
    print(f"precision=auto is {chosen} here; targets met: {met}\nwrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
