"""The compiled relay kernel on hand-made rings: the common case as the Python path does it,
per-leg order within a chunk, stale completions, ended receives, failed sends."""

from __future__ import annotations

import errno
import math
import struct

import numpy as np
import pytest

from cms.media.fastpath import (
    CANCEL,
    GEN_SHIFT,
    IDLE,
    KIND_SHIFT,
    PYTHON,
    RECV,
    REFUSED,
    SEND,
    compile_kernels,
    relay_chunk,
    relay_ring,
)
from cms.media.slots import SlotOutboundStream, SlotReceiveStats, SlotTable
from cms.media.stats import ReceiveStats
from cms.media.stream import OutboundStream
from cms.net.uring import (
    BUF_DTYPE,
    CQE_F_BUFFER,
    CQE_F_MORE,
    MSG_DONTWAIT,
    OP_SEND,
    SQE_CQE_SKIP_SUCCESS,
    SQE_DTYPE,
)

ENTRIES = 16
BASE = 0x7F0000000000  # Where the buffers would be in memory.
SIZE = 256
A_SSRC, B_SSRC = 0x1111, 0x2222
B_FD = 77


class Bridge:
    """Slots a and b of a table routed to each other, as `bridge` leaves two PCMU legs once
    both phones sent a first packet; buffers and rings as numpy arrays."""

    def __init__(self) -> None:
        compile_kernels()
        self.table = table = SlotTable(4)
        self.a, self.b = table.allocate(), table.allocate()
        self.rx: dict[int, ReceiveStats] = {}
        self.out: dict[int, OutboundStream] = {}
        for slot, other in ((self.a, self.b), (self.b, self.a)):
            self.rx[slot] = SlotReceiveStats(table, slot)
            self.out[other] = out = SlotOutboundStream(table, other)
            out.ssrc, out.seq, out.ts = 0x5EED0000 + other, 40000 + other, 0xFFFF0000 + other
            table.target[slot] = other
            table.audio_pt[slot] = 0
            table.out_pt[slot] = 0
            table.send_fd[other] = B_FD if other == self.b else 78
        for slot, ssrc in ((self.a, A_SSRC), (self.b, B_SSRC)):
            self.rx[slot].update(100, 16000, ssrc, 999.0)
            target = self.out[int(table.target[slot])]
            target.follow(100, 16000, ssrc, 999.0)
            target.feed = ssrc
        self.packets = np.zeros((8, SIZE), dtype=np.uint8)
        self.cqes = np.zeros((ENTRIES, 2), dtype=np.int64)
        self.sqes = np.zeros((ENTRIES, 8), dtype=np.int64)
        self.buffers = np.zeros(8, dtype=BUF_DTYPE)  # The provided-buffer ring.
        self.buffers["len"] = SIZE
        self.buffers["resv"][0] = 0xBEEF  # Where the ring's tail is: never written.
        # All three rings wrap within a chunk of three.
        self.head = self.tail = ENTRIES - 2
        self.buffer_tail = 6
        self.done: list[tuple[int, int, int]] = []

    def packet(self, bid: int, seq: int, ts: int, ssrc: int = A_SSRC, pt: int = 0,
               marker: bool = False) -> int:
        struct.pack_into("!BBHII", self.packets[bid], 0, 0x80, pt | marker << 7, seq, ts, ssrc)
        self.packets[bid, 12:172] = bid
        return 172

    def receive(self, slot: int, bid: int, length: int, *, generation: int | None = None,
                more: bool = True) -> None:
        gen = int(self.table.generation[slot]) if generation is None else generation
        flags = CQE_F_BUFFER | bid << 16 | (CQE_F_MORE if more else 0)
        self.done.append((RECV << KIND_SHIFT | gen << GEN_SHIFT | slot, length, flags))

    def complete(self, kind: int, slot: int, result: int, flags: int = 0, *,
                 generation: int | None = None) -> None:
        gen = int(self.table.generation[slot]) if generation is None else generation
        self.done.append((kind << KIND_SHIFT | gen << GEN_SHIFT | slot, result, flags))

    def post(self) -> int:
        """Write the completions into the completion ring from `head` on."""
        for index, (user_data, result, flags) in enumerate(self.done):
            row = (self.head + index) % ENTRIES
            self.cqes[row, 0] = np.uint64(user_data).view(np.int64)
            self.cqes[row, 1] = (result & 0xFFFFFFFF) | flags << 32
        count, self.done = len(self.done), []
        return count

    def relay(self, now: float = 1000.0) -> dict[str, list[tuple[int, ...]] | list[int] | int]:
        """relay_chunk on the completions posted since the last call."""
        count = self.post()
        out = np.zeros((7, ENTRIES), dtype=np.int64)
        blocked = np.zeros(self.table.capacity, dtype=np.int64)
        words = self.buffers.view(np.uint64).reshape(-1, 2)
        halves = self.buffers.view(np.uint16).reshape(-1, 8)
        sends, recycled, slows, ends, fails = relay_chunk(
            self.cqes, self.head, count, self.table.ints, self.table.floats, blocked, 1,
            self.packets, BASE, self.sqes, self.tail, words, halves, self.buffer_tail, now,
            out)
        rows = [(self.tail + index) % ENTRIES for index in range(sends)]
        entries = self.buffers[[(self.buffer_tail + index) % 8 for index in range(recycled)]]
        assert (entries["addr"] == BASE + entries["bid"].astype(np.uint64) * SIZE).all()
        assert (self.buffers["len"] == SIZE).all() and self.buffers["resv"][0] == 0xBEEF
        self.head += count
        self.tail += sends
        self.buffer_tail += recycled
        return {"sends": self.sqes.view(SQE_DTYPE)[rows, 0].tolist(),
                "slow": list(zip(*out[0:3, :slows].tolist(), strict=True)),
                "recycle": entries["bid"].tolist(),
                "ended": list(zip(*out[3:5, :ends].tolist(), strict=True)),
                "failed": list(zip(*out[5:7, :fails].tolist(), strict=True))}


def send_entry(fd: int, bid: int, length: int, slot: int, generation: int = 0) -> tuple:
    return (OP_SEND, SQE_CQE_SKIP_SUCCESS, 0, fd, 0, BASE + bid * SIZE, length, MSG_DONTWAIT,
            SEND << KIND_SHIFT | generation << GEN_SHIFT | slot, 0, 0, 0, 0, 0)


def test_a_leg_that_leaves_the_common_case_stays_out_of_it_for_the_rest_of_the_chunk() -> None:
    bridge = Bridge()
    a, b = bridge.a, bridge.b
    bridge.receive(a, 1, bridge.packet(1, 101, 16160))
    bridge.receive(a, 2, bridge.packet(2, 102, 16320, pt=101))  # DTMF: the Python path.
    bridge.receive(b, 3, bridge.packet(3, 101, 16160, ssrc=B_SSRC))  # Another leg: fast.
    bridge.receive(a, 4, bridge.packet(4, 103, 16480))  # Common, but after A's slow one.
    untouched = bridge.packets[4].copy()
    got = bridge.relay()

    assert got["slow"] == [(a, 2, 172), (a, 4, 172)]
    assert got["sends"] == [send_entry(B_FD, 1, 172, b), send_entry(78, 3, 172, a)]
    assert got["recycle"] == [1, 3]
    assert got["ended"] == got["failed"] == []
    assert (bridge.packets[4] == untouched).all()
    assert bridge.table.rx_max[a] == 101 and bridge.table.received[a] == 1
    assert bridge.table.sent[b] == 1 and bridge.table.sent[a] == 1
    out = bridge.out[b]
    header = struct.unpack_from("!BBHII", bridge.packets[1])
    assert header == (0x80, 0, out.seq, out.ts, out.ssrc)
    # The next chunk starts afresh: A's next packet is the common case again.
    bridge.receive(a, 5, bridge.packet(5, 104, 16640))
    assert bridge.relay()["recycle"] == [5]


def test_the_common_case_matches_the_python_path() -> None:
    # The same packets through the kernel and through ReceiveStats.update and
    # OutboundStream.map_relayed on an identical table: the same state and headers.
    kernel, python = Bridge(), Bridge()
    a, b = kernel.a, kernel.b
    seq, ts, now = 65533, 0xFFFFFE00, 1000.0
    for bridge in (kernel, python):  # Two sequential packets: a restart, both wrap soon.
        bridge.rx[a].update(seq - 1, ts, A_SSRC, now)
        bridge.rx[a].update(seq, ts, A_SSRC, now)
    # (seconds since the last chunk, [(sequence step, timestamp step) per packet])
    chunks = [(0.02, [(1, 160)]), (0.021, [(1, 160)]), (0.019, [(1, 160), (1, 160)]),
              (0.8, [(40, 6400), (1, 160), (1, 160)]), (0.05, [(2, 320), (1, 160)])]
    bid = 0
    for elapsed, packets in chunks:
        now += elapsed
        for step, advance in packets:
            seq, ts = (seq + step) & 0xFFFF, (ts + advance) & 0xFFFFFFFF
            bid = (bid + 1) % 8
            kernel.receive(a, bid, kernel.packet(bid, seq, ts, marker=step > 1))
            python.packet(bid, seq, ts, marker=step > 1)
            rx, out = python.rx[a], python.out[b]
            rx.update(seq, ts, A_SSRC, now)
            mapped = out.map_relayed(seq, ts, now)
            python.table.received[a] += 1
            python.table.sent[b] += 1
            struct.pack_into("!BHII", python.packets[bid], 1, (step > 1) << 7, *mapped,
                             out.ssrc)
        assert len(kernel.relay(now)["sends"]) == len(packets)
        assert (kernel.table.ints == python.table.ints).all()
        np.testing.assert_array_equal(kernel.table.floats, python.table.floats)
        assert (kernel.packets == python.packets).all()
    assert kernel.rx[a].snapshot() == python.rx[a].snapshot()
    assert kernel.rx[a].snapshot().packets_received == 11  # With the source before.
    assert kernel.table.rx_cycles[a] == 1 << 16 and kernel.rx[a].jitter > 0


def test_stale_completions_only_give_their_buffers_back() -> None:
    bridge = Bridge()
    a, b = bridge.a, bridge.b
    old = int(bridge.table.generation[a])
    bridge.table.generation[a] += 1  # A's receive was cancelled: what it still posts is stale.
    bridge.receive(a, 1, bridge.packet(1, 101, 16160), generation=old)
    bridge.receive(a, 2, bridge.packet(2, 102, 16320), generation=old, more=False)
    bridge.complete(RECV, a, -errno.ECANCELED, generation=old)
    bridge.complete(SEND, b, -errno.EDESTADDRREQ, generation=int(bridge.table.generation[b]))
    bridge.complete(SEND, a, -errno.EDESTADDRREQ, generation=old)  # To A's former occupant.
    bridge.complete(CANCEL, a, 0, generation=old)
    got = bridge.relay()

    assert got["recycle"] == [1, 2]
    assert got["sends"] == got["slow"] == got["ended"] == []
    assert got["failed"] == [(b, errno.EDESTADDRREQ)]
    assert bridge.table.received[a] == 0 and bridge.table.rx_max[a] == 100


def test_a_receive_that_ends_is_reported_after_its_last_packet() -> None:
    bridge = Bridge()
    a, b = bridge.a, bridge.b
    bridge.receive(b, 1, bridge.packet(1, 101, 16160, ssrc=B_SSRC), more=False)
    bridge.complete(RECV, a, -errno.ENOBUFS)  # Out of buffers: the multishot receive ended.
    bridge.receive(a, 2, bridge.packet(2, 10, 16320, pt=0), more=True)  # Out of order: slow.
    got = bridge.relay()

    assert got["ended"] == [(b, 172), (a, -errno.ENOBUFS)]
    assert got["recycle"] == [1] and got["slow"] == [(a, 2, 172)]
    assert len(got["sends"]) == 1


@pytest.mark.parametrize("reason", ["short", "version", "payload type", "ssrc", "duplicate",
                                    "jump", "new feed", "held", "no socket", "no route"])
def test_each_of_the_python_paths_tests_leaves_the_common_case(reason: str) -> None:
    bridge = Bridge()
    a, b = bridge.a, bridge.b
    length = bridge.packet(1, 101, 16160)
    if reason == "short":
        length = 11
    elif reason == "version":
        bridge.packets[1, 0] = 0x40
    elif reason == "payload type":
        bridge.packet(1, 101, 16160, pt=8)
    elif reason == "ssrc":
        bridge.packet(1, 101, 16160, ssrc=0x3333)
    elif reason == "duplicate":
        bridge.packet(1, 100, 16160)
    elif reason == "jump":
        bridge.packet(1, 3100, 16160)
    elif reason == "new feed":
        bridge.out[b].release()
    elif reason == "held":
        bridge.out[b].held = True
    elif reason == "no socket":
        bridge.table.send_fd[b] = -1
    elif reason == "no route":
        bridge.table.target[a] = -1
    bridge.receive(a, 1, length)
    got = bridge.relay()

    assert got["slow"] == [(a, 1, length)] and got["sends"] == []
    assert bridge.table.received[a] == 0 and bridge.table.sent[b] == 0


def test_the_loop_leaves_sends_the_kernel_refused_queued_and_their_buffers_unpublished(
        ) -> None:
    bridge = Bridge()
    a, b = bridge.a, bridge.b
    bridge.receive(a, 1, bridge.packet(1, 101, 16160))
    bridge.receive(b, 2, bridge.packet(2, 101, 16160, ssrc=B_SSRC))
    bridge.receive(a, 3, bridge.packet(3, 102, 16320, pt=101))
    count = bridge.post()
    # The ring's words: submission head and tail (all consumed), completion head and tail.
    words = np.array([bridge.tail, bridge.tail, bridge.head, bridge.head + count],
                     dtype=np.uint32)
    index = np.arange(4, dtype=np.int64)
    out = np.zeros((7, ENTRIES), dtype=np.int64)
    blocked = np.zeros(bridge.table.capacity, dtype=np.int64)
    buffer_words = bridge.buffers.view(np.uint64).reshape(-1, 2)
    buffer_halves = bridge.buffers.view(np.uint16).reshape(-1, 8)
    # An fd that is no ring: io_uring_enter fails (EBADF) as a refused submission would.
    got = relay_ring(-1, words, index, bridge.cqes, bridge.sqes, bridge.table.ints,
                     bridge.table.floats, blocked, 1, bridge.packets, BASE, buffer_words,
                     buffer_halves, bridge.tail, 0, bridge.buffer_tail, 8, ENTRIES, 1000.0,
                     np.zeros(2, dtype=np.int64), out)

    status, chunks, tail, pending, buffer_tail, relayed, slows, ends, fails = got
    assert (status, chunks, relayed, pending, slows, ends, fails) == (REFUSED, 1, 2, 2, 1, 0, 0)
    assert tail == (bridge.tail + 2) & 0xFFFFFFFF == words[1]  # Queued, published.
    assert words[2] == words[3]  # Every completion consumed.
    assert buffer_tail == (bridge.buffer_tail + 2) & 0xFFFF
    assert bridge.buffers["resv"][0] == 0xBEEF  # The buffers' tail: not published.
    assert out[0:3, 0].tolist() == [a, 3, 172]

    # Nothing more: the kernel is entered once (to collect completions it holds back).
    got = relay_ring(-1, words, index, bridge.cqes, bridge.sqes, bridge.table.ints,
                     bridge.table.floats, blocked, 2, bridge.packets, BASE, buffer_words,
                     buffer_halves, tail, 0, buffer_tail, 8, ENTRIES, math.nan,
                     np.zeros(2, dtype=np.int64), out)
    assert got[:2] == (IDLE, 0)

    # A chunk with no sends needs no submission: its buffers are published at once.
    bridge.head = int(words[2])
    bridge.receive(a, 4, bridge.packet(4, 103, 16480), generation=7)  # Stale.
    bridge.receive(a, 5, bridge.packet(5, 104, 16640, pt=101))
    words[3] += bridge.post()
    got = relay_ring(-1, words, index, bridge.cqes, bridge.sqes, bridge.table.ints,
                     bridge.table.floats, blocked, 3, bridge.packets, BASE, buffer_words,
                     buffer_halves, tail, 0, buffer_tail, 8, ENTRIES, math.nan,
                     np.zeros(2, dtype=np.int64), out)
    assert got[:2] == (PYTHON, 1) and got[6] == 1
    assert bridge.buffers["resv"][0] == got[4] == (buffer_tail + 1) & 0xFFFF
