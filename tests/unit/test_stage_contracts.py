"""Every stage, fusion and wrapper that needs no model passes the stage contract (rankstack.testing).

Model stages (dense, cross_encoder, mono_t5, duo_t5) run it in tests/component with small models.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rankstack.index import Index
from rankstack.io import write_run
from rankstack.stages import BM25, parse_pipeline
from rankstack.testing import check_stage_contract
from rankstack.types import Query

QUERIES = [Query("q1", "cat on a mat"), Query("q2", "loyal dogs"), Query("q3", "parrot feathers")]


@pytest.mark.parametrize("pipeline", [
    "rrf(bm25,bm25(k1=2.0,b=0.75))", "rrf(bm25,bm25(b=0.1),k=5)",
    "linear(bm25,bm25(k1=2.0),alpha=0.3)", "linear(bm25,bm25(b=0.9),norm=zscore)",
    "bm25%4>>rrf(bm25,bm25(k1=1.5))",
])
def test_fusion_passes_the_stage_contract(tiny_index: Index, pipeline: str) -> None:
    check_stage_contract(lambda: parse_pipeline(pipeline, tiny_index), QUERIES, index=tiny_index)


@pytest.mark.parametrize("aggregate", ["max", "first", "sum"])
def test_passages_passes_the_stage_contract(tiny_index: Index, aggregate: str) -> None:
    candidates = BM25(tiny_index).pipeline().transform(QUERIES)
    check_stage_contract(lambda: parse_pipeline(f"passages(bm25,window=4,stride=2,aggregate={aggregate})",
                                                tiny_index), QUERIES, candidates=candidates, index=tiny_index)


def test_run_files_pass_the_stage_contract(tiny_index: Index, tmp_path: Path) -> None:
    path = tmp_path / "first.run"
    write_run(BM25(tiny_index, k1=1.2).pipeline().transform(QUERIES), path)
    check_stage_contract(lambda: parse_pipeline(f"run(path={path})", tiny_index), QUERIES, index=tiny_index)
    check_stage_contract(lambda: parse_pipeline(f"run(path={path})>>bm25", tiny_index), QUERIES, index=tiny_index)


def test_the_contract_catches_a_broken_stage(tiny_index: Index) -> None:
    # A stage whose one-query result differs from its batch result must fail the contract.
    class Unstable(BM25):
        calls = 0

        def transform(self, queries, candidates, context):  # noqa: ANN001, ANN201
            type(self).calls += 1
            run = super().transform(queries, candidates, context)
            if len(queries) == 1 and run.results.get(queries[0].query_id):
                run.results[queries[0].query_id] = run.results[queries[0].query_id][1:]
            return run

    with pytest.raises(AssertionError, match="one-by-one result differs"):
        check_stage_contract(lambda: Unstable(tiny_index), QUERIES, index=tiny_index)
