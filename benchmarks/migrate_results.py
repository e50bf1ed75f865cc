"""Move results files of the old layouts (one file per run, each shaped its own way) into the shared one.

    python benchmarks/migrate_results.py [FILE ...] [--dry-run]

The shared layout (see ``_common.write_result``) keeps one file per benchmark and CPU class,
``results/<benchmark>_<cpu class>.json``, with every variant inside. Each old file becomes one variant, named
after what its file name added to the benchmark's (``reranker_compression_soup_of_three.json`` -> ``soup_of_three``;
``reranker_compression.json`` -> ``default``). With no FILE, every file in results/ not yet in the shared layout is
migrated. Old files are deleted once their variants are written.

No measured figure changes: figures are only moved (into ``settings``, ``systems``, ``ratios`` and extra keys),
and the migration refuses to write if any number of an old file is missing from its variant. Targets that a file
only named in ``targets_met`` (``speedup_at_least_1.8x``) are written out in ``targets``.

The CPU class comes only from what the old file recorded (``machine.cpu_class`` or ``machine.cpu_flags``). A
file that recorded neither goes to the class ``unrecorded``, its machine block kept verbatim in its variant,
except a file named in ``MEASURED_HERE`` whose machine block matches this machine (platform string, processor,
CPU count): it was measured here, so it takes this machine's class.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # run as a script it is there already
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

# Files the team re-measured on the machine this migration first ran on (an AVX2 machine), 2026-12-02.
MEASURED_HERE = {"bm25_speed.json"}
NO_TARGETS = "no target was ever stated for this benchmark (README, docs, script)"
# Targets worded as the benchmark scripts word them, so migrated and new variants read alike.
HNSW_SINGLE = "mean single-query latency at the default efSearch below exact search's"
HNSW_BATCHED = "mean batched latency per query at the default efSearch below exact search's"
LIVE_EQUALS_FRESH = ("nDCG@10 of the live index before compaction == after compaction == an index built from "
                     "scratch on the final corpus")
SERVE_ZERO_ERRORS = "no failed request in any setting"
Pieces = dict[str, Any]


def _take(document: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: document.pop(key) for key in keys if key in document}


def _generic(old: dict[str, Any]) -> Pieces:
    """A file that already had settings / systems / ratios / targets / targets_met (bm25_speed, soak)."""
    return {"settings": old.pop("settings", {}), "systems": old.pop("systems", {}), "ratios": old.pop("ratios", {}),
            "targets": old.pop("targets", {}), "targets_met": old.pop("targets_met", {})}


def _dense_encode(old: dict[str, Any]) -> Pieces:
    stated = old.pop("targets")
    pieces = _generic(old)
    pieces["targets"] = {"speedup_vs_sentence_transformers": stated["speedup_vs_sentence_transformers"],
                         "ndcg_delta_vs_fp32": f"|ndcg_delta_vs_fp32| <= {stated['abs_ndcg_delta_vs_fp32']}"}
    pieces["targets_apply_to"] = stated["applies_to"]
    return pieces


def _hnsw_vs_exact(old: dict[str, Any]) -> Pieces:
    default = old["default_config"]
    met, stated = old.pop("targets_met"), old.pop("targets")
    recall = next(name for name in met if name.startswith("recall@"))
    return {"settings": old.pop("settings"), "systems": _take(old, "exact", "hnsw"),
            "ratios": _take(default, "speedup_single_vs_exact", "speedup_batched_vs_exact"),
            "targets": {recall: stated[f"{recall}_ef_search"], "hnsw_single_query_latency_below_exact": HNSW_SINGLE,
                        "hnsw_batched_latency_below_exact": HNSW_BATCHED},
            "targets_met": met}


def _live_index(old: dict[str, Any]) -> Pieces:
    return {"settings": _take(old, "dataset", "docs", "initial_docs"),
            "systems": {"rankstack": _take(old, "add", "delete", "re_add", "compact_seconds", "ndcg@10",
                                           "max_abs_score_difference_vs_fresh", "query_latency_ms")},
            "ratios": {}, "targets": {"ndcg_equals_fresh": LIVE_EQUALS_FRESH}, "targets_met": old.pop("targets_met")}


def _ray_encode(old: dict[str, Any]) -> Pieces:
    systems = old.pop("results")
    ratios = {name: _take(figures, "overhead_vs_single_process") for name, figures in systems.items()
              if "overhead_vs_single_process" in figures}
    return {"settings": _take(old, "dataset", "docs", "model", "precision"), "systems": systems, "ratios": ratios,
            "targets": {}, "targets_met": {}, "targets_note": NO_TARGETS}


def _rerank_speed(old: dict[str, Any]) -> Pieces:
    return {"settings": _take(old, "dataset", "queries", "candidates_per_query", "model"),
            "systems": _take(old, "sentence_transformers", "rankstack"), "ratios": _take(old, "speedup", "ndcg_delta"),
            "targets": {"speedup_at_least_2x": 2.0, "ndcg_within_0.005": "|ndcg_delta| <= 0.005"},
            "targets_met": old.pop("targets_met")}


def _reranker_compression(old: dict[str, Any]) -> Pieces:
    return {"settings": _take(old, "dataset", "queries", "first_stage", "timing"), "systems": old.pop("results"),
            "ratios": _take(old, "speedup", "ndcg_delta"),
            "targets": {"speedup_at_least_1.8x": 1.8, "ndcg_loss_at_most_0.01": 0.01},
            "targets_met": old.pop("targets_met")}


def _serve_load(old: dict[str, Any]) -> Pieces:
    return {"settings": {**old.pop("settings"), **_take(old, "dataset", "pipelines")}, "systems": old.pop("results"),
            "ratios": _take(old, "neural_rps_32_over_1"),
            "targets": {"zero_errors": SERVE_ZERO_ERRORS, "neural_scaling_at_least_1.5x": 1.5},
            "targets_met": old.pop("targets_met")}


def _vector_storage(old: dict[str, Any]) -> Pieces:
    systems = old.pop("results")
    ratios = {name: _take(figures, "ndcg_delta_vs_float32") for name, figures in systems.items()
              if "ndcg_delta_vs_float32" in figures}
    return {"settings": _take(old, "dataset", "model", "encoding_precision", "search"), "systems": systems,
            "ratios": ratios, "targets": {}, "targets_met": {}, "targets_note": NO_TARGETS}


CONVERTERS: dict[str, Callable[[dict[str, Any]], Pieces]] = {
    "bm25_speed": _generic, "soak": _generic, "dense_encode": _dense_encode, "hnsw_vs_exact": _hnsw_vs_exact,
    "live_index": _live_index, "ray_encode": _ray_encode, "rerank_speed": _rerank_speed,
    "reranker_compression": _reranker_compression, "serve_load": _serve_load, "vector_storage": _vector_storage,
}


def _same_machine(machine: dict[str, Any]) -> bool:
    here = _common.machine_info()
    return all(machine.get(key) == here[key] for key in ("platform", "processor", "cpu_count"))


def _class_from_flags(flags: dict[str, Any]) -> str | None:
    if not isinstance(flags, dict) or all(flags.get(flag) is None for flag in _common.CPU_FLAGS):
        return None
    for flag, name in (("amx_bf16", "amx-bf16"), ("avx512_bf16", "avx512-bf16"), ("avx512_vnni", "avx512-vnni"),
                       ("avx2", "avx2")):  # the order of _common.cpu_class
        if flags.get(flag):
            return name
    return "baseline"


def cpu_class_of(path: Path, old: dict[str, Any]) -> tuple[str, str]:
    """The CPU class an old file recorded, and how it was found."""
    machine = old.get("machine") or {}
    if machine.get("cpu_class") in _common.CPU_CLASSES:
        return machine["cpu_class"], "recorded by the file (machine.cpu_class)"
    derived = _class_from_flags(machine.get("cpu_flags"))
    if derived is not None:
        return derived, "derived from the file's machine.cpu_flags"
    if path.name in MEASURED_HERE and machine and _same_machine(machine):
        return _common.cpu_class(), (
            "the file recorded no CPU model or flags; it was re-measured on the machine that ran the migration "
            f"(2026-12-02, class {_common.cpu_class()}), and its machine block matches that machine's (platform "
            "string, processor, CPU count)")
    note = "the file recorded no CPU model or flags" if machine else "the file recorded no machine block at all"
    if machine.get("cpu_has_bf16_units") is True:
        note += ("; it recorded cpu_has_bf16_units=true (amx_bf16 or avx512_bf16 present), but not which, so no "
                 "class is claimed")
    return "unrecorded", note


def variant_name(path: Path, benchmark: str, cpu: str) -> str:
    stem = path.stem
    if stem == benchmark:
        return "default"
    if stem.startswith(benchmark + "_"):
        suffix = stem[len(benchmark) + 1:]
        return "default" if suffix == cpu or suffix in _common.CPU_CLASSES else suffix
    return stem


def provenance(path: Path) -> dict[str, Any]:
    """Where the old file came from: its last commit (an upper bound on when it was measured), else its mtime."""
    try:
        done = subprocess.run(["git", "log", "-1", "--format=%h%x09%cI", "--", path.name], cwd=path.parent,
                              capture_output=True, text=True, timeout=30)
        commit = done.stdout.strip().split("\t") if done.returncode == 0 and done.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        commit = None
    if commit:
        return {"file": path.name, "last_commit": commit[0], "committed_at": commit[1]}
    modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
    return {"file": path.name, "file_modified_at": modified}


def _numbers(value: Any, skip: Iterable[str] = ()) -> Counter[float]:
    """Every number in a JSON value (booleans aside), outside the top-level keys in ``skip``."""
    found: Counter[float] = Counter()
    stack = [v for k, v in value.items() if k not in set(skip)] if isinstance(value, dict) else [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int | float) and not isinstance(item, bool):
            found[item] += 1
    return found


def convert(path: Path, old: dict[str, Any]) -> tuple[str, str, str, dict[str, Any]]:
    """(benchmark, cpu class, variant name, variant) of one old-layout file."""
    benchmark = old.get("benchmark")
    if benchmark not in CONVERTERS:
        raise ValueError(f"{path}: no migration for benchmark {benchmark!r}")
    cpu, source = cpu_class_of(path, old)
    rest = copy.deepcopy(old)
    del rest["benchmark"]
    machine = rest.pop("machine", None)
    pieces = CONVERTERS[benchmark](rest)
    variant = {key: pieces.pop(key) for key in ("settings", "systems", "ratios", "targets", "targets_met")}
    variant["targets_met"] = _common._plain_bools(variant["targets"], variant["targets_met"])
    variant.update(measured_at=None, machine=machine, **rest, **pieces, migrated_from=provenance(path),
                   cpu_class_source=source)
    lost = _numbers(old, skip=("targets",)) - _numbers(variant, skip=("targets",))
    if lost:
        raise ValueError(f"{path}: numbers would be lost in migration: {dict(lost)}")
    return benchmark, cpu, variant_name(path, benchmark, cpu), variant


def _old_layout(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) and "schema_version" not in document else None


def _file_machine(variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The top-level machine of a migrated file: the newest variant's block as recorded, with the CPU flags it
    recorded (None each where it recorded none)."""
    def when(body: dict[str, Any]) -> str:
        origin = body.get("migrated_from", {})
        return str(origin.get("committed_at") or origin.get("file_modified_at") or "")

    newest = max(variants.values(), key=when)
    machine = dict(newest.get("machine") or {})
    if not isinstance(machine.get("cpu_flags"), dict):
        machine["cpu_flags"] = {"model": None, **{flag: None for flag in _common.CPU_FLAGS}}
        machine["note"] = ("migrated: the newest variant's machine block as it was recorded; CPU model and flags "
                           "were not recorded" if newest.get("machine") else
                           "migrated: no machine block was recorded")
    return machine


def migrate(paths: Iterable[Path], dry_run: bool = False, lock: bool = True) -> dict[Path, list[str]]:
    """Migrate the old-layout files among ``paths``; returns each written file with its variants' names."""
    paths = [Path(p).resolve() for p in paths]
    folders = {p.parent for p in paths}
    written: dict[Path, list[str]] = {}
    for folder in folders:
        with _common._folder_lock(folder) if lock else nullcontext():
            written |= _migrate_folder(folder, [p for p in paths if p.parent == folder], dry_run)
    return written


def _migrate_folder(folder: Path, paths: list[Path], dry_run: bool) -> dict[Path, list[str]]:
    converted: dict[Path, tuple[str, str, str, dict[str, Any]]] = {}
    pending = [p for p in paths if _old_layout(p) is not None]
    while pending:  # an old-layout file sitting where a new file goes is migrated too, not overwritten
        for path in pending:
            converted[path] = convert(path, _old_layout(path))  # type: ignore[arg-type]
        targets = {_common.result_path(b, c, folder) for b, c, _, _ in converted.values()}
        pending = [t for t in targets if t not in converted and t.is_file() and _old_layout(t) is not None]
    groups: dict[tuple[str, str], dict[str, tuple[Path, dict[str, Any]]]] = {}
    for path, (benchmark, cpu, name, variant) in sorted(converted.items()):
        group = groups.setdefault((benchmark, cpu), {})
        if name in group:
            raise ValueError(f"{path} and {group[name][0]} would both be variant {name!r} of {benchmark}_{cpu}")
        group[name] = (path, variant)
    written: dict[Path, list[str]] = {}
    kept_old: set[Path] = set()
    for (benchmark, cpu), group in groups.items():
        target = _common.result_path(benchmark, cpu, folder)
        existing = None if target in converted or not target.is_file() else json.loads(target.read_text("utf-8"))
        variants = dict(existing["variants"]) if existing else {}
        for name, (path, variant) in group.items():
            if name in variants:  # a newer measurement already holds the name: keep it and the old file
                print(f"{path.name}: variant {name!r} already in {target.name}; left as it is", file=sys.stderr)
                kept_old.add(path)
                continue
            variants[name] = variant
        machine = existing["machine"] if existing else _file_machine({n: v for n, (_, v) in group.items()})
        document = {"benchmark": benchmark, "schema_version": _common.SCHEMA_VERSION, "cpu_class": cpu,
                    "machine": machine, "variants": {name: variants[name] for name in sorted(variants)}}
        written[target] = sorted(variants)
        if not dry_run:
            _common.write_json_atomically(target, document)
    if not dry_run:
        for path in converted:
            if path not in written and path not in kept_old:
                path.unlink()
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="old-layout files (default: all in results/)")
    parser.add_argument("--dry-run", action="store_true", help="say what would be written; change nothing")
    args = parser.parse_args()
    paths = args.files or sorted(_common.RESULTS_DIR.glob("*.json"))
    for target, names in migrate(paths, dry_run=args.dry_run).items():
        print(f"{'would write' if args.dry_run else 'wrote'} {target.name}: {', '.join(names)}", file=sys.stderr)


if __name__ == "__main__":
    main()
