"""A compressed cross-encoder against the model it was distilled from: milliseconds per query and
nDCG@10 on the SciFact test queries, same candidates, same backend, in one run.

    python benchmarks/reranker_compression.py --teacher DIR --student DIR [--first-stage bm25%30]
        [--precisions auto,int8] [--queries 300] [--variant NAME]      (int8: layer-dropped students only)

The teacher comes from ``rankstack train cross-encoder``; the student from ``rankstack train distil``
(fewer layers) or ``rankstack train split`` (lower layers split by segment, the documents' side
precomputed for the whole collection before timing starts: its time and memory are reported apart, as
an index-time cost). No weights are in the repository, so the benchmark needs their directories.

Both are loaded and prepared first; then they take turns, ``--block`` queries at a time, so that a
drift in the machine's speed during the run weighs on both alike.

Every run is one variant of results/reranker_compression_<cpu class>.json (see ``_common.write_result``), named
by ``--variant`` or else after the student's training card (``split_2of6_pruned``, ``distilled_layers_1_3_5_of_6``,
``soup_of_2_2of6_pruned_query_reads_document``; the precisions added when not ``auto``). Two students with the
same card facts (e.g. split runs on different pseudo-queries) need their own ``--variant``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from _common import (
    cpu_class,
    describe_model,
    judged_test_queries,
    require_data,
    result_machine,
    result_path,
    write_result,
)

from rankstack.evaluate import evaluate
from rankstack.models.encoder import resolve_precision
from rankstack.stages import Pipeline, SearchContext, parse_pipeline
from rankstack.stages.rerank import CrossEncoderReranker
from rankstack.types import Run

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
TARGET_SPEEDUP = 1.8  # teacher's ms/query over the student's
TARGET_NDCG_LOSS = 0.01  # the student's nDCG@10 at most this much below the teacher's


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


def derived_variant(student: Any, precisions: str) -> str:
    """A variant name from what ``describe_model`` says of the student (its directory name when it has no
    training card), plus the precisions when they are not just ``auto``."""
    if isinstance(student, dict):
        kind = str(student.get("trained_by", "")).removeprefix("rankstack train ")
        parts = [f"soup_of_{len(student['soup_of'])}" if student.get("soup_of")
                 else {"distil": "distilled"}.get(kind, kind)]
        layers = student.get("layers")
        if isinstance(layers, dict) and "local_layers" in layers:  # a split layout
            parts.append(f"{layers['local_layers']}of{layers.get('layers')}")
            parts += [flag for flag in ("pruned", "query_reads_document")
                      if layers.get({"pruned": "prune"}.get(flag, flag))]
        elif isinstance(layers, dict) and "kept" in layers:  # layers dropped
            parts.append(f"layers_{'_'.join(map(str, layers['kept']))}_of_{layers.get('teacher')}")
        elif layers:
            parts.append(f"{layers}_layers")
        if student.get("initialised_from"):
            parts.append("second_round")
    else:
        parts = [Path(str(student)).name or str(student)]
    if precisions != "auto":
        parts.append(precisions)
    return re.sub(r"[^a-z0-9]+", "_", "_".join(parts).lower()).strip("_") or "default"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="the full trained cross-encoder")
    parser.add_argument("--student", required=True, help="the compressed one")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=None,
                        help="default: results/reranker_compression_<cpu class>.json")
    parser.add_argument("--variant", default=None,
                        help="name of this run in the results file (default: derived from the student's training "
                             "card and the precisions); a variant of the same name is replaced")
    parser.add_argument("--first-stage", default="bm25%30", help="candidates to rerank")
    parser.add_argument("--precisions", default="auto", help="comma-separated: auto, fp32, bf16, int8")
    parser.add_argument("--queries", type=int, default=300, help="first N judged test queries")
    parser.add_argument("--block", type=int, default=20, help="queries per turn: teacher and student take turns")
    parser.add_argument("--cache-mb", type=int, default=8192,
                        help="room for a split model's precomputed states (all of SciFact must fit, or timing "
                             "would include recomputing dropped ones)")
    args = parser.parse_args()
    require_data(args.data)
    variant = args.variant or derived_variant(describe_model(args.student), args.precisions)
    target = args.output or result_path("reranker_compression", cpu_class())
    if target.is_file() and variant in json.loads(target.read_text(encoding="utf-8")).get("variants", {}):
        print(f"note: this run will replace variant {variant!r} of {target.name}; pass --variant to keep both",
              file=sys.stderr)
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
    ratios = {"speedup": teacher["ms_per_query"] / student["ms_per_query"],
              "ndcg_delta": student["ndcg@10"] - teacher["ndcg@10"]}
    speed_target, ndcg_target = f"speedup_at_least_{TARGET_SPEEDUP:g}x", f"ndcg_loss_at_most_{TARGET_NDCG_LOSS:g}"
    output = write_result(
        "reranker_compression", variant=variant,
        settings={"dataset": "scifact", "queries": len(queries), "first_stage": args.first_stage,
                  "timing": f"teacher and student take turns, {args.block} queries at a time"},
        systems=rows, ratios=ratios,
        targets={speed_target: TARGET_SPEEDUP, ndcg_target: TARGET_NDCG_LOSS},
        targets_met={speed_target: ratios["speedup"] >= TARGET_SPEEDUP,
                     ndcg_target: ratios["ndcg_delta"] >= -TARGET_NDCG_LOSS},
        extra={"first_stage_ndcg@10": evaluate(candidates, qrels, ["nDCG@10"]).aggregate["nDCG@10"]},
        machine=result_machine(("torch", "sentence-transformers", "transformers")), output=target)
    print(f"student {ratios['speedup']:.2f}x faster, nDCG@10 {ratios['ndcg_delta']:+.4f}; wrote variant {variant!r} "
          f"of {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
