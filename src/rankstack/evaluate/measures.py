"""Measures are strings (``nDCG@10``, ``R@100``, ``AP``, ``RR@10``, ``P@5``, ``Judged@10``), computed
by ir_measures with the pytrec_eval backend, so figures match trec_eval.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rankstack.errors import MeasureError
from rankstack.types import Qrel, Run

DEFAULT_MEASURES = ("nDCG@10", "R@100")


def parse_measures(spec: str | Sequence[str], relevance_threshold: int | None = None) -> list[Any]:
    """Parse measure strings; binary measures get ``rel=relevance_threshold`` unless they name one."""
    import ir_measures

    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not names:
        raise MeasureError("no measures given; try nDCG@10,R@100")
    measures = []
    for name in names:
        try:
            measure = ir_measures.parse_measure(name)
        except (ValueError, NameError, SyntaxError, TypeError, AttributeError) as error:
            raise MeasureError(f"unknown measure '{name}' ({error}); examples: nDCG@10, R@100, AP, RR@10, P@5, "
                               f"Judged@10") from None
        if relevance_threshold is not None and "rel" in measure.SUPPORTED_PARAMS and "rel" not in measure.params:
            measure = measure(rel=relevance_threshold)
        measures.append(measure)
    return measures


@dataclass
class Evaluation:
    """Aggregate and per-query values of each measure, keyed by the measure's string."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    query_ids: list[str] = field(default_factory=list)


def evaluate(run: Run, qrels: Iterable[Qrel], measures: str | Sequence[str] | Sequence[Any] = DEFAULT_MEASURES,
             relevance_threshold: int | None = None) -> Evaluation:
    """Evaluate ``run`` like ``trec_eval -c``: every judged query counts, one with no hits scores 0.

    >>> from rankstack.types import Qrel, Run
    >>> run = Run.from_scores({"q1": {"d1": 2.0, "d2": 1.0}})
    >>> evaluate(run, [Qrel("q1", "d2", 1)], ["RR@10"]).aggregate
    {'RR@10': 0.5}
    """
    import ir_measures

    if isinstance(measures, str) or (measures and isinstance(next(iter(measures)), str)):
        parsed = parse_measures(measures, relevance_threshold)
    else:
        parsed = list(measures)
    qrel_rows = [ir_measures.Qrel(q.query_id, q.doc_id, q.relevance) for q in qrels]
    query_ids = sorted({q.query_id for q in qrel_rows})
    per_query: dict[str, dict[str, float]] = {str(m): dict.fromkeys(query_ids, 0.0) for m in parsed}
    judged = set(query_ids)
    run_dict = {q: docs for q, docs in run.to_dict().items() if q in judged and docs}
    if run_dict:
        for metric in ir_measures.iter_calc(parsed, qrel_rows, run_dict):
            per_query[str(metric.measure)][metric.query_id] = float(metric.value)
    count = max(len(query_ids), 1)
    aggregate = {name: sum(values.values()) / count for name, values in per_query.items()}
    return Evaluation(aggregate, per_query, query_ids)
