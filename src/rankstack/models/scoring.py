"""What a cross-encoder reranking stage scores with: a ``PairScorer``, which scores one query's candidate
texts and says how many inputs it had to cut to its window. A split cross-encoder's ``SplitScorer``
(``rankstack.models.split``) is one; ``CrossEncoderScorer`` makes a sentence-transformers CrossEncoder one.

Importing this module does not import torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rankstack.models.encoder import precision_context
from rankstack.models.hardware import Runtime

# more than any tokenizer adds around a text or a pair ([CLS] ... [SEP] ... [SEP], </s>, a leading "▁")
_ADDED_TOKENS_BOUND = 8


class PairScorer(Protocol):
    """Scores (query, text) pairs for a reranking stage."""

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer."""

    @property
    def max_seq_length(self) -> int:
        """The window, in tokens, that one input is cut to."""

    def score(self, query: str, texts: list[str]) -> tuple[list[float], int]:
        """A score for each of ``texts`` against ``query``, and how many inputs were cut to fit the window."""

    def precompute(self, index: Any, progress: Any = None, store: Path | None = None) -> bool:
        """Reads ``index``'s documents ahead of any query (an index-time step), keeping what it reads in
        ``store`` when given; False when this scorer has nothing to read ahead."""


def count_truncated(tokenizer: Any, texts: list[str], limit: int, pairs_with: list[str] | None = None) -> int:
    """How many of ``texts`` (or of the pairs ``(texts[i], pairs_with[i])``, tokenized as the model reads
    them, with the pair's separator) exceed ``limit`` tokens. This runs on every reranked batch, so most
    inputs are decided without tokenizing them a second time: no tokenizer makes more tokens than a text
    has bytes (plus the few it adds), and none makes fewer than it has whitespace-separated words."""
    seconds = pairs_with if pairs_with is not None else [""] * len(texts)
    over, unsure = 0, []
    for i, (first, second) in enumerate(zip(texts, seconds, strict=True)):
        if len(first.encode("utf-8")) + len(second.encode("utf-8")) + _ADDED_TOKENS_BOUND <= limit:
            continue
        if len(first.split()) + len(second.split()) > limit:
            over += 1
        else:
            unsure.append(i)
    if unsure:
        firsts = [texts[i] for i in unsure]
        encoded = tokenizer(firsts, [seconds[i] for i in unsure], truncation=False, verbose=False) \
            if pairs_with is not None else tokenizer(firsts, truncation=False, verbose=False)
        over += sum(1 for ids in encoded["input_ids"] if len(ids) > limit)
    return over


class CrossEncoderScorer:
    """A sentence-transformers CrossEncoder as a ``PairScorer``: each pair is read whole, on ``runtime``
    (``models.hardware.Runtime``: the model was already moved to its device and backend)."""

    def __init__(self, model: Any, runtime: Runtime, batch_size: int) -> None:
        self.model = model
        self.runtime = runtime
        self.precision = runtime.label
        self.batch_size = batch_size

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def max_seq_length(self) -> int:
        return self.model.max_seq_length

    def modules(self) -> Any:
        """The wrapped model's modules (to see, say, that it was quantised)."""
        return self.model.modules()

    def precompute(self, index: Any, progress: Any = None, store: Path | None = None) -> bool:
        return False  # every pair is read whole, at query time: nothing to read ahead

    def score(self, query: str, texts: list[str]) -> tuple[list[float], int]:
        truncated = count_truncated(self.tokenizer, [query] * len(texts), self.max_seq_length, pairs_with=texts)
        batch_size = self.batch_size
        if self.runtime.backend == "onnx":
            from rankstack.models.onnx_backend import texts_per_batch

            batch_size = texts_per_batch(self.runtime.precision, batch_size)

        def predict(pairs: list[tuple[str, str]]) -> Any:
            with precision_context(self.runtime.precision, self.runtime.device):
                scores = self.model.predict(pairs, batch_size=batch_size, show_progress_bar=False,
                                            convert_to_numpy=True)
            return np.asarray(scores, dtype=np.float32).reshape(len(pairs), -1)[:, -1]

        pairs = [(query, t) for t in texts]
        if self.runtime.backend == "onnx":
            from rankstack.models.onnx_backend import in_parallel

            return [float(s) for s in in_parallel(predict, pairs, [len(t) for t in texts], batch_size)], \
                truncated
        return predict(pairs).tolist(), truncated
