"""The split cross-encoder: lower layers that read the query and the document apart, so the document's
side of those layers can be computed once, before any query (PreTTR, MacAvaney et al., 2020; the survey's
"precomputing term representations"). At query time only the query's lower layers and the upper (joint)
layers run: the document's share of the split layers' work moves off the query path.

With ``query_reads_document`` the split is one-sided: in the lower layers the document still reads only
itself (so its side is still precomputed), but the query reads the document too, as in the unsplit
model. The query's rows are few, so this costs little at query time, and the query keeps the lower
layers' view of the document that a symmetric split takes away. See ``layout`` for the input layout.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from rankstack.errors import RankstackError
from rankstack.models.cross_heads import SegmentSimilarity, segment_head_folder
from rankstack.models.split.layout import DocumentEntry, SplitLayout, prunable_token_ids, read_layout, write_layout
from rankstack.models.split.state_cache import DocumentStateCache

_HEAD_FOLDER = "1_SegmentSimilarity"


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

        layout = read_layout(location)
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
        write_layout(output, self.layout)

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
