"""Socket readiness for many RTP sockets at once: one epoll set inside the event loop.

The event loop's own per-socket readers cost a dispatch per ready socket per wake-up, and
reading each socket until empty costs a failed read per wake-up: at 50 packets/s per
socket both are paid for nearly every packet. An `EpollReactor` puts all RTP sockets in one
level-triggered epoll set that the loop watches as a single file descriptor; when it fires,
every ready socket is read once per round, and rounds repeat until the whole set is empty
(bounded per wake-up), so a busy socket is read until empty without a failed read each.

With `coalesce_s` > 0, a wake-up that found packets stops watching the set for that long and
then drains it again: under load the relay wakes about once per `coalesce_s` and reads many
packets per wake-up instead of sleeping and waking for nearly every packet (on a VM each
sleep/wake costs more than relaying a packet). A packet then waits up to `coalesce_s` more;
an idle set is watched as before, so the first packet after a pause is not delayed.
"""

from __future__ import annotations

import asyncio
import logging
import select
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("cms.media.reactor")

# Socket reads per wake-up (a few ms of work): then the loop runs its other callbacks (SIP,
# the media clock) and, the set being level-triggered, calls again while sockets are ready.
MAX_READS_PER_WAKEUP = 256


class Reactor(Protocol):
    """What an endpoint needs to be told when its socket is readable."""

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback()` while `fd` is readable."""
        ...

    def remove_reader(self, fd: int) -> bool:
        """Stop watching `fd`."""
        ...


class EpollReactor:
    """Many sockets' readers behind one epoll file descriptor watched by the event loop.

    Callbacks read (at least) one datagram each call; see `reads_per_call`.
    """

    reads_per_call = 1  # Rounds re-poll, so one read per socket per round drains them all.

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *,
                 coalesce_s: float = 0.0) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._loop.add_reader(self._epoll.fileno(), self._ready)
        self._watching = True
        self._resume_handle: asyncio.TimerHandle | None = None
        self.coalesce_s = coalesce_s
        self.wakeups = 0

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback()` while `fd` is readable (replacing any earlier callback)."""
        if fd in self._callbacks:
            self._callbacks[fd] = callback
            return
        self._epoll.register(fd, select.EPOLLIN)
        self._callbacks[fd] = callback

    def remove_reader(self, fd: int) -> bool:
        """Stop watching `fd`; False if it was not watched."""
        if self._callbacks.pop(fd, None) is None:
            return False
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # Already closed: the kernel dropped it from the set.
        return True

    def close(self) -> None:
        """Stop watching everything."""
        if self._resume_handle is not None:
            self._resume_handle.cancel()
            self._resume_handle = None
        if self._watching:
            self._loop.remove_reader(self._epoll.fileno())
            self._watching = False
        self._epoll.close()
        self._callbacks.clear()

    def _ready(self) -> None:
        self.wakeups += 1
        handled = self._drain()
        if handled and self.coalesce_s > 0:
            # Busy: come back after a while for what arrives meanwhile, in one go.
            if self._watching:
                self._loop.remove_reader(self._epoll.fileno())
                self._watching = False
            self._schedule(handled)

    def _schedule(self, handled: int) -> None:
        if handled >= MAX_READS_PER_WAKEUP:  # A backlog: carry on after the other callbacks.
            self._resume_handle = self._loop.call_later(0, self._resume)
        else:
            self._resume_handle = self._loop.call_later(self.coalesce_s, self._resume)

    def _resume(self) -> None:
        self._resume_handle = None
        if self._epoll.closed:
            return
        handled = self._drain()
        if handled:
            self._schedule(handled)
        elif not self._watching:
            self._loop.add_reader(self._epoll.fileno(), self._ready)
            self._watching = True

    def _drain(self) -> int:
        """Read every ready socket until the set is empty (within the budget); the number of
        readiness events handled."""
        poll = self._epoll.poll
        callbacks = self._callbacks
        budget = MAX_READS_PER_WAKEUP
        while budget > 0:
            events = poll(0, budget)
            if not events:
                break
            budget -= len(events)
            for fd, _ in events:
                callback = callbacks.get(fd)
                if callback is not None:
                    try:
                        callback()
                    except Exception:
                        log.exception("RTP reader for fd %d failed", fd)
        return MAX_READS_PER_WAKEUP - budget
