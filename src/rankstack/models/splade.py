"""Learned sparse (SPLADE) encoders: a sentence-transformers ``SparseEncoder`` turned into term weights.

A SPLADE model maps a text to one weight per vocabulary entry, ``max over tokens of log(1 + relu(MLM
logit))``: most are zero, so documents are stored as postings (``rankstack.index.splade``) and a query
scores them by a sparse dot product. Queries are encoded by the model, or, for a model trained with
``--inference-free-queries``, looked up in a static table of token weights (no transformer at query time).

A document longer than the model's window is truncated by default. With ``document_windows=N`` it is
encoded in up to N consecutive windows and its weights are the maximum over them: the max-pooling SPLADE
applies over the tokens of one window, carried over the document (the "max over segment representations"
of Nguyen, MacAvaney and Yates, "Adapting Learned Sparse Retrieval for Long Documents", 2023). On SciFact's
dev queries it measured worse than truncation (0.7225 with two windows against 0.7457,
``benchmarks/splade_windows.py``): abstracts say what they are about first, and the later windows add
terms that match off-topic queries. It is kept for collections whose documents do not.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rankstack._bounded import BoundedCache
from rankstack._optional import require
from rankstack.errors import ModelLoadError
from rankstack.models.encoder import TruncationReport
from rankstack.models.loading import canonical_model_id, describe_load_failure, resolve_model_location
from rankstack.models.splade_pooling import decoder_of, is_max_relu_pooling, max_logits

logger = logging.getLogger(__name__)

SPARSE_HEAD_MODULES = ("SpladePooling", "SparseStaticEmbedding")
# Windows per document, at most: 1 truncates at the model's window (measured best on SciFact, see above).
DEFAULT_DOCUMENT_WINDOWS = 1


def sparse_head_problem(location: str) -> str | None:
    """Why the model directory at ``location`` is not a SPLADE model, or None when it is one."""
    path = Path(location)
    if not path.is_dir():
        return None  # a hub id: the loader says what is wrong with it
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return f"{location} has no modules.json, so it is not a sentence-transformers SparseEncoder directory"
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{modules_file} is not valid JSON"
    types = " ".join(str(m.get("type", "")) for m in modules if isinstance(m, dict))
    # A Router (inference-free queries) names its modules in router_config.json.
    text = types + " " + " ".join(p.read_text(encoding="utf-8", errors="replace")
                                  for p in [*path.glob("router_config.json"), *path.glob("*/config.json")]
                                  if p.stat().st_size < 1_000_000)
    if not any(name in text for name in SPARSE_HEAD_MODULES):
        return (f"{location} has no sparse head (no SpladePooling module in its modules.json: "
                f"{types.strip() or 'no modules'}); it looks like a bi-encoder or cross-encoder")
    return None


class SpladeEncoder:
    """Encodes queries and documents into sparse term weights with a SPLADE ``SparseEncoder``.

    ``encode_docs``/``encode_queries`` return a ``scipy.sparse.csr_matrix`` (one row per text, one column
    per vocabulary entry, float32). ``vocab`` is the tokenizer's vocabulary in id order and
    ``vocab_sha256`` its checksum, recorded with an index's impacts so that a model with another
    vocabulary is refused instead of matching wrong terms.
    """

    def __init__(self, model: str, batch_size: int = 16, device: str = "cpu", loaded: Any = None,
                 document_windows: int = DEFAULT_DOCUMENT_WINDOWS) -> None:
        if document_windows < 1:
            raise ValueError(f"document_windows must be at least 1 (got {document_windows})")
        sentence_transformers = require("sentence_transformers", "dense", "SPLADE retrieval")
        self._torch = require("torch", "dense", "SPLADE retrieval")
        self.model_id = canonical_model_id(model)
        if loaded is not None:  # a model in memory (training scores it on the dev queries)
            self._model = loaded
        else:
            location = resolve_model_location(model)
            problem = sparse_head_problem(location)
            if problem is not None:
                raise ModelLoadError(f"{problem}. splade(model=...) needs a SPLADE model: train one with "
                                     f"rankstack train sparse DATASET -o DIR, then use splade(model=DIR) "
                                     f"(a bi-encoder goes in dense(model=...))")
            require("transformers", "dense", "SPLADE retrieval").utils.logging.disable_progress_bar()
            try:
                self._model = sentence_transformers.SparseEncoder(location, device=device)
            except Exception as error:  # noqa: BLE001 - any loader failure becomes one clear message
                raise describe_load_failure(model, error) from None
        self._model.eval()
        self.batch_size = batch_size
        tokenizer = self._model.tokenizer
        vocab = tokenizer.get_vocab()
        self.vocab: list[str] = [""] * (max(vocab.values()) + 1 if vocab else 0)
        for token, token_id in vocab.items():
            self.vocab[token_id] = token
        self.dimension = int(self._model.get_embedding_dimension() or len(self.vocab))
        self.vocab_sha256 = hashlib.sha256("\n".join(self.vocab).encode("utf-8")).hexdigest()
        self.max_tokens = int(self._model.max_seq_length or 512)
        self.document_windows = document_windows
        self.inference_free_queries = type(self._model[0]).__name__ == "Router"
        self._fast = self._plain_splade()
        # A model loaded here (not one in training) stops its transformer before the vocabulary decoder, for
        # good: the pooling then computes each text's logits over its own tokens (models.splade_pooling).
        self._decoder = decoder_of(self._model[0]) if self._fast and loaded is None else None
        if self._decoder is not None:
            self._decoder.forward = lambda hidden: hidden

    def _plain_splade(self) -> bool:
        """Whether the model is [MLM transformer, max-pooling SpladePooling with relu]: then encoding pools
        the logits itself (max first, then log1p(relu): the same numbers, without transforming every
        token's logits)."""
        modules = list(self._model)
        return len(modules) == 2 and is_max_relu_pooling(modules[1])

    def config(self) -> dict[str, Any]:
        return {"model": self.model_id, "vocab_size": len(self.vocab), "vocab_sha256": self.vocab_sha256,
                "max_tokens": self.max_tokens, "inference_free_queries": self.inference_free_queries,
                "document_windows": self.document_windows}

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._model.tokenizer(list(texts), add_special_tokens=True, truncation=False,
                                                          verbose=False)["input_ids"]]

    def encode_queries(self, texts: Sequence[str]) -> Any:
        return self._encode(list(texts), query=True)

    def encode_docs(self, texts: Sequence[str], report: TruncationReport | None = None,
                    windows: int | None = None) -> Any:
        """One row per text; a text longer than the window is encoded in up to ``windows`` windows (the
        encoder's ``document_windows`` when None) whose weights are max-pooled; beyond them it is cut."""
        windows = self.document_windows if windows is None else windows
        texts = list(texts)
        if windows == 1:
            if report is not None:
                self._count_truncated(self.token_lengths(texts), self.max_tokens, report)
            return self._encode(texts, query=False)
        spans, owners, lengths = self.window_spans(texts, windows)
        if report is not None:
            self._count_truncated(lengths, windows * self.window_budget() + self._specials(), report)
        encoded = self._encode(spans, query=False)
        if len(spans) == len(texts):
            return encoded
        return max_per_owner(encoded, np.asarray(owners), len(texts))

    @staticmethod
    def _count_truncated(lengths: list[int], limit: int, report: TruncationReport) -> None:
        report.texts += len(lengths)
        report.truncated += sum(1 for n in lengths if n > limit)
        report.longest_tokens = max([report.longest_tokens, *lengths])

    def _specials(self) -> int:
        return int(self._model.tokenizer.num_special_tokens_to_add(pair=False))

    def window_budget(self) -> int:
        return max(1, self.max_tokens - self._specials())

    def window_spans(self, texts: list[str], windows: int) -> tuple[list[str], list[int], list[int]]:
        """The character spans of each text's consecutive token windows (at most ``windows`` per text), the
        text each belongs to, and each text's length in tokens (special tokens included)."""
        budget, specials = self.window_budget(), self._specials()
        tokens = self._model.tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False,
                                       return_offsets_mapping=True)["offset_mapping"]
        spans: list[str] = []
        owners: list[int] = []
        lengths: list[int] = []
        for position, (text, offsets) in enumerate(zip(texts, tokens, strict=True)):
            lengths.append(len(offsets) + specials)
            for first in range(0, max(len(offsets), 1), budget)[:windows]:
                window = offsets[first:first + budget]
                spans.append(text[window[0][0]:window[-1][1]] if window else text)
                owners.append(position)
        return spans, owners, lengths

    def _encode(self, texts: list[str], query: bool) -> Any:
        sparse = require("scipy", "dense", "SPLADE retrieval").sparse
        if not texts:
            return sparse.csr_matrix((0, self.dimension), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths share a batch
        rows: list[Any] = [None] * len(texts)
        torch = self._torch
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                chosen = order[start:start + self.batch_size]
                batch = [texts[i] for i in chosen]
                if self._fast:
                    weights = self._pool(batch)
                else:
                    encode = self._model.encode_query if query else self._model.encode_document
                    weights = encode(batch, convert_to_tensor=True, show_progress_bar=False).to_dense()
                matrix = sparse.csr_matrix(weights.float().cpu().numpy())
                for position, i in enumerate(chosen):
                    rows[i] = matrix[position]
        return sparse.vstack(rows, format="csr").astype(np.float32)

    def _pool(self, batch: list[str]) -> Any:
        torch = self._torch
        features = self._model.preprocess(batch)
        features = {k: v.to(self._model.device) if hasattr(v, "to") else v for k, v in features.items()}
        if self._decoder is not None:
            hidden = self._model[0](features)["token_embeddings"]
            best, _ = max_logits(hidden, self._decoder.weight, self._decoder.bias, features["attention_mask"])
            return torch.log1p(torch.relu(best))
        logits = self._model[0](features)["token_embeddings"]
        mask = features["attention_mask"].unsqueeze(-1).bool()
        best = logits.masked_fill(~mask, float("-inf")).amax(dim=1)
        return torch.log1p(torch.relu(best))

    def decode(self, row: Any, top_k: int = 20) -> list[tuple[str, float]]:
        """The ``top_k`` heaviest terms of one encoded row (a 1 x vocab sparse matrix)."""
        row = row.tocsr()
        order = np.argsort(-row.data, kind="stable")[:top_k]
        return [(self.vocab[row.indices[i]], float(row.data[i])) for i in order]


def max_per_owner(rows: Any, owners: np.ndarray, count: int) -> Any:
    """Row ``i`` of the result is the element-wise maximum of the ``rows`` whose owner is ``i`` (weights
    are never negative, so the maximum of the stored entries is the maximum)."""
    from scipy import sparse

    coo = rows.tocoo()
    owner_rows = owners[coo.row]
    order = np.lexsort((-coo.data, coo.col, owner_rows))  # per (owner, term) the largest weight first
    owner_rows, columns, data = owner_rows[order], coo.col[order], coo.data[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (owner_rows[1:] != owner_rows[:-1]) | (columns[1:] != columns[:-1])
    return sparse.csr_matrix((data[first], (owner_rows[first], columns[first])), shape=(count, rows.shape[1]),
                             dtype=np.float32)


MAX_LOADED_SPLADE = 4
_SPLADE_ENCODERS: BoundedCache[str, SpladeEncoder] = BoundedCache(MAX_LOADED_SPLADE)


def load_splade(model: str) -> SpladeEncoder:
    """A process-wide, bounded cache: a SPLADE model is loaded once however many stages use it."""
    return _SPLADE_ENCODERS.get_or_create(canonical_model_id(model), lambda: SpladeEncoder(model))
