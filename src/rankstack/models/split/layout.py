"""How a split cross-encoder lays out one input, its saved configuration, and what it keeps of a document.

The layout of one input, as both the joint training path and the split inference path see it::

    [CLS] query [SEP] | document [SEP]
    positions 0 .. len(query)-1 | query_tokens .. query_tokens+len(document)-1

Documents start at a fixed position (``query_tokens``) rather than right after the query, so their
lower-layer states do not depend on which query comes with them. Queries are cut to ``query_tokens``,
documents to ``document_tokens``; each has its own room, so a long query does not shorten documents.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from rankstack.errors import RankstackError
from rankstack.models.loading import SPLIT_CONFIG


@dataclass(frozen=True)
class SplitLayout:
    """``local_layers`` lower layers read each segment alone; a query takes up to ``query_tokens``
    tokens ([CLS] and [SEP] included), a document up to ``document_tokens`` (its [SEP] included).

    The defaults fit short claims, like SciFact's, and documents read as a 256-token cross-encoder reads
    them after a typical query.

    ``prune`` drops a document's stopwords and punctuation after the split layers (they have read their
    neighbours by then): the joint layers, which run for every query, read fewer tokens, and stored
    states shrink as much. "no" and "not" are kept: a claim's negation decides its relevance.

    ``query_reads_document`` lets the query's tokens attend to the document's in the split layers too
    (the document's still attend to the document only); each document then also keeps the attention
    keys and values of its split layers, unpruned, for the query to read."""

    local_layers: int
    query_tokens: int = 64
    document_tokens: int = 224
    prune: bool = False
    query_reads_document: bool = False

    def __post_init__(self) -> None:
        if self.local_layers < 1:
            raise RankstackError(f"a split cross-encoder needs at least one split layer, not {self.local_layers}")
        if self.query_tokens < 3 or self.document_tokens < 2:
            raise RankstackError(f"a query needs at least 3 tokens and a document 2 ([CLS] and [SEP] take a place); "
                                 f"got query_tokens={self.query_tokens}, document_tokens={self.document_tokens}")

    @property
    def window(self) -> int:
        return self.query_tokens + self.document_tokens


def read_layout(location: str) -> SplitLayout:
    """The layout saved with a split cross-encoder (its ``rankstack_split.json``)."""
    config = json.loads((Path(location) / SPLIT_CONFIG).read_text(encoding="utf-8"))
    return SplitLayout(**config)


def write_layout(output: str, layout: SplitLayout) -> None:
    """Saves ``layout`` in the model directory ``output``; its presence marks a split cross-encoder."""
    (Path(output) / SPLIT_CONFIG).write_text(json.dumps(asdict(layout), indent=2) + "\n", encoding="utf-8")


def prunable_token_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of whole-word English stopwords (Lucene's list, less "no" and "not") and of punctuation."""
    import string

    from rankstack.text import LUCENE_ENGLISH_STOP_WORDS

    words = LUCENE_ENGLISH_STOP_WORDS - {"no", "not"}
    vocabulary = tokenizer.get_vocab().items()
    return frozenset(i for t, i in vocabulary if t in words or (len(t) == 1 and t in string.punctuation))


class DocumentEntry(NamedTuple):
    """What is kept of one document: its split layers' output (pruned tokens dropped), whether it was cut
    to the window and, for a query that reads the document, the attention keys and values of each split
    layer, unpruned (``[2 x local_layers, tokens, hidden]``: layer 0's keys, its values, layer 1's keys,
    ...). Stored rather than recomputed: projecting every document token for every query would add a
    share of the joint layers' work to every query."""

    states: torch.Tensor
    cut: bool
    keys_values: torch.Tensor | None = None

