"""Pipelines compared on SciFact's held-out dev queries (to choose), or on its test queries (to report the
chosen ones once), in one run.

    python benchmarks/choose_pipeline.py --split dev|test --model BI=DIR --model CE=DIR ... \\
        -p 'dense(model={BI})' -p 'linear(bm25,dense(model={BI}),norm=zscore)' ... [--variant NAME]

``--split dev`` takes the train queries every ``rankstack train`` command holds out for model selection (same
fraction and seed), so a choice made there never sees a test query; ``--split test`` the judged test queries.
``{ROLE}`` in a pipeline stands for the directory given as ``--model ROLE=DIR``: results name roles, not this
machine's directories, and record each model's training card. Every pipeline runs all queries in one batch
after its preparation (encoding a collection with a new model is preparation, timed apart); nDCG@10, R@100
and ms per query go to results/choose_pipeline_<cpu class>.json under the variant's name.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import describe_model, require_data, result_machine, score_pipeline, write_result

from rankstack.index.cache import open_or_build
from rankstack.io import BeirDataset
from rankstack.train.data import dev_queries

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "scifact"
MEASURES = ("nDCG@10", "R@100")


def roles(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        role, sep, folder = pair.partition("=")
        if not sep or not role.isidentifier() or not folder:
            raise SystemExit(f"--model {pair!r}: give ROLE=DIR, for example --model BI=models/bi")
        found[role] = folder
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    parser.add_argument("--model", action="append", default=[], help="ROLE=DIR, used as {ROLE} in pipelines")
    parser.add_argument("-p", "--pipeline", action="append", required=True)
    parser.add_argument("--variant", default=None)
    args = parser.parse_args()
    require_data(args.data)
    models = roles(args.model)
    dataset = BeirDataset.open(args.data)
    index, _ = open_or_build(dataset.root)
    if args.split == "dev":
        split, queries = "train", dev_queries(dataset, index)
    else:
        split, queries = "test", None
    systems: dict[str, Any] = {}
    for template in args.pipeline:
        try:
            pipeline = template.format(**models)
        except KeyError as missing:
            raise SystemExit(f"pipeline {template!r} names {missing}, which no --model ROLE=DIR gives") from None
        started = time.perf_counter()
        figures = score_pipeline(index, pipeline, dataset, split, MEASURES, queries=queries)
        figures["seconds_with_preparation"] = round(time.perf_counter() - started, 1)
        systems[template] = figures
        print(f"{figures['nDCG@10']:.4f}  {figures['ms_per_query']:>9.1f} ms  {template}", flush=True)
    best = max(systems, key=lambda name: systems[name]["nDCG@10"])
    path = write_result("choose_pipeline", variant=args.variant or f"scifact_{args.split}",
                        settings={"dataset": dataset.root.name, "split": args.split,
                                  "queries": next(iter(systems.values()))["queries"],
                                  "models": {role: describe_model(folder) for role, folder in models.items()}},
                        systems=systems, ratios={"best": best, "best_nDCG@10": systems[best]["nDCG@10"]},
                        targets={}, targets_met={}, machine=result_machine())
    print(f"best: {systems[best]['nDCG@10']:.4f} {best}\nwritten to {path}")


if __name__ == "__main__":
    main()
