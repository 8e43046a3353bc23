"""Keyed one-shot timers on a heap, for a sans-IO core that is told the time."""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Timers"]

K = TypeVar("K", bound=Hashable)
_COMPACT_SLACK = 1024  # dead entries tolerated beyond the live count before a rebuild


class Timers(Generic[K]):
    """At most one live deadline per key; setting a key again replaces its deadline.

    Cancelled and replaced entries stay in the heap and are skipped when they
    reach the top, which keeps `set` and `cancel` O(log n) and O(1). When dead
    entries outnumber the live ones the heap is rebuilt from the live ones: every
    call's 4-hour CALL timer is cancelled minutes later, and would otherwise stay
    for the four hours (a million entries after an hour at 300 calls/s).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._live: dict[K, tuple[float, int]] = {}
        self._seq = 0

    def set(self, key: K, deadline: float) -> None:
        """Arm (or re-arm) the timer `key`."""
        self._seq += 1
        self._live[key] = (deadline, self._seq)
        heapq.heappush(self._heap, (deadline, self._seq, key))
        if len(self._heap) > 2 * len(self._live) + _COMPACT_SLACK:
            self._compact()

    def _compact(self) -> None:
        """Drop the dead entries (amortised O(1) per `set`: at most every n sets)."""
        self._heap = [(deadline, seq, key) for key, (deadline, seq) in self._live.items()]
        heapq.heapify(self._heap)

    def cancel(self, key: K) -> None:
        """Disarm the timer `key`, if armed."""
        self._live.pop(key, None)

    def deadline(self, key: K) -> float | None:
        """When `key` fires, or None when it is not armed."""
        entry = self._live.get(key)
        return entry[0] if entry else None

    def next_deadline(self) -> float | None:
        """The earliest live deadline."""
        heap = self._heap
        while heap and self._live.get(heap[0][2]) != heap[0][:2]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> K | None:
        """Disarm and return the earliest key due at `now`, or None."""
        deadline = self.next_deadline()
        if deadline is None or deadline > now:
            return None
        key = heapq.heappop(self._heap)[2]
        del self._live[key]
        return key

    def __len__(self) -> int:
        return len(self._live)
