"""Hybrid fusion of several pipelines: reciprocal rank fusion and normalised linear interpolation.

Both follow Pyserini's fusion: each input pipeline retrieves its own list (1000 hits unless cut),
and a document missing from one list contributes nothing (RRF) or that list's minimum (linear).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rankstack.errors import PipelineError
from rankstack.stages.base import Pipeline, ProgressFactory, SearchContext, Stage
from rankstack.stages.registry import coerce_params, register_stage
from rankstack.types import Hits, Query, Run, ScoredDoc

_NORMS = ("minmax", "zscore")


class _Fusion(Stage):
    def __init__(self, inputs: Sequence[Stage | Pipeline]) -> None:
        if len(inputs) < 2:
            raise PipelineError(f"{self.name} fuses two or more pipelines, e.g. {self.name}(bm25, dense)")
        self.inputs = [i.pipeline() for i in inputs]

    def positional(self) -> list[Pipeline]:
        return self.inputs

    def prepare(self, as_first_stage: bool, progress: ProgressFactory | None) -> None:
        for pipeline in self.inputs:
            pipeline.prepare(progress)

    def transform(self, queries: Sequence[Query], candidates: Run | None, context: SearchContext) -> Run:
        inner = SearchContext(top_k=None, ignore_identical_ids=context.ignore_identical_ids)
        runs = [pipeline.transform(queries, candidates, inner) for pipeline in self.inputs]
        fused = Run()
        for query in queries:
            lists = [run.results.get(query.query_id) or Hits(query.query_id, [], []) for run in runs]
            scores = self.fuse(lists)
            hits = [ScoredDoc(query.query_id, d, s) for d, s in scores.items()]
            fused.set(query.query_id, hits)
            if context.top_k:
                fused.results[query.query_id] = fused.results[query.query_id][:context.top_k]
        return fused

    def fuse(self, lists: list[Hits]) -> dict[str, float]:
        raise NotImplementedError


class ReciprocalRankFusion(_Fusion):
    """score(d) = sum over lists of 1 / (k + rank(d)), ranks from 1 (Cormack et al., 2009)."""

    name = "rrf"

    def __init__(self, *inputs: Stage | Pipeline, k: int = 60) -> None:
        super().__init__(inputs)
        if k < 0:
            raise PipelineError(f"rrf: k must be >= 0, got {k}")
        self.k = k

    def fuse(self, lists: list[Hits]) -> dict[str, float]:
        scores: dict[str, float] = {}
        for hits in lists:
            for rank, doc_id in enumerate(map(str, hits.doc_ids), start=1):
                scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (self.k + rank)
        return scores


class LinearFusion(_Fusion):
    """score(d) = alpha * norm(first list) + (1 - alpha) * norm(second list)."""

    name = "linear"

    def __init__(self, *inputs: Stage | Pipeline, alpha: float = 0.5, norm: str = "minmax") -> None:
        super().__init__(inputs)
        if len(self.inputs) != 2:
            raise PipelineError("linear fuses exactly two pipelines: linear(first, second, alpha=0.5)")
        if not 0.0 <= alpha <= 1.0:
            raise PipelineError(f"linear: alpha must be between 0 and 1, got {alpha}")
        if norm not in _NORMS:
            raise PipelineError(f"linear: norm must be one of {', '.join(_NORMS)}, got '{norm}'")
        self.alpha = alpha
        self.norm = norm

    def _normalise(self, scores: np.ndarray) -> np.ndarray:
        if len(scores) == 0:
            return scores
        if self.norm == "minmax":
            low, high = float(scores.min()), float(scores.max())
            return (scores - low) / (high - low) if high > low else np.ones_like(scores)
        std = float(scores.std())
        return (scores - float(scores.mean())) / std if std > 0 else np.zeros_like(scores)

    def fuse(self, lists: list[Hits]) -> dict[str, float]:
        weights = (self.alpha, 1.0 - self.alpha)
        normalised = [self._normalise(np.asarray(h.scores, dtype=np.float64)) for h in lists]
        floors = [float(n.min()) if len(n) else 0.0 for n in normalised]
        doc_ids = dict.fromkeys(d for h in lists for d in map(str, h.doc_ids))
        scores = {d: sum(w * f for w, f in zip(weights, floors, strict=True)) for d in doc_ids}
        for weight, floor, hits, values in zip(weights, floors, lists, normalised, strict=True):
            for doc_id, value in zip(map(str, hits.doc_ids), values.tolist(), strict=True):
                scores[doc_id] += weight * (value - floor)
        return scores




@register_stage("rrf")
def _make_rrf(index: Any, *inputs: Pipeline, **params: Any) -> ReciprocalRankFusion:
    return ReciprocalRankFusion(*inputs, **coerce_params("rrf", params, ReciprocalRankFusion.declared_parameters()))


@register_stage("linear")
def _make_linear(index: Any, *inputs: Pipeline, **params: Any) -> LinearFusion:
    return LinearFusion(*inputs, **coerce_params("linear", params, LinearFusion.declared_parameters()))
