"""Pseudo-relevance feedback against Lucene: Pyserini's RM3 and Rocchio next to rankstack's, in one run.

    python benchmarks/prf_parity.py --pyserini-python PYTHON [--data DIR] [--collections scifact cranfield ...]

PYTHON is an interpreter with Pyserini 0.21 importable (it needs Java 11+); Pyserini is never a dependency of
rankstack. One way to get one, in its own virtual environment:

    python -m venv pyserini-env && pyserini-env/bin/pip install --no-deps pyserini==0.21.0
    pyserini-env/bin/pip install pyjnius numpy scipy pandas tqdm requests scikit-learn faiss-cpu \
        transformers torch==2.13.0 onnxruntime      # the imports pyserini.search.lucene pulls in
    apt-get install openjdk-17-jre-headless

For each collection (BEIR layout, judged test queries), the benchmark writes the documents as a JsonCollection
(``contents`` = title + " " + text, as Pyserini's BEIR "flat" indexes), builds a Lucene index with stored
document vectors, and runs BM25 (k1=0.9, b=0.4), BM25+RM3 and BM25+Rocchio there (Pyserini's ``set_rm3`` /
``set_rocchio``) and in rankstack (``bm25``, ``bm25>>rm3>>bm25``, ``bm25>>rocchio>>bm25``) with the same
parameters. Both sides' runs are scored by rankstack's evaluator (trec_eval parity): nDCG@10, AP, R@100.
Queries per second are one thread, the whole query loop after one warm-up query, JVM start excluded.

Results go to results/prf_parity_<cpu class>.json, variant ``parity``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import result_machine, write_result

from rankstack.evaluate import evaluate
from rankstack.index import Index, build_index
from rankstack.io import BeirDataset, read_corpus
from rankstack.stages import SearchContext, parse_pipeline
from rankstack.types import Query, Run, ScoredDoc

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
COLLECTIONS = ("scifact", "cranfield", "cisi", "medline")
MEASURES = ("nDCG@10", "AP", "R@100")
TOLERANCE = 0.005
DEPTH = 1000

# Anserini's defaults, which Pyserini's set_rm3 / set_rocchio use.
RM3 = {"fb_docs": 10, "fb_terms": 10, "original_weight": 0.5}
ROCCHIO = {"fb_docs": 10, "fb_terms": 10, "alpha": 1.0, "beta": 0.75}

# Runs inside the Pyserini interpreter: searches every query with one configuration, writes a JSON run.
PYSERINI_DRIVER = r'''
import json, sys, time
from pyserini.search.lucene import LuceneSearcher
index, queries_path, mode, params, depth, output = sys.argv[1:7]
params, depth = json.loads(params), int(depth)
queries = [json.loads(line) for line in open(queries_path, encoding="utf-8")]
searcher = LuceneSearcher(index)
searcher.set_bm25(0.9, 0.4)
if mode == "rm3":
    searcher.set_rm3(fb_terms=params["fb_terms"], fb_docs=params["fb_docs"],
                     original_query_weight=params["original_weight"], filter_terms=True)
elif mode == "rocchio":
    searcher.set_rocchio(top_fb_terms=params["fb_terms"], top_fb_docs=params["fb_docs"],
                         alpha=params["alpha"], beta=params["beta"])
searcher.search(queries[0]["text"], k=depth)  # warm-up
started = time.perf_counter()
run = {}
for query in queries:
    hits = searcher.search(query["text"], k=depth)
    run[query["id"]] = [[hit.docid, float(hit.score)] for hit in hits]
seconds = time.perf_counter() - started
json.dump({"seconds": seconds, "run": run}, open(output, "w", encoding="utf-8"))
'''


def _lucene_index(python: str, dataset: BeirDataset, work: Path) -> Path:
    documents = work / "jsonl"
    documents.mkdir()
    with open(documents / "docs.jsonl", "w", encoding="utf-8") as out:
        for doc in read_corpus(dataset.root):
            out.write(json.dumps({"id": doc.doc_id, "contents": doc.contents}, ensure_ascii=False) + "\n")
    index = work / "lucene"
    subprocess.run([python, "-m", "pyserini.index.lucene", "--collection", "JsonCollection", "--input",
                    str(documents), "--index", str(index), "--generator", "DefaultLuceneDocumentGenerator",
                    "--threads", "1", "--storeDocvectors"], check=True, capture_output=True)
    return index


def _pyserini_run(python: str, index: Path, queries: list[Query], mode: str, params: dict[str, Any], work: Path,
                  ignore_identical_ids: bool) -> tuple[Run, float]:
    queries_path = work / "queries.jsonl"
    queries_path.write_text("".join(json.dumps({"id": q.query_id, "text": q.text}) + "\n" for q in queries),
                            encoding="utf-8")
    output = work / f"run_{mode}.json"
    driver = work / "driver.py"
    driver.write_text(PYSERINI_DRIVER, encoding="utf-8")
    depth = DEPTH + (1 if ignore_identical_ids else 0)
    subprocess.run([python, str(driver), str(index), str(queries_path), mode, json.dumps(params), str(depth),
                    str(output)], check=True, capture_output=True)
    result = json.loads(output.read_text(encoding="utf-8"))
    run = Run()
    for query_id, hits in result["run"].items():
        kept = [ScoredDoc(query_id, doc_id, score) for doc_id, score in hits
                if not (ignore_identical_ids and doc_id == query_id)]
        # Lucene's order (ties by doc id) is kept by rank, whatever a later tie-break would do to equal scores
        run.set(query_id, [ScoredDoc(query_id, hit.doc_id, float(len(kept) - rank))
                           for rank, hit in enumerate(kept[:DEPTH])])
    return run, result["seconds"]


def _rankstack_run(index: Index, pipeline_text: str, queries: list[Query]) -> tuple[Run, float]:
    pipeline = parse_pipeline(pipeline_text, index)
    pipeline.prepare()
    context = SearchContext(top_k=DEPTH, ignore_identical_ids=index.ignore_identical_ids)
    pipeline.transform(queries[:1], context=context)  # warm-up, as on the Lucene side
    started = time.perf_counter()
    run = pipeline.transform(queries, context=context)
    return run, time.perf_counter() - started


def _scores(run: Run, qrels: list[Any]) -> dict[str, float]:
    return {m: round(v, 4) for m, v in evaluate(run, qrels, list(MEASURES)).aggregate.items()}


def _arguments(params: dict[str, Any]) -> str:
    return ",".join(f"{key}={value}" for key, value in params.items())


def run_collection(python: str, root: Path, name: str) -> dict[str, Any]:
    dataset = BeirDataset.open(root / name)
    qrels = dataset.qrels("test")
    queries = dataset.queries({q.query_id for q in qrels})
    systems: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=f"prf-{name}-") as tmp:
        work = Path(tmp)
        ours = build_index(read_corpus(dataset.root), work / "rankstack")
        index = Index.open(ours)
        lucene = _lucene_index(python, dataset, work)
        configurations = {"bm25": ("bm25", {}, "bm25"),
                          "rm3": ("rm3", RM3, f"bm25>>rm3({_arguments(RM3)})>>bm25"),
                          "rocchio": ("rocchio", ROCCHIO, f"bm25>>rocchio({_arguments(ROCCHIO)})>>bm25")}
        for label, (mode, params, pipeline_text) in configurations.items():
            lucene_run, lucene_seconds = _pyserini_run(python, lucene, queries, mode, params, work,
                                                       index.ignore_identical_ids)
            our_run, our_seconds = _rankstack_run(index, pipeline_text, queries)
            lucene_scores, our_scores = _scores(lucene_run, qrels), _scores(our_run, qrels)
            systems[label] = {
                "pipeline": pipeline_text, "params": params,
                "pyserini": {**lucene_scores, "qps": round(len(queries) / lucene_seconds, 1)},
                "rankstack": {**our_scores, "qps": round(len(queries) / our_seconds, 1)},
                "difference": {m: round(our_scores[m] - lucene_scores[m], 4) for m in MEASURES},
            }
            print(f"{name:10s} {label:8s} pyserini {lucene_scores} {len(queries) / lucene_seconds:7.1f} q/s | "
                  f"rankstack {our_scores} {len(queries) / our_seconds:7.1f} q/s", flush=True)
        index.close()
    return {"queries": len(queries), "systems": systems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pyserini-python", required=True, help="Python interpreter with Pyserini 0.21.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Folder holding the BEIR collections.")
    parser.add_argument("--collections", nargs="+", default=list(COLLECTIONS))
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    for name in args.collections:
        if not (args.data / name).is_dir():
            print(f"{name} not found under {args.data}; pass --data", file=sys.stderr)
            raise SystemExit(2)
    collections = {name: run_collection(args.pyserini_python, args.data, name) for name in args.collections}
    worst = {m: max(abs(c["systems"][s]["difference"][m]) for c in collections.values() for s in ("rm3", "rocchio"))
             for m in MEASURES}
    targets = {f"rm3_rocchio_abs_difference_{m}_at_most": TOLERANCE for m in MEASURES}
    met = {f"rm3_rocchio_abs_difference_{m}_at_most": worst[m] <= TOLERANCE for m in MEASURES}
    pyserini_version = subprocess.run([args.pyserini_python, "-c", "import pyserini; print(pyserini.__version__)"],
                                      capture_output=True, text=True).stdout.strip()
    path = write_result("prf_parity", variant="parity",
                        settings={"collections": args.collections, "split": "test", "k1": 0.9, "b": 0.4,
                                  "depth": DEPTH, "rm3": RM3, "rocchio": ROCCHIO, "measures": list(MEASURES),
                                  "pyserini": pyserini_version},
                        systems=collections, ratios={"worst_abs_difference": worst},
                        targets=targets, targets_met=met, machine=result_machine(),
                        output=args.output)
    print(f"worst |difference| over RM3 and Rocchio: {worst}; written to {path}")


if __name__ == "__main__":
    main()
