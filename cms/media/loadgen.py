"""RTP load for relay benchmarks: G.711 calls' streams sent in batches, loss and latency.

Phones are a few UDP sockets per side on 127.0.0.1 (call c uses A socket c % K and B socket
c % K; a relay tells calls apart by its own ports). Each call has two streams, A to the
relay's A-side address and B to its B-side address, 50 packets/s each (172 bytes: RTP
header + 160 bytes PCMU), their phases spread over the 20 ms frame. Every millisecond the
due packets go out with one `sendmmsg` per socket (up to 64 each) and every socket is read
with `recvmmsg` until empty, so Python does a few calls per millisecond, not per packet.

Each packet carries its stream, send-batch id and index in the batch after the RTP header
(a relay may rewrite the header but passes the payload through). A packet's send time is
interpolated over its batch's `sendmmsg` call; its receive time is the kernel's
(SO_TIMESTAMPNS): the generator's own scheduling delay enters neither side.
"""

from __future__ import annotations

import resource
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .mmsg import TIMESTAMP_CONTROL_SIZE, MessageBatch, enable_receive_timestamps

Address = tuple[str, int]
HOST = "127.0.0.1"
PACKET_SIZE = 172
PAYLOAD_TYPE = 0  # PCMU
TICK_NS = 1_000_000
PHASES = 20  # One packet per stream every 20 ticks.
MAX_SEND_BATCH = 64
RECEIVE_BATCH = 256
# After the 12-byte RTP header: stream id (u32), batch id (u32), index in batch (u16).
_STREAM_AT, _BATCH_AT, _INDEX_AT = 12, 16, 20
_RECEIVED_BYTES = 24  # What is kept of each received packet.
_RECEIVED = np.dtype([("head", "V12"), ("stream", ">u4"), ("batch", ">u4"),
                      ("index", ">u2"), ("pad", "V2")])
_CONTROL = np.dtype([("head", "V16"), ("sec", "=i8"), ("nsec", "=i8")])
_SILENCE = 0xFF


class Phones:
    """K sockets for the callers (A) and K for the callees (B), on loopback."""

    def __init__(self, per_side: int = 4, buffer_bytes: int = 16 << 20) -> None:
        self.a = [self._open(buffer_bytes) for _ in range(per_side)]
        self.b = [self._open(buffer_bytes) for _ in range(per_side)]

    @staticmethod
    def _open(buffer_bytes: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)
        sock.bind((HOST, 0))
        sock.setblocking(False)
        enable_receive_timestamps(sock)
        return sock

    def pairs(self, calls: int) -> list[tuple[Address, Address]]:
        """(A address, B address) of each call."""
        k = len(self.a)
        return [(self.a[c % k].getsockname(), self.b[c % k].getsockname())
                for c in range(calls)]

    def ports(self) -> list[int]:
        """Every phone socket's port."""
        return [sock.getsockname()[1] for sock in self.a + self.b]

    def drain(self) -> None:
        """Discard whatever is queued (leftovers of an earlier run)."""
        for sock in self.a + self.b:
            while True:
                try:
                    sock.recv(2048)
                except BlockingIOError:
                    break

    def close(self) -> None:
        """Close every socket."""
        for sock in self.a + self.b:
            sock.close()


@dataclass(slots=True)
class _Chunk:
    """Packets of one phase from one socket, sent with one sendmmsg."""

    fd: int
    batch: MessageBatch
    start: int
    count: int
    seq: np.ndarray
    ts: np.ndarray
    batch_id: np.ndarray


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadResult:
    """One measured window: what was sent, what came back, how late, and the cost."""

    calls: int
    seconds: float
    sent: int  # Packets sent in the window.
    received: int  # Of those, received back (at any time before the end of the drain).
    lost: int
    late: int  # Received, but later than late_ms.
    latency_p50_us: float
    latency_p99_us: float
    generator_cpu: float  # Share of one core the generator used in the window.
    lag_p99_ms: float  # How late the generator's ticks ran (99th percentile).
    unsent: int  # Packets sendmmsg refused (the generator's socket buffer was full).

    @property
    def bad_fraction(self) -> float:
        """Lost or late, as a fraction of the packets sent."""
        return (self.lost + self.late) / self.sent if self.sent else 1.0


Hook = Callable[[], None]


class LoadGenerator:
    """Sends every call's two streams to the relay addresses and measures what returns."""

    def __init__(self, phones: Phones, routes: Sequence[tuple[Address, Address]]) -> None:
        """`routes[c]` is (where call c's A sends, where its B sends)."""
        self.phones = phones
        self.calls = len(routes)
        k = len(phones.a)
        groups: dict[tuple[int, int], list[tuple[int, Address]]] = {}
        for call, (a_to, b_to) in enumerate(routes):
            for side, to in ((0, a_to), (1, b_to)):
                stream = 2 * call + side
                socket_index = side * k + call % k
                groups.setdefault((stream % PHASES, socket_index), []).append((stream, to))
        sockets = phones.a + phones.b
        self._phases: list[list[_Chunk]] = [[] for _ in range(PHASES)]
        for (phase, socket_index), streams in sorted(groups.items()):
            for first in range(0, len(streams), MAX_SEND_BATCH):
                part = streams[first:first + MAX_SEND_BATCH]
                self._phases[phase].append(self._chunk(sockets[socket_index].fileno(), part))
        self._receiver = MessageBatch(RECEIVE_BATCH, _RECEIVED_BYTES,
                                      control_size=TIMESTAMP_CONTROL_SIZE)
        self._fds = [sock.fileno() for sock in sockets]

    @staticmethod
    def _chunk(fd: int, streams: list[tuple[int, Address]]) -> _Chunk:
        batch = MessageBatch(len(streams), PACKET_SIZE, addressed=True)
        batch.data[:] = _SILENCE
        for index, (stream, to) in enumerate(streams):
            struct.pack_into("!BBHIIIIH", batch.slot(index), 0, 0x80, PAYLOAD_TYPE, 0, 0,
                             stream + 1, stream, 0, index)
            batch.set_destination(index, to)
        return _Chunk(fd, batch, 0, len(streams), batch.field(2, ">u2"),
                      batch.field(4, ">u4"), batch.field(_BATCH_AT, ">u4"))

    def run(self, warmup_s: float, seconds: float, drain_s: float = 0.5,
            late_ms: float = 50.0, on_start: Hook | None = None,
            on_end: Hook | None = None) -> LoadResult:
        """Send for `warmup_s` + `seconds`, measuring the latter (`on_start`/`on_end` run at
        its edges, e.g. to read the relay's CPU time), then receive for `drain_s` more."""
        warm_ticks = round(warmup_s * 1e9 / TICK_NS)
        end_tick = warm_ticks + round(seconds * 1e9 / TICK_NS)
        starts: list[int] = []
        ends: list[int] = []
        counts: list[int] = []
        in_window: list[bool] = []
        lags: list[int] = []
        received: list[tuple[bytes, bytes, np.ndarray]] = []
        unsent = 0
        usage0 = usage1 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = wall1 = time.monotonic()
        receive = self._receive_all
        now_ns = time.time_ns
        monotonic_ns = time.monotonic_ns
        begin = monotonic_ns()
        for tick in range(end_tick):
            due = begin + tick * TICK_NS
            late = monotonic_ns() - due
            if late < 0:
                time.sleep(-late / 1e9)
                late = monotonic_ns() - due
            if tick == warm_ticks:
                if on_start is not None:
                    on_start()
                usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
            measuring = tick >= warm_ticks
            if measuring:
                lags.append(late)
            frame = tick // PHASES
            seq, ts = frame & 0xFFFF, (frame * 160) & 0xFFFFFFFF
            for chunk in self._phases[tick % PHASES]:
                chunk.seq[:] = seq
                chunk.ts[:] = ts
                chunk.batch_id[:] = len(starts)
                t0 = now_ns()
                sent = chunk.batch.send(chunk.fd, chunk.start, chunk.count)
                t1 = now_ns()
                sent = max(0, sent)
                unsent += chunk.count - sent
                starts.append(t0)
                ends.append(t1)
                counts.append(sent)
                in_window.append(measuring)
            receive(received)
        usage1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        if on_end is not None:
            on_end()
        stop = time.monotonic() + drain_s
        while time.monotonic() < stop:
            receive(received)
            time.sleep(0.002)
        receive(received)
        cpu = (usage1.ru_utime - usage0.ru_utime + usage1.ru_stime - usage0.ru_stime)
        return self._analyse(seconds, starts, ends, counts, in_window, received, late_ms,
                             generator_cpu=cpu / max(1e-9, wall1 - wall0),
                             lag_p99_ms=float(np.percentile(lags, 99)) / 1e6 if lags else 0.0,
                             unsent=unsent)

    def _receive_all(self, into: list[tuple[bytes, bytes, np.ndarray]]) -> None:
        batch = self._receiver
        for fd in self._fds:
            while True:
                count = batch.receive(fd)
                if count == 0:
                    break
                data, control = batch.raw(count)
                into.append((data, control, batch.lengths[:count].copy()))
                if count < batch.capacity:
                    break

    def _analyse(self, seconds: float, starts: list[int], ends: list[int], counts: list[int],
                 in_window: list[bool], received: list[tuple[bytes, bytes, np.ndarray]],
                 late_ms: float, **extra: float | int) -> LoadResult:
        start = np.array(starts, dtype=np.int64)
        duration = np.array(ends, dtype=np.int64) - start
        count = np.array(counts, dtype=np.int64)
        window = np.array(in_window, dtype=bool)
        sent = int(count[window].sum())
        if received:
            packets = np.frombuffer(b"".join(r[0] for r in received), dtype=_RECEIVED)
            control = np.frombuffer(b"".join(r[1] for r in received), dtype=_CONTROL)
            lengths = np.concatenate([r[2] for r in received])
        else:
            packets = np.zeros(0, dtype=_RECEIVED)
            control = np.zeros(0, dtype=_CONTROL)
            lengths = np.zeros(0, dtype=np.uint32)
        batch = packets["batch"].astype(np.int64)
        valid = (lengths == PACKET_SIZE) & (batch < len(start))
        batch = np.where(valid, batch, 0)
        valid &= window[batch]
        batch = batch[valid]
        index = packets["index"][valid].astype(np.float64)
        sent_at = start[batch] + duration[batch] * (index + 0.5) / np.maximum(1, count[batch])
        arrived = control["sec"][valid] * 1_000_000_000 + control["nsec"][valid]
        latency_us = (arrived - sent_at) / 1e3
        got = int(valid.sum())
        late = int((latency_us > late_ms * 1e3).sum())
        p50, p99 = (np.percentile(latency_us, [50, 99]) if got else (float("nan"),) * 2)
        return LoadResult(calls=self.calls, seconds=seconds, sent=sent, received=got,
                          lost=max(0, sent - got), late=late, latency_p50_us=float(p50),
                          latency_p99_us=float(p99), **extra)  # type: ignore[arg-type]
