"""A small bounded mapping for the pipeline's caches keyed by shape (CUDA graphs, pinned buffers, resize tables).

A day-long run over an image folder, or a stream that changes resolution, can meet any number of
shapes; every such cache keeps at most ``maxsize`` entries and drops the least recently used first.
Evicting an entry only drops this cache's reference to it (what it holds is freed like any object).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """At most ``maxsize`` entries; a hit (``get``, ``[]``, ``get_or_create``) makes an entry the most recent,
    an insert beyond ``maxsize`` evicts the least recent. Thread-safe (one lock per cache)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self.evictions = 0
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def _insert(self, key: K, value: V) -> None:  # lock held
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)
            self.evictions += 1

    def get(self, key: K, default: V | None = None) -> V | None:
        with self._lock:
            if key not in self._data:
                return default
            self._data.move_to_end(key)
            return self._data[key]

    def __getitem__(self, key: K) -> V:
        with self._lock:
            value = self._data[key]  # KeyError when absent
            self._data.move_to_end(key)
            return value

    def __setitem__(self, key: K, value: V) -> None:
        with self._lock:
            self._insert(key, value)

    def get_or_create(self, key: K, factory: Callable[[], V]) -> V:
        """The cached value, or ``factory()`` stored under ``key`` (built outside the lock)."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = factory()
        with self._lock:
            if key in self._data:  # another thread made one meanwhile: keep the first
                self._data.move_to_end(key)
                return self._data[key]
            self._insert(key, value)
        return value

    def __contains__(self, key: object) -> bool:
        """Membership only: does not count as a use."""
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())

    def keys(self) -> list[K]:
        """Least recently used first."""
        with self._lock:
            return list(self._data.keys())

    def values(self) -> list[V]:
        with self._lock:
            return list(self._data.values())

    def items(self) -> list[tuple[K, V]]:
        with self._lock:
            return list(self._data.items())

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __repr__(self) -> str:
        return f"LRUCache(maxsize={self.maxsize}, size={len(self._data)}, evictions={self.evictions})"
