"""The one shared 20 ms media clock that drives all generated audio."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

log = logging.getLogger("cms.media.clock")

TICK_SECONDS = 0.020
MAX_BURST = 3  # Late ticks run back to back at most this many at once; older ones are skipped.
_EARLY = 1e-6  # The event loop may fire a timer up to its clock resolution early.

TickHandler = Callable[[int], None]


class TickSchedule:
    """Drift-free tick arithmetic: tick n is due at start + n * interval (no clock reads)."""

    def __init__(self, start: float, interval: float = TICK_SECONDS,
                 max_burst: int = MAX_BURST) -> None:
        if interval <= 0 or max_burst < 1:
            raise ValueError("interval must be positive and max_burst at least 1")
        self.start = start
        self.interval = interval
        self.max_burst = max_burst
        self.next_tick = 0
        self.skipped = 0

    def deadline(self) -> float:
        """When the next tick is due."""
        return self.start + self.next_tick * self.interval

    def due(self, now: float) -> range:
        """The ticks to run at `now` (at most max_burst); ticks further behind are skipped."""
        last_due = math.floor((now - self.start) / self.interval + _EARLY)
        behind = last_due - self.next_tick + 1
        if behind <= 0:
            return range(0)
        if behind > self.max_burst:
            # Skip rather than burst: receivers see a timestamp jump, not a flood of packets.
            self.skipped += behind - self.max_burst
            self.next_tick += behind - self.max_burst
            behind = self.max_burst
        ticks = range(self.next_tick, self.next_tick + behind)
        self.next_tick += behind
        return ticks


class MediaClock:
    """Calls every subscriber once per 20 ms tick with the tick number, from one timer."""

    def __init__(self, interval: float = TICK_SECONDS, max_burst: int = MAX_BURST) -> None:
        self.interval = interval
        self.max_burst = max_burst
        self._subscribers: dict[TickHandler, None] = {}
        self._snapshot: tuple[TickHandler, ...] = ()
        self._schedule: TickSchedule | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ticks = 0
        self.errors = 0

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._timer is not None

    @property
    def skipped(self) -> int:
        """Ticks skipped because the loop was too late to run them."""
        return self._schedule.skipped if self._schedule is not None else 0

    @property
    def tick(self) -> int:
        """The number of the next tick to run."""
        return self._schedule.next_tick if self._schedule is not None else 0

    def subscribe(self, handler: TickHandler) -> None:
        """Call `handler(tick)` on every tick from now on."""
        self._subscribers[handler] = None
        self._snapshot = tuple(self._subscribers)

    def unsubscribe(self, handler: TickHandler) -> None:
        """Stop calling `handler`; unknown handlers are ignored."""
        if self._subscribers.pop(handler, 0) is None:
            self._snapshot = tuple(self._subscribers)

    def __len__(self) -> int:
        return len(self._subscribers)

    def start(self) -> None:
        """Start ticking on the running event loop."""
        if self._timer is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._schedule = TickSchedule(self._loop.time(), self.interval, self.max_burst)
        self._timer = self._loop.call_at(self._schedule.deadline(), self._on_timer)

    def stop(self) -> None:
        """Stop ticking; subscribers stay subscribed."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        assert self._loop is not None and self._schedule is not None
        for tick in self._schedule.due(self._loop.time()):
            self.ticks += 1
            # The snapshot lets handlers (un)subscribe while the tick runs.
            for handler in self._snapshot:
                try:
                    handler(tick)
                except Exception:
                    self.errors += 1
                    log.exception("media clock subscriber %r failed", handler)
        if self._timer is not None:
            self._timer = self._loop.call_at(self._schedule.deadline(), self._on_timer)
