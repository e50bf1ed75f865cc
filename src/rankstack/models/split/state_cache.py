"""The documents' split-layer states a scorer keeps in memory: a thread-safe, byte-bounded LRU cache keyed
by a digest of each document's text, shared by the pipelines that rerank with the same model."""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from rankstack.models.split.layout import DocumentEntry
from rankstack.models.split.states_file import load_states, save_states

if TYPE_CHECKING:
    from rankstack.models.split.model import SplitCrossEncoder


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
        """The cached entries (those of ``keys``, when given) in one ``.npz`` file (``states_file``),
        written whole or not at all."""
        with self.lock:
            entries = [(k, e) for k, e in self._states.items() if keys is None or k in keys]
        save_states(path, entries)

    def load(self, path: Path) -> int:
        """Adds the entries saved at ``path``; returns how many. An unreadable file is reported and
        skipped (its documents are computed again and the file rewritten)."""
        entries = load_states(path)
        with self.lock:
            for key, entry in entries:
                self._remember(key, entry)
        return len(entries)

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

