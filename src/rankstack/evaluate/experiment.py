"""Running pipelines over a test collection and comparing them, as PyTerrier's ``Experiment`` does."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankstack.evaluate.measures import evaluate, parse_measures
from rankstack.evaluate.significance import Comparison, compare_to_baseline
from rankstack.stages.base import Pipeline, SearchContext
from rankstack.types import Qrel, Query, Run

logger = logging.getLogger(__name__)
QueryProgress = Callable[[int], None]


def run_queries(pipeline: Pipeline, queries: Sequence[Query], context: SearchContext,
                progress: QueryProgress | None = None, chunk_size: int = 32) -> Run:
    """Run a pipeline over queries in chunks, so a progress bar can follow; timings are summed."""
    merged = Run()
    for start in range(0, len(queries), chunk_size):
        chunk = queries[start:start + chunk_size]
        part = pipeline.transform(chunk, context=context)
        merged.results.update(part.results)
        for stage, seconds in part.stage_seconds.items():
            merged.stage_seconds[stage] = merged.stage_seconds.get(stage, 0.0) + seconds
        if progress is not None:
            progress(len(chunk))
    return merged


@dataclass
class SystemResult:
    name: str
    metrics: dict[str, float]
    latency_ms: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(repr=False, default_factory=dict)
    significance: dict[str, Comparison | None] = field(default_factory=dict)
    run: Run | None = field(repr=False, default=None)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"pipeline": self.name, "metrics": self.metrics, "latency_ms": self.latency_ms}
        data["significance"] = {
            measure: None if c is None else {"p_value": c.p_value, "raw_p_value": c.raw_p_value,
                                             "difference": c.difference, "significant": c.significant}
            for measure, c in self.significance.items()
        }
        return data


@dataclass
class ExperimentResult:
    systems: list[SystemResult]
    measures: list[str]
    baseline: int | None
    num_queries: int
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"systems": [s.to_json() for s in self.systems], "measures": self.measures,
                "baseline": self.baseline, "num_queries": self.num_queries, "warnings": self.warnings}


def judged_queries(queries: Sequence[Query], qrels: Sequence[Qrel], source: str | Path = "qrels"
                   ) -> tuple[list[Query], list[Qrel], list[str]]:
    """Keep queries that have judgements and qrels whose query exists; report what was dropped."""
    known = {q.query_id for q in queries}
    unknown = {q.query_id for q in qrels if q.query_id not in known}
    warnings = []
    if unknown:
        rows = sum(1 for q in qrels if q.query_id in unknown)
        example = ", ".join(sorted(unknown)[:5])
        warnings.append(f"{source}: {rows} qrels rows name {len(unknown)} queries that are not in the query "
                        f"file (e.g. {example}); they are left out of the evaluation")
        qrels = [q for q in qrels if q.query_id not in unknown]
    judged = {q.query_id for q in qrels}
    return [q for q in queries if q.query_id in judged], list(qrels), warnings


def compare_systems(runs: Sequence[tuple[str, Run]], qrels: Sequence[Qrel], measures: Sequence[str],
                    baseline: int | None = 0, relevance_threshold: int | None = None) -> ExperimentResult:
    parsed = parse_measures(measures, relevance_threshold)
    names = [str(m) for m in parsed]
    systems = []
    query_ids: list[str] = []
    for name, run in runs:
        evaluation = evaluate(run, qrels, parsed)
        query_ids = evaluation.query_ids
        systems.append(SystemResult(name, evaluation.aggregate, run.latency_ms(), evaluation.per_query, run=run))
    if baseline is not None and len(systems) > 1:
        for measure in names:
            comparisons = compare_to_baseline([s.per_query[measure] for s in systems], baseline, query_ids)
            for system, comparison in zip(systems, comparisons, strict=True):
                system.significance[measure] = comparison
    return ExperimentResult(systems, names, baseline, len(query_ids))
