"""A compressed cross-encoder against the model it was distilled from: milliseconds per query and
nDCG@10 on the SciFact test queries, same candidates, same backend, in one run.

    python benchmarks/reranker_compression.py --teacher DIR --student DIR [--first-stage bm25%30]
        [--precisions auto,int8] [--queries 300]      (int8: layer-dropped students only)

The teacher comes from ``rankstack train cross-encoder``; the student from ``rankstack train distil``
(fewer layers) or ``rankstack train split`` (lower layers split by segment, the documents' side
precomputed for the whole collection before timing starts: its time and memory are reported apart, as
an index-time cost). No weights are in the repository, so the benchmark needs their directories.

Both are loaded and prepared first; then they take turns, ``--block`` queries at a time, so that a
drift in the machine's speed during the run weighs on both alike.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from _common import describe_model, judged_test_queries, machine_info, require_data

from rankstack.evaluate import evaluate
from rankstack.models.encoder import resolve_precision
from rankstack.stages import Pipeline, SearchContext, parse_pipeline
from rankstack.stages.rerank import CrossEncoderReranker
from rankstack.types import Run

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "reranker_compression.json"


def layers_of(model_dir: str) -> int | None:
    config = Path(model_dir) / "config.json"
    return json.loads(config.read_text())["num_hidden_layers"] if config.is_file() else None


def split_costs(reranker: CrossEncoderReranker, cache: object, seconds: float) -> dict[str, object]:
    """For a split model: its layout and what precomputing the collection cost (time, memory)."""
    if cache is None:
        return {}
    return {"split_layout": asdict(reranker.loaded.model.layout),
            "precompute_seconds": seconds, "precomputed_documents": len(cache),  # type: ignore[arg-type]
            "precomputed_mib": cache.bytes / 2**20}  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="the full trained cross-encoder")
    parser.add_argument("--student", required=True, help="the compressed one")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--first-stage", default="bm25%30", help="candidates to rerank")
    parser.add_argument("--precisions", default="auto", help="comma-separated: auto, fp32, bf16, int8")
    parser.add_argument("--queries", type=int, default=300, help="first N judged test queries")
    parser.add_argument("--block", type=int, default=20, help="queries per turn: teacher and student take turns")
    parser.add_argument("--cache-mb", type=int, default=8192,
                        help="room for a split model's precomputed states (all of SciFact must fit, or timing "
                             "would include recomputing dropped ones)")
    args = parser.parse_args()
    require_data(args.data)
    _, queries, qrels, index = judged_test_queries(args.data, args.queries)
    context = SearchContext(ignore_identical_ids=True)
    candidates = parse_pipeline(args.first_stage, index).transform(queries, context=context)
    rows = {}
    roles = (("teacher", args.teacher), ("student", args.student))
    blocks = [queries[start:start + args.block] for start in range(0, len(queries), args.block)]
    for precision in args.precisions.split(","):
        prepared: dict[str, tuple[CrossEncoderReranker, Pipeline, dict[str, object]]] = {}
        for role, model in roles:
            # each model's own window; a split model's documents are read through its lower layers now
            reranker = CrossEncoderReranker(index, model, precision=precision, precompute=True,
                                            cache_mb=args.cache_mb)
            stage = Pipeline([reranker])
            _ = reranker.loaded  # loading is not part of the precompute time
            started = time.perf_counter()
            stage.prepare(None)
            costs = split_costs(reranker, getattr(reranker.loaded, "cache", None), time.perf_counter() - started)
            stage.transform(queries[:2], candidates, context)  # warm-up
            prepared[role] = reranker, stage, costs
        # the two take turns block by block (who goes first alternating), so a change in the machine's
        # speed during the run (other load, clock) weighs on both alike rather than on one
        seconds = {role: 0.0 for role, _ in roles}
        scores: dict[str, dict[str, dict[str, float]]] = {role: {} for role, _ in roles}
        for number, block in enumerate(blocks):
            for role, _ in (roles if number % 2 == 0 else roles[::-1]):
                started = time.perf_counter()
                reranked = prepared[role][1].transform(block, candidates, context)
                seconds[role] += time.perf_counter() - started
                scores[role].update(reranked.to_dict())
        for role, model in roles:
            reranker, _, costs = prepared[role]
            ms = seconds[role] * 1000 / len(queries)
            ndcg = evaluate(Run.from_scores(scores[role]), qrels, ["nDCG@10"]).aggregate["nDCG@10"]
            rows[f"{role}/{precision}"] = {"model": describe_model(model), "layers": layers_of(model),
                                           "ms_per_query": ms, "precision": resolve_precision(precision),
                                           "max_length": reranker.loaded.max_seq_length, "ndcg@10": ndcg, **costs}
            print(f"{role} {precision}: {ms:.0f} ms/query, nDCG@10 {ndcg:.4f}", file=sys.stderr)
        del prepared
    first = args.precisions.split(",")[0]
    teacher, student = rows[f"teacher/{first}"], rows[f"student/{first}"]
    report = {
        "benchmark": "reranker_compression", "dataset": "scifact", "queries": len(queries),
        "first_stage": args.first_stage, "timing": f"teacher and student take turns, {args.block} queries at a time",
        "first_stage_ndcg@10": evaluate(candidates, qrels, ["nDCG@10"]).aggregate[
            "nDCG@10"],
        "machine": machine_info(("torch", "sentence-transformers", "transformers")), "results": rows,
        "speedup": teacher["ms_per_query"] / student["ms_per_query"],
        "ndcg_delta": student["ndcg@10"] - teacher["ndcg@10"],
    }
    report["targets_met"] = {"speedup_at_least_1.8x": report["speedup"] >= 1.8,
                             "ndcg_loss_at_most_0.01": report["ndcg_delta"] >= -0.01}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"student {report['speedup']:.2f}x faster, nDCG@10 {report['ndcg_delta']:+.4f}; wrote {args.output}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
