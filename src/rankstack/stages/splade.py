"""Learned sparse retrieval (SPLADE) over an index's quantised impacts, and SPLADE re-scoring of candidates."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from rankstack.errors import PipelineError, RankstackError
from rankstack.index.splade import IMPACT_MAX, document_windows, live_parts
from rankstack.models.loading import canonical_model_id
from rankstack.ranking import top_rows
from rankstack.stages.base import DEFAULT_RETRIEVAL_DEPTH, ProgressFactory, SearchContext, Stage
from rankstack.stages.registry import register_keyword_stage
from rankstack.types import Query, Run, ScoredDoc

if TYPE_CHECKING:  # torch stays unimported until a splade stage runs
    from rankstack.index.splade import SpladeImpacts
    from rankstack.models.splade import SpladeEncoder

_MIN_SCORE = float(np.finfo(np.float32).tiny)  # a document sharing no term with the query is never a hit
_CACHE_SIZE = 50_000  # encoded documents kept: live additions, and candidates when no impacts are stored


class Splade(Stage):
    """A SPLADE stage: retrieves from the index's impacts, or re-scores the candidates it is given.

    As a first stage it needs impacts for its model in the index (``rankstack index --sparse MODEL``;
    ``rankstack eval`` and the service add them on demand). Documents added to a live index since are
    encoded on first use; deleted ones are never returned. As a later stage it uses the stored impacts
    when present and otherwise encodes the candidates.
    """

    name = "splade"
    always_shown = ("model",)

    def __init__(self, index: Any, model: str = "") -> None:
        if index is None:
            raise PipelineError("splade needs an index; open one with rankstack.index.Index.open(PATH)")
        if not model:
            raise PipelineError("splade needs a SPLADE model: splade(model=DIR), with DIR made by "
                                "rankstack train sparse DATASET -o DIR")
        self.index = index
        self.model = canonical_model_id(model)
        self._encoded: OrderedDict[tuple[str, str], Any] = OrderedDict()  # (doc id, text) -> float weights

    @property
    def encoder(self) -> SpladeEncoder:
        from rankstack.models.splade import load_splade

        return load_splade(self.model)

    def prepare(self, as_first_stage: bool, progress: ProgressFactory | None) -> None:
        """Load and warm up the model, and encode the corpus when this stage retrieves and has no impacts."""
        self.encoder.encode_queries(["warm-up"])
        if not as_first_stage or self.index.splade_impacts(self.model) is not None:
            return
        from rankstack.index.splade import build_splade

        segment_rows = self.index.segment.num_docs  # live additions are encoded at search time
        advance = progress(f"encoding {segment_rows:,} docs with {self.model} (SPLADE)", segment_rows) \
            if progress else None
        build_splade(self.index, self.encoder, progress=advance)
        self.index.reload_manifest()

    def transform(self, queries: Sequence[Query], candidates: Run | None, context: SearchContext) -> Run:
        run = Run()
        if not queries:
            return run
        view = self.index.view()
        query_weights = self.encoder.encode_queries([q.text for q in queries])
        if candidates is None:
            self._retrieve(view, queries, query_weights, context, run)
        else:
            self._rescore(view, queries, query_weights, candidates, context, run)
        return run

    def _impacts(self) -> SpladeImpacts:
        impacts: SpladeImpacts | None = self.index.splade_impacts(self.model)
        if impacts is None:
            raise RankstackError(
                f"the index at {self.index.path} has no SPLADE impacts for '{self.model}'; add them with: "
                f"rankstack index CORPUS -o {self.index.path} --sparse {self.model} (rankstack eval adds them on "
                f"demand)")
        impacts.check_encoder(self.encoder, self.index.path)
        if impacts.num_docs != self.index.segment.num_docs:
            raise RankstackError(
                f"the SPLADE impacts of {self.index.path} for '{self.model}' cover {impacts.num_docs:,} documents "
                f"but the index has {self.index.segment.num_docs:,}; re-encode with: rankstack index CORPUS -o "
                f"{self.index.path} --sparse {self.model}")
        return impacts

    def _all_scores(self, view: Any, impacts: SpladeImpacts, query_weights: Any) -> np.ndarray:
        """(queries x rows of ``view``) scores; deleted rows score 0, added documents are encoded once."""
        segment, alive, added = live_parts(view)
        scores = impacts.scores(query_weights)
        if added:
            added_impacts = self._weights([(d.doc_id, d.contents) for d in added])
            added_impacts.data = np.clip(np.rint(added_impacts.data / impacts.scale), 1, IMPACT_MAX)
            added_scores = np.asarray((query_weights @ added_impacts.T).todense(), dtype=np.float32) * impacts.scale
            scores = np.concatenate([scores, added_scores], axis=1)
        if alive is not None:
            scores[:, ~alive] = 0.0
        return scores

    def _retrieve(self, view: Any, queries: Sequence[Query], query_weights: Any, context: SearchContext,
                  run: Run) -> None:
        scores = self._all_scores(view, self._impacts(), query_weights)
        wanted = context.top_k or DEFAULT_RETRIEVAL_DEPTH
        ranks = view.doc_id_ranks
        for query, row in zip(queries, scores, strict=True):
            fetch = min(wanted + (1 if context.ignore_identical_ids else 0), len(row))
            selected = top_rows(row, fetch, ranks, minimum=_MIN_SCORE)
            doc_ids, selected_scores = view.doc_id_array[selected], row[selected]
            if context.ignore_identical_ids:
                keep = doc_ids != query.query_id
                doc_ids, selected_scores = doc_ids[keep], selected_scores[keep]
            run.set_sorted(query.query_id, doc_ids[:wanted], selected_scores[:wanted])

    def _rescore(self, view: Any, queries: Sequence[Query], query_weights: Any, candidates: Run,
                 context: SearchContext, run: Run) -> None:
        stored = self.index.splade_impacts(self.model) if context.texts is None else None
        if stored is not None:
            all_scores = self._all_scores(view, self._impacts(), query_weights)
            positions = view.doc_positions
            for i, query in enumerate(queries):
                hits: Sequence[Any] = candidates.results.get(query.query_id) or []
                run.set(query.query_id, [ScoredDoc(query.query_id, h.doc_id, float(all_scores[i, positions[h.doc_id]])
                                                   if h.doc_id in positions else 0.0) for h in hits])
            return
        wanted = [h.doc_id for q in queries for h in candidates.results.get(q.query_id) or []]
        if context.texts is not None:
            texts = {d: context.texts[d] for d in wanted}
        else:
            docs = view.get_docs(list(dict.fromkeys(wanted)))
            texts = {d: docs[d].contents if d in docs else "" for d in wanted}
        for i, query in enumerate(queries):
            hits = candidates.results.get(query.query_id) or []
            if not hits:
                run.set(query.query_id, [])
                continue
            weights = self._weights([(h.doc_id, texts[h.doc_id]) for h in hits])
            scores = np.asarray((weights @ query_weights[i].T).todense(), dtype=np.float32).ravel()
            run.set(query.query_id, [ScoredDoc(query.query_id, h.doc_id, float(s))
                                     for h, s in zip(hits, scores, strict=True)])

    def _weights(self, items: list[tuple[str, str]]) -> Any:
        """Float SPLADE weights of (doc id, text) pairs, as rows of a CSR matrix; encoded once and kept."""
        from scipy import sparse

        cache = self._encoded
        missing = [item for item in dict.fromkeys(items) if item not in cache]
        if missing:
            stored = self.index.splade_impacts(self.model)  # encode as the stored documents were
            windows = document_windows(stored.meta) if stored is not None else None
            encoded = self.encoder.encode_docs([text for _, text in missing], windows=windows)
            for position, item in enumerate(missing):
                cache[item] = encoded[position]
        rows = [cache[item] for item in items]
        for item in items:
            cache.move_to_end(item)
        while len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
        return sparse.vstack(rows, format="csr").astype(np.float32)


register_keyword_stage("splade", Splade)
