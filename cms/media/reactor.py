"""Socket readiness for many RTP sockets at once: one epoll set inside the event loop.

The event loop's own per-socket readers cost a dispatch per ready socket per wake-up, and
reading each socket until empty costs a failed read per wake-up: at 50 packets/s per
socket both are paid for nearly every packet. An `EpollReactor` puts all RTP sockets in one
level-triggered epoll set that the loop watches as a single file descriptor; when it fires,
every ready socket is read once per round, and rounds repeat until the whole set is empty
(bounded per wake-up), so a busy socket is read until empty without a failed read each.
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
BUFFER_SIZE = 2048  # Larger datagrams are truncated and then dropped as invalid.


class Packets(dict[int, memoryview]):
    """`packets[n]`: the first n bytes of `buffer`, made once per length and then reused
    (a memoryview slice made per relayed packet costs an allocation and a buffer export)."""

    def __init__(self, buffer: bytearray) -> None:
        super().__init__()
        self._view = memoryview(buffer)

    def __missing__(self, length: int) -> memoryview:
        packet = self[length] = self._view[:length]
        return packet


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

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[], None]] = {}
        # The same, indexed by fd (None where none): cheaper than a dict lookup per packet.
        self._by_fd: list[Callable[[], None] | None] = []
        self._loop.add_reader(self._epoll.fileno(), self._ready)
        self.wakeups = 0
        # The receive buffer every endpoint on this reactor shares (see RtpEndpoint).
        self.buffer = bytearray(BUFFER_SIZE)
        self.packets = Packets(self.buffer)

    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback()` while `fd` is readable (replacing any earlier callback)."""
        if fd >= len(self._by_fd):
            self._by_fd.extend([None] * (fd + 1 - len(self._by_fd)))
        self._by_fd[fd] = callback
        if fd in self._callbacks:
            self._callbacks[fd] = callback
            return
        self._epoll.register(fd, select.EPOLLIN)
        self._callbacks[fd] = callback

    def remove_reader(self, fd: int) -> bool:
        """Stop watching `fd`; False if it was not watched."""
        if self._callbacks.pop(fd, None) is None:
            return False
        self._by_fd[fd] = None
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # Already closed: the kernel dropped it from the set.
        return True

    def close(self) -> None:
        """Stop watching everything."""
        self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()
        self._callbacks.clear()
        self._by_fd.clear()

    def _ready(self) -> None:
        self.wakeups += 1
        poll = self._epoll.poll
        by_fd = self._by_fd
        budget = MAX_READS_PER_WAKEUP
        while budget > 0:
            events = poll(0, budget)
            if not events:
                return
            budget -= len(events)
            for fd, _ in events:
                callback = by_fd[fd]
                if callback is not None:
                    try:
                        callback()
                    except Exception:
                        log.exception("RTP reader for fd %d failed", fd)
