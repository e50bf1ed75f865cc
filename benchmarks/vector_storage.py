"""What float16 and int8 vector storage cost in quality on SciFact, against float32.

    python benchmarks/vector_storage.py [--data DIR] [--output FILE]

Uses the fp32 vectors of rankstack's cached SciFact index (encoding them first if missing), stores
them each way as rankstack does, decodes, searches exactly, and reports nDCG@10 and bytes on disk.
Results go to results/vector_storage_<cpu class>.json (variant ``default``; see ``_common.write_result``).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from _common import require_data, result_machine, write_result

from rankstack.evaluate import evaluate
from rankstack.index.cache import open_or_build
from rankstack.index.dense import decode_vectors, encode_vectors
from rankstack.io import BeirDataset
from rankstack.models.encoder import load_encoder
from rankstack.stages import parse_pipeline
from rankstack.types import Run

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
# No target was ever stated for this benchmark (README, docs/, this docstring): it reports what float16 and int8
# storage cost, and records "targets": {} rather than a threshold made up after the fact.
NO_TARGETS = "no target was ever stated for this benchmark (README, docs, script)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--output", type=Path, default=None, help="default: results/vector_storage_<cpu class>.json")
    args = parser.parse_args()
    require_data(args.data)
    dataset = BeirDataset.open(args.data)
    index, _ = open_or_build(dataset.root)
    parse_pipeline("dense(precision=fp32)", index).prepare(None)
    vectors = index.dense_vectors("sentence-transformers/all-MiniLM-L6-v2", "fp32", exact=True)
    assert vectors is not None
    qrels = dataset.qrels("test")
    queries = dataset.queries({q.query_id for q in qrels})
    query_vectors = load_encoder("default", "fp32").encode_queries([q.text for q in queries])
    doc_ids = index.doc_id_array
    results = {}
    for storage in ("float32", "float16", "int8"):
        files = encode_vectors(vectors.vectors, storage)
        size = 0
        for array in files.values():
            buffer = io.BytesIO()
            np.save(buffer, array)
            size += buffer.getbuffer().nbytes
        decoded = decode_vectors(files)
        scores = query_vectors @ decoded.T
        run = {}
        for query, row in zip(queries, scores, strict=True):
            top = np.argsort(-row)[:1001]
            run[query.query_id] = {str(doc_ids[i]): float(row[i]) for i in top if doc_ids[i] != query.query_id}
        ndcg = evaluate(Run.from_scores(run), qrels, ["nDCG@10"]).aggregate["nDCG@10"]
        error = float(np.abs(decoded - vectors.vectors).max())
        results[storage] = {"ndcg@10": ndcg, "bytes": size, "max_abs_error": error}
        print(f"{storage:8s} nDCG@10 {ndcg:.4f}  {size / 1e6:6.2f} MB", file=sys.stderr)
    ratios = {storage: {"ndcg_delta_vs_float32": results[storage]["ndcg@10"] - results["float32"]["ndcg@10"]}
              for storage in ("float16", "int8")}
    output = write_result(
        "vector_storage",
        settings={"dataset": "scifact", "model": "sentence-transformers/all-MiniLM-L6-v2",
                  "encoding_precision": "fp32", "search": "exact inner product over decoded vectors"},
        systems=results, ratios=ratios, targets={}, targets_met={}, extra={"targets_note": NO_TARGETS},
        machine=result_machine(("torch", "sentence-transformers", "transformers")), output=args.output)
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
