from __future__ import annotations

import math
from pathlib import Path

import pytest

from rankstack.errors import MeasureError
from rankstack.evaluate import evaluate, holm_bonferroni, paired_t_test, parse_measures
from rankstack.evaluate.experiment import compare_systems, judged_queries
from rankstack.io import read_qrels, read_run
from rankstack.types import Qrel, Query, Run

QRELS = """\
q1 0 d1 2
q1 0 d2 0
q1 0 d3 1
q2 0 d4 3
q3 0 d9 1
"""
RUN = """\
q1 Q0 d2 1 3.0 x
q1 Q0 d1 2 2.0 x
q1 Q0 d3 3 1.0 x
q2 Q0 d5 1 2.0 x
q2 Q0 d4 2 1.0 x
"""


@pytest.fixture
def qrels_and_run(tmp_path: Path):
    (tmp_path / "qrels").write_text(QRELS)
    (tmp_path / "run").write_text(RUN)
    return read_qrels(tmp_path / "qrels"), read_run(tmp_path / "run")


def test_values_match_hand_computation(qrels_and_run) -> None:
    qrels, run = qrels_and_run
    result = evaluate(run, qrels, ["RR@10", "P@2", "R@100", "nDCG@10"])
    # q1: first relevant at rank 2; q2: rank 2; q3 has no hits and counts as 0 (trec_eval -c).
    assert result.per_query["RR@10"] == {"q1": 0.5, "q2": 0.5, "q3": 0.0}
    assert math.isclose(result.aggregate["RR@10"], 1 / 3)
    assert math.isclose(result.aggregate["P@2"], (0.5 + 0.5 + 0) / 3)
    assert math.isclose(result.aggregate["R@100"], (1 + 1 + 0) / 3)
    dcg_q1 = 2 / math.log2(3) + 1 / math.log2(4)
    ideal_q1 = 2 + 1 / math.log2(3)
    assert math.isclose(result.per_query["nDCG@10"]["q1"], dcg_q1 / ideal_q1, rel_tol=1e-6)


def test_relevance_threshold_applies_to_binary_measures(qrels_and_run) -> None:
    qrels, run = qrels_and_run
    strict = evaluate(run, qrels, ["RR@10", "nDCG@10"], relevance_threshold=2)
    assert "RR(rel=2)@10" in strict.aggregate and "nDCG@10" in strict.aggregate
    assert strict.per_query["RR(rel=2)@10"]["q1"] == 0.5  # d1 (grade 2) at rank 2
    assert strict.per_query["RR(rel=2)@10"]["q3"] == 0.0


def test_judged_measure_and_unknown_measure(qrels_and_run) -> None:
    qrels, run = qrels_and_run
    assert evaluate(run, qrels, ["Judged@2"]).per_query["Judged@2"]["q1"] == 1.0
    with pytest.raises(MeasureError, match="unknown measure 'nDGC@10'"):
        parse_measures("nDGC@10")


def test_paired_t_test_and_holm() -> None:
    assert paired_t_test([0.5, 0.5], [0.5, 0.5]) == 1.0
    p_value = paired_t_test([0.9, 0.8, 0.95, 0.85, 0.9], [0.1, 0.2, 0.15, 0.1, 0.2])
    assert p_value < 0.001
    assert holm_bonferroni([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_compare_systems_marks_significant_differences(qrels_and_run) -> None:
    qrels, run = qrels_and_run
    perfect = Run.from_scores({"q1": {"d1": 3, "d3": 2}, "q2": {"d4": 1}, "q3": {"d9": 1}})
    result = compare_systems([("base", run), ("perfect", perfect)], qrels, ["RR@10"], baseline=0)
    comparison = result.systems[1].significance["RR@10"]
    assert comparison is not None and comparison.difference > 0
    assert result.systems[0].significance["RR@10"] is None


def test_qrels_for_unknown_queries_are_counted_and_dropped() -> None:
    queries = [Query("1", "a"), Query("2", "b")]
    qrels = [Qrel("1", "d", 1), Qrel("7", "d", 1), Qrel("7", "e", 1), Qrel("8", "d", 1)]
    kept, kept_qrels, warnings = judged_queries(queries, qrels, "qrels.tsv")
    assert [q.query_id for q in kept] == ["1"]
    assert len(kept_qrels) == 1
    assert warnings == ["qrels.tsv: 3 qrels rows name 2 queries that are not in the query file (e.g. 7, 8); "
                        "they are left out of the evaluation"]
