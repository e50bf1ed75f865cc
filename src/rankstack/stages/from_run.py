"""A stage that replays a TREC run file, so later stages can rerank an existing ranking.

``run(path=bm25_top100.run) >> dense`` reranks a published first-stage run exactly as it was, which
is how rerankers are compared on TREC DL (the official BM25 pools).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from rankstack.errors import PipelineError
from rankstack.stages.base import SearchContext, Stage
from rankstack.stages.registry import coerce_params, register_stage
from rankstack.types import Query, Run


class RunFile(Stage):
    name = "run"

    def __init__(self, path: str = "") -> None:
        if not path:
            raise PipelineError("run needs a file: run(path=FILE)")
        self.path = path

    @cached_property
    def _run(self) -> Run:
        from rankstack.io import read_run

        return read_run(self.path)

    def transform(self, queries: Sequence[Query], candidates: Run | None, context: SearchContext) -> Run:
        if candidates is not None:
            raise PipelineError("run(path=...) replays a ranking; put it first in the pipeline")
        run = Run()
        for query in queries:
            hits = self._run.results.get(query.query_id)
            if hits is None:
                run.set(query.query_id, [])
            else:
                run.results[query.query_id] = hits[:context.top_k] if context.top_k else hits
        return run


@register_stage("run")
def _make_run(index: Any, *positional: Any, **params: Any) -> RunFile:
    if positional:
        raise PipelineError("run takes one keyword parameter: run(path=FILE)")
    return RunFile(**coerce_params("run", params, RunFile.declared_parameters()))
