"""The benchmarks' results files share one layout (benchmarks/_common.write_result), and the writer merges."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
RESULTS = BENCHMARKS / "results"
RESULT_FILES = sorted(RESULTS.glob("*.json"))


def benchmarks_module(name: str) -> Any:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def common() -> Any:
    return benchmarks_module("_common")


def schema_problems(path: Path, document: Any, common: Any) -> list[str]:
    if not isinstance(document, dict) or "schema_version" not in document:
        return ["not in the shared layout: run python benchmarks/migrate_results.py"]
    problems = [f"missing key {key!r}" for key in common.RESULT_KEYS if key not in document]
    if problems:
        return problems
    if document["schema_version"] != common.SCHEMA_VERSION:
        problems.append(f"schema_version {document['schema_version']!r}")
    if document["cpu_class"] not in common.CPU_CLASSES:
        problems.append(f"cpu_class {document['cpu_class']!r} is none of {common.CPU_CLASSES}")
    if path.name != f"{document['benchmark']}_{document['cpu_class']}.json":
        problems.append(f"file name is not <benchmark>_<cpu_class>.json: {document['benchmark']}, "
                        f"{document['cpu_class']}")
    if not isinstance(document["machine"], dict):
        problems.append("machine is not an object")
    if not isinstance(document["variants"], dict) or not document["variants"]:
        return [*problems, "variants is not a non-empty object"]
    for name, variant in document["variants"].items():
        missing = [key for key in common.VARIANT_KEYS if key not in variant]
        if missing:
            problems.append(f"variant {name!r} lacks {missing}")
            continue
        for key in ("settings", "systems", "ratios", "targets", "targets_met"):
            if not isinstance(variant[key], dict):
                problems.append(f"variant {name!r}: {key} is not an object")
        if set(variant["targets_met"]) != set(variant["targets"]):
            problems.append(f"variant {name!r}: targets_met names {sorted(variant['targets_met'])}, "
                            f"targets {sorted(variant['targets'])}")
        not_bool = {k: v for k, v in variant["targets_met"].items() if not isinstance(v, bool)}
        if not_bool:
            problems.append(f"variant {name!r}: targets_met values not bool: {not_bool}")
        if not (variant["measured_at"] is None or isinstance(variant["measured_at"], str)):
            problems.append(f"variant {name!r}: measured_at {variant['measured_at']!r}")
    return problems


def test_there_are_results() -> None:
    assert RESULT_FILES, f"no results in {RESULTS}"


@pytest.mark.parametrize("path", RESULT_FILES, ids=[p.name for p in RESULT_FILES])
def test_results_file_follows_the_schema(path: Path, common: Any) -> None:
    assert schema_problems(path, json.loads(path.read_text(encoding="utf-8")), common) == []


def write(common: Any, variant: str, speedup: float, output: Path | None = None, **extra: Any) -> Path:
    return common.write_result("demo", settings={"queries": 3}, systems={"a": {"ms": 1.0}},
                               ratios={"speedup": speedup}, targets={"speedup_at_least_2x": 2.0},
                               targets_met={"speedup_at_least_2x": speedup >= 2.0}, variant=variant,
                               extra=extra or None, output=output)


@pytest.fixture
def results_dir(common: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(common, "cpu_class", lambda: "avx2")
    return tmp_path


def test_write_result_merges_variants_and_replaces_the_same_name(common: Any, results_dir: Path) -> None:
    path = write(common, "default", 1.5)
    assert path == results_dir / "demo_avx2.json"
    write(common, "int8", 3.0, note="second")
    write(common, "default", 2.5)

    document = json.loads(path.read_text(encoding="utf-8"))
    assert schema_problems(path, document, common) == []
    assert (document["benchmark"], document["cpu_class"], document["schema_version"]) == ("demo", "avx2", 1)
    assert set(document["machine"]["cpu_flags"]) == {"model", *common.CPU_FLAGS}
    assert sorted(document["variants"]) == ["default", "int8"]
    assert document["variants"]["default"]["ratios"] == {"speedup": 2.5}
    assert document["variants"]["default"]["targets_met"] == {"speedup_at_least_2x": True}
    assert document["variants"]["int8"]["ratios"] == {"speedup": 3.0}
    assert document["variants"]["int8"]["note"] == "second"
    assert [p.name for p in results_dir.iterdir()] == ["demo_avx2.json"]


def test_write_result_replaces_the_file_atomically(common: Any, results_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(common, "default", 1.5)
    before = path.read_bytes()
    renames: list[tuple[Path, Path]] = []
    real_replace = common.os.replace

    def replace(source: str, target: Path) -> None:
        renames.append((Path(source), Path(target)))
        assert path.read_bytes() == before  # the old file stays whole until the rename
        real_replace(source, target)

    monkeypatch.setattr(common.os, "replace", replace)
    write(common, "other", 2.5)
    assert len(renames) == 1
    source, target = renames[0]
    assert target == path and source.parent == path.parent and source != path and not source.exists()

    # a write that fails half-way leaves the old file as it was and no temporary file behind
    with pytest.raises(TypeError):
        write(common, "broken", 9.0, unserialisable=object())
    assert json.loads(path.read_text(encoding="utf-8"))["variants"].keys() == {"default", "other"}
    assert [p.name for p in results_dir.iterdir()] == ["demo_avx2.json"]


def test_write_result_refuses_targets_met_that_do_not_match_targets(common: Any, results_dir: Path) -> None:
    with pytest.raises(ValueError, match="targets_met"):
        common.write_result("demo", settings={}, systems={}, ratios={}, targets={"a": 1.0},
                            targets_met={"b": True})
    with pytest.raises(ValueError, match="bool"):
        common.write_result("demo", settings={}, systems={}, ratios={}, targets={"a": 1.0}, targets_met={"a": 1})
    assert list(results_dir.iterdir()) == []
    figure = pytest.importorskip("numpy").float64(2.5)
    path = common.write_result("demo", settings={}, systems={}, ratios={}, targets={"a": 2.0},
                               targets_met={"a": figure >= 2.0})  # a numpy bool is written as a plain one
    assert json.loads(path.read_text(encoding="utf-8"))["variants"]["default"]["targets_met"] == {"a": True}


def test_an_old_layout_file_is_migrated_into_a_variant_with_its_figures(common: Any, results_dir: Path) -> None:
    old = {"benchmark": "reranker_compression", "dataset": "scifact", "queries": 300, "first_stage": "bm25%30",
           "first_stage_ndcg@10": 0.6789, "machine": {"platform": "elsewhere", "processor": "x86_64"},
           "results": {"teacher/auto": {"ms_per_query": 370.5}, "student/auto": {"ms_per_query": 195.7}},
           "speedup": 1.8932, "ndcg_delta": -0.0076,
           "targets_met": {"speedup_at_least_1.8x": True, "ndcg_loss_at_most_0.01": True}}
    (results_dir / "reranker_compression_soup_of_two.json").write_text(json.dumps(old), encoding="utf-8")
    written = write(common, "default", 2.0, output=results_dir / "demo_avx2.json")  # unrelated file, untouched
    benchmarks_module("migrate_results").migrate([results_dir / "reranker_compression_soup_of_two.json"])

    assert sorted(p.name for p in results_dir.iterdir()) == [written.name, "reranker_compression_unrecorded.json"]
    path = results_dir / "reranker_compression_unrecorded.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    assert schema_problems(path, document, common) == []
    variant = document["variants"]["soup_of_two"]
    assert variant["machine"] == old["machine"]  # kept verbatim: it did not say which CPU it ran on
    assert variant["ratios"] == {"speedup": 1.8932, "ndcg_delta": -0.0076}
    assert variant["systems"] == old["results"]
    assert variant["targets"] == {"speedup_at_least_1.8x": 1.8, "ndcg_loss_at_most_0.01": 0.01}
    assert variant["measured_at"] is None


def test_write_result_over_an_old_layout_file_keeps_it_as_a_variant(common: Any, results_dir: Path) -> None:
    old = {"benchmark": "soak", "settings": {"minutes": 11}, "systems": {"rankstack_serve": {"seconds": 660.2}},
           "targets": {"errors": 0}, "targets_met": {"errors": True},
           "machine": {"platform": "here", "cpu_class": "avx2", "cpu_flags": {"model": "AMD EPYC", "avx2": True}}}
    (results_dir / "soak_avx2.json").write_text(json.dumps(old), encoding="utf-8")
    path = common.write_result("soak", settings={"minutes": 1}, systems={"rankstack_serve": {"seconds": 60.1}},
                               ratios={}, targets={"errors": 0}, targets_met={"errors": True}, variant="short")

    document = json.loads(path.read_text(encoding="utf-8"))
    assert path.name == "soak_avx2.json" and schema_problems(path, document, common) == []
    assert sorted(document["variants"]) == ["default", "short"]
    assert document["variants"]["default"]["systems"] == old["systems"]
    assert document["variants"]["default"]["cpu_class_source"] == "recorded by the file (machine.cpu_class)"
