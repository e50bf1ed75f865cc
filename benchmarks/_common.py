"""Shared by the benchmarks: machine facts, timing, and the check that the data is there."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any


def version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(packages: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    """Platform, CPUs, load and library versions, plus benchmark-specific facts in ``extra``."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "load_average_1_5_15min": list(os.getloadavg()),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("rankstack", "numpy", *packages)},
        **extra,
    }


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one untimed warm-up (the minimum is least noisy)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def require_data(path: Path, name: str = "SciFact") -> None:
    """Exit with a clear message (status 2) when the collection is not where the benchmark looks."""
    if not path.is_dir():
        print(f"{name} not found at {path}; pass --data", file=sys.stderr)
        raise SystemExit(2)


def describe_model(model: str, depth: int = 0) -> Any:
    """What a model is, for a results file: its training card's key facts when rankstack trained it (not the
    directory it happened to sit in on the benchmark machine), else the id as given."""
    import json

    card = Path(model) / "rankstack_training.json"
    if not card.is_file():
        return model
    facts = json.loads(card.read_text(encoding="utf-8"))
    command = {"split-cross-encoder": "split"}.get(str(facts.get("kind")), str(facts.get("kind")))
    split = "layout" in facts
    described = {"trained_by": f"rankstack train {command}" if split or "distilled_from" not in facts
                 else "rankstack train distil", "base": facts.get("base"),
                 "layers": facts.get("layout") if split else facts.get("layers"),
                 "dataset": Path(str(facts.get("dataset"))).name, "split": facts.get("split"),
                 "parameters": facts.get("parameters"), "dev_ndcg@10": facts.get("dev_ndcg@10"),
                 "train_seconds": facts.get("train_seconds")}
    if facts.get("soup_of"):  # an average of trained models: describe each ingredient
        described["trained_by"] = "rankstack train soup"
        described["soup_of"] = [describe_model(str(part), depth + 1) if depth < 3 else Path(str(part)).name
                                for part in facts["soup_of"]]
    start = facts.get("initialised_from")
    if start:  # a second round: describe the model it started from, never by its directory
        described["initialised_from"] = (describe_model(str(start), depth + 1)
                                         if depth < 3 and (Path(start) / card.name).is_file()
                                         else Path(str(start)).name)
    return described


def judged_test_queries(data: Path, count: int) -> tuple[Any, list[Any], list[Any], Any]:
    """The dataset, its first ``count`` judged test queries, their qrels (only theirs, so measures average
    over the queries a benchmark actually ran) and the collection's cached BM25 index."""
    from rankstack.index.cache import open_or_build
    from rankstack.io import BeirDataset

    dataset = BeirDataset.open(data)
    qrels = dataset.qrels("test")
    queries = dataset.queries({q.query_id for q in qrels})[:count]
    wanted = {q.query_id for q in queries}
    index, _ = open_or_build(dataset.root)
    return dataset, queries, [q for q in qrels if q.query_id in wanted], index


CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo() -> tuple[str | None, set[str]] | None:
    """The first processor's model name and flags from /proc/cpuinfo; None where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def cpu_flags() -> dict[str, Any]:
    """The CPU model and whether each instruction-set flag that matters for the kernels is present
    (flags are None where they cannot be read, e.g. not on Linux)."""
    info = _cpuinfo()
    if info is None:
        return {"model": platform.processor() or None, **{flag: None for flag in CPU_FLAGS}}
    model, flags = info
    return {"model": model, **{flag: flag in flags for flag in CPU_FLAGS}}


def cpu_class() -> str:
    """A short name for the CPU's best relevant instruction set, to keep results of different machines apart."""
    info = _cpuinfo()
    if info is None or not sys.platform.startswith("linux"):
        return "unknown"
    flags = info[1]
    for flag, name in (("amx_bf16", "amx-bf16"), ("avx512_bf16", "avx512-bf16"), ("avx512_vnni", "avx512-vnni"),
                       ("avx2", "avx2")):
        if flag in flags:
            return name
    return "baseline"
