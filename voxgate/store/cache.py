"""Short-lived read caches for the hot path of live calls (a verify poll twice a second per stream).

A poll reads the caller's token, the claimed voiceprint and the active calibration profile; from the
store that is three queries per poll. These caches keep each answer for ``ttl_s`` (``VOXGATE_CACHE_TTL_S``).
Writes made by this process clear the affected cache at once; on several nodes sharing one database, a
change made on another node (a deleted voiceprint, a revoked token, a newly activated profile) is seen
here within ``ttl_s``.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_TTL_S = 5.0
MAX_ITEMS = 100_000


class TtlCache(Generic[K, V]):
    """A dict whose entries expire; cleared whole when it would grow past ``MAX_ITEMS``."""

    ttl_s = DEFAULT_TTL_S  # shared by every cache; set once at start from the settings

    def __init__(self) -> None:
        self._items: dict[K, tuple[float, V]] = {}
        _every.add(self)

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, value = item
        if time.monotonic() >= expires:
            self._items.pop(key, None)
            return None
        return value

    def put(self, key: K, value: V, ttl_s: float | None = None) -> None:
        if TtlCache.ttl_s <= 0:
            return
        if len(self._items) >= MAX_ITEMS:
            self._items.clear()
        lifetime = TtlCache.ttl_s if ttl_s is None else min(ttl_s, TtlCache.ttl_s)
        self._items[key] = (time.monotonic() + lifetime, value)

    def clear(self) -> None:
        self._items.clear()


_every: weakref.WeakSet[TtlCache[Any, Any]] = weakref.WeakSet()


def clear_all() -> None:
    """Forget every cached read (another node restored a backup: every table changed at once)."""
    for each in list(_every):
        each.clear()


def configure(ttl_s: float) -> None:
    """Set the lifetime of every cache entry (0 turns the caches off)."""
    TtlCache.ttl_s = max(0.0, ttl_s)
