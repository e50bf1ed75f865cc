"""Transformer rerankers: cross-encoders (monoBERT style), monoT5 and duoT5.

Each reorders the candidates of an earlier stage (``bm25 % 100 >> cross_encoder(model=...)``).
Models load from a local directory or a Hugging Face id; inputs longer than a model's window are
truncated with a warning that counts them (wrap the stage in ``passages(...)`` to score every part).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import numpy as np

from rankstack._bounded import BoundedCache
from rankstack.errors import PipelineError, RankstackError
from rankstack.models.encoder import apply_runtime
from rankstack.models.hardware import Runtime, check_runtime_options, choose_runtime
from rankstack.models.loading import (
    describe_load_failure,
    is_split_cross_encoder,
    require,
    resolve_model_location,
)
from rankstack.models.scoring import CrossEncoderScorer, PairScorer
from rankstack.models.scoring import count_truncated as _count_truncated
from rankstack.stages.base import SearchContext, Stage, candidate_texts
from rankstack.stages.registry import register_keyword_stage
from rankstack.types import Query, Run, ScoredDoc

logger = logging.getLogger(__name__)


# Loaded models, process-wide and bounded: stages (and the pipelines a server caches) that name the same
# model share one copy, and asking for many models cannot grow the process without limit.
MAX_LOADED_RERANKERS = 4
LOADED_RERANKERS: BoundedCache[tuple[Any, ...], Any] = BoundedCache(MAX_LOADED_RERANKERS)


class _Reranker(Stage):
    always_shown = ("model",)

    def __init__(self, index: Any, model: str, batch_size: int) -> None:
        if not model:
            raise PipelineError(f"{self.name} needs a model: {self.name}(model=DIRECTORY_OR_HUGGING_FACE_ID)")
        if batch_size < 1:
            raise PipelineError(f"{self.name}: batch_size must be positive, got {batch_size}")
        self.index = index
        self.model = model
        self.batch_size = batch_size
        self._truncated = self._inputs = 0

    def prepare(self, as_first_stage: bool, progress: Any) -> None:
        _ = self.loaded  # load now, so the first batch's timing does not include it

    @cached_property
    def loaded(self) -> Any:
        raise NotImplementedError

    def transform(self, queries: Sequence[Query], candidates: Run | None, context: SearchContext) -> Run:
        if candidates is None:
            raise PipelineError(f"{self.name} reranks the candidates of an earlier stage: bm25%100>>{self}")
        run = Run()
        self._truncated, self._inputs = 0, 0
        for query in queries:
            hits = list(candidates.results.get(query.query_id) or [])
            doc_ids = [h.doc_id for h in hits]
            scores = self.score(query.text, candidate_texts(self.index, doc_ids, context)) if hits else []
            run.set(query.query_id, [ScoredDoc(query.query_id, d, float(s)) for d, s in zip(doc_ids, scores,
                                                                                            strict=True)])
        if self._truncated:  # one warning per batch of queries, not one per query
            logger.warning("%d of %d %s inputs were longer than the model's window and were truncated; wrap the "
                           "stage in passages(...) to score every part", self._truncated, self._inputs, self.name)
        return run

    def note_truncation(self, tokenizer: Any, texts: list[str], limit: int,
                        pairs_with: list[str] | None = None) -> None:
        self._truncated += _count_truncated(tokenizer, texts, limit, pairs_with)
        self._inputs += len(texts)

    def score(self, query: str, texts: list[str]) -> Sequence[float]:
        raise NotImplementedError


class CrossEncoderReranker(_Reranker):
    """A sentence-transformers CrossEncoder scoring (query, document) pairs.

    ``max_length`` 0 (the default) uses the window the model was trained with, as its saved tokenizer
    declares; a number overrides it.

    A split cross-encoder (``rankstack train split``) reads documents through its lower layers once and
    keeps those states in memory (up to ``cache_mb``); ``precompute=true`` does that for the whole
    collection before the first query, as an index-time step, instead of on first sight; with
    ``states=DIR`` those states are saved in DIR and loaded from there next time (for the same model).
    """

    name = "cross_encoder"

    def __init__(self, index: Any, model: str = "", batch_size: int = 32, max_length: int = 0,
                 precision: str = "auto", precompute: bool = False, cache_mb: int = 2048,
                 states: str = "", device: str = "auto") -> None:
        super().__init__(index, model, batch_size)
        self.max_length = max_length
        self.precision = precision
        self.device = device
        self.precompute = precompute
        self.cache_mb = cache_mb
        self.states = states
        check_runtime_options(precision, device)  # reject unknown values and absent GPUs when the pipeline is built
        if cache_mb < 0:
            raise PipelineError(f"cross_encoder: cache_mb must be 0 or more, got {cache_mb}")
        if states and not precompute:
            raise PipelineError(f"cross_encoder: states={states} keeps what precompute computes; add precompute=true")
        self._check_split_options(model)

    def _check_split_options(self, location: str) -> bool:
        """Whether ``location`` holds a split cross-encoder, refusing the options that cannot apply to one."""
        split = is_split_cross_encoder(location)
        if split and (self.max_length or "int8" in self.precision or "onnx" in self.precision):
            raise PipelineError(f"cross_encoder: {self.model} is a split cross-encoder; its window is fixed by "
                                f"its training and it runs in torch fp32 or bf16 (drop max_length, use "
                                f"precision=auto)")
        return split

    def runtime(self, split: bool) -> Runtime:
        """A split model runs under torch on the CPU (its cached document states are CPU tensors)."""
        if not split:
            return choose_runtime(self.precision, "auto", self.device)
        if self.device.startswith("cuda"):
            raise PipelineError(f"cross_encoder: {self.model} is a split cross-encoder, which runs on the CPU; "
                                f"drop device={self.device} (or use an unsplit cross-encoder on the GPU)")
        return choose_runtime(self.precision, "torch", "cpu")

    def prepare(self, as_first_stage: bool, progress: Any) -> None:
        loaded = self.loaded
        store = Path(self.states) if self.states else None
        if self.precompute and not loaded.precompute(self.index, progress, store):
            logger.warning("cross_encoder: precompute applies to split cross-encoders (rankstack train split); "
                           "%s is not one, so there is nothing to precompute", self.model)

    @property
    def loaded(self) -> PairScorer:
        key = ("cross_encoder", self.model, self.max_length, self.precision, self.device, self.batch_size,
               self.cache_mb)
        return cast(PairScorer, LOADED_RERANKERS.get_or_create(key, self._load))

    def _load(self) -> PairScorer:
        require("sentence_transformers", "rerank", "Cross-encoder reranking")
        from rankstack.models.cross_heads import load_cross_encoder
        from rankstack.models.split import SplitCrossEncoder, SplitScorer

        location = str(resolve_model_location(self.model))
        split = self._check_split_options(location)
        runtime = self.runtime(split)
        try:
            model = SplitCrossEncoder.load(location) if split else \
                load_cross_encoder(location, self.max_length or None, runtime.device)
        except RankstackError:
            raise  # already says what is wrong (a split model's bad layout, say)
        except Exception as error:  # noqa: BLE001 - any loader failure becomes one clear message
            raise describe_load_failure(self.model, error) from None
        if split:
            return SplitScorer(model, runtime.precision, self.batch_size, self.cache_mb)
        return CrossEncoderScorer(apply_runtime(model, runtime), runtime, self.batch_size)

    def score(self, query: str, texts: list[str]) -> Sequence[float]:
        scores, truncated = self.loaded.score(query, texts)
        self._truncated += truncated
        self._inputs += len(texts)
        return scores


class _T5Ranker(_Reranker):
    @property
    def loaded(self) -> tuple[Any, Any, int, int]:
        return LOADED_RERANKERS.get_or_create(("t5", self.model), self._load)  # type: ignore[no-any-return]

    def _load(self) -> tuple[Any, Any, int, int]:
        transformers = require("transformers", "rerank", "T5 reranking")
        location = resolve_model_location(self.model)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(location)
            model = transformers.AutoModelForSeq2SeqLM.from_pretrained(location).eval()
        except Exception as error:  # noqa: BLE001
            raise describe_load_failure(self.model, error) from None
        # monoT5/duoT5 answer "true"/"false": the first token of each word is what the decoder emits.
        true_id = tokenizer.encode("true", add_special_tokens=False)[0]
        false_id = tokenizer.encode("false", add_special_tokens=False)[0]
        return tokenizer, model, true_id, false_id

    def true_log_probabilities(self, prompts: list[str]) -> np.ndarray:
        if not prompts:
            return np.zeros(0, dtype=np.float32)
        torch = require("torch", "rerank", "T5 reranking")
        tokenizer, model, true_id, false_id = self.loaded
        self.note_truncation(tokenizer, prompts, 512)
        results = []
        with torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                batch = tokenizer(prompts[start:start + self.batch_size], padding=True, truncation=True,
                                  max_length=512, return_tensors="pt")
                decoder = torch.full((batch["input_ids"].shape[0], 1), model.config.decoder_start_token_id)
                logits = model(**batch, decoder_input_ids=decoder).logits[:, 0, [true_id, false_id]]
                results.append(torch.log_softmax(logits.float(), dim=-1)[:, 0].numpy())
        return np.concatenate(results) if results else np.zeros(0, dtype=np.float32)


class MonoT5(_T5Ranker):
    """Pointwise: score = log P("true" | "Query: q Document: d Relevant:") (Nogueira et al., 2020)."""

    name = "mono_t5"

    def __init__(self, index: Any, model: str = "castorini/monot5-base-msmarco", batch_size: int = 16) -> None:
        super().__init__(index, model, batch_size)

    def score(self, query: str, texts: list[str]) -> Sequence[float]:
        scores: list[float] = self.true_log_probabilities([f"Query: {query} Document: {t} Relevant:" for t in texts]
                                                          ).tolist()
        return scores


class DuoT5(_T5Ranker):
    """Pairwise over the top ``top_k``: p(i > j) from "Query: q Document0: di Document1: dj Relevant:",
    aggregated by Sym-Sum, s_i = sum over j of p(i > j) + (1 - p(j > i)) (Pradeep et al., 2021).
    Candidates below the top ``top_k`` keep their order, beneath the reranked ones."""

    name = "duo_t5"

    def __init__(self, index: Any, model: str = "castorini/duot5-base-msmarco", batch_size: int = 16,
                 top_k: int = 10) -> None:
        super().__init__(index, model, batch_size)
        if top_k < 2:
            raise PipelineError(f"duo_t5: top_k must be at least 2, got {top_k}")
        self.top_k = top_k

    def score(self, query: str, texts: list[str]) -> Sequence[float]:
        head = texts[:self.top_k]
        pairs = list(itertools.permutations(range(len(head)), 2))
        probabilities = np.exp(self.true_log_probabilities(
            [f"Query: {query} Document0: {head[i]} Document1: {head[j]} Relevant:" for i, j in pairs]))
        better = np.zeros((len(head), len(head)))
        for (i, j), p in zip(pairs, probabilities, strict=True):
            better[i, j] = p
        sym_sum = [sum(better[i, j] + (1.0 - better[j, i]) for j in range(len(head)) if j != i)
                   for i in range(len(head))]
        tail = [-(rank + 1.0) for rank in range(len(texts) - len(head))]  # below every Sym-Sum score (>= 0)
        return [*sym_sum, *tail]




register_keyword_stage("cross_encoder", CrossEncoderReranker)
register_keyword_stage("mono_t5", MonoT5)
register_keyword_stage("duo_t5", DuoT5)
