"""Dense retrieval with a bi-encoder, and dense re-scoring of an earlier stage's candidates."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rankstack.errors import PipelineError, RankstackError
from rankstack.models.hardware import check_runtime_options
from rankstack.models.late_interaction import refuse_late_interaction
from rankstack.models.loading import canonical_model_id
from rankstack.ranking import top_rows
from rankstack.stages.base import DEFAULT_RETRIEVAL_DEPTH, ProgressFactory, SearchContext, Stage
from rankstack.stages.registry import register_keyword_stage
from rankstack.types import ExpandedQuery, Query, Run, ScoredDoc

if TYPE_CHECKING:  # torch stays unimported until a dense stage runs
    from rankstack.index.dense import DenseVectors
    from rankstack.models.encoder import BiEncoder

_SEARCH_METHODS = ("exact", "hnsw")
_CANDIDATE_CACHE_SIZE = 50_000  # vectors of documents encoded on the fly, kept for the next queries


class Dense(Stage):
    """A bi-encoder stage: retrieves from the index's vectors, or re-scores the candidates it is given.

    As a first stage it needs vectors for its model in the index (``rankstack index --dense``;
    ``rankstack eval`` adds them on demand). As a later stage it uses stored vectors when present and
    otherwise encodes the candidate documents on the fly.
    """

    name = "dense"
    always_shown = ("model",)
    reads_expansion = "vector"

    def __init__(self, index: Any, model: str = "default", precision: str = "auto", search: str = "exact",
                 ef_search: int = 256, query_prefix: str = "", doc_prefix: str = "", device: str = "auto") -> None:
        if index is None:
            raise PipelineError("dense needs an index; open one with rankstack.index.Index.open(PATH)")
        if search not in _SEARCH_METHODS:
            raise PipelineError(f"dense: search must be one of {', '.join(_SEARCH_METHODS)}, got '{search}'")
        if ef_search < 1:
            raise PipelineError(f"dense: ef_search must be positive, got {ef_search}")
        refuse_late_interaction(model, "dense")
        self.index = index
        self.model = canonical_model_id(model)
        self.precision = precision
        self.device = device
        check_runtime_options(precision, device)  # reject unknown values and absent GPUs when the pipeline is built
        self.search = search
        self.ef_search = ef_search
        self.query_prefix = query_prefix
        self.doc_prefix = doc_prefix
        self._doc_vector_cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def defaults(self) -> dict[str, Any]:
        return {**super().defaults(), "model": canonical_model_id("default")}

    @property
    def encoder(self) -> BiEncoder:
        from rankstack.models.encoder import load_encoder

        return load_encoder(self.model, self.precision, self.query_prefix, self.doc_prefix, device=self.device)

    def prepare(self, as_first_stage: bool, progress: ProgressFactory | None) -> None:
        """Load and warm up the model, and encode the corpus when this stage retrieves and has no vectors."""
        self.encoder.encode_queries(["warm-up"])  # first calls compile kernels; keep that out of timings
        if not as_first_stage:
            return
        if self.index.dense_vectors(self.model, self.encoder.precision, exact=True) is not None:
            return
        from rankstack.index.dense import build_dense

        advance = progress(f"encoding {self.index.num_docs:,} docs with {self.model}", self.index.num_docs) \
            if progress else None
        build_dense(self.index, self.encoder, progress=advance)
        self.index.reload_manifest()

    def transform(self, queries: Sequence[Query], candidates: Run | None, context: SearchContext) -> Run:
        run = Run()
        if not queries:
            return run
        view = self.index.view()
        expansions = candidates.expanded if candidates is not None else {}
        if expansions:  # after dense_prf: retrieve anew with the rewritten query vectors
            self._retrieve(view, queries, self._expanded_vectors(queries, expansions), context, run)
            return run
        query_vectors = self.encoder.encode_queries([q.text for q in queries])
        if candidates is None:
            self._retrieve(view, queries, query_vectors, context, run)
        else:
            self._rescore(view, queries, query_vectors, candidates, run, context)
        return run

    def _expanded_vectors(self, queries: Sequence[Query], expansions: Mapping[str, ExpandedQuery]) -> np.ndarray:
        missing = [q for q in queries if q.query_id not in expansions]
        encoded = dict(zip([q.query_id for q in missing],
                           self.encoder.encode_queries([q.text for q in missing]) if missing else [], strict=True))
        vectors = []
        for query in queries:
            expanded = expansions.get(query.query_id)
            if expanded is None or expanded.vector is None:
                vectors.append(encoded[query.query_id])
                continue
            if expanded.model != self.model:
                raise PipelineError(f"dense: the query vectors were rewritten for '{expanded.model}', but this stage "
                                    f"searches with '{self.model}'; give dense_prf and dense the same model")
            vectors.append(expanded.vector)
        return np.stack(vectors).astype(np.float32, copy=False)

    def doc_vectors(self, view: Any, doc_ids: list[str]) -> np.ndarray:
        """Vectors of live documents ``doc_ids``: stored ones when the index has them, else encoded now."""
        stored = self.index.dense_vectors(self.model, self.encoder.precision)
        if stored is None:
            return self._encode_candidates(view, doc_ids)
        stored.check_encoder(self.encoder)
        positions = view.doc_positions
        rows: np.ndarray = view.dense_rows(stored, [positions[d] for d in doc_ids])
        return rows

    def _vectors(self) -> DenseVectors:
        vectors: DenseVectors | None = self.index.dense_vectors(self.model, self.encoder.precision)
        if vectors is None:
            raise RankstackError(
                f"the index at {self.index.path} has no vectors for '{self.model}'; add them with: "
                f"rankstack index CORPUS -o {self.index.path} --overwrite --dense {self.model} "
                f"(rankstack eval adds them on demand)")
        vectors.check_encoder(self.encoder)
        return vectors

    def _retrieve(self, view: Any, queries: Sequence[Query], query_vectors: np.ndarray, context: SearchContext,
                  run: Run) -> None:
        vectors = self._vectors()
        wanted = context.top_k or DEFAULT_RETRIEVAL_DEPTH
        fetch = min(wanted + (1 if context.ignore_identical_ids else 0), len(view.doc_id_array))
        scores, rows = view.dense_search(vectors, query_vectors, fetch, self.search, self.ef_search)
        ranks = view.doc_id_ranks
        for query, query_scores, query_rows in zip(queries, scores, rows, strict=True):
            valid = query_rows >= 0
            query_rows, query_scores = query_rows[valid], query_scores[valid]
            order = top_rows(query_scores, len(query_scores), ranks[query_rows])
            doc_ids = view.doc_id_array[query_rows[order]]
            ordered_scores = query_scores[order]
            if context.ignore_identical_ids:
                keep = doc_ids != query.query_id
                doc_ids, ordered_scores = doc_ids[keep], ordered_scores[keep]
            run.set_sorted(query.query_id, doc_ids[:wanted], ordered_scores[:wanted])

    def _rescore_texts(self, queries: Sequence[Query], query_vectors: np.ndarray, candidates: Run,
                       texts: Mapping[str, str], run: Run) -> None:
        for query, query_vector in zip(queries, query_vectors, strict=True):
            hits = list(candidates.results.get(query.query_id) or [])
            scores = self.encoder.encode_docs([texts[h.doc_id] for h in hits]) @ query_vector if hits else []
            run.set(query.query_id, [ScoredDoc(query.query_id, h.doc_id, float(s)) for h, s in zip(hits, scores,
                                                                                                 strict=True)])

    def _rescore(self, view: Any, queries: Sequence[Query], query_vectors: np.ndarray, candidates: Run,
                 run: Run, context: SearchContext) -> None:
        if context.texts is not None:  # passages or other texts that are not index documents
            self._rescore_texts(queries, query_vectors, candidates, context.texts, run)
            return
        stored = self.index.dense_vectors(self.model, self.encoder.precision)
        if stored is not None:
            stored.check_encoder(self.encoder)
        positions = view.doc_positions
        if stored is None:  # one encode call for all candidates: bigger, length-sorted batches
            self._encode_candidates(view, [h.doc_id for q in queries for h in candidates.results.get(q.query_id, [])])
        for query, query_vector in zip(queries, query_vectors, strict=True):
            hits = candidates.results.get(query.query_id)
            if not hits:
                run.set_sorted(query.query_id, [], np.zeros(0, dtype=np.float32))
                continue
            doc_ids = [h.doc_id for h in hits]
            if stored is not None:
                matrix = view.dense_rows(stored, [positions[d] for d in doc_ids])
            else:
                matrix = self._encode_candidates(view, doc_ids)
            scores = matrix @ query_vector
            ranks = view.doc_id_ranks[[positions[d] for d in doc_ids]]
            order = top_rows(scores, len(scores), ranks)
            run.set_sorted(query.query_id, np.array(doc_ids, dtype=object)[order], scores[order])

    def _encode_candidates(self, view: Any, doc_ids: list[str]) -> np.ndarray:
        cache = self._doc_vector_cache
        missing = [d for d in dict.fromkeys(doc_ids) if d not in cache]
        if missing:
            docs = view.get_docs(missing)
            vectors = self.encoder.encode_docs([docs[d].contents for d in missing])
            cache.update(zip(missing, vectors, strict=True))
        matrix = np.stack([cache[d] for d in doc_ids])
        for doc_id in doc_ids:  # least recently used go first when the cache is full
            cache.move_to_end(doc_id)
        while len(cache) > _CANDIDATE_CACHE_SIZE:
            cache.popitem(last=False)
        return matrix


register_keyword_stage("dense", Dense)
