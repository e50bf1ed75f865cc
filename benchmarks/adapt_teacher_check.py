"""Can a teacher teach here? A label-free check before `rankstack adapt` trains: on pseudo-queries made as
adapt makes them, how well does the teacher find each query's source document among the hybrid's
candidates, against the unadapted bi-encoder it would teach?

    python benchmarks/adapt_teacher_check.py --teacher CE [--collections scifact cranfield cisi medline]
        [--queries 150] [--variant NAME]

Per collection: ``--queries`` seeded pseudo-queries (adapt's default source; a sentence cut from its
document), each with adapt's candidate list (the source document first, then the hybrid's best others);
MRR of the source document and how often it comes first, by the teacher's scores and by the bundled
bi-encoder's cosine. No judgement is read. Beside them, when results/adapt_collections_<cpu class>.json has
the collection, the measured nDCG@10 gains of adapting with that teacher (test queries, measured earlier),
to see whether the check would have told the cases apart. Results go to
results/adapt_teacher_check_<cpu class>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import describe_model, require_data, result_machine, result_path, write_result

from rankstack.index.cache import open_or_build
from rankstack.models.hardware import cpu_class
from rankstack.models.loading import resolve_model_location
from rankstack.train.adapt_lists import corpus_documents, label_lists, make_queries
from rankstack.train.adapt_settings import AdaptSettings
from rankstack.train.labellers import teacher_labeller
from rankstack.train.self_check import source_ranks
from rankstack.train.teachers import load_teacher

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"


def measured_gains(name: str) -> dict[str, Any] | None:
    path = result_path("adapt_collections", cpu_class())
    if not path.is_file():
        return None
    for variant in json.loads(path.read_text(encoding="utf-8"))["variants"].values():
        found = variant.get("systems", {}).get(name)
        if found:
            return {"gain": found.get("gain"), "nDCG@10": {k: v.get("nDCG@10")
                                                           for k, v in found.get("systems", {}).items()}}
    return None


def check_collection(folder: Path, teacher: Any, student: Any, settings: AdaptSettings, count: int) -> dict[str, Any]:
    index, _ = open_or_build(folder)
    docs, _ = corpus_documents(index, folder)
    started = time.perf_counter()
    lists = label_lists(index, make_queries(docs, settings, count), teacher_labeller(teacher), settings)
    predicted = []
    for x in lists:
        vectors = student.encode([x.query.text, *x.texts], normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)
        predicted.append((vectors[1:] @ vectors[0]).tolist())
    teacher_ranks = np.array(source_ranks([x.scores for x in lists]))
    student_ranks = np.array(source_ranks(predicted))
    return {"queries": len(lists), "candidates_per_query": round(float(np.mean([len(x.doc_ids) for x in lists])), 1),
            "teacher_source_mrr": round(float(np.mean(1 / teacher_ranks)), 4),
            "student_source_mrr": round(float(np.mean(1 / student_ranks)), 4),
            "teacher_source_first": round(float(np.mean(teacher_ranks == 1)), 4),
            "student_source_first": round(float(np.mean(student_ranks == 1)), 4),
            "seconds": round(time.perf_counter() - started, 1), "measured_adapt": measured_gains(folder.name)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--collections", nargs="+", default=["scifact", "cranfield", "cisi", "medline"])
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--variant", default=None)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    settings = AdaptSettings(teacher=args.teacher)
    teacher = load_teacher(resolve_model_location(args.teacher), settings.max_length)
    student = SentenceTransformer(resolve_model_location(settings.base), device="cpu")
    systems: dict[str, Any] = {}
    for name in args.collections:  # written after each collection: a stopped run keeps what it measured
        require_data(args.data / name, name)
        systems[name] = check_collection(args.data / name, teacher, student, settings, args.queries)
        print(name, json.dumps(systems[name]), flush=True)
        path = write_result("adapt_teacher_check", variant=args.variant or "default",
                            settings={"teacher": describe_model(args.teacher), "student": settings.base,
                                      "queries_per_collection": args.queries, "source": settings.source,
                                      "hybrid": settings.hybrid, "depth": settings.depth, "seed": settings.seed,
                                      "collections_asked": args.collections},
                            systems=systems,
                            ratios={n: round(s["teacher_source_mrr"] - s["student_source_mrr"], 4)
                                    for n, s in systems.items()},
                            targets={}, targets_met={}, machine=result_machine())
    print(f"written to {path}")


if __name__ == "__main__":
    main()
