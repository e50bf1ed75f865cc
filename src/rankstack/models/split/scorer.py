"""Serving a split cross-encoder: ``SplitScorer`` reads documents through the split layers once (on first
sight, or for the whole collection with ``precompute``), keeps their states in a shared cache and, with a
store folder, in a states file, and scores each query through the joint layers only."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from rankstack.models.split.model import SplitCrossEncoder
from rankstack.models.split.state_cache import shared_cache

logger = logging.getLogger(__name__)


class SplitScorer:
    """Scores (query, documents) with a split cross-encoder and a document-state cache."""

    def __init__(self, model: SplitCrossEncoder, precision: str, batch_size: int, cache_mb: int) -> None:
        self.model = model.eval()
        self.precision = precision
        self.batch_size = batch_size
        # states computed in bf16 differ from fp32 ones: each precision has its cache and file
        self.fingerprint = f"{model.fingerprint()}-{precision}"
        self.cache = shared_cache(self.fingerprint, cache_mb * 2**20)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def max_seq_length(self) -> int:
        return self.model.layout.window

    def _precision(self) -> Any:
        from rankstack.models.encoder import precision_context

        return precision_context(self.precision)

    def precompute(self, index: Any, progress: Any = None, store: Path | None = None) -> bool:
        """Read every document of ``index`` through the split layers now (an index-time step). With a
        ``store`` folder, states saved there for this very model are loaded first, only documents new
        or edited since are read, and the file is rewritten when any were. Returns True (``PairScorer``:
        there was something to read ahead)."""
        path = store / f"{self.fingerprint}.npz" if store else None
        if path is not None and path.is_file():
            logger.info("loaded %d documents' states from %s", self.cache.load(path), path)
        computed_before = self.cache.computed
        doc_ids = list(index.view().doc_positions)
        advance = progress(f"precomputing {len(doc_ids):,} documents' lower layers", len(doc_ids)) \
            if progress else None
        chunk = self.batch_size * 8
        keys: set[bytes] = set()  # this collection's documents: the shared cache may hold others too
        with torch.inference_mode(), self._precision():
            for start in range(0, len(doc_ids), chunk):
                ids = doc_ids[start:start + chunk]
                docs = index.view().get_docs(ids)
                texts = [docs[d].contents for d in ids if d in docs]
                text_keys = [self.cache.key(t) for t in texts]
                keys.update(text_keys)
                self.cache.states(self.model, texts, self.batch_size, text_keys)
                if advance:
                    advance(len(ids))
        if path is not None and self.cache.computed > computed_before:
            self.cache.save(path, keys)
        kept = self.cache.count(keys)
        if kept < len(keys):
            logger.warning("precomputed states of %d documents fill the %d MiB cache; %d were dropped again (raise "
                           "cache_mb to keep them all)", len(keys), self.cache.max_bytes // 2**20, len(keys) - kept)
        return True

    def score(self, query: str, texts: list[str]) -> tuple[list[float], int]:
        """Scores for ``texts`` and how many inputs (documents, or the query) were cut to fit the window."""
        if not texts:
            return [], 0
        with torch.inference_mode(), self._precision():
            entries = self.cache.states(self.model, texts, self.batch_size)
            query_ids, query_cut = self.model.fit_query(query)
            query_states = self.model.query_states_of(query_ids)
            scores = self.model.score_states(query_states, entries, self.batch_size)
        return scores, len(texts) if query_cut else sum(entry.cut for entry in entries)
