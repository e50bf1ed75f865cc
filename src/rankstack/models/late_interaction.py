"""Late-interaction (ColBERT-style) encoders: one vector per token, scored by MaxSim.

Built on sentence-transformers' ``MultiVectorEncoder``: a transformer, a token projection to a small
dimension, a scoring mask (query augmentation with mask tokens, document punctuation dropped) and L2
normalisation. A saved model is a sentence-transformers directory whose
``config_sentence_transformers.json`` says ``"model_type": "MultiVectorEncoder"``; that is how a
late-interaction model is told from a bi-encoder.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rankstack._bounded import BoundedCache
from rankstack._optional import require
from rankstack.errors import ModelLoadError, PipelineError
from rankstack.models.loading import describe_load_failure, resolve_model_location

QUERY_TOKENS = 32  # ColBERT's query width: short queries are padded with [MASK] tokens (query augmentation)
DOCUMENT_TOKENS = 180  # SciFact abstracts run longer; the cut keeps the index small (see docs/late_interaction.md)
DEFAULT_DIMENSION = 64  # 64 int8 components: 64 bytes per stored token


def is_late_interaction_model(location: str | Path) -> bool:
    """Whether the directory holds a saved MultiVectorEncoder (a late-interaction model)."""
    config = Path(location) / "config_sentence_transformers.json"
    if not config.is_file():
        return False
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("model_type") == "MultiVectorEncoder")
    except (OSError, json.JSONDecodeError):
        return False


def refuse_late_interaction(model: str, stage: str) -> None:
    """Refuse a late-interaction model given to a single-vector stage, naming the stage to use instead."""
    if Path(model).expanduser().is_dir() and is_late_interaction_model(Path(model).expanduser()):
        raise PipelineError(f"{stage}: {model} is a late-interaction (multi-vector) model, which gives one vector "
                            f"per token, not one per text; use it with colbert(model={model}), e.g. "
                            f"bm25%100>>colbert(model={model})")


def build_late_interaction_model(base: str, dimension: int = DEFAULT_DIMENSION, query_tokens: int = QUERY_TOKENS,
                                 document_tokens: int = DOCUMENT_TOKENS, device: str = "cpu") -> Any:
    """A fresh ColBERT from a transformer checkpoint: a bias-free token projection to ``dimension`` (random,
    seeded by the caller), query augmentation with the tokenizer's mask token up to ``query_tokens``,
    punctuation left out of documents' scoring, unit-length token vectors."""
    require("sentence_transformers", "train", "Late interaction")
    torch = require("torch", "train", "Late interaction")
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    location = resolve_model_location(base)
    transformer = Transformer(location, query_length=query_tokens, document_length=document_tokens,
                              query_expansion={"strategy": "fixed", "attend": False, "length": query_tokens})
    projection = Dense(in_features=transformer.get_embedding_dimension(), out_features=dimension, bias=False,
                       activation_function=torch.nn.Identity(), module_input_name="token_embeddings")
    modules = [transformer, projection, MultiVectorMask(skiplist_words=list(string.punctuation)),
               Normalize(module_input_name="token_embeddings")]
    return MultiVectorEncoder(modules=modules, device=device)


class LateInteractionEncoder:
    """Token vectors of queries and documents from a saved late-interaction model (torch, fp32)."""

    def __init__(self, model: str, batch_size: int = 32, device: str = "cpu") -> None:
        require("sentence_transformers", "dense", "Late interaction")
        self.torch = require("torch", "dense", "Late interaction")
        location = resolve_model_location(model)
        self.model_id = model_key(model)
        if not is_late_interaction_model(location):
            raise ModelLoadError(
                f"colbert: {model} is not a late-interaction model (its config_sentence_transformers.json does not "
                f"say model_type MultiVectorEncoder); for a bi-encoder use dense(model={model}), or train a "
                f"late-interaction model with: rankstack train late-interaction DATASET -o DIR")
        from sentence_transformers import MultiVectorEncoder

        require("transformers", "dense", "Late interaction").utils.logging.disable_progress_bar()
        try:
            self._model = MultiVectorEncoder(location, device=device)
        except Exception as error:  # noqa: BLE001 - any loader failure becomes one clear message
            raise describe_load_failure(model, error) from None
        self._model.eval()
        self.batch_size = batch_size
        self.dimension = int(self._model.get_embedding_dimension() or 0)
        self.tokenizer_sha256 = _tokenizer_digest(self._model.tokenizer)
        length = getattr(self._model[0], "document_length", None) or self._model.max_seq_length
        self.document_tokens = int(length) if length else 0

    def encode_queries(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._encode(texts, "query")

    def encode_docs(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self._encode(texts, "document")

    def _encode(self, texts: Sequence[str], task: str) -> list[np.ndarray]:
        if not texts:
            return []
        encode = self._model.encode_query if task == "query" else self._model.encode_document
        with self.torch.inference_mode():
            vectors = encode(list(texts), batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return [np.asarray(v, dtype=np.float32).reshape(-1, self.dimension) for v in vectors]

    def config(self) -> dict[str, Any]:
        return {"model": self.model_id, "dimension": self.dimension, "tokenizer_sha256": self.tokenizer_sha256,
                "document_tokens": self.document_tokens}


def _tokenizer_digest(tokenizer: Any) -> str:
    """A fingerprint of the vocabulary and of lower-casing: token vectors only match a model that splits
    text into the same tokens."""
    vocabulary = sorted(tokenizer.get_vocab().items())
    lower = bool(getattr(tokenizer, "do_lower_case", False))
    return hashlib.sha256(json.dumps([vocabulary, lower]).encode("utf-8")).hexdigest()


def model_key(model: str) -> str:
    """The name token vectors are stored under: a local directory's absolute path, else the id as given."""
    local = Path(model).expanduser()
    return str(local.resolve()) if local.is_dir() else model


MAX_LOADED = 2
_LOADED: BoundedCache[tuple[str, str], LateInteractionEncoder] = BoundedCache(MAX_LOADED)


def load_late_interaction(model: str, device: str = "cpu") -> LateInteractionEncoder:
    """A process-wide, bounded cache of loaded late-interaction encoders."""
    return _LOADED.get_or_create((model_key(model), device), lambda: LateInteractionEncoder(model, device=device))
