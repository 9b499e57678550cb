"""Events written at most once per key per period, with a count: refused requests under attack."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from voxgate.store import events
from voxgate.store.db import DbSessions

FOLD_S = 1.0  # refused-request events: at most one per key per this period
MAX_FOLDS = 10_000  # keys followed at once; beyond, new keys share one
OVERFLOW = ("*",)


@dataclass
class _Fold:
    started: float  # time.monotonic() the key's current period began
    outcome: str
    detail: dict[str, Any]  # of the latest occurrence
    count: int = 0  # occurrences since the key's last event


class FoldedEvents:
    """Events of one type, written at most once per key per ``period_s``: a key's first occurrence at once
    (``count`` 1), the ones after it counted and written as one event per period that says how many it
    stands for (``count``, with the detail of the latest); a key quiet for a whole period is forgotten.
    Nothing is lost: the counts of a key's events add up to its occurrences, and :meth:`stop` writes
    what is still counted. For refused requests under attack: one transaction per 404 would cost more
    than the request (the ``error`` events of :mod:`voxgate.api.errors`). Single event loop."""

    def __init__(
        self, sessions: DbSessions, type: str, *, period_s: float = FOLD_S, max_keys: int = MAX_FOLDS
    ) -> None:
        self.type = type
        self.period_s = period_s
        self.max_keys = max_keys
        self._sessions = sessions
        self._folds: dict[Hashable, _Fold] = {}
        self._task: asyncio.Task[None] | None = None

    def record(self, key: Hashable, outcome: str, **detail: Any) -> None:
        """One occurrence (never waits: events are written behind, see ``events.record_soon``)."""
        fold = self._folds.get(key)
        if fold is None and len(self._folds) >= self.max_keys:
            key, detail = OVERFLOW, {**detail, "overflow": True}
            fold = self._folds.get(key)
        if fold is not None:
            fold.count += 1
            fold.outcome, fold.detail = outcome, detail
            return
        self._folds[key] = _Fold(time.monotonic(), outcome, detail)
        events.record_soon(self._sessions, self.type, outcome, count=1, **detail)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="folded-events")

    def pending(self) -> int:
        """Occurrences counted and not yet written."""
        return sum(f.count for f in self._folds.values())

    async def _run(self) -> None:
        while self._folds:
            due = min(f.started for f in self._folds.values()) + self.period_s
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            self._write(time.monotonic())

    def _write(self, now: float, everything: bool = False) -> None:
        for key, fold in list(self._folds.items()):
            if not everything and now - fold.started < self.period_s:
                continue
            if fold.count:
                events.record_soon(self._sessions, self.type, fold.outcome, count=fold.count, **fold.detail)
            if fold.count and not everything:  # still coming: a new period, its event at its end
                fold.started, fold.count = now, 0
            else:
                del self._folds[key]

    async def stop(self) -> None:
        """Write what is still counted (then ``events.flush`` writes it to the store)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._write(time.monotonic(), everything=True)
