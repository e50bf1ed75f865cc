"""Shared by the benchmarks: machine facts, timing, the check that the data is there, and the one results
file layout every benchmark writes (``write_result``)."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
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


def describe_base(base: Any, depth: int = 0) -> Any:
    """A starting model: a Hugging Face id as it is; a local directory by its own card (when rankstack trained
    it) or by its name, never by where it sat on the benchmark machine."""
    if not isinstance(base, str) or not Path(base).is_absolute():
        return base
    if depth < 3 and (Path(base) / "rankstack_training.json").is_file():
        return describe_model(base, depth + 1)
    return Path(base).name


def describe_model(model: str, depth: int = 0) -> Any:
    """What a model is, for a results file: its training card's key facts when rankstack trained it (not the
    directory it happened to sit in on the benchmark machine), else the id as given."""
    import json

    card = Path(model) / "rankstack_training.json"
    if not card.is_file():
        return model
    facts = json.loads(card.read_text(encoding="utf-8"))
    command = {"split-cross-encoder": "split", "splade": "sparse"}.get(str(facts.get("kind")), str(facts.get("kind")))
    split = "layout" in facts
    described = {"trained_by": f"rankstack train {command}" if split or "distilled_from" not in facts
                 else "rankstack train distil", "base": describe_base(facts.get("base"), depth),
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


def score_pipeline(index: Any, pipeline: str, dataset: Any, split: str = "test",
                   measures: Sequence[str] = ("nDCG@10",), queries: list[Any] | None = None,
                   progress: Any = None) -> dict[str, Any]:
    """One pipeline over a split's judged queries (or the given ones): the measures, averaged over the
    queries that ran, and ms per query of the whole pipeline (its preparation, such as encoding, apart)."""
    from rankstack.evaluate import evaluate
    from rankstack.evaluate.experiment import judged_queries
    from rankstack.stages import SearchContext, parse_pipeline

    qrels = dataset.qrels(split)
    if queries is None:
        queries, qrels, _ = judged_queries(dataset.queries(), qrels)
    stages = parse_pipeline(pipeline, index)
    stages.prepare(progress)
    started = time.perf_counter()
    run = stages.transform(queries, context=SearchContext(ignore_identical_ids=True))
    seconds = time.perf_counter() - started
    wanted = {q.query_id for q in queries}
    figures = evaluate(run, [r for r in qrels if r.query_id in wanted], list(measures)).aggregate
    return {**{m: round(figures[m], 4) for m in measures}, "ms_per_query": round(1000 * seconds / len(queries), 1),
            "queries": len(queries)}


# One definition of the CPU classes, the package's: precision=auto chooses by the same class a result records.
from rankstack.models.hardware import CPU_FLAGS, cpu_class, cpu_flags  # noqa: E402

__all__ = ["CPU_FLAGS", "cpu_class", "cpu_flags"]


# ---------------------------------------------------------------------------------------------------------------
# Results: one file per benchmark and CPU class, benchmarks/results/<benchmark>_<cpu class>.json, holding every
# variant of that benchmark measured on that class of machine:
#
#   {"benchmark": str, "schema_version": 1, "cpu_class": str,
#    "machine": {...machine_info(), "cpu_flags": cpu_flags()}        (of the latest write),
#    "variants": {name: {"settings": {}, "systems": {}, "ratios": {}, "targets": {}, "targets_met": {},
#                        "measured_at": ISO 8601 UTC or null, "machine": {...} (of that run), ...extra}}}
#
# targets: name -> the threshold, a number (a lower bound unless the name says otherwise: "..._at_most_...",
# "..._max") or a sentence where a number would not say it; targets_met: the same names -> bool. A benchmark for
# which no target was ever stated records {} for both.

SCHEMA_VERSION = 1
RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULT_KEYS = ("benchmark", "schema_version", "cpu_class", "machine", "variants")
VARIANT_KEYS = ("settings", "systems", "ratios", "targets", "targets_met", "measured_at")
# cpu_class()'s names, plus "unrecorded" for results migrated from files that did not record the CPU
CPU_CLASSES = ("amx-bf16", "avx512-bf16", "avx512-vnni", "avx2", "baseline", "unknown", "unrecorded")


def result_path(benchmark: str, cpu: str, directory: Path | None = None) -> Path:
    return (directory or RESULTS_DIR) / f"{benchmark}_{cpu}.json"


def result_machine(packages: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    """``machine_info`` plus the CPU model and instruction-set flags."""
    return {**machine_info(packages, **extra), "cpu_flags": cpu_flags()}


def _plain_bools(targets: dict[str, Any], targets_met: dict[str, Any]) -> dict[str, bool]:
    if set(targets) != set(targets_met):
        raise ValueError(f"targets_met must name exactly the targets: targets {sorted(targets)}, "
                         f"targets_met {sorted(targets_met)}")
    met = {}
    for name, value in targets_met.items():
        if not isinstance(value, bool) and getattr(getattr(value, "dtype", None), "kind", None) != "b":
            # a numpy bool (a comparison of numpy figures) passes, written as a plain bool
            raise ValueError(f"targets_met[{name!r}] must be a bool, got {value!r}")
        met[name] = bool(value)
    return met


def write_result(benchmark: str, *, settings: dict[str, Any], systems: dict[str, Any], ratios: dict[str, Any],
                 targets: dict[str, Any], targets_met: dict[str, Any], variant: str = "default",
                 extra: dict[str, Any] | None = None, machine: dict[str, Any] | None = None,
                 output: Path | None = None) -> Path:
    """Record one variant of a benchmark in ``results/<benchmark>_<cpu class>.json`` (or ``output``).

    Other variants in the file are kept; a variant of the same name is replaced. ``machine`` defaults to
    ``result_machine()`` (pass ``result_machine(packages, **facts)`` for more). The file is replaced atomically
    (a temporary file in the same folder, then ``os.replace``), under a lock on the folder, so a reader never
    sees half a file and two benchmarks finishing at once do not drop each other's variant.
    """
    if not isinstance(variant, str) or not variant:
        raise ValueError(f"variant must be a non-empty name, got {variant!r}")
    met = _plain_bools(targets, targets_met)
    clash = set(extra or {}) & {*VARIANT_KEYS, "machine"}
    if clash:
        raise ValueError(f"extra may not set the schema's own keys: {sorted(clash)}")
    cpu = cpu_class()
    machine = machine if machine is not None else result_machine()
    body = {"settings": settings, "systems": systems, "ratios": ratios, "targets": targets, "targets_met": met,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine, **(extra or {})}
    path = output or result_path(benchmark, cpu)
    return merge_variants(path, benchmark=benchmark, cpu=cpu, machine=machine, variants={variant: body})


def merge_variants(path: Path, *, benchmark: str, cpu: str, machine: dict[str, Any],
                   variants: dict[str, dict[str, Any]], lock: bool = True) -> Path:
    """Add ``variants`` to the results file at ``path`` (created if missing), replacing those of the same name.
    ``lock=False`` only for a caller that already holds the folder's lock (flock does not nest)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(path.parent) if lock else nullcontext():
        document = _read_result(path, benchmark, cpu, variants)
        kept = document.get("variants", {}) if document else {}
        merged = {**kept, **variants}
        document = {"benchmark": benchmark, "schema_version": SCHEMA_VERSION, "cpu_class": cpu, "machine": machine,
                    "variants": {name: merged[name] for name in sorted(merged)}}
        write_json_atomically(path, document)
    return path


def _read_result(path: Path, benchmark: str, cpu: str, variants: dict[str, Any]) -> dict[str, Any] | None:
    """The file's current document, an old-layout file first migrated; refuse (saving the new figures aside)
    when it cannot be read or is another benchmark's or CPU class's."""
    if not path.is_file():
        return None
    problem = None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        document, problem = None, f"cannot be read as JSON ({error})"
    if isinstance(document, dict) and "schema_version" not in document:
        # written before this layout (e.g. by an older script): fold it in as its own variant first
        try:
            _migrate_old_files([path])
        except Exception as error:  # refused below, with this run's figures saved aside
            problem = f"is in an old layout that could not be migrated ({error})"
        else:
            return _read_result(path, benchmark, cpu, variants)
    if problem is None and (not isinstance(document, dict) or document.get("schema_version") != SCHEMA_VERSION):
        problem = f"has schema_version {document.get('schema_version') if isinstance(document, dict) else None}"
    if problem is None and (document.get("benchmark"), document.get("cpu_class")) != (benchmark, cpu):
        problem = f"holds {document.get('benchmark')!r} on {document.get('cpu_class')!r}, not {benchmark!r} on {cpu!r}"
    if problem is None:
        return document
    handle, aside = tempfile.mkstemp(prefix=f"{benchmark}-unmerged-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as sink:
        json.dump({"benchmark": benchmark, "cpu_class": cpu, "variants": variants}, sink, indent=2)
    raise ValueError(f"{path} {problem}; not overwritten. This run's figures were saved to {aside}")


def _migrate_old_files(paths: list[Path]) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("migrate_results", Path(__file__).with_name("migrate_results.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.migrate(paths, lock=False)


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the results folder itself (no lock file left behind); none where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # closing releases the lock


def write_json_atomically(path: Path, document: Any) -> None:
    """Write ``document`` as JSON to a temporary file beside ``path``, flush it to disk, then rename it over
    ``path``: a reader sees the old file or the new one, never a part; a failure leaves the old one as it was."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as sink:
            sink.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
