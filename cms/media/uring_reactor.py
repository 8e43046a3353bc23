"""RTP through io_uring: peer-connected sockets received and relayed a batch at a time.

An `EpollReactor` calls Python once per packet; here the sockets that only hear their
negotiated peer (an endpoint's connected companion, or its kernel-filtered socket) each
carry one multishot receive into a shared pool of provided buffers, and one wake-up takes
every completion the ring holds: the relay's common case (see cms.media.fastpath) is done
for all of them with numpy and sent straight from the receive buffers in one submission;
any other packet is copied into the reactor's shared buffer and handed to the endpoint's
usual per-packet path, so its behaviour is unchanged. A chunk of fewer than MIN_BATCH
completions (a lightly loaded relay) goes one by one instead: the common case in plain
Python (`FastPath.relay_one`) and a socket send, the rest as above. Sockets that hear
strangers (a leg's shared port, latching legs) stay on the epoll set.

user_data of an entry: bits 62-63 its kind, bits 48-61 the slot's generation when it was
queued (a completion from before the slot's receive was cancelled or the slot reused is
recognised and only its buffer recycled), bits 0-31 the slot.

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
import os
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from cms.net.uring import (
    CQE_F_BUFFER,
    CQE_F_MORE,
    MSG_DONTWAIT,
    OP_ASYNC_CANCEL,
    OP_RECV,
    OP_SEND,
    RECV_MULTISHOT,
    SQE_BUFFER_SELECT,
    SQE_CQE_SKIP_SUCCESS,
    SQE_DTYPE,
    Ring,
)

from .endpoint import RtpEndpoint
from .fastpath import FastPath, header_view
from .reactor import BUFFER_SIZE, EpollReactor
from .slots import INT, WIDTH, SlotTable, Slotted, _Int

log = logging.getLogger("cms.media.uring")

_RECV, _SEND, _CANCEL = 0, 1, 2
_KIND_SHIFT = 62
_GEN_SHIFT = 48
_GEN_MASK = 0x3FFF
_SLOT_MASK = 0xFFFFFFFF
_BUFFER_MORE = CQE_F_BUFFER | CQE_F_MORE
_GENERATION, _SENT = INT["generation"], INT["sent"]
BUFFER_GROUP = 1
BUFFERS = 16384  # Receive buffers: enough for every leg's packets of a slow wake-up.
ENTRIES = 4096  # Submission entries; completions per chunk stay below, as a chunk's sends.
MAX_CHUNKS_PER_WAKEUP = 8  # Then other callbacks run (the ring fd stays readable).
MIN_BATCH = 48  # Fewer completions go one by one (numpy's cost per call; measured).
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
        self.ring = Ring(entries, cq_entries=4 * entries)
        super().__init__(loop)
        try:
            self.pool = self.ring.buffer_ring(BUFFER_GROUP, buffers, BUFFER_SIZE)
        except BaseException:
            self.close()
            raise
        self.headers = header_view(self.pool.data)
        self.table = SlotTable()
        self.fast_path = FastPath(self.table)
        self.clock: Callable[[], float] = time.monotonic  # One reading per batch.
        self._chunk = entries // 2
        self._watched: dict[int, int] = {}  # fd -> slot
        self._endpoints: dict[int, UringEndpoint] = {}  # slot -> endpoint, while watched
        self._scratch = memoryview(self.buffer)  # (the shared receive buffer)
        self._sending: list[np.ndarray] = []  # Buffer ids of sends not yet taken by the kernel.
        self.min_batch = MIN_BATCH
        self._packets = memoryview(self.pool.data).cast("B")  # Flat, for per-packet code.
        # Relayed packets' sends: the fields that never change filled once.
        self._send_template = np.zeros(entries, dtype=SQE_DTYPE)
        self._send_template["opcode"] = OP_SEND
        self._send_template["flags"] = SQE_CQE_SKIP_SUCCESS
        self._send_template["op_flags"] = MSG_DONTWAIT
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
        user_data = self._user_data(_RECV, slot)
        table.generation[slot] += 1  # What its receive still completes is now stale.
        table.fd[slot] = -1
        self._endpoints.pop(slot, None)
        # The ring holds the socket until its receive ends: closing the fd would not.
        self.ring.prepare(OP_ASYNC_CANCEL, -1, user_data, 0, _CANCEL << _KIND_SHIFT,
                          count=1)
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
        self.ring.close()

    def _user_data(self, kind: int, slot: int) -> int:
        generation = int(self.table.generation[slot]) & _GEN_MASK
        return kind << _KIND_SHIFT | generation << _GEN_SHIFT | slot

    def _arm(self, slots: np.ndarray) -> None:
        # A multishot receive per slot, each completion filling one provided buffer.
        table = self.table
        user_data = ((table.generation[slots] & _GEN_MASK) << _GEN_SHIFT | slots).astype(
            np.uint64)
        self.ring.prepare(OP_RECV, table.fd[slots], 0, 0, user_data, count=len(slots),
                          ioprio=RECV_MULTISHOT, flags=SQE_BUFFER_SELECT,
                          buf_group=BUFFER_GROUP)

    # -- completions

    def _completed(self) -> None:
        self.wakeups += 1
        ring = self.ring
        for _ in range(MAX_CHUNKS_PER_WAKEUP):
            if not ring.ready():
                # The fd also polls readable for completions the kernel holds back (task
                # work not run yet, or an overflowed queue): entering posts them.
                ring.flush()
                if not ring.ready():
                    return
            self._handle(ring.completions(self._chunk))

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

    def _handle(self, done: np.ndarray) -> None:
        self.batches += 1
        if len(done) < self.min_batch:
            self._one_by_one(done.tolist())
            return
        user_data = done["user_data"]
        flags = done["flags"]
        slots = (user_data & np.uint64(_SLOT_MASK)).astype(np.int64)
        # Kind and generation in one test: a receive (kind 0) of the slot's current arm.
        tags = (user_data >> np.uint64(_GEN_SHIFT)).astype(np.int64)
        live = tags == self.table.generation[slots] & _GEN_MASK
        if live.all() and ((flags & _BUFFER_MORE) == _BUFFER_MORE).all():
            # The usual batch: packets only, every receive going on.
            self._received(slots, (flags >> 16).astype(np.int64), done["res"])
            return
        self._handle_all(user_data, done["res"], flags, slots)

    def _one_by_one(self, done: list[tuple[int, int, int]]) -> None:
        # A few completions: one at a time in Python (numpy's cost per call outweighs its
        # gain on a handful of packets), the common case still on the table's state.
        table = self.table
        endpoints = self._endpoints
        relay_one = self.fast_path.relay_one
        packets = self._packets
        size = self.pool.size
        now = self.clock()
        used: list[int] = []
        ended: list[int] = []
        errors: list[int] = []
        for user_data, result, flags in done:
            slot = user_data & _SLOT_MASK
            kind = user_data >> _KIND_SHIFT
            # Looked up per packet: a handler may open legs, and a growing table moves.
            live = (user_data >> _GEN_SHIFT) & _GEN_MASK == \
                table.int_cells[slot * WIDTH + _GENERATION] & _GEN_MASK
            if kind == _SEND:
                if live and result < 0:
                    self._send_failed_one(slot, -result)
                continue
            if kind != _RECV:
                continue
            if flags & CQE_F_BUFFER:
                bid = flags >> 16
                used.append(bid)
                endpoint = endpoints.get(slot) if live else None
                if endpoint is None or endpoint.closed:
                    pass
                elif (target := relay_one(packets, bid * size, result, slot, now)) >= 0:
                    self._send_one(target, packets[bid * size:bid * size + result])
                else:
                    self._deliver(endpoint, bid, result)
            if live and not flags & CQE_F_MORE:
                ended.append(slot)
                if result < 0:
                    errors.append(-result)
        if used:
            self.pool.recycle_few(used)
        if ended:
            self._rearm(np.array(ended, dtype=np.int64), errors)

    def _send_one(self, target: int, packet: memoryview) -> None:
        # Through the target's connected socket, as RtpEndpoint.send (its counters are ours).
        # A target with a send_fd is watched here: its connected socket is set and watched
        # together (RtpEndpoint._update_companion, _maybe_connect).
        endpoint = self._endpoints.get(target)
        # Its connected_send, without the property's call (this runs per packet).
        send = endpoint._send_through if endpoint is not None else None
        if send is None:
            return
        self.relayed_fast += 1
        try:
            send(packet)
        except OSError as exc:
            endpoint.send_failed(exc)  # type: ignore[union-attr]
            return
        self.table.int_cells[target * WIDTH + _SENT] += 1

    def _deliver(self, endpoint: UringEndpoint, bid: int, length: int) -> None:
        # The per-packet path: the packet into the shared buffer, as if the endpoint read it.
        self.relayed_slow += 1
        start = bid * self.pool.size
        self._scratch[:length] = self._packets[start:start + length]
        try:
            endpoint.deliver(length)
        except Exception:
            log.exception("RTP handler for %s failed", endpoint.local_address)

    def _handle_all(self, user_data: np.ndarray, results: np.ndarray, flags: np.ndarray,
                    slots: np.ndarray) -> None:
        # Besides packets: failed sends, stale completions, receives that ended.
        table = self.table
        pool = self.pool
        kinds = user_data >> np.uint64(_KIND_SHIFT)
        live = (table.generation[slots] & _GEN_MASK) == (
            (user_data >> np.uint64(_GEN_SHIFT)) & np.uint64(_GEN_MASK)).astype(np.int64)
        sends = kinds == _SEND
        if sends.any():
            self._send_failed(slots[sends], results[sends], live[sends])
        receives = kinds == _RECV
        with_buffer = receives & (flags & CQE_F_BUFFER != 0)
        bids = (flags >> 16).astype(np.int64)
        stale = with_buffer & ~live
        if stale.any():
            pool.recycle(bids[stale])
        ended = receives & live & (flags & CQE_F_MORE == 0)
        packets = np.flatnonzero(with_buffer & live)
        if len(packets):
            self._received(slots[packets], bids[packets], results[packets])
        if ended.any():
            codes = results[ended]
            self._rearm(slots[ended], (-codes[codes < 0]).tolist())

    def _send_failed(self, slots: np.ndarray, results: np.ndarray, live: np.ndarray) -> None:
        # Sends were counted when queued; a failure is taken back and reported (rare).
        failed = (results < 0) & live
        for slot, result in zip(slots[failed].tolist(), results[failed].tolist(), strict=True):
            self._send_failed_one(slot, -result)

    def _send_failed_one(self, slot: int, code: int) -> None:
        endpoint = self._endpoints.get(slot)
        if endpoint is not None:
            endpoint.sent -= 1
            endpoint.send_failed(OSError(code, os.strerror(code)))

    def _received(self, slots: np.ndarray, bids: np.ndarray, lengths: np.ndarray) -> None:
        now = self.clock()
        relayed = self.fast_path.relay(self.headers, slots, bids, lengths, now)
        fast = relayed.fast
        count = len(fast)
        if count:
            targets = relayed.targets
            fast_bids = bids[fast]
            table = self.table
            if relayed.rounds == 1:
                table.sent[targets] += 1
            else:
                np.add.at(table.sent, targets, 1)  # A target once per round, maybe more.
            sends = self._send_template[:count]
            sends["fd"] = relayed.fds
            sends["addr"] = self.pool.addresses[fast_bids]
            sends["len"] = lengths[fast]
            sends["user_data"] = (table.generation[targets] & _GEN_MASK) << _GEN_SHIFT | \
                targets | _SEND << _KIND_SHIFT
            self.ring.push(sends)
            self._sending.append(fast_bids)
            self.relayed_fast += count
        # Sent before any slower packet of the same leg is, so the order holds.
        self._submit()
        slow = relayed.slow
        if len(slow):
            self._slow(slots[slow].tolist(), bids[slow].tolist(), lengths[slow].tolist())

    def _submit(self) -> None:
        # Submit what is queued; the buffers of sends the kernel took are free again. (A
        # refused submission, EBUSY or EINTR, is rare: the entries stay queued for the next.)
        ring = self.ring
        for _ in range(3):
            ring.submit()
            if not ring.pending:
                break
        if self._sending and not ring.pending:
            sending = self._sending
            self._sending = []
            self.pool.recycle(sending[0] if len(sending) == 1 else np.concatenate(sending))

    def _slow(self, slots: list[int], bids: list[int], lengths: list[int]) -> None:
        # What the vectorised path left, in order, each to its endpoint as if read.
        endpoints = self._endpoints
        for slot, bid, length in zip(slots, bids, lengths, strict=True):
            endpoint = endpoints.get(slot)
            if endpoint is not None and not endpoint.closed:  # Not closed by an earlier one.
                self._deliver(endpoint, bid, length)
        self.pool.recycle(np.array(bids, dtype=np.int64))

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
