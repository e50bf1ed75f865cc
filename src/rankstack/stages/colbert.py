"""Late interaction (ColBERT): one vector per token, a document scored by MaxSim against the query's tokens.

As a reranker (``bm25%100>>colbert(model=DIR)``) it scores the candidates with the token vectors stored in
the index (``rankstack index CORPUS -o INDEX --late-interaction DIR``), so no document is encoded at query
time; documents without stored vectors (an index without them, or documents added live since) are encoded
on first sight and kept in a bounded cache. As a first stage it computes exact MaxSim against every token of
the collection (fine for tens of thousands of documents) or, where the index has centroids of the token
vectors (built by default for large collections, ``--centroids`` to force), PLAID-style approximate search:
candidates from each query token's ``nprobe`` nearest centroids, cut to ``candidates`` by centroid
interaction, rescored exactly (``rankstack.index.token_centroids``). ``search=auto`` takes the centroids
when they are there, ``exact`` never, ``approximate`` always (an error without them).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rankstack.errors import PipelineError, RankstackError
from rankstack.ranking import top_rows
from rankstack.stages.base import DEFAULT_RETRIEVAL_DEPTH, ProgressFactory, SearchContext, Stage
from rankstack.stages.registry import register_keyword_stage
from rankstack.types import Query, Run, ScoredDoc

if TYPE_CHECKING:  # torch stays unimported until a colbert stage runs
    from rankstack.index.token_centroids import TokenCentroids
    from rankstack.index.token_vectors import TokenVectors
    from rankstack.models.late_interaction import LateInteractionEncoder

SEARCH_MODES = ("auto", "exact", "approximate")
_CACHE_TOKENS = 500_000  # token vectors of documents encoded on the fly, kept for the next queries (~128 MB)


class ColBERT(Stage):
    """A late-interaction stage: exact MaxSim over the index's token vectors, or over the candidates given."""

    name = "colbert"
    always_shown = ("model",)

    def __init__(self, index: Any, model: str = "", batch_size: int = 32, search: str = "auto", nprobe: int = 4,
                 candidates: int = 1024) -> None:
        if index is None:
            raise PipelineError("colbert needs an index; open one with rankstack.index.Index.open(PATH)")
        if not model:
            raise PipelineError("colbert needs a model: colbert(model=DIRECTORY); rankstack train late-interaction "
                                "DATASET -o DIRECTORY makes one")
        if batch_size < 1:
            raise PipelineError(f"colbert: batch_size must be positive, got {batch_size}")
        if search not in SEARCH_MODES:
            raise PipelineError(f"colbert: search={search!r} is not one of {', '.join(SEARCH_MODES)} (auto: the "
                                "approximate index where the index has one, else exact MaxSim)")
        if nprobe < 1 or candidates < 1:
            raise PipelineError(f"colbert: nprobe and candidates must be positive, got nprobe={nprobe}, "
                                f"candidates={candidates}")
        from rankstack.models.late_interaction import is_late_interaction_model

        local = Path(model).expanduser()
        if local.is_dir() and not is_late_interaction_model(local):
            raise PipelineError(f"colbert: {model} is not a late-interaction model (no MultiVectorEncoder in its "
                                f"config_sentence_transformers.json); a bi-encoder goes in dense(model={model}), and "
                                f"rankstack train late-interaction DATASET -o DIR makes a late-interaction model")
        self.index = index
        self.model = model
        self.batch_size = batch_size
        self.search = search
        self.nprobe = nprobe
        self.candidates = candidates
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._cached_tokens = 0

    @property
    def encoder(self) -> LateInteractionEncoder:
        from rankstack.models.late_interaction import load_late_interaction

        return load_late_interaction(self.model)

    def prepare(self, as_first_stage: bool, progress: ProgressFactory | None) -> None:
        """Load and warm up the model; a first stage checks that the index has token vectors for it."""
        self.encoder.encode_queries(["warm-up"])
        if as_first_stage:
            self._approximate(self._required(self.index.view()))

    def _required(self, view: Any) -> TokenVectors:
        stored = self._stored(view, required=True)
        if stored is None:  # _stored raises first; this keeps type checkers and -O honest
            raise RankstackError(f"the index at {self.index.path} has no token vectors for '{self.model}'")
        return stored

    def _approximate(self, stored: TokenVectors) -> TokenCentroids | None:
        """The centroids to search with, per ``search``; None for exact MaxSim."""
        if self.search == "exact":
            return None
        centroids = stored.centroids
        if centroids is None and self.search == "approximate":
            raise RankstackError(f"the index at {self.index.path} has no centroids for '{self.model}', which "
                                 f"colbert(search=approximate) needs; build them with: rankstack index CORPUS -o "
                                 f"{self.index.path} --late-interaction {self.model} --centroids (or use "
                                 f"search=exact)")
        return centroids

    def _stored(self, view: Any, required: bool) -> TokenVectors | None:
        from rankstack.index.token_vectors import stored_token_vectors

        segment = getattr(view, "segment", view)
        stored = stored_token_vectors(segment, self.encoder.model_id)
        if stored is None:
            if required:
                raise RankstackError(
                    f"the index at {self.index.path} has no token vectors for '{self.model}', which colbert needs "
                    f"as a first stage; add them with: rankstack index CORPUS -o {self.index.path} "
                    f"--late-interaction {self.model} (or rerank another stage's candidates: "
                    f"bm25%100>>colbert(model={self.model}))")
            return None
        stored.check_encoder(self.encoder, self.index.path)
        if stored.num_rows != segment.num_docs:
            raise RankstackError(f"the index at {self.index.path} has token vectors for {stored.num_rows:,} documents "
                                 f"but holds {segment.num_docs:,}; re-encode them with: rankstack index CORPUS -o "
                                 f"{self.index.path} --late-interaction {self.model}")
        return stored

    def transform(self, queries: Sequence[Query], candidates: Run | None, context: SearchContext) -> Run:
        run = Run()
        if not queries:
            return run
        view = self.index.view()
        query_vectors = self.encoder.encode_queries([q.text for q in queries])
        if candidates is None:
            self._retrieve(view, queries, query_vectors, context, run)
        elif context.texts is not None:  # passages or other texts that are not index documents
            self._rescore_texts(queries, query_vectors, candidates, context.texts, run)
        else:
            self._rescore(view, queries, query_vectors, candidates, run)
        return run

    def _retrieve(self, view: Any, queries: Sequence[Query], query_vectors: list[np.ndarray],
                  context: SearchContext, run: Run) -> None:
        from rankstack.index.token_vectors import maxsim

        stored = self._required(view)
        base = stored.num_rows
        scores = np.full((len(queries), len(view.doc_id_array)), -np.inf, dtype=np.float32)
        approximate = self._approximate(stored)
        if approximate is None:
            scores[:, :base] = stored.maxsim_all(query_vectors)
        else:  # exact MaxSim on the candidates of the centroids only; the other rows stay at -inf
            for i, query_vector in enumerate(query_vectors):
                rows = approximate.candidates(query_vector, self.nprobe, self.candidates)
                if len(rows):
                    scores[i, rows] = stored.maxsim_rows(query_vector, rows)
        positions = view.doc_positions
        alive = np.fromiter(positions.values(), dtype=np.int64, count=len(positions))
        added = alive[alive >= base]  # documents added live since the vectors were stored
        if len(added):
            tokens = self._doc_tokens(view, list(view.doc_id_array[added]), stored)
            for i, query_vector in enumerate(query_vectors):
                scores[i, added] = maxsim(query_vector, tokens)
        wanted = context.top_k or DEFAULT_RETRIEVAL_DEPTH
        fetch = min(wanted + (1 if context.ignore_identical_ids else 0), len(alive))
        ranks = view.doc_id_ranks[alive]
        for i, query in enumerate(queries):
            row_scores = scores[i, alive]
            order = top_rows(row_scores, fetch, ranks)
            order = order[np.isfinite(row_scores[order])]  # rows the approximate search did not reach
            doc_ids, ordered = view.doc_id_array[alive[order]], row_scores[order]
            if context.ignore_identical_ids:
                keep = doc_ids != query.query_id
                doc_ids, ordered = doc_ids[keep], ordered[keep]
            run.set_sorted(query.query_id, doc_ids[:wanted], ordered[:wanted])

    def _rescore(self, view: Any, queries: Sequence[Query], query_vectors: list[np.ndarray], candidates: Run,
                 run: Run) -> None:
        from rankstack.index.token_vectors import maxsim

        positions = view.doc_positions
        wanted = list(dict.fromkeys(h.doc_id for q in queries for h in candidates.results.get(q.query_id, [])
                                    if h.doc_id in positions))  # a document deleted since is never returned
        tokens = dict(zip(wanted, self._doc_tokens(view, wanted, self._stored(view, required=False)), strict=True))
        for query, query_vector in zip(queries, query_vectors, strict=True):
            doc_ids = [h.doc_id for h in candidates.results.get(query.query_id, []) if h.doc_id in positions]
            if not doc_ids:
                run.set_sorted(query.query_id, [], np.zeros(0, dtype=np.float32))
                continue
            scores = maxsim(query_vector, [tokens[d] for d in doc_ids])
            order = top_rows(scores, len(scores), view.doc_id_ranks[[positions[d] for d in doc_ids]])
            run.set_sorted(query.query_id, np.array(doc_ids, dtype=object)[order], scores[order])

    def _rescore_texts(self, queries: Sequence[Query], query_vectors: list[np.ndarray], candidates: Run,
                       texts: Mapping[str, str], run: Run) -> None:
        from rankstack.index.token_vectors import maxsim

        for query, query_vector in zip(queries, query_vectors, strict=True):
            hits = list(candidates.results.get(query.query_id) or [])
            documents = self._encode_cached([(h.doc_id, texts[h.doc_id]) for h in hits], None)
            scores = maxsim(query_vector, documents) if hits else np.zeros(0, dtype=np.float32)
            run.set(query.query_id, [ScoredDoc(query.query_id, h.doc_id, float(s))
                                     for h, s in zip(hits, scores, strict=True)])

    def _doc_tokens(self, view: Any, doc_ids: list[str], stored: TokenVectors | None) -> list[np.ndarray]:
        """Token vectors of live documents: stored ones for the segment's rows, the others encoded (cached)."""
        positions = view.doc_positions
        base = stored.num_rows if stored is not None else 0
        found: dict[str, np.ndarray] = {}
        if stored is not None:
            in_segment = [d for d in doc_ids if positions[d] < base]
            found.update(zip(in_segment, stored.rows([positions[d] for d in in_segment]), strict=True))
        missing = [d for d in doc_ids if d not in found]
        if missing:
            docs = view.get_docs(missing)
            found.update(zip(missing, self._encode_cached([(d, docs[d].contents) for d in missing], stored),
                             strict=True))
        return [found[d] for d in doc_ids]

    def _encode_cached(self, items: list[tuple[str, str]], stored: TokenVectors | None) -> list[np.ndarray]:
        """Token vectors of (doc id, text) pairs, encoded once; compressed as the stored ones are, so a
        document added live scores as it will once the index is rebuilt."""
        keys = [(doc_id, hashlib.sha1(text.encode("utf-8")).hexdigest()) for doc_id, text in items]
        texts = dict(zip(keys, (t for _, t in items), strict=True))
        missing = [k for k in dict.fromkeys(keys) if k not in self._cache]
        if missing:
            for key, tokens in zip(missing, self.encoder.encode_docs([texts[k] for k in missing]), strict=True):
                self._cache[key] = stored.compress_like(tokens) if stored is not None else tokens
                self._cached_tokens += len(tokens)
        result = [self._cache[k] for k in keys]
        for key in keys:  # least recently used go first when the cache is full
            self._cache.move_to_end(key)
        while self._cached_tokens > _CACHE_TOKENS and len(self._cache) > len(set(keys)):
            _, evicted = self._cache.popitem(last=False)
            self._cached_tokens -= len(evicted)
        return result


register_keyword_stage("colbert", ColBERT)
