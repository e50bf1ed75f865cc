"""Long documents: split candidates into passages, score them with any reranker, aggregate per document.

``passages(cross_encoder(model=M), window=128, stride=64, aggregate=max)`` is MaxP; ``first`` is
FirstP (only the first passage is scored) and ``sum`` is SumP (Dai and Callan, 2019). Passages are
windows of ``window`` whitespace tokens every ``stride`` tokens, the last one ending at the document's
end, so no part of a document goes unscored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rankstack.errors import PipelineError
from rankstack.stages.base import Pipeline, ProgressFactory, SearchContext, Stage, candidate_texts
from rankstack.stages.registry import coerce_params, register_stage
from rankstack.types import Query, Run, ScoredDoc

AGGREGATES = ("max", "first", "sum")
_SEPARATOR = "#passage-"


def split_passages(text: str, window: int, stride: int) -> list[str]:
    """Windows of ``window`` tokens every ``stride`` tokens; the final window reaches the last token."""
    tokens = text.split()
    if len(tokens) <= window:
        return [" ".join(tokens)]
    starts = list(range(0, len(tokens) - window + 1, stride))
    if starts[-1] + window < len(tokens):
        starts.append(len(tokens) - window)
    return [" ".join(tokens[s:s + window]) for s in starts]


class Passages(Stage):
    name = "passages"

    def __init__(self, index: Any, inner: Stage | Pipeline, window: int = 128, stride: int = 64,
                 aggregate: str = "max") -> None:
        if not 0 < stride <= window:
            raise PipelineError(f"passages: need 0 < stride <= window, got window={window}, stride={stride}")
        if aggregate not in AGGREGATES:
            raise PipelineError(f"passages: aggregate must be one of {', '.join(AGGREGATES)}, got '{aggregate}'")
        self.index = index
        self.inner = inner.pipeline()
        self.window = window
        self.stride = stride
        self.aggregate = aggregate

    def positional(self) -> list[Pipeline]:
        return [self.inner]

    def prepare(self, as_first_stage: bool, progress: ProgressFactory | None) -> None:
        for stage in self.inner.stages:
            stage.prepare(False, progress)

    def transform(self, queries: Sequence[Query], candidates: Run | None, context: SearchContext) -> Run:
        if candidates is None:
            raise PipelineError("passages(...) reranks the candidates of an earlier stage: bm25%100>>passages(...)")
        passage_run = Run()
        texts: dict[str, str] = {}
        for query in queries:
            hits = list(candidates.results.get(query.query_id) or [])
            documents = candidate_texts(self.index, [h.doc_id for h in hits], context)
            rows = []
            for hit, text in zip(hits, documents, strict=True):
                parts = split_passages(text, self.window, self.stride)
                for number, passage in enumerate(parts[:1] if self.aggregate == "first" else parts):
                    passage_id = f"{hit.doc_id}{_SEPARATOR}{number}"
                    texts[passage_id] = passage
                    rows.append(ScoredDoc(query.query_id, passage_id, hit.score))
            passage_run.set(query.query_id, rows)
        scored = self.inner.transform(queries, passage_run, SearchContext(ignore_identical_ids=False, texts=texts))
        result = Run()
        for query in queries:
            per_doc: dict[str, list[float]] = {}
            for hit in scored.results.get(query.query_id) or []:
                per_doc.setdefault(hit.doc_id.rsplit(_SEPARATOR, 1)[0], []).append(hit.score)
            combine = sum if self.aggregate == "sum" else max
            result.set(query.query_id, [ScoredDoc(query.query_id, d, float(combine(s))) for d, s in per_doc.items()])
        return result


@register_stage("passages")
def _make_passages(index: Any, *inner: Pipeline, **params: Any) -> Passages:
    if len(inner) != 1:
        raise PipelineError("passages wraps one reranking pipeline: passages(cross_encoder(model=...), window=128)")
    return Passages(index, inner[0], **coerce_params("passages", params, Passages.declared_parameters()))
