"""Per-avatar source state, computed once per avatar and shared by its sessions.

The generator's source features (the encoder's volume and its compression, ~8 MB at 256²) and
the source keypoints depend on the avatar only. :class:`SourceCache` keeps them by avatar id
(e.g. the avatar's content hash plus the checkpoint fingerprint), computes a missing entry once
even when several sessions ask at the same time, and holds at most ``capacity`` avatars (least
recently used leaves first), so a server that sees many avatars keeps bounded memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class SourceCache(Generic[T]):
    """Bounded LRU of per-avatar values with single-flight computation."""

    def __init__(self, capacity: int = 8) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, Future[T]] = OrderedDict()
        self._lock = threading.Lock()
        self.computed = 0  # how many values were computed (not served from the cache)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        """The value of ``key``, computing it (once, by the first asker) when missing. A failed
        computation is not cached: every waiter gets its exception, the next ask retries."""
        with self._lock:
            entry = self._entries.get(key)
            owner = entry is None
            if entry is None:
                entry = Future()
                self._entries[key] = entry
                while len(self._entries) > self.capacity:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
        if not owner:
            return entry.result()
        try:
            value = compute()
        except BaseException as exc:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            entry.set_exception(exc)
            raise
        with self._lock:
            self.computed += 1
        entry.set_result(value)
        return value

    def drop(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)
