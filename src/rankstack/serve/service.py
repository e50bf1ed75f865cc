"""The search backend behind the HTTP API and the web page: validation, pipelines, batching, snippets."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rankstack._bounded import BoundedCache
from rankstack.errors import (
    AuthenticationError,
    EmptyInputError,
    NotFoundError,
    RequestLimitError,
    WritesDisabledError,
)
from rankstack.ids import check_id
from rankstack.index import Index
from rankstack.serve.batching import MicroBatcher
from rankstack.serve.policy import PipelinePolicy
from rankstack.serve.snippets import highlight, snippet_for_terms
from rankstack.stages import Pipeline, SearchContext, parse_pipeline
from rankstack.stages.base import format_value
from rankstack.types import Doc, Hits, Query

if TYPE_CHECKING:
    from rankstack.index.live import IndexWriter

try:  # the serve extra's fast JSON encoder; the standard library's gives the same JSON
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)
MAX_QUERY_CHARS = 1000
MAX_K = 1000
MAX_CACHED_PIPELINES = 32


def json_bytes(body: Any) -> bytes:
    """``body`` as compact UTF-8 JSON; a non-finite number becomes null, as the API has always written it."""
    if orjson is not None:
        return bytes(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:  # NaN or infinity somewhere: rare, so only then walk the body
        return json.dumps(_finite(body), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


@dataclass
class SearchResult:
    query: str
    pipeline: str
    k: int
    hits: list[dict[str, Any]]
    timings_ms: dict[str, float]
    total_ms: float
    batch_size: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "pipeline": self.pipeline, "k": self.k, "hits": self.hits,
                "timings_ms": self.timings_ms, "total_ms": self.total_ms, "batch_size": self.batch_size}


@dataclass
class _Answer:
    hits: Hits
    docs: dict[str, Doc]  # read from the same snapshot as the hits, so a concurrent delete cannot split them
    timings_ms: dict[str, float]
    batch_size: int


@dataclass
class SearchService:
    index: Index
    default_pipeline: str = "bm25"
    presets: list[str] = field(default_factory=list)
    api_key: str | None = None
    max_query_chars: int = MAX_QUERY_CHARS
    max_k: int = MAX_K
    policy: PipelinePolicy | None = None
    # Bounded: clients choose pipeline variants, and each cached one may hold per-stage caches.
    _pipelines: BoundedCache[str, Pipeline] = field(default_factory=lambda: BoundedCache(MAX_CACHED_PIPELINES))
    _batchers: BoundedCache[str, MicroBatcher[tuple[str, int], _Answer]] = field(
        default_factory=lambda: BoundedCache(MAX_CACHED_PIPELINES, on_evict=lambda batcher: batcher.retire()))
    _write_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, index: Index, default_pipeline: str | None = None, presets: Sequence[str] = (),
             api_key: str | None = None, allow_any_pipeline: bool = False, data_root: Path | None = None,
             model_root: Path | None = None) -> SearchService:
        if not presets:
            presets = ["bm25", "bm25>>rm3>>bm25"]
            if index.dense_keys():
                presets += ["dense", "rrf(bm25,dense)", "bm25%100>>dense"]
            for model in index.splade_keys():  # SPLADE impacts in the index: retrieval and the hybrid
                stage = f"splade(model={format_value(model)})"
                presets += [stage, f"linear(bm25,{stage},norm=zscore)"]
            for model in index.late_interaction_keys():  # token vectors in the index: first stage and reranker
                stage = f"colbert(model={format_value(model)})"
                presets += [stage, f"bm25%100>>{stage}"]
        service = cls(index, default_pipeline or presets[0], list(presets), api_key or None)
        parsed = [service.pipeline(text, trusted=True) for text in service.presets]
        for pipeline in parsed:  # fail at start-up, not on the first request, and encode what is missing
            pipeline.prepare(None)
        service.policy = PipelinePolicy(parsed, service.max_k, allow_any_pipeline, data_root, model_root)
        return service

    def pipeline(self, text: str | None, trusted: bool = False) -> Pipeline:
        """The pipeline for ``text`` (the default when None); unless ``trusted``, the policy must allow it."""
        text = (text or self.default_pipeline).strip()
        cached = self._pipelines.get(text)
        if cached is not None:
            return cached
        parsed = parse_pipeline(text, self.index)
        if not trusted and self.policy is not None:
            self.policy.check(parsed)
        # Keyed by the canonical string too, so spellings of one pipeline share one entry.
        canonical = self._pipelines.get_or_create(str(parsed), lambda: parsed)
        return self._pipelines.get_or_create(text, lambda: canonical)

    def preset_list(self) -> list[dict[str, str]]:
        return [{"name": text, "pipeline": str(self.pipeline(text))} for text in self.presets]

    def validate(self, query: str, k: int) -> str:
        if len(query) > self.max_query_chars:
            raise RequestLimitError(f"the query has {len(query):,} characters; the limit is {self.max_query_chars:,}")
        if not query.strip():
            raise EmptyInputError("the query is empty; give some words to search for")
        if not 1 <= k <= self.max_k:
            raise RequestLimitError(f"k must be between 1 and {self.max_k}, got {k}")
        return query.strip()

    async def search(self, query: str, k: int = 10, pipeline: str | None = None) -> SearchResult:
        started = time.perf_counter()
        query = self.validate(query, k)
        parsed = self.pipeline(pipeline)
        canonical = str(parsed)
        batcher = self._batchers.get_or_create(canonical,
                                               lambda: MicroBatcher(lambda items: self._run_batch(parsed, items)))
        answer = await batcher.submit((query, k))
        hits = self._present(answer, query)
        total_ms = (time.perf_counter() - started) * 1000
        return SearchResult(query, canonical, k, hits, answer.timings_ms, total_ms, answer.batch_size)

    def _present(self, answer: _Answer, query: str) -> list[dict[str, Any]]:
        """The hits as the API shows them: ranks, titles and snippets with the query's words marked."""
        analyzer = self.index.analyzer
        terms = frozenset(analyzer.analyze(query))
        hits: list[dict[str, Any]] = []
        for hit in answer.hits:
            doc = answer.docs.get(hit.doc_id)
            if doc is None:  # deleted between retrieval and the document lookup
                continue
            plain, marked = snippet_for_terms(doc.text or doc.title, terms, analyzer)
            hits.append({"rank": len(hits) + 1, "doc_id": hit.doc_id, "score": hit.score, "title": doc.title,
                         "title_html": highlight(doc.title, terms, analyzer), "snippet": plain,
                         "snippet_html": marked})
        return hits

    def _run_batch(self, pipeline: Pipeline, items: Sequence[tuple[str, int]]) -> list[_Answer]:
        queries = [Query(str(i), text) for i, (text, _) in enumerate(items)]
        deepest = max(k for _, k in items)
        view = self.index.view()
        run = (pipeline % deepest).transform(queries, context=SearchContext())
        timings = run.latency_ms()  # batch time shared out per query
        answers = []
        for query, (_, k) in zip(queries, items, strict=True):
            hits = run.results[query.query_id][:k]
            answers.append(_Answer(hits, view.get_docs([h.doc_id for h in hits]), timings, len(items)))
        return answers

    def document(self, doc_id: str) -> dict[str, str]:
        doc = self.index.view().get_doc(doc_id)
        if doc is None:
            raise NotFoundError(f"no document with id '{doc_id}' in this index")
        return {"doc_id": doc.doc_id, "title": doc.title, "text": doc.text}

    def check_write_access(self, presented: str | None) -> None:
        if self.api_key is None:
            raise WritesDisabledError("this server accepts no writes: start it with --api-key (or RANKSTACK_API_KEY)")
        if presented is None or not secrets.compare_digest(presented.encode(), self.api_key.encode()):
            raise AuthenticationError("a valid API key is required for writes: send 'Authorization: Bearer KEY'")

    def _write(self, change: Callable[[IndexWriter], dict[str, str]]) -> dict[str, str]:
        from rankstack.index.live import IndexWriter

        with self._write_lock, IndexWriter(self.index) as writer:  # one writer, also across processes
            return change(writer)

    async def put_document(self, doc_id: str, title: str, text: str) -> dict[str, str]:
        check_id(doc_id)  # refused, never trimmed: " 1" must not replace document "1"
        existed = self.index.view().get_doc(doc_id) is not None

        def change(writer: IndexWriter) -> dict[str, str]:
            writer.add([Doc(doc_id, text, title)])
            return {"doc_id": doc_id, "status": "updated" if existed else "created"}

        return await asyncio.to_thread(self._write, change)

    async def delete_document(self, doc_id: str) -> dict[str, str]:
        def change(writer: IndexWriter) -> dict[str, str]:
            if writer.delete([doc_id]).unknown:
                raise NotFoundError(f"no document with id '{doc_id}' in this index; nothing was deleted")
            return {"doc_id": doc_id, "status": "deleted"}

        return await asyncio.to_thread(self._write, change)

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
