"""Cross-encoders whose lower layers read the query and the document apart, so the document's side of
those layers can be computed once, before any query (PreTTR, MacAvaney et al., 2020; the survey's
"precomputing term representations"). At query time only the query's lower layers and the upper
(joint) layers run: with 3 of 6 layers split, about half the transformer's work moves off the query path.

The layout of one input, as both the joint training path and the split inference path see it::

    [CLS] query [SEP] | document [SEP]
    positions 0 .. len(query)-1 | query_tokens .. query_tokens+len(document)-1

Documents start at a fixed position (``query_tokens``) rather than right after the query, so their
lower-layer states do not depend on which query comes with them. Queries are cut to ``query_tokens``,
documents to ``document_tokens``; each has its own room, so a long query does not shorten documents.

With ``query_reads_document`` the split is one-sided: in the lower layers the document still reads only
itself (so its side is still precomputed), but the query reads the document too, as in the unsplit
model. The query's rows are few, so this costs little at query time, and the query keeps the lower
layers' view of the document that a symmetric split takes away.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from rankstack.errors import RankstackError
from rankstack.models.cross_heads import SegmentSimilarity, segment_head_folder
from rankstack.models.loading import SPLIT_CONFIG

_HEAD_FOLDER = "1_SegmentSimilarity"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitLayout:
    """``local_layers`` lower layers read each segment alone; a query takes up to ``query_tokens``
    tokens ([CLS] and [SEP] included), a document up to ``document_tokens`` (its [SEP] included).

    The defaults fit SciFact-like claims (median 21 tokens, longest 79) and documents read as a 256-token
    cross-encoder reads them after a typical query.

    ``prune`` drops a document's stopwords and punctuation after the split layers (they have read their
    neighbours by then): the joint layers, which run for every query, read about 30% fewer tokens, and
    stored states shrink as much. "no" and "not" are kept: a claim's negation decides its relevance.

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
    ...). Stored rather than recomputed: projecting every document token for every query would cost a
    tenth of the joint layers' work."""

    states: torch.Tensor
    cut: bool
    keys_values: torch.Tensor | None = None


class SplitCrossEncoder(torch.nn.Module):
    """A BERT-style encoder plus a segment-similarity head, with the lower layers split by segment."""

    def __init__(self, encoder: Any, tokenizer: Any, head: SegmentSimilarity, layout: SplitLayout) -> None:
        super().__init__()
        layers = getattr(getattr(encoder, "encoder", None), "layer", None)
        if layers is None or not hasattr(encoder, "embeddings"):
            raise RankstackError(f"split cross-encoders support BERT-style encoders, not {type(encoder).__name__}")
        if layout.local_layers >= len(layers):
            raise RankstackError(f"{layout.local_layers} split layers leave none of the {len(layers)} to read "
                                 f"query and document together; split fewer")
        if layout.window > encoder.config.max_position_embeddings:
            raise RankstackError(f"window {layout.window} is longer than the model's "
                                 f"{encoder.config.max_position_embeddings} positions")
        # the masks below are boolean (True = attend), as SDPA reads them; eager attention would add them
        encoder.set_attn_implementation("sdpa")
        self.encoder, self.tokenizer, self.head, self.layout = encoder, tokenizer, head, layout
        self.sep_id = int(tokenizer.sep_token_id)
        self._prunable = prunable_token_ids(tokenizer) if layout.prune else frozenset()
        self._pieces = (frozenset(i for t, i in tokenizer.get_vocab().items() if t.startswith("##"))
                        if layout.prune else frozenset())

    # -- loading and saving ------------------------------------------------------------------------

    @classmethod
    def from_cross_encoder(cls, model: Any, layout: SplitLayout) -> SplitCrossEncoder:
        """Split a trained segment-similarity CrossEncoder (``rankstack train cross-encoder``); copies it."""
        import copy

        if not isinstance(model[1], SegmentSimilarity):
            raise RankstackError("only cross-encoders with a segment-similarity head (rankstack train cross-encoder) "
                                 "can be split: their score reads each segment's tokens, not one [CLS] vector")
        encoder = copy.deepcopy(model[0].model)
        return cls(encoder, model.tokenizer, copy.deepcopy(model[1]), layout)

    @classmethod
    def load(cls, location: str) -> SplitCrossEncoder:
        from transformers import AutoModel, AutoTokenizer

        config = json.loads((Path(location) / SPLIT_CONFIG).read_text(encoding="utf-8"))
        layout = SplitLayout(**config)
        folder = segment_head_folder(location) or _HEAD_FOLDER
        encoder = AutoModel.from_pretrained(location, attn_implementation="sdpa").eval()
        return cls(encoder, AutoTokenizer.from_pretrained(location), SegmentSimilarity.load(location, subfolder=folder),
                   layout)

    def save(self, output: str) -> None:
        Path(output).mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(output)
        self.tokenizer.save_pretrained(output)
        head = Path(output) / _HEAD_FOLDER
        head.mkdir(exist_ok=True)
        self.head.save(str(head))
        modules = [{"idx": 0, "name": "0", "path": "", "type": "transformers.AutoModel"},
                   {"idx": 1, "name": "1", "path": _HEAD_FOLDER,
                    "type": f"{SegmentSimilarity.__module__}.{SegmentSimilarity.__qualname__}"}]
        (Path(output) / "modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
        (Path(output) / SPLIT_CONFIG).write_text(json.dumps(asdict(self.layout), indent=2) + "\n", encoding="utf-8")

    # -- tokenization -------------------------------------------------------------------------------

    def fit_query(self, query: str) -> tuple[list[int], bool]:
        """The query's tokens ([CLS] ... [SEP]) within ``query_tokens``, and whether it was cut: one
        tokenization gives both."""
        ids = list(self.tokenizer(query, verbose=False)["input_ids"])
        room = self.layout.query_tokens
        return (ids if len(ids) <= room else [*ids[:room - 1], ids[-1]]), len(ids) > room

    def fit_documents(self, documents: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Each document's tokens plus the closing [SEP] within ``document_tokens``, and whether it was cut."""
        room = self.layout.document_tokens - 1
        encoded = self.tokenizer(documents, add_special_tokens=False, verbose=False)["input_ids"]
        return [[*ids[:room], self.sep_id] for ids in encoded], [len(ids) > room for ids in encoded]

    def query_ids(self, query: str) -> list[int]:
        return self.fit_query(query)[0]

    def document_ids(self, documents: list[str]) -> list[list[int]]:
        return self.fit_documents(documents)[0]

    def kept(self, ids: list[int]) -> list[bool]:
        """Which of a document's tokens the joint layers read: all, or (``prune``) all but stopwords and
        punctuation. A stopword followed by a word piece ("an" of "anion") is part of a word, and kept."""
        if not self._prunable:
            return [True] * len(ids)
        pieces = self._pieces
        return [i not in self._prunable or (n + 1 < len(ids) and ids[n + 1] in pieces) for n, i in enumerate(ids)]

    def _segment(self, ids: list[list[int]], first_position: int, token_type: int) -> dict[str, torch.Tensor]:
        longest = max(len(i) for i in ids)
        input_ids = torch.zeros(len(ids), longest, dtype=torch.long)
        valid = torch.zeros(len(ids), longest, dtype=torch.bool)
        for row, tokens in enumerate(ids):
            input_ids[row, :len(tokens)] = torch.tensor(tokens)
            valid[row, :len(tokens)] = True
        positions = torch.arange(first_position, first_position + longest).expand(len(ids), -1)
        return {"input_ids": input_ids, "valid": valid, "positions": positions,
                "token_type_ids": torch.full_like(input_ids, token_type)}

    # -- the two paths ------------------------------------------------------------------------------

    def _layers(self, hidden: torch.Tensor, mask: torch.Tensor, layers: Any) -> torch.Tensor:
        for layer in layers:
            out = layer(hidden, attention_mask=mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def _embedded(self, segment: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.encoder.embeddings(input_ids=segment["input_ids"], token_type_ids=segment["token_type_ids"],
                                       position_ids=segment["positions"])

    def _lower(self, segment: dict[str, torch.Tensor], inputs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The split layers over one segment alone; ``inputs``, when a list, receives each layer's input."""
        hidden = self._embedded(segment)
        mask = segment["valid"][:, None, None, :]
        for layer in self.encoder.encoder.layer[:self.layout.local_layers]:
            if inputs is not None:
                inputs.append(hidden)
            hidden = self._layers(hidden, mask, [layer])
        return hidden

    def document_states(self, documents: list[str]) -> list[torch.Tensor]:
        """The split layers' output for each document alone: what can be computed before any query."""
        return self.document_states_of(self.document_ids(documents))

    def document_states_of(self, ids: list[list[int]]) -> list[torch.Tensor]:
        return [states for states, _ in self.document_entries_of(ids)]

    def document_entries_of(self, ids: list[list[int]]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Each document's split-layer output (pruned) and, when the query reads the document, the keys
        and values of its split layers (unpruned): everything a query needs of it."""
        inputs: list[torch.Tensor] | None = [] if self.layout.query_reads_document else None
        states = self._lower(self._segment(ids, self.layout.query_tokens, 1), inputs)
        stacked = None
        if inputs:
            projected = []
            for layer, hidden in zip(self.encoder.encoder.layer, inputs, strict=False):
                projected += [layer.attention.self.key(hidden), layer.attention.self.value(hidden)]
            stacked = torch.stack(projected, dim=1)  # [documents, 2 x layers, tokens, hidden]
        entries = []
        for row, tokens in enumerate(ids):
            kept = states[row, :len(tokens)]
            if self._prunable:
                kept = kept[torch.tensor(self.kept(tokens))]
            entries.append((kept, None if stacked is None else stacked[row, :, :len(tokens)]))
        return entries

    def query_states(self, query: str) -> torch.Tensor:
        return self.query_states_of(self.query_ids(query))

    def query_states_of(self, ids: list[int]) -> torch.Tensor:
        """The query's split-layer output; when the query reads the document, that depends on the
        document, so this is the query's embedding (the first split layer's input) instead."""
        segment = self._segment([ids], 0, 0)
        return self._embedded(segment)[0] if self.layout.query_reads_document else self._lower(segment)[0]

    def _query_rows(self, layer: Any, query: torch.Tensor, document_keys: torch.Tensor,
                    document_values: torch.Tensor, document_valid: torch.Tensor) -> torch.Tensor:
        """One BERT layer for the query's rows only, each reading its own query and a document's stored
        keys and values: what the joint path computes for those rows, without the document's rows (which
        read only the document)."""
        attention = layer.attention.self
        rows, heads = query.shape[0], attention.num_attention_heads

        def by_head(x: torch.Tensor) -> torch.Tensor:
            return x.view(rows, x.shape[1], heads, -1).transpose(1, 2)

        keys = torch.cat([attention.key(query).to(document_keys.dtype), document_keys], dim=1)
        values = torch.cat([attention.value(query).to(document_values.dtype), document_values], dim=1)
        mask = torch.cat([torch.ones(rows, query.shape[1], dtype=torch.bool), document_valid], dim=1)
        context = torch.nn.functional.scaled_dot_product_attention(
            by_head(attention.query(query)), by_head(keys), by_head(values), attn_mask=mask[:, None, None, :],
            scale=attention.scaling)
        attended = layer.attention.output(context.transpose(1, 2).reshape(query.shape), query)
        return layer.output(layer.intermediate(attended), attended)

    def _query_read_documents(self, query: torch.Tensor, keys_values: list[torch.Tensor]) -> torch.Tensor:
        """The query's split-layer output next to each document, from its embedding and each document's
        split-layer keys and values: ``[documents, query tokens, hidden]``."""
        longest = max(kv.shape[1] for kv in keys_values)
        # attention reads them in autocast's type: built in it at once (the same numbers as by way of
        # float32, one copy fewer), projection first so that each one's slice is contiguous
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else query.dtype
        document = torch.zeros(2 * self.layout.local_layers, len(keys_values), longest, query.shape[-1], dtype=dtype)
        valid = torch.zeros(len(keys_values), longest, dtype=torch.bool)
        for row, stored in enumerate(keys_values):
            document[:, row, :stored.shape[1]] = stored
            valid[row, :stored.shape[1]] = True
        hidden = query.expand(len(keys_values), -1, -1)
        for number, layer in enumerate(self.encoder.encoder.layer[:self.layout.local_layers]):
            hidden = self._query_rows(layer, hidden, document[2 * number], document[2 * number + 1], valid)
        return hidden

    def upper_scores(self, query: torch.Tensor, documents: list[torch.Tensor],
                     keys_values: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Scores from the query's and each document's split-layer states, through the joint layers.
        When the query reads the document, ``query`` is its embedding and ``keys_values`` holds each
        document's split-layer keys and values."""
        if self.layout.query_reads_document:
            if keys_values is None:
                raise RankstackError("this split model's query reads the document: pass each document's "
                                     "split-layer keys and values (document_entries_of gives them)")
            queries = self._query_read_documents(query, keys_values)
        else:
            queries = query.expand(len(documents), -1, -1)
        query_length = query.shape[0]
        longest = query_length + max(d.shape[0] for d in documents)
        hidden = torch.zeros(len(documents), longest, query.shape[-1], dtype=query.dtype)
        valid = torch.zeros(len(documents), longest, dtype=torch.bool)
        token_types = torch.zeros(len(documents), longest, dtype=torch.long)
        hidden[:, :query_length] = queries
        for row, states in enumerate(documents):
            end = query_length + states.shape[0]
            hidden[row, query_length:end] = states
            valid[row, :end] = True
            token_types[row, query_length:end] = 1
        hidden = self._layers(hidden, valid[:, None, None, :], self.encoder.encoder.layer[self.layout.local_layers:])
        return self._head(hidden, valid, token_types)

    def joint_inputs(self, query: str, documents: list[str]) -> dict[str, torch.Tensor]:
        """One query with its documents as a padded batch, each row ``query | document``: ids, token types,
        split-layout positions, the valid-token mask and ``joint`` (the valid tokens the joint layers read:
        all but pruned ones). The unsplit teacher reads the same rows (with positions counted on from the
        query) when its states are distilled."""
        query_ids, document_ids = self.query_ids(query), self.document_ids(documents)
        length = len(query_ids)
        longest = length + max(len(d) for d in document_ids)
        input_ids = torch.zeros(len(documents), longest, dtype=torch.long)
        token_types, positions = torch.zeros_like(input_ids), torch.zeros_like(input_ids)
        valid = torch.zeros(len(documents), longest, dtype=torch.bool)
        joint = torch.zeros_like(valid)
        for row, tokens in enumerate(document_ids):
            end = length + len(tokens)
            input_ids[row, :length], input_ids[row, length:end] = torch.tensor(query_ids), torch.tensor(tokens)
            token_types[row, length:end] = 1
            valid[row, :end] = True
            joint[row, :length], joint[row, length:end] = True, torch.tensor(self.kept(tokens))
            positions[row, :length] = torch.arange(length)
            positions[row, length:end] = torch.arange(self.layout.query_tokens, self.layout.query_tokens + len(tokens))
        return {"input_ids": input_ids, "token_type_ids": token_types, "positions": positions, "valid": valid,
                "joint": joint}

    def forward(self, inputs: dict[str, torch.Tensor], states: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Joint path (for training) over ``joint_inputs``: one batch, the split layers masked to attend
        within each segment. Scores equal ``upper_scores(query_states(q), document_states(ds))`` up to
        rounding. ``states``, when a list, receives the output of the last split layer and of every joint
        layer (for distilling the teacher's states)."""
        valid, token_types, read = inputs["valid"], inputs["token_type_ids"], inputs["joint"]
        longest = valid.shape[1]
        hidden = self.encoder.embeddings(input_ids=inputs["input_ids"], token_type_ids=token_types,
                                         position_ids=inputs["positions"])
        joint = valid[:, None, None, :].expand(-1, 1, longest, -1)
        segments = token_types.bool()
        within = joint & (segments[:, None, :, None] == segments[:, None, None, :])
        if self.layout.query_reads_document:  # the query's rows read the document too
            within = within | (joint & ~segments[:, None, :, None])
        layers = self.encoder.encoder.layer
        hidden = self._layers(hidden, within, layers[:self.layout.local_layers])
        if states is not None:
            states.append(hidden)
        for layer in layers[self.layout.local_layers:]:  # pruned tokens are masked out from here on
            hidden = self._layers(hidden, read[:, None, None, :], [layer])
            if states is not None:
                states.append(hidden)
        return self._head(hidden, read, token_types)

    def score_states(self, query: torch.Tensor, entries: list[DocumentEntry], batch_size: int) -> list[float]:
        """``upper_scores`` over any number of documents' entries, ``batch_size`` at a time."""
        scores: list[float] = []
        for start in range(0, len(entries), batch_size):
            chunk = entries[start:start + batch_size]
            stored = [e.keys_values for e in chunk] if self.layout.query_reads_document else None
            scores.extend(self.upper_scores(query, [e.states for e in chunk], stored).tolist())  # type: ignore[arg-type]
        return scores

    def predict(self, pairs: list[tuple[str, str]], batch_size: int = 32, **_: Any) -> Any:
        """Scores for (query, document) pairs by the split path, like ``CrossEncoder.predict``: each
        query's documents are read through the split layers and held as a served model holds them
        (float16), so a dev score measures what serving will give."""
        import numpy as np

        self.eval()
        scores = np.zeros(len(pairs), dtype=np.float32)
        by_query: dict[str, list[int]] = {}
        for position, (query, _document) in enumerate(pairs):
            by_query.setdefault(query, []).append(position)
        reader = DocumentStateCache(0)  # holds nothing: states are computed for this call only
        with torch.inference_mode():
            for query, positions in by_query.items():
                entries = reader.states(self, [pairs[i][1] for i in positions], batch_size)
                scores[positions] = self.score_states(self.query_states(query), entries, batch_size)
        return scores

    def fingerprint(self) -> str:
        """A digest of the layout, the tokenizer's vocabulary and settings, and every weight: stored
        document states are only valid for the model that computed them."""
        import hashlib

        digest = hashlib.blake2b(json.dumps(asdict(self.layout), sort_keys=True).encode(), digest_size=16)
        tokenizer = {"class": type(self.tokenizer).__name__, "vocab": sorted(self.tokenizer.get_vocab().items()),
                     "lower": getattr(self.tokenizer, "do_lower_case", None)}
        digest.update(json.dumps(tokenizer).encode())
        for name, tensor in self.state_dict().items():
            if ".pooler." in name:  # unused by the score, and re-initialised at random when a save lacks it
                continue
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def _head(self, hidden: torch.Tensor, valid: torch.Tensor, token_types: torch.Tensor) -> torch.Tensor:
        features = {"token_embeddings": hidden, "attention_mask": valid.long(), "token_type_ids": token_types}
        return self.head(features)["scores"].view(-1).float()


class _InFlight:
    """A document one thread is computing: others wait for ``done`` and take ``entry`` (None if it failed)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.entry: DocumentEntry | None = None


class DocumentStateCache:
    """Documents' split-layer states, kept in float16 and keyed by a digest of their text (so an edited
    document is never served stale states), the least recently used dropped once over ``max_bytes``.
    Also remembers which documents were cut to the window, for the truncation warning."""

    def __init__(self, max_bytes: int) -> None:
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self.bytes = 0
        self.computed = 0  # documents read through the model, not found here
        self._states: OrderedDict[bytes, DocumentEntry] = OrderedDict()
        self.lock = threading.RLock()  # pipelines on several threads may share one cache (shared_cache)
        self._in_flight: dict[bytes, _InFlight] = {}  # documents some thread is computing now

    def __len__(self) -> int:
        return len(self._states)

    def count(self, keys: set[bytes]) -> int:
        """How many of ``keys`` are held."""
        with self.lock:
            return sum(k in self._states for k in keys)

    @staticmethod
    def key(text: str) -> bytes:
        import hashlib

        return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()

    def states(self, model: SplitCrossEncoder, texts: list[str], batch_size: int,
               keys: list[bytes] | None = None) -> list[DocumentEntry]:
        """The entry of each text, computing those not cached, ``batch_size`` at a time.
        ``keys`` are the texts' ``key``s when the caller has them already.

        The lock is not held while the model runs, so threads sharing the cache do not wait on each
        other's documents; a document another thread is computing right now is awaited, not computed
        twice."""
        keys = keys if keys is not None else [self.key(t) for t in texts]
        first_text = dict(zip(keys, texts, strict=True))
        found: dict[bytes, DocumentEntry] = {}
        mine: list[bytes] = []
        theirs: dict[bytes, _InFlight] = {}
        with self.lock:
            for k in first_text:
                if k in self._states:
                    found[k] = self._states[k]
                elif k in self._in_flight:
                    theirs[k] = self._in_flight[k]
                else:
                    self._in_flight[k] = _InFlight()
                    mine.append(k)
        try:
            self._compute(model, mine, first_text, batch_size, found)
        finally:  # hand the results (or the failure) to waiting threads, whatever happened
            with self.lock:
                for k in mine:
                    flight = self._in_flight.pop(k)
                    flight.entry = found.get(k)
                    flight.done.set()
        failed = []
        for k, flight in theirs.items():
            flight.done.wait()
            if flight.entry is None:
                failed.append(k)  # the other thread failed: compute it here
            else:
                found[k] = flight.entry
        self._compute(model, failed, first_text, batch_size, found)
        with self.lock:
            for k in keys:
                self._remember(k, found[k])
        return [found[k] for k in keys]

    def _compute(self, model: SplitCrossEncoder, keys: list[bytes], texts: dict[bytes, str], batch_size: int,
                 into: dict[bytes, DocumentEntry]) -> None:
        for start in range(0, len(keys), batch_size):
            chunk = keys[start:start + batch_size]
            ids, cut = model.fit_documents([texts[k] for k in chunk])
            for k, (states, stored), was_cut in zip(chunk, model.document_entries_of(ids), cut, strict=True):
                into[k] = DocumentEntry(states.to(torch.float16, copy=True), was_cut,
                                        None if stored is None else stored.to(_stored_type(stored), copy=True))
            with self.lock:
                self.computed += len(chunk)

    def save(self, path: Path, keys: set[bytes] | None = None) -> None:
        """The cached entries (those of ``keys``, when given) in one ``.npz`` file, written to a
        temporary file of its own, synced and renamed into place: a crash or a concurrent writer leaves
        the previous file or the new one, never half of one."""
        import os
        import tempfile

        import numpy as np

        with self.lock:
            entries = [(k, e) for k, e in self._states.items() if keys is None or k in keys]
        hidden = entries[0][1].states.shape[-1] if entries else 0
        projected = [e.keys_values for _, e in entries if e.keys_values is not None]
        arrays = {
            "keys": np.frombuffer(b"".join(k for k, _ in entries), dtype=np.uint8).reshape(-1, 16),
            "lengths": np.array([e.states.shape[0] for _, e in entries], dtype=np.int64),
            "cut": np.array([e.cut for _, e in entries], dtype=bool),
            "states": (torch.cat([e.states for _, e in entries]).numpy() if entries
                       else np.zeros((0, hidden), dtype=np.float16)),
            # split-layer keys and values (a query that reads the document): 2 x layers by tokens per entry
            "keys_values_shapes": np.array([e.keys_values.shape[:2] if e.keys_values is not None else (0, 0)
                                      for _, e in entries], dtype=np.int64).reshape(-1, 2),
            "keys_values": (torch.cat([kv.reshape(-1, hidden) for kv in projected]).view(torch.int16).numpy()
                            if projected else np.zeros((0, hidden), dtype=np.int16)),  # bits: numpy has no bfloat16
            "keys_values_bf16": np.array(bool(projected) and projected[0].dtype == torch.bfloat16),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, **arrays)  # type: ignore[arg-type]  # numpy's stub reads ** as allow_pickle
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, path)
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise

    def load(self, path: Path) -> int:
        """Adds the entries saved at ``path``; returns how many. An unreadable file is reported and
        skipped (its documents are computed again and the file rewritten)."""
        import zipfile

        import numpy as np

        try:
            with np.load(path) as saved:
                keys, lengths, cut, states = saved["keys"], saved["lengths"], saved["cut"], saved["states"]
                shapes, projected = saved["keys_values_shapes"], saved["keys_values"]
                bf16 = bool(saved["keys_values_bf16"])
            if not len(keys) == len(lengths) == len(cut) == len(shapes) or int(lengths.sum()) != len(states) \
                    or int(shapes.prod(axis=1).sum()) != len(projected):
                raise ValueError("its arrays disagree in length")
            if keys.ndim != 2 or keys.shape[1] != 16 or states.dtype != np.float16 or projected.dtype != np.int16:
                raise ValueError("it is not a states file of this version")
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as error:
            logger.warning("ignoring stored document states %s (%s); they will be computed and saved again",
                           path, error)
            return 0
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        projected_offsets = np.concatenate([[0], np.cumsum(shapes.prod(axis=1))])
        with self.lock:
            for row in range(len(keys)):
                layers, tokens = (int(n) for n in shapes[row])
                keys_values = (torch.from_numpy(projected[projected_offsets[row]:projected_offsets[row + 1]].copy())
                               .view(torch.bfloat16 if bf16 else torch.float16).view(layers, tokens, -1)
                               if layers else None)
                entry = DocumentEntry(torch.from_numpy(states[offsets[row]:offsets[row + 1]].copy()), bool(cut[row]),
                                      keys_values)
                self._remember(keys[row].tobytes(), entry)
        return len(keys)

    @staticmethod
    def size(entry: DocumentEntry) -> int:
        """Bytes an entry holds."""
        projected = entry.keys_values
        return entry.states.numel() * entry.states.element_size() + (
            0 if projected is None else projected.numel() * projected.element_size())

    def _remember(self, key: bytes, entry: DocumentEntry) -> None:
        if key in self._states:
            self._states.move_to_end(key)
            return
        size = self.size(entry)
        if size > self.max_bytes:
            return
        self._states[key] = entry
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self._states.popitem(last=False)
            self.bytes -= self.size(dropped)


def _stored_type(keys_values: torch.Tensor) -> torch.dtype:
    """Keys and values computed in bfloat16 (autocast) are kept so: lossless, and attention reads them
    without a conversion per query; others in float16, like the states."""
    return torch.bfloat16 if keys_values.dtype == torch.bfloat16 else torch.float16


_SHARED_CACHES: weakref.WeakValueDictionary[str, DocumentStateCache] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()


def shared_cache(fingerprint: str, max_bytes: int) -> DocumentStateCache:
    """The process's cache for the model with this fingerprint: pipelines reranking with the same split
    model (a server's presets, say) share the documents' states rather than each holding a copy. It
    lives while some scorer uses it and holds as much as the largest bound asked for."""
    if max_bytes == 0:
        return DocumentStateCache(0)  # asked to keep nothing: a private cache that holds nothing
    with _SHARED_LOCK:
        cache = _SHARED_CACHES.get(fingerprint)
        if cache is None:
            cache = _SHARED_CACHES[fingerprint] = DocumentStateCache(max_bytes)
        cache.max_bytes = max(cache.max_bytes, max_bytes)
        return cache


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

    def precompute(self, index: Any, progress: Any = None, store: Path | None = None) -> None:
        """Read every document of ``index`` through the split layers now (an index-time step). With a
        ``store`` folder, states saved there for this very model are loaded first, only documents new
        or edited since are read, and the file is rewritten when any were."""
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
