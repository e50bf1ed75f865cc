"""FAISS HNSW against exact inner-product search on generated embedding-like vectors, in one run.

    python benchmarks/hnsw_vs_exact.py [--num-vectors N] [--output FILE]

The vectors are generated, not encoded: ``--clusters`` random unit centres in 384 dimensions, each
point a centre plus isotropic Gaussian noise, L2-normalised, so that two points of one cluster have a
cosine of about 0.5-0.7 (drawn per cluster) and points of different clusters about 0, like sentence
embeddings of a topical corpus rather than uniform noise. Queries are fresh points from the same
clusters. Everything is seeded.

Exact search is ``faiss.IndexFlatIP``; HNSW is ``faiss.IndexHNSWFlat(d, M, METRIC_INNER_PRODUCT)``
with rankstack's defaults (M=32, efConstruction=200, efSearch=256) and, as rankstack does,
``efSearch = max(ef_search, k)``. efSearch is swept over ``--ef-search``. recall@k is the fraction
of the exact top-k ids found in HNSW's top-k, averaged over queries. Latency is the mean per query,
one query per ``search`` call and all queries in one call; each loop is warmed up once and the best
of ``--repeats`` is kept. FAISS threads are left at the default unless ``--threads`` is given.
The machine's load average is recorded: other work on the CPUs inflates every latency, and
multi-threaded single-query FAISS calls most of all. Results go to results/hnsw_vs_exact_<cpu class>.json
(variant ``default``; see ``_common.write_result``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from _common import best_time, result_machine, write_result

REPO_ROOT = Path(__file__).resolve().parents[1]

DIMENSION = 384
# rankstack's defaults (rankstack.index.dense.HnswParams, DenseVectors.search).
DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 200
DEFAULT_EF_SEARCH = 256
TARGET_RECALL = 0.99
HNSW_SINGLE = "mean single-query latency at the default efSearch below exact search's"
HNSW_BATCHED = "mean batched latency per query at the default efSearch below exact search's"
# When the default misses the recall target, efSearch is doubled on the default graph up to this.
MAX_EF_SEARCH = 4096


def generate(num_vectors: int, num_queries: int, clusters: int, cosine_range: tuple[float, float],
             seed: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Base and query vectors from one mixture of Gaussian clusters around random unit centres.

    A point is ``centre + s * g / sqrt(d)`` with ``g ~ N(0, I)``, so its noise has norm about ``s``;
    two points of one cluster then have cosine about ``1 / (1 + s^2)``. ``s`` is set per cluster from
    a target cosine drawn uniformly from ``cosine_range``.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIMENSION))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    target_cosine = rng.uniform(*cosine_range, size=clusters)
    noise_scale = np.sqrt(1.0 / target_cosine - 1.0)

    def sample(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, clusters, size=count)
        out = np.empty((count, DIMENSION), dtype=np.float32)
        for start in range(0, count, 50_000):
            part = labels[start:start + 50_000]
            noise = rng.standard_normal((len(part), DIMENSION)) / np.sqrt(DIMENSION)
            points = centres[part] + noise_scale[part, None] * noise
            out[start:start + len(part)] = points / np.linalg.norm(points, axis=1, keepdims=True)
        return out, labels

    base, base_labels = sample(num_vectors)
    queries, _ = sample(num_queries)

    # Measured, not assumed: cosines of random same-cluster and random any-cluster pairs.
    pairs = 20_000
    first = rng.integers(0, num_vectors, size=pairs)
    second = rng.integers(0, num_vectors, size=pairs)
    any_cos = np.sum(base[first] * base[second], axis=1)
    order = np.argsort(base_labels, kind="stable")
    sorted_labels = base_labels[order]
    same = []
    for i in first[:5000]:
        lo, hi = np.searchsorted(sorted_labels, [base_labels[i], base_labels[i] + 1])
        j = order[rng.integers(lo, hi)]
        if j != i:
            same.append(float(base[i] @ base[j]))
    sizes = np.bincount(base_labels, minlength=clusters)
    description = {
        "generated": True,
        "method": f"mixture of {clusters} isotropic Gaussian clusters in {DIMENSION} dimensions: centres drawn "
                  "N(0, I) and L2-normalised; point = centre + s * N(0, I / d), with s per cluster = "
                  "sqrt(1/c - 1) for a target within-cluster cosine c ~ Uniform"
                  f"{tuple(cosine_range)}; cluster of each point uniform at random; every point L2-normalised; "
                  "queries are fresh points drawn the same way (not in the base set)",
        "seed": seed,
        "dimension": DIMENSION,
        "clusters": clusters,
        "within_cluster_cosine_target_range": list(cosine_range),
        "measured": {
            "within_cluster_cosine_mean": float(np.mean(same)),
            "within_cluster_cosine_p5_p95": [float(np.percentile(same, 5)), float(np.percentile(same, 95))],
            "random_pair_cosine_mean": float(any_cos.mean()),
            "random_pair_cosine_std": float(any_cos.std()),
            "cluster_size_min_mean_max": [int(sizes.min()), float(sizes.mean()), int(sizes.max())],
        },
    }
    return base, queries, description


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = [len(set(f[:k].tolist()) & set(t[:k].tolist()) - {-1}) / k for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def latencies(index: Any, queries: np.ndarray, k: int, repeats: int) -> dict[str, float]:
    def one_at_a_time() -> None:
        for i in range(len(queries)):
            index.search(queries[i:i + 1], k)

    single = best_time(one_at_a_time, repeats)
    batched = best_time(lambda: index.search(queries, k), repeats)
    return {"single_query_ms": 1000.0 * single / len(queries),
            "batched_ms_per_query": 1000.0 * batched / len(queries)}


def build_hnsw(vectors: np.ndarray, m: int, ef_construction: int) -> tuple[Any, float]:
    started = time.perf_counter()
    graph = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = ef_construction
    graph.add(vectors)
    return graph, time.perf_counter() - started


def sweep(graph: Any, queries: np.ndarray, truth: np.ndarray, k: int, ef_values: Sequence[int],
          repeats: int, label: str) -> list[dict[str, Any]]:
    rows = []
    for ef in ef_values:
        graph.hnsw.efSearch = max(ef, k)  # as rankstack.index.dense.DenseVectors.search
        _, found = graph.search(queries, k)
        row = {"ef_search": ef, "ef_search_effective": int(graph.hnsw.efSearch),
               f"recall@{k}": recall(found, truth, k), "recall@10": recall(found, truth, 10),
               **latencies(graph, queries, k, repeats)}
        rows.append(row)
        print(f"{label} efSearch {ef:5d} (eff {row['ef_search_effective']:5d}): recall@{k} {row[f'recall@{k}']:.4f} "
              f"single {row['single_query_ms']:.3f} ms, batched {row['batched_ms_per_query']:.4f} ms/q",
              file=sys.stderr)
    return rows


def parse_graphs(text: str) -> list[tuple[int, int]]:
    graphs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        m, ef = item.split(":")
        graphs.append((int(m), int(ef)))
    return graphs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=None, help="default: results/hnsw_vs_exact_<cpu class>.json")
    parser.add_argument("--num-vectors", type=int, default=100_000)
    parser.add_argument("--num-queries", type=int, default=1_000)
    parser.add_argument("--clusters", type=int, default=1_000)
    parser.add_argument("--cosine-range", type=float, nargs=2, default=(0.5, 0.7), metavar=("LOW", "HIGH"),
                        help="range of the per-cluster target cosine between two points of one cluster")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--extra-graphs", default="",
                        help="more HNSW graphs to build and sweep, as M:efConstruction,... (e.g. 48:400,64:400)")
    parser.add_argument("--repeats", type=int, default=3, help="timed loops per latency; the best is kept")
    parser.add_argument("--threads", type=int, default=None,
                        help="faiss.omp_set_num_threads(N); default: leave FAISS's default")
    args = parser.parse_args(argv)
    if args.threads is not None:
        faiss.omp_set_num_threads(args.threads)
    if args.num_vectors < args.k or args.num_queries < 1:
        parser.error("need --num-vectors >= --k and --num-queries >= 1")

    load_at_start = list(os.getloadavg())
    started = time.perf_counter()
    base, queries, data = generate(args.num_vectors, args.num_queries, args.clusters, tuple(args.cosine_range),
                                   args.seed)
    data["generate_seconds"] = time.perf_counter() - started
    measured = data["measured"]
    print(f"generated {len(base)} base + {len(queries)} query vectors ({DIMENSION}-d, {args.clusters} clusters; "
          f"within-cluster cosine {measured['within_cluster_cosine_mean']:.3f}, random pairs "
          f"{measured['random_pair_cosine_mean']:.3f}); faiss threads {faiss.omp_get_max_threads()}",
          file=sys.stderr)

    started = time.perf_counter()
    exact = faiss.IndexFlatIP(DIMENSION)
    exact.add(base)
    exact_build = time.perf_counter() - started
    _, truth = exact.search(queries, args.k)
    exact_figures = {"index": "IndexFlatIP", "build_seconds": exact_build,
                     **latencies(exact, queries, args.k, args.repeats)}
    print(f"exact: build {exact_build:.2f}s, single {exact_figures['single_query_ms']:.3f} ms, "
          f"batched {exact_figures['batched_ms_per_query']:.4f} ms/q", file=sys.stderr)

    graph, hnsw_build = build_hnsw(base, DEFAULT_M, DEFAULT_EF_CONSTRUCTION)
    label = f"hnsw M={DEFAULT_M} efC={DEFAULT_EF_CONSTRUCTION}"
    print(f"{label}: build {hnsw_build:.1f}s", file=sys.stderr)
    ef_values = sorted(set(args.ef_search) | {DEFAULT_EF_SEARCH})
    rows = sweep(graph, queries, truth, args.k, ef_values, args.repeats, label)
    recall_key = f"recall@{args.k}"
    default_row = next(r for r in rows if r["ef_search"] == DEFAULT_EF_SEARCH)

    extended: list[dict[str, Any]] = []
    if default_row[recall_key] < TARGET_RECALL:
        ef = max(ef_values)
        while max(r[recall_key] for r in rows + extended) < TARGET_RECALL and ef < MAX_EF_SEARCH:
            ef *= 2
            extended += sweep(graph, queries, truth, args.k, [ef], args.repeats, label)
    graphs = [{"M": DEFAULT_M, "efConstruction": DEFAULT_EF_CONSTRUCTION, "build_seconds": hnsw_build,
               "default": True, "ef_sweep": rows, "ef_extended": extended}]
    del graph

    for m, ef_construction in parse_graphs(args.extra_graphs):
        graph, seconds = build_hnsw(base, m, ef_construction)
        label = f"hnsw M={m} efC={ef_construction}"
        print(f"{label}: build {seconds:.1f}s", file=sys.stderr)
        graphs.append({"M": m, "efConstruction": ef_construction, "build_seconds": seconds, "default": False,
                       "ef_sweep": sweep(graph, queries, truth, args.k, ef_values, args.repeats, label),
                       "ef_extended": []})
        del graph

    reaching = [{"M": g["M"], "efConstruction": g["efConstruction"], **r}
                for g in graphs for r in g["ef_sweep"] + g["ef_extended"] if r[recall_key] >= TARGET_RECALL]
    cheapest = min(reaching, key=lambda r: r["single_query_ms"]) if reaching else None
    exact_ms = exact_figures["single_query_ms"]
    targets_met = {
        f"{recall_key}_at_default": default_row[recall_key] >= TARGET_RECALL,
        "hnsw_single_query_latency_below_exact": default_row["single_query_ms"] < exact_ms,
        "hnsw_batched_latency_below_exact":
            default_row["batched_ms_per_query"] < exact_figures["batched_ms_per_query"],
    }
    ratios = {"speedup_single_vs_exact": exact_ms / default_row["single_query_ms"],
              "speedup_batched_vs_exact": exact_figures["batched_ms_per_query"] / default_row["batched_ms_per_query"]}
    output = write_result(
        "hnsw_vs_exact",
        settings={"k": args.k, "metric": "inner product (cosine on unit vectors)",
                     "rankstack_defaults": {"M": DEFAULT_M, "efConstruction": DEFAULT_EF_CONSTRUCTION,
                                            "efSearch": DEFAULT_EF_SEARCH, "efSearch_rule": "max(ef_search, k)"},
                  "ef_search_sweep": ef_values, "repeats": args.repeats,
                  "faiss_threads": faiss.omp_get_max_threads(),
                  "faiss_threads_set_by_flag": args.threads is not None,
                  "timing": "time.perf_counter; single = one index.search per query over all queries, "
                            "batched = one index.search with all queries; one warm-up, best of repeats; "
                            "ms per query",
                  "recall": f"|exact top-{args.k} ∩ HNSW top-{args.k}| / {args.k}, averaged over queries"},
        systems={"exact": exact_figures, "hnsw": graphs},
        ratios=ratios,  # at the default configuration
        targets={f"{recall_key}_at_default": TARGET_RECALL, "hnsw_single_query_latency_below_exact": HNSW_SINGLE,
                 "hnsw_batched_latency_below_exact": HNSW_BATCHED},
        targets_met=targets_met,
        extra={"data": {"num_vectors": len(base), "num_queries": len(queries), **data},
               "default_config": {"M": DEFAULT_M, "efConstruction": DEFAULT_EF_CONSTRUCTION, **default_row},
               "cheapest_config_reaching_target": cheapest},
        machine=result_machine(("faiss-cpu",), faiss_omp_threads=faiss.omp_get_max_threads(),
                               load_average_at_start=load_at_start),
        output=args.output)

    print(f"default (M={DEFAULT_M}, efC={DEFAULT_EF_CONSTRUCTION}, efSearch={DEFAULT_EF_SEARCH}): {recall_key} "
          f"{default_row[recall_key]:.4f} (target >= {TARGET_RECALL}), single {default_row['single_query_ms']:.3f} ms "
          f"vs exact {exact_ms:.3f} ms ({ratios['speedup_single_vs_exact']:.1f}x); batched "
          f"{default_row['batched_ms_per_query']:.4f} vs exact {exact_figures['batched_ms_per_query']:.4f} ms/q "
          f"({ratios['speedup_batched_vs_exact']:.2f}x)", file=sys.stderr)
    if cheapest is None:
        print(f"no configuration tried reaches {recall_key} >= {TARGET_RECALL}", file=sys.stderr)
    elif not targets_met[f"{recall_key}_at_default"]:
        print(f"cheapest reaching {TARGET_RECALL}: M={cheapest['M']} efC={cheapest['efConstruction']} "
              f"efSearch={cheapest['ef_search']}: {cheapest[recall_key]:.4f}, "
              f"single {cheapest['single_query_ms']:.3f} ms",
              file=sys.stderr)
    print(f"targets met: {targets_met}", file=sys.stderr)
    print(f"wrote {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
