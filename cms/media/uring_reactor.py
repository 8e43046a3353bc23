"""RTP through io_uring: peer-connected sockets received and relayed a batch at a time.

An `EpollReactor` calls Python once per packet; here the sockets that only hear their
negotiated peer (an endpoint's connected companion, or its kernel-filtered socket) each
carry one multishot receive into a shared pool of provided buffers, and one wake-up takes
every completion the ring holds, in chunks, in compiled code (see cms.media.fastpath): it
reads the completions in place, does the relay's common case and queues its sends straight
from the receive buffers, submitted with one io_uring_enter per chunk; any other packet is
copied into the reactor's shared buffer and handed to the endpoint's usual per-packet path,
so its behaviour is unchanged. Sockets that hear strangers (a leg's shared port, latching
legs) stay on the epoll set.

user_data of an entry (laid out in cms.media.fastpath) carries the slot's generation when
it was queued: a completion from before the slot's receive was cancelled or the slot
reused is recognised and only its buffer recycled.

A relayed packet's buffer is recycled as soon as the submission that sends it returns: the
send carries MSG_DONTWAIT, which makes io_uring complete it inline (REQ_F_NOWAIT: a full
socket buffer fails it with EAGAIN rather than arming a retry), so once io_uring_enter has
taken the entry the datagram is copied into the kernel. Successful sends post no completion
(SQE_CQE_SKIP_SUCCESS); failed ones do, and are counted as send errors.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from cms.net.uring import OP_ASYNC_CANCEL, OP_RECV, RECV_MULTISHOT, SQE_BUFFER_SELECT, Ring

from .endpoint import RtpEndpoint
from .fastpath import (
    CANCEL,
    GEN_MASK,
    GEN_SHIFT,
    KIND_SHIFT,
    NO_ROOM,
    PYTHON,
    RECV,
    REFUSED,
    compile_kernels,
    relay_ring,
)
from .reactor import BUFFER_SIZE, EpollReactor
from .slots import SlotTable, Slotted, _Int

log = logging.getLogger("cms.media.uring")

BUFFER_GROUP = 1
BUFFERS = 4096  # Receive buffers (8 MiB): 40 ms of packets at 1000 calls; touched in turn.
ENTRIES = 4096  # Submission entries; completions per chunk stay below, as a chunk's sends.
MAX_CHUNKS_PER_WAKEUP = 8  # Then other callbacks run (the ring fd stays readable).
_QUIET_ERRORS = (errno.ENOBUFS, errno.ECANCELED, errno.ECONNREFUSED, errno.EHOSTUNREACH,
                 errno.ENETUNREACH)


class UringEndpoint(RtpEndpoint, Slotted):
    """An RtpEndpoint whose peer-connected socket is served by a UringReactor."""

    __slots__ = ("_table", "_slot", "_send_through")

    received = _Int("received")  # type: ignore[assignment]
    sent = _Int("sent")  # type: ignore[assignment]

    def __init__(self, sock: socket.socket, *, reactor: UringReactor, **options: Any) -> None:
        reactor.table.own(reactor.table.allocate(), self)
        self._send_through: Callable[[bytes | bytearray | memoryview], int] | None = None
        super().__init__(sock, reactor=reactor, **options)

    @property  # type: ignore[override]
    def connected_send(self) -> Callable[[bytes | bytearray | memoryview], int] | None:
        """As RtpEndpoint's; the batch path sends through the same socket, and only while
        this is that socket's own `send` (anything else is called per packet)."""
        return self._send_through

    @connected_send.setter
    def connected_send(self, send: Callable[[bytes | bytearray | memoryview], int] | None
                       ) -> None:
        self._send_through = send
        owner = getattr(send, "__self__", None)
        own = isinstance(owner, socket.socket) and send == owner.send
        self._table.send_fd[self._slot] = owner.fileno() if own else -1  # type: ignore[union-attr]

    @property
    def table(self) -> SlotTable:
        """Where this endpoint's (and its leg's) per-packet state lives."""
        return self._table

    @property
    def slot(self) -> int:
        """Its row in `table`."""
        return self._slot

    def _watch_connected(self, fd: int) -> None:
        cast(UringReactor, self._reactor).add_connected(fd, self)

    def close(self) -> None:
        """Stop reading, close the sockets and give the port and the slot back."""
        if self.closed:
            return
        super().close()
        self._table.release(self._slot)


class UringReactor(EpollReactor):
    """An EpollReactor whose peer-connected sockets are received through io_uring."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, *,
                 buffers: int = BUFFERS, entries: int = ENTRIES) -> None:
        compile_kernels()  # Before any traffic (from numba's cache after a first run).
        self.ring = Ring(entries, cq_entries=4 * entries)
        super().__init__(loop)
        try:
            self.pool = self.ring.buffer_ring(BUFFER_GROUP, buffers, BUFFER_SIZE)
        except BaseException:
            self.close()
            raise
        self.table = SlotTable()
        # One reading per chunk; time.monotonic itself is read by the compiled loop (another
        # clock, e.g. a test's, once per call of it).
        self.clock: Callable[[], float] = time.monotonic
        self.chunk = entries // 2  # Completions per compiled call, at most.
        self._watched: dict[int, int] = {}  # fd -> slot
        self._endpoints: dict[int, UringEndpoint] = {}  # slot -> endpoint, while watched
        self._scratch = memoryview(self.buffer)  # (the shared receive buffer)
        self._packets = memoryview(self.pool.data).cast("B")  # Flat, for per-packet code.
        # What relay_chunk reads and writes (see there), looked up once: the rings, the
        # buffers, what it hands back (a chunk never holds more completions than the
        # submission queue has room for) and its scratch by slot.
        ring, pool = self.ring, self.pool
        self._words, self._word_index = ring.words, ring.word_index
        self._cqes, self._sqes = ring.cq_words, ring.sq_words
        self._buffers = pool.data
        self._buffer_words, self._buffer_halves = pool.entry_words, pool.entry_halves
        self._out = np.zeros((7, ring.sq_entries), dtype=np.int64)
        self._blocked = np.zeros(0, dtype=np.int64)
        self._clock_scratch = np.zeros(2, dtype=np.int64)
        self._loop.add_reader(self.ring.fd, self._completed)
        # Counters for tests and benchmarks: chunks of completions handled, packets relayed
        # by the common case and by the per-packet path, receives re-armed (out of buffers).
        self.batches = 0
        self.relayed_fast = 0
        self.relayed_slow = 0
        self.rearmed = 0
        self.enobufs = 0

    # -- sockets

    def add_connected(self, fd: int, endpoint: UringEndpoint) -> None:
        """Receive `fd` (connected to the endpoint's peer) through the ring."""
        if fd in self._watched:
            self.remove_reader(fd)
        slot = endpoint.slot
        self._watched[fd] = slot
        self._endpoints[slot] = endpoint
        self.table.fd[slot] = fd
        self._arm(np.array([slot], dtype=np.int64))
        self._submit()

    def remove_reader(self, fd: int) -> bool:
        """Stop watching `fd` (an epoll one, or one received through the ring)."""
        slot = self._watched.pop(fd, None)
        if slot is None:
            return super().remove_reader(fd)
        table = self.table
        user_data = self._user_data(RECV, slot)
        table.generation[slot] += 1  # What its receive still completes is now stale.
        table.fd[slot] = -1
        self._endpoints.pop(slot, None)
        # The ring holds the socket until its receive ends: closing the fd would not.
        self.ring.prepare(OP_ASYNC_CANCEL, -1, user_data, 0, CANCEL << KIND_SHIFT, count=1)
        self._submit()
        return True

    def close(self) -> None:
        """Stop watching everything; the ring's pending operations end with it."""
        if self.ring.fd >= 0:
            try:
                self._loop.remove_reader(self.ring.fd)
            except (ValueError, OSError):
                pass
        if hasattr(self, "_epoll"):
            super().close()
        for view in ("_words", "_cqes", "_sqes"):  # Views of the ring's mappings: they go.
            self.__dict__.pop(view, None)
        self.ring.close()

    def _user_data(self, kind: int, slot: int) -> int:
        generation = int(self.table.generation[slot]) & GEN_MASK
        return kind << KIND_SHIFT | generation << GEN_SHIFT | slot

    def _arm(self, slots: np.ndarray) -> None:
        # A multishot receive per slot, each completion filling one provided buffer.
        table = self.table
        user_data = ((table.generation[slots] & GEN_MASK) << GEN_SHIFT | slots).astype(
            np.uint64)
        self.ring.prepare(OP_RECV, table.fd[slots], 0, 0, user_data, count=len(slots),
                          ioprio=RECV_MULTISHOT, flags=SQE_BUFFER_SELECT,
                          buf_group=BUFFER_GROUP)

    # -- completions

    def _completed(self) -> None:
        self.wakeups += 1
        budget = MAX_CHUNKS_PER_WAKEUP
        while budget > 0:
            status, chunks = self._relay(budget)
            budget -= chunks
            if status != PYTHON:
                return

    def drain(self) -> None:
        """Handle everything received so far, the epoll set's sockets too (tests, benches)."""
        ring = self.ring
        while True:
            ring.flush()
            busy = ring.ready() > 0
            if busy:
                self._completed()
            if self._epoll.poll(0, 1):
                busy = True
                self._ready()
            if not busy:
                return

    def _relay(self, budget: int) -> tuple[int, int]:
        # Up to `budget` chunks of completions through the compiled loop, then in Python
        # what the last one left, in order: why it stopped and how many chunks it took.
        ring, pool, table = self.ring, self.pool, self.table
        # Looked up per call: a handler may open legs, and a growing table moves.
        ints = table.ints
        if len(self._blocked) < len(ints):
            self._blocked = np.zeros(len(ints), dtype=np.int64)
        clock = self.clock
        out = self._out
        written = pool.tail
        status, chunks, tail, pending, written, relayed, slows, ends, fails = relay_ring(
            ring.fd, self._words, self._word_index, self._cqes, self._sqes, ints,
            table.floats, self._blocked, self.batches + 1, self._buffers, pool.base,
            self._buffer_words, self._buffer_halves, ring.tail, ring.pending, written,
            budget, self.chunk, math.nan if clock is time.monotonic else clock(),
            self._clock_scratch, out)
        ring.adopt(tail, pending)
        pool.written((written - pool.tail) & 0xFFFF)
        self.batches += chunks
        self.relayed_fast += relayed
        if status == NO_ROOM or status == REFUSED:
            self._submit()  # From Python: retried, and its error read.
        # The last chunk's sends are submitted before any slower packet of the same leg is
        # sent: the order holds.
        if fails:
            for slot, code in zip(out[5, :fails].tolist(), out[6, :fails].tolist(),
                                  strict=True):
                self._send_failed(slot, code)
        if slows:
            self._slow(out[0, :slows].tolist(), out[1, :slows].tolist(),
                       out[2, :slows].tolist())
            pool.recycle(out[1, :slows], publish=not ring.pending)
        if ends:
            codes = out[4, :ends]
            self._rearm(out[3, :ends], (-codes[codes < 0]).tolist())
        return status, chunks

    def _deliver(self, endpoint: UringEndpoint, bid: int, length: int) -> None:
        # The per-packet path: the packet into the shared buffer, as if the endpoint read it.
        self.relayed_slow += 1
        start = bid * self.pool.size
        self._scratch[:length] = self._packets[start:start + length]
        try:
            endpoint.deliver(length)
        except Exception:
            log.exception("RTP handler for %s failed", endpoint.local_address)

    def _send_failed(self, slot: int, code: int) -> None:
        # Sends were counted when queued; a failure is taken back and reported (rare).
        endpoint = self._endpoints.get(slot)
        if endpoint is not None:
            endpoint.sent -= 1
            endpoint.send_failed(OSError(code, os.strerror(code)))

    def _submit(self) -> None:
        # Submit what is queued; the buffers of relayed packets are free again once the
        # kernel took their sends. (A refused submission, EBUSY or EINTR, is rare: the
        # entries stay queued for the next, and the buffers unpublished.)
        ring = self.ring
        for _ in range(3):
            ring.submit()
            if not ring.pending:
                self.pool.publish()
                return

    def _slow(self, slots: list[int], bids: list[int], lengths: list[int]) -> None:
        # What the compiled path left, in order, each to its endpoint as if read.
        endpoints = self._endpoints
        for slot, bid, length in zip(slots, bids, lengths, strict=True):
            endpoint = endpoints.get(slot)
            if endpoint is not None and not endpoint.closed:  # Not closed by an earlier one.
                self._deliver(endpoint, bid, length)

    def _rearm(self, slots: np.ndarray, errors: list[int]) -> None:
        # A multishot receive ends when the buffers run out or on an error: start another.
        for code in set(errors):
            if code not in _QUIET_ERRORS:
                log.warning("RTP receive through io_uring failed: %s", os.strerror(code))
        slots = np.unique(slots)
        slots = slots[self.table.fd[slots] >= 0]
        self.rearmed += len(slots)
        self.enobufs += errors.count(errno.ENOBUFS)
        if len(slots):
            self._arm(slots)
            self._submit()
