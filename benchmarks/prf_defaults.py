"""Choose the feedback stages' defaults on SciFact's train queries, then report the test split once.

    python benchmarks/prf_defaults.py [--data DIR] [--skip-dense]

Every setting of a small grid for ``rm3``, ``rocchio`` and ``dense_prf`` is scored by nDCG@10 on the 809
judged train queries (no test query is looked at while choosing); the best setting of each stage is then run
once on the 300 test queries, next to its first stage alone and next to Anserini's defaults (for rm3 and
rocchio). Results go to results/prf_defaults_<cpu class>.json, variant ``scifact_train``.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

from _common import result_machine, write_result

from rankstack.evaluate import evaluate
from rankstack.index.cache import open_or_build
from rankstack.io import BeirDataset
from rankstack.stages import SearchContext, parse_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
MEASURES = ["nDCG@10", "AP", "R@100"]

GRIDS: dict[str, tuple[str, dict[str, list[Any]]]] = {
    "rm3": ("bm25>>rm3({})>>bm25", {"fb_docs": [3, 5, 10], "fb_terms": [10, 20],
                                    "original_weight": [0.5, 0.7, 0.9]}),
    "rocchio": ("bm25>>rocchio({})>>bm25", {"fb_docs": [3, 5, 10], "fb_terms": [10, 20],
                                            "beta": [0.25, 0.5, 0.75]}),
    "dense_prf": ("dense>>dense_prf({})>>dense", {"fb_docs": [1, 3, 5], "beta": [0.25, 0.5, 1.0]}),
}
BASELINES = {"rm3": "bm25", "rocchio": "bm25", "dense_prf": "dense"}
ANSERINI_DEFAULTS = {"rm3": "bm25>>rm3(fb_docs=10,fb_terms=10,original_weight=0.5)>>bm25",
                     "rocchio": "bm25>>rocchio(fb_docs=10,fb_terms=10,alpha=1.0,beta=0.75)>>bm25"}


def _score(index: Any, pipeline_text: str, queries: list[Any], qrels: list[Any]) -> dict[str, float]:
    pipeline = parse_pipeline(pipeline_text, index)
    pipeline.prepare()
    run = pipeline.transform(queries, context=SearchContext(top_k=1000,
                                                            ignore_identical_ids=index.ignore_identical_ids))
    return {m: round(v, 4) for m, v in evaluate(run, qrels, MEASURES).aggregate.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--skip-dense", action="store_true", help="Leave dense_prf out (no encoder needed).")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    dataset = BeirDataset.open(args.data)
    index, _ = open_or_build(dataset.root)
    splits = {}
    for split in ("train", "test"):
        qrels = dataset.qrels(split)
        splits[split] = (dataset.queries({q.query_id for q in qrels}), qrels)
    stages = [s for s in GRIDS if not (args.skip_dense and s == "dense_prf")]
    systems: dict[str, Any] = {}
    for stage in stages:
        template, grid = GRIDS[stage]
        train_scores = {}
        for values in itertools.product(*grid.values()):
            arguments = ",".join(f"{key}={value}" for key, value in zip(grid, values, strict=True))
            text = template.format(arguments)
            train_scores[text] = _score(index, text, *splits["train"])
            print(f"train {text}: {train_scores[text]}", flush=True)
        baseline_train = _score(index, BASELINES[stage], *splits["train"])
        chosen = max(train_scores, key=lambda text: train_scores[text]["nDCG@10"])
        test = {"chosen": _score(index, chosen, *splits["test"]),
                "first_stage_alone": _score(index, BASELINES[stage], *splits["test"])}
        if stage in ANSERINI_DEFAULTS:
            test["anserini_defaults"] = _score(index, ANSERINI_DEFAULTS[stage], *splits["test"])
        systems[stage] = {"chosen_on_train": chosen, "train": train_scores, "train_first_stage_alone": baseline_train,
                          "test_once": test}
        print(f"{stage}: chosen on train {chosen} ({train_scores[chosen]}, first stage {baseline_train}); "
              f"test {test}", flush=True)
    path = write_result("prf_defaults", variant="scifact_train",
                        settings={"dataset": "scifact", "choose_on": "train (809 queries)", "report": "test (300)",
                                  "grids": {s: GRIDS[s][1] for s in stages}, "measures": MEASURES},
                        systems=systems, ratios={}, targets={}, targets_met={}, machine=result_machine(),
                        output=args.output)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
