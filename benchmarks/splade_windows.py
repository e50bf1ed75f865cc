"""How many windows of a long document SPLADE should encode: the dev queries only (the choice), no test.

    python benchmarks/splade_windows.py --model DIR [--data DIR] [--work DIR] [--windows 1,2,3,8]

Every window of every document (up to the largest limit asked for) is encoded once; each limit's document
weights are then the maximum over that many leading windows, exactly what ``encode_docs(windows=N)`` gives
(1 is truncation at the model's window). Each limit is scored by nDCG@10 of SPLADE alone over the whole
collection on the held-out train queries every trainer keeps apart (``rankstack.train.data.dev_queries``).
Scores here are the float weights' and comparable among the limits only: the index quantises the weights
to 8 bits, which moved the default model's dev figure from 0.7457 (here, one window) to 0.7504
(``benchmarks/splade.py``). A limit chosen here gets its test figure from ``benchmarks/splade.py``
afterwards. Results go to results/splade_windows_<cpu class>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import describe_model, require_data, result_machine, write_result

from rankstack.evaluate import evaluate
from rankstack.index import Index, build_index
from rankstack.io import BeirDataset
from rankstack.models.splade import SpladeEncoder, max_per_owner
from rankstack.train.data import dev_queries
from rankstack.types import Run

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
BATCH = 512  # windows encoded between progress lines


def window_numbers(owners: np.ndarray) -> np.ndarray:
    """0 for a document's first window, 1 for its second, ... (``owners`` ascending)."""
    starts = np.r_[0, np.flatnonzero(np.diff(owners)) + 1]
    first_of_owner = np.repeat(starts, np.diff(np.r_[starts, len(owners)]))
    return np.arange(len(owners)) - first_of_owner


def dev_ndcg(doc_weights: object, query_weights: object, doc_ids: np.ndarray, query_ids: list[str],
             qrels: list[object]) -> float:
    scores = np.asarray((query_weights @ doc_weights.T).todense(), dtype=np.float32)  # type: ignore[operator]
    run = Run()
    for query_id, row in zip(query_ids, scores, strict=True):
        top = np.argsort(-row, kind="stable")[:1000]
        top = top[row[top] > 0]
        run.set_sorted(query_id, doc_ids[top], row[top])
    return round(float(evaluate(run, qrels, ["nDCG@10"]).aggregate["nDCG@10"]), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a SPLADE model directory (rankstack train sparse)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=None, help="a BM25 index is kept here (reused when present)")
    parser.add_argument("--windows", default="1,2,3,8", help="the limits to compare, comma-separated")
    parser.add_argument("--variant", default="default")
    args = parser.parse_args()
    limits = sorted({int(x) for x in args.windows.split(",")})
    require_data(args.data)
    work = args.work or Path(tempfile.mkdtemp(prefix="splade-windows-"))
    if not (work / "index" / "manifest.json").is_file():
        build_index(args.data, work / "index", overwrite=True)
    index = Index.open(work / "index")
    dataset = BeirDataset.open(args.data)
    dev = dev_queries(dataset, index)
    dev_ids = {q.query_id for q in dev}
    qrels = [q for q in dataset.qrels("train") if q.query_id in dev_ids]
    segment = index.segment
    docs = segment.docstore.range(0, segment.num_docs)
    encoder = SpladeEncoder(args.model)
    spans, owner_list, lengths = encoder.window_spans([d.contents for d in docs], max(limits))
    owners = np.asarray(owner_list)
    started = time.perf_counter()
    parts = []
    for start in range(0, len(spans), BATCH):
        parts.append(encoder.encode_docs(spans[start:start + BATCH], windows=1))  # a span fits one window
        print(f"{start + len(parts[-1].indptr) - 1}/{len(spans)} windows, {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
    from scipy import sparse

    rows = sparse.vstack(parts, format="csr")
    seconds = time.perf_counter() - started
    numbers = window_numbers(owners)
    query_weights = encoder.encode_queries([q.text for q in dev])
    systems = {}
    for limit in limits:
        keep = np.flatnonzero(numbers < limit)
        weights = max_per_owner(rows[keep], owners[keep], len(docs))
        score = dev_ndcg(weights, query_weights, segment.doc_id_array, [q.query_id for q in dev], qrels)
        systems[f"windows={limit}"] = {"dev_ndcg@10": score, "windows_encoded": int(len(keep)),
                                       "mean_active_terms_per_doc": round(weights.nnz / len(docs), 1),
                                       "docs_cut": int(sum(1 for n in lengths
                                                           if n > limit * encoder.window_budget()
                                                           + encoder.max_tokens - encoder.window_budget()))}
        print(f"dev {score:.4f} windows={limit} ({len(keep)} windows)", file=sys.stderr)
    output = write_result(
        "splade_windows", variant=args.variant,
        settings={"data": args.data.name, "dev_queries": len(dev), "test_queries": 0,
                  "window_tokens": encoder.max_tokens, "scoring": "float weights, whole collection"},
        systems=systems, ratios={}, targets={}, targets_met={},
        extra={"model": describe_model(args.model), "encode_seconds_all_windows": round(seconds, 1),
               "windows_total": len(spans)},
        machine=result_machine(("torch", "sentence-transformers", "scipy")))
    print(f"wrote {output}", file=sys.stderr)


if __name__ == "__main__":
    main()
