"""A thread-safe, count-bounded LRU cache: every cache a server fills on request uses one.

Pipelines, micro-batchers, BM25 score matrices and loaded models are all created on demand from what a
client asks for; without a bound, a client that asks for many variants grows the server without limit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")


class BoundedCache(Generic[Key, Value]):
    """At most ``max_items`` values; the least recently used goes first (``on_evict`` is told)."""

    def __init__(self, max_items: int, on_evict: Callable[[Value], None] | None = None) -> None:
        if max_items < 1:
            raise ValueError("a bounded cache holds at least one item")
        self.max_items = max_items
        self._items: OrderedDict[Key, Value] = OrderedDict()
        self._on_evict = on_evict
        self._lock = threading.RLock()

    def get_or_create(self, key: Key, create: Callable[[], Value]) -> Value:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = create()  # under the lock: two threads asking at once must not both load a model
            self._items[key] = value
            while len(self._items) > self.max_items:
                _, evicted = self._items.popitem(last=False)
                if self._on_evict is not None:
                    self._on_evict(evicted)
            return value

    def get(self, key: Key) -> Value | None:
        with self._lock:
            return self._items.get(key)

    def values(self) -> list[Value]:
        with self._lock:
            return list(self._items.values())

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items
