"""Zero-label adaptation measured: the best pipeline with `rankstack adapt`'s models against the best without.

    rankstack adapt DATA/cranfield -o ADAPTED/cranfield --teacher CE      # once per collection, at its defaults
    python benchmarks/adapt_collections.py --teacher CE --adapted cranfield=ADAPTED/cranfield [--adapted ...]

For each collection named by ``--adapted`` (judged test queries; the adapt run itself read only documents),
one run scores, by nDCG@10 and R@100:

* the pipelines without adapted models: ``bm25``, the bundled ``dense``, their fusions (``rrf`` and z-score
  ``linear``) and ``bm25>>rm3>>bm25``;
* the teacher used as it is (transfer without adaptation): ``rrf(bm25,dense)%30>>cross_encoder(model=CE)``;
* the adapted bi-encoder alone and in both fusions, and the card's ``suggested_pipeline``.

It records the adapt card's facts (time, steps, self-check, what was recommended) beside the figures, the
best pipeline of each group, and the gain of the best with adapted models over the best without. The targets
are the issue's: mean gain at least +0.02 over the collections in the run, none below -0.005, each adapt run
within 3,600 s. Results go to results/adapt_collections_<cpu class>.json, one variant per run (``--variant``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

from _common import describe_model, require_data, result_machine, score_pipeline, write_result

from rankstack.index.cache import open_or_build
from rankstack.io import BeirDataset

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
MEASURES = ("nDCG@10", "R@100")
WITHOUT = {"bm25": "bm25", "dense": "dense", "rrf": "rrf(bm25,dense)", "zscore": "linear(bm25,dense,norm=zscore)",
           "rm3": "bm25>>rm3>>bm25"}
TARGET_MEAN_GAIN, TARGET_WORST_GAIN, TARGET_SECONDS = 0.02, -0.005, 3600.0


def adapted_pipelines(model: str, suggested: str) -> dict[str, str]:
    dense = f"dense(model={model})"
    pipelines = {"adapted_dense": dense, "adapted_rrf": f"rrf(bm25,{dense})",
                 "adapted_zscore": f"linear(bm25,{dense},norm=zscore)"}
    if suggested not in pipelines.values():
        pipelines["suggested"] = suggested
    return pipelines


def score(index: Any, dataset: BeirDataset, pipeline: str) -> dict[str, Any]:
    return {"pipeline": pipeline, **score_pipeline(index, pipeline, dataset, "test", MEASURES)}


def best(systems: dict[str, dict[str, Any]], names: list[str]) -> tuple[str, float]:
    name = max(names, key=lambda n: systems[n]["nDCG@10"])
    return name, systems[name]["nDCG@10"]


def measure_collection(data: Path, adapted: Path, teacher: str | None) -> dict[str, Any]:
    card = json.loads((adapted / "adapt_card.json").read_text(encoding="utf-8"))
    dataset = BeirDataset.open(data)
    index, _ = open_or_build(dataset.root)
    systems: dict[str, dict[str, Any]] = {}
    try:
        for name, pipeline in WITHOUT.items():
            systems[name] = score(index, dataset, pipeline)
            print(f"{data.name:10} {name:16} {systems[name]['nDCG@10']:.4f}", flush=True)
        if teacher:
            systems["teacher_transfer"] = score(index, dataset, f"rrf(bm25,dense)%30>>cross_encoder(model={teacher})")
            print(f"{data.name:10} teacher_transfer {systems['teacher_transfer']['nDCG@10']:.4f}", flush=True)
        for name, pipeline in adapted_pipelines(str(adapted / "bi-encoder"), card["suggested_pipeline"]).items():
            systems[name] = score(index, dataset, pipeline)
            print(f"{data.name:10} {name:16} {systems[name]['nDCG@10']:.4f}", flush=True)
    finally:
        index.close()
    suggested = next(n for n, s in systems.items() if s["pipeline"] == card["suggested_pipeline"])
    # pipelines are named by role in the results, not by the directories they sat in on the benchmark machine
    for figures in systems.values():
        figures["pipeline"] = figures["pipeline"].replace(str(adapted), "ADAPTED").replace(str(teacher), "TEACHER")
    return summarised({"systems": systems, "suggested_system": suggested,
                       "adapt": {"seconds": card["seconds"], "self_check": card["self_check"],
                                 "training": card["training"], "pseudo_queries": card["pseudo_queries"],
                                 "labels": card["teacher"].get("labels", "teacher"),
                                 "parameters": {k: v for k, v in card["parameters"].items() if k != "teacher"},
                                 "suggested_pipeline": card["suggested_pipeline"].replace(str(adapted), "ADAPTED")}})


def summarised(figures: dict[str, Any]) -> dict[str, Any]:
    """The best pipeline without adapted models, the best with them, and the gains. A pipeline counts as one
    with adapted models only when it names them: the suggested pipeline, when the self-check refused the
    adapted bi-encoder, is an unadapted one and belongs to neither group."""
    systems = figures["systems"]
    without_name, without = best(systems, list(WITHOUT))
    with_name, with_ = best(systems, [n for n, s in systems.items() if "ADAPTED" in s["pipeline"]])
    name = figures.get("suggested_system") or next(n for n, s in systems.items()
                                                   if s["pipeline"] == figures["adapt"]["suggested_pipeline"])
    suggested = systems[name]["nDCG@10"]
    return {**figures, "best_without": {"system": without_name, "nDCG@10": without},
            "best_with_adapted": {"system": with_name, "nDCG@10": with_}, "gain": round(with_ - without, 4),
            "suggested_gain": round(suggested - without, 4)}


def measured(data: Path, adapted: Path, teacher: str | None, reuse: Path | None) -> dict[str, Any]:
    key = hashlib.sha256((adapted / "adapt_card.json").read_bytes() + str(teacher).encode()).hexdigest()
    kept = reuse / f"{data.name}.json" if reuse else None
    if kept is not None and kept.is_file():
        saved = json.loads(kept.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            print(f"{data.name}: figures of an earlier run with the same adapt card and teacher", flush=True)
            return summarised(dict(saved["figures"]))
    figures = measure_collection(data, adapted, teacher)
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps({"key": key, "figures": figures}, indent=1) + "\n", encoding="utf-8")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapted", action="append", required=True, metavar="NAME=DIR",
                        help="a collection under --data and the output of `rankstack adapt` for it; repeatable")
    parser.add_argument("--teacher", help="the cross-encoder the adapt runs used, measured as it is too")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--variant", default="defaults")
    parser.add_argument("--reuse", type=Path, help="a folder keeping each collection's figures, reused while its adapt "
                        "card and the teacher are unchanged (to add a collection measured later to the same variant)")
    args = parser.parse_args()
    collections: dict[str, dict[str, Any]] = {}
    for item in args.adapted:
        name, _, folder = item.partition("=")
        require_data(args.data / name, name)
        collections[name] = measured(args.data / name, Path(folder).resolve(), args.teacher, args.reuse)
    gains = [c["gain"] for c in collections.values()]
    seconds = [c["adapt"]["seconds"]["total"] for c in collections.values()]
    mean_gain, worst_gain = round(sum(gains) / len(gains), 4), min(gains)
    targets = {"mean_gain_ndcg@10": TARGET_MEAN_GAIN, "worst_gain_ndcg@10": TARGET_WORST_GAIN,
               "adapt_seconds_at_most": TARGET_SECONDS}
    met = {"mean_gain_ndcg@10": mean_gain >= TARGET_MEAN_GAIN, "worst_gain_ndcg@10": worst_gain >= TARGET_WORST_GAIN,
           "adapt_seconds_at_most": max(seconds) <= TARGET_SECONDS}
    settings = {"collections": sorted(collections), "without": WITHOUT,
                "teacher": describe_model(args.teacher) if args.teacher else None}
    ratios = {"mean_gain_ndcg@10": mean_gain, "worst_gain_ndcg@10": worst_gain}
    machine = result_machine(("torch", "sentence-transformers", "transformers"))
    path = write_result("adapt_collections", settings=settings, systems=collections, ratios=ratios, targets=targets,
                        targets_met=met, variant=args.variant, machine=machine)
    for name, c in collections.items():
        print(f"{name:10} best without {c['best_without']['system']} {c['best_without']['nDCG@10']:.4f}  best with "
              f"adapted {c['best_with_adapted']['system']} {c['best_with_adapted']['nDCG@10']:.4f}  gain "
              f"{c['gain']:+.4f}  adapt {c['adapt']['seconds']['total']:.0f} s")
    print(f"mean gain {mean_gain:+.4f} (target {TARGET_MEAN_GAIN:+}), worst {worst_gain:+.4f}; written to {path}")


if __name__ == "__main__":
    main()
