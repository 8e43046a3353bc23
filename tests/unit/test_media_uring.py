"""The io_uring relay path on loopback: the same bytes and statistics as the per-packet path,
fallbacks for everything but the common case, strangers, buffer recycling, closing legs."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import itertools
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import numpy as np
import pytest

from cms.media import uring_reactor
from cms.media.formats import PCMA, PCMU, MediaFormat
from cms.media.ports import bind_udp
from cms.media.relay import Leg, bridge
from cms.media.rtp import RtpPacket
from cms.media.service import MediaService
from cms.media.stats import StreamStats
from cms.media.uring_reactor import UringEndpoint, UringReactor
from cms.net.uring import Ring

pytestmark = pytest.mark.skipif(not Ring.available(), reason="no io_uring here")


class Phone:
    """A loopback UDP socket that sends RTP to a leg and keeps what it receives, as bytes."""

    def __init__(self, ssrc: int, seq: int = 1000, ts: int = 50000) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.ssrc, self.seq, self.ts = ssrc, seq, ts
        self.received: list[bytes] = []

    def send(self, leg: Leg, *, pt: int = 0, payload: bytes | None = None,
             marker: bool = False, seq: int | None = None) -> None:
        """One packet; the sequence number and timestamp advance unless `seq` is given."""
        sequence = self.seq if seq is None else seq
        if payload is None:
            payload = bytes([sequence & 0xFF]) * 160
        packet = RtpPacket(payload_type=pt, sequence=sequence, timestamp=self.ts,
                           ssrc=self.ssrc, marker=marker, payload=payload)
        self.sock.sendto(packet.serialize(), leg.local_address)
        if seq is None:
            self.seq = (self.seq + 1) & 0xFFFF
            self.ts = (self.ts + 160) & 0xFFFFFFFF

    def collect(self) -> list[bytes]:
        while True:
            try:
                self.received.append(self.sock.recv(2048))
            except BlockingIOError:
                return self.received

    def close(self) -> None:
        self.sock.close()


class FakeClock:
    """Monotonic time that moves only when told: both paths see the same arrival times."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def settle(service: MediaService) -> None:
    """Let the reactor handle everything sent so far."""
    await asyncio.sleep(0.01)
    drain = getattr(service.reactor, "drain", None)
    if drain is not None:
        drain()
    await asyncio.sleep(0)


def run(scenario: Callable[[MediaService], Awaitable[Any]], chunk: int | None = None,
        **options: Any) -> Any:
    """`scenario` on a started MediaService; `chunk`: completions per compiled call."""
    async def main() -> Any:
        service = MediaService("127.0.0.1", (0, 0), **options)
        service.start()
        if chunk is not None:
            service.reactor = UringReactor()
            service.reactor.chunk = chunk
        try:
            return await scenario(service)
        finally:
            service.close()

    return asyncio.run(main())


@pytest.fixture
def deterministic(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    """Outbound SSRCs, sequence numbers and timestamps from a counter; a fake clock."""
    clock = FakeClock()
    counter = itertools.count(0x10203)
    monkeypatch.setattr("cms.media.stream.secrets.randbits",
                        lambda bits: (next(counter) * 0x9E3779B1) & ((1 << bits) - 1))
    monkeypatch.setattr("cms.media.relay._monotonic", clock)
    yield clock


def mixed_traffic(clock: FakeClock) -> Callable[[MediaService], Awaitable[Any]]:
    """Two bridged legs and traffic covering the common case and every fallback."""

    async def scenario(service: MediaService) -> Any:
        a, b = service.open_leg("a"), service.open_leg("b")
        if service.reactor is not None and hasattr(service.reactor, "clock"):
            service.reactor.clock = clock  # type: ignore[attr-defined]
        phone_a = Phone(0x1111, seq=65530, ts=0xFFFFF000)  # Both wrap during the run.
        phone_b = Phone(0x2222)
        a.configure(MediaFormat(codec=PCMU), phone_a.address)
        b.configure(MediaFormat(codec=PCMU, dtmf_payload_type=96), phone_b.address)
        bridge(a, b)

        async def step(seconds: float = 0.02) -> None:
            await settle(service)
            clock.now += seconds

        for _ in range(4):  # A burst: the first follows (slow), then several per batch.
            phone_a.send(a)
        phone_b.send(b)
        phone_b.send(b)
        await step()
        for _ in range(3):
            for _ in range(3):
                phone_a.send(a)
            await step()
        # DTMF amid audio: the events and the leg's later packets in the batch go slowly.
        phone_a.send(a)
        for end in (False, False, True):
            phone_a.send(a, pt=101, payload=bytes([5, 0x80 if end else 0, 0, 160]))
        phone_a.send(a)
        phone_a.send(a, marker=True)
        await step()
        phone_a.send(a, pt=13, payload=b"\x40")  # Comfort noise: not negotiated.
        phone_a.send(a)
        await step(1.5)
        phone_a.ssrc = 0x3333  # A new source: re-anchored after 1.5 s.
        for _ in range(3):
            phone_a.send(a)
        await step()
        last = (phone_a.seq - 1) & 0xFFFF
        phone_a.send(a, seq=last)  # Duplicate.
        phone_a.send(a, seq=(last - 2) & 0xFFFF)  # Older, and also a duplicate.
        phone_a.seq = (phone_a.seq + 5) & 0xFFFF  # Lost.
        phone_a.send(a)
        phone_a.send(a)
        await step()
        b.out.held = True  # Injected DTMF on B: a new feed waits.
        b.out.release()
        phone_a.send(a)
        await step()
        b.out.held = False
        phone_a.send(a)
        phone_a.send(a)
        phone_b.send(b)
        await step()
        phone_a.seq = (phone_a.seq + 4000) & 0xFFFF  # A restart of the numbering.
        for _ in range(3):
            phone_a.send(a)
        await step()
        outputs = (list(phone_a.collect()), list(phone_b.collect()))
        stats = (a.stats(), b.stats())
        counters = {name: getattr(service.reactor, name, None)
                    for name in ("relayed_fast", "relayed_slow")}
        phone_a.close()
        phone_b.close()
        return outputs, stats, counters

    return scenario


def bridged_pair(service: MediaService) -> tuple[Leg, Leg, Phone, Phone]:
    """Legs a and b bridged, each with its phone (SSRCs 1 and 2), in G.711 PCMU."""
    a, b = service.open_leg("a"), service.open_leg("b")
    phone_a, phone_b = Phone(0x1), Phone(0x2)
    a.configure(MediaFormat(), phone_a.address)
    b.configure(MediaFormat(), phone_b.address)
    bridge(a, b)
    return a, b, phone_a, phone_b


def calls_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, list[int]]]:
    """From now on, per call of the compiled loop: the chunks it took and the receiving slots
    of the completions it consumed."""
    calls: list[tuple[int, list[int]]] = []
    relay_ring = uring_reactor.relay_ring

    def recording(fd: int, words: Any, index: Any, cqes: Any, *args: Any) -> Any:
        head = int(words[index[2]])
        result = relay_ring(fd, words, index, cqes, *args)
        count = (int(words[index[2]]) - head) & 0xFFFFFFFF
        rows = cqes[(head + np.arange(count)) & (len(cqes) - 1)]
        receives = rows[(rows[:, 0] >> 62) & 3 == 0]
        calls.append((result[1], (receives[:, 0] & 0xFFFFFFFF).tolist()))
        return result

    monkeypatch.setattr(uring_reactor, "relay_ring", recording)
    return calls


@pytest.mark.parametrize("kernel_filter", [False, True], ids=["companion", "kernel-filter"])
@pytest.mark.parametrize("chunk", [1, None], ids=["one-per-chunk", "whole-chunks"])
def test_relayed_bytes_and_statistics_equal_the_per_packet_path(
        deterministic: FakeClock, monkeypatch: pytest.MonkeyPatch, kernel_filter: bool,
        chunk: int | None) -> None:
    """The compiled path against the epoll reactor's, on the same traffic and clock, with
    completions taken one per chunk and as many as there are."""
    (out_old, stats_old, _) = run(mixed_traffic(deterministic), uring=False,
                                  kernel_filter=kernel_filter)
    deterministic.now = 1000.0
    counter = itertools.count(0x10203)  # The same outbound SSRCs and starting points again.
    monkeypatch.setattr("cms.media.stream.secrets.randbits",
                        lambda bits: (next(counter) * 0x9E3779B1) & ((1 << bits) - 1))
    calls = calls_seen(monkeypatch)
    (out_new, stats_new, counters) = run(mixed_traffic(deterministic), chunk,
                                         kernel_filter=kernel_filter)

    assert counters["relayed_fast"] > 10 and counters["relayed_slow"] > 5
    if chunk == 1:
        assert all(len(slots) <= chunks for chunks, slots in calls)
    else:  # Chunks held several packets of one leg.
        assert any(chunks == 1 and len(set(slots)) < len(slots) for chunks, slots in calls)
    assert len(out_new[1]) > 25
    assert out_new == out_old  # Byte for byte, in order, on both phones.
    for old, new in zip(stats_old, stats_new, strict=True):  # Ports differ, nothing else.
        assert dataclasses.replace(new, local=old.local, remote=old.remote) == old
    received: StreamStats = stats_new[0].received
    assert received.duplicates == 2 and received.packets_lost == 6 and received.restarts == 2
    assert stats_new[0].digits


def test_transcoding_legs_take_the_per_packet_path() -> None:
    async def scenario(service: MediaService) -> None:
        a, b = service.open_leg("a"), service.open_leg("b")
        phone_a, phone_b = Phone(0x1), Phone(0x2)
        a.configure(MediaFormat(codec=PCMU), phone_a.address)
        b.configure(MediaFormat(codec=PCMA), phone_b.address)
        bridge(a, b)
        for _ in range(5):
            phone_a.send(a)
        await settle(service)
        packets = [RtpPacket.parse(p) for p in phone_b.collect()]
        assert [p.payload_type for p in packets] == [8] * 5
        reactor = service.reactor
        assert isinstance(reactor, UringReactor)
        assert reactor.relayed_fast == 0 and reactor.relayed_slow == 5
        phone_a.close()
        phone_b.close()

    run(scenario)


def test_strangers_are_dropped_and_counted_while_the_peer_is_relayed() -> None:
    async def scenario(service: MediaService) -> None:
        a, b, phone_a, phone_b = bridged_pair(service)
        stranger = Phone(0x9)
        assert isinstance(a.endpoint, UringEndpoint)
        for _ in range(3):
            phone_a.send(a)
            stranger.send(a)
        await settle(service)
        for _ in range(3):
            phone_a.send(a)
        await settle(service)
        assert len(phone_b.collect()) == 6
        assert a.stats().dropped_strangers == 3
        assert a.stats().received.packets_received == 6
        reactor = service.reactor
        assert isinstance(reactor, UringReactor) and reactor.relayed_fast >= 3
        for phone in (phone_a, phone_b, stranger):
            phone.close()

    run(scenario)


def test_buffers_are_recycled_under_sustained_load() -> None:
    async def scenario(service: MediaService) -> None:
        # 64 buffers for 20 legs and 3000 packets: the pool empties and refills again and
        # again, multishot receives end (ENOBUFS) and are re-armed; nothing may be lost.
        service.reactor = UringReactor(buffers=64, entries=64)
        calls = []
        for _ in range(10):
            a, b, phone_a, phone_b = bridged_pair(service)
            calls.append((a, b, phone_a, phone_b))
        for _ in range(15):
            for _ in range(10):
                for a, b, phone_a, phone_b in calls:
                    phone_a.send(a)
                    phone_b.send(b)
            await settle(service)
        await settle(service)
        for a, b, phone_a, phone_b in calls:
            for leg, phone in ((a, phone_b), (b, phone_a)):
                got = [RtpPacket.parse(p) for p in phone.collect()]
                assert len(got) == 150
                assert all((q.sequence - p.sequence) & 0xFFFF == 1
                           for p, q in zip(got, got[1:], strict=False))
                assert [p.payload for p in got] == [bytes([s & 0xFF]) * 160 for s in
                                                    range(1000, 1150)]
                assert leg.stats().received.packets_lost == 0
            phone_a.close()
            phone_b.close()
        reactor = service.reactor
        assert reactor.relayed_fast > 2000 and reactor.enobufs > 0

    run(scenario)


def test_closing_a_leg_cancels_its_receive_and_frees_its_slot_and_port() -> None:
    async def scenario(service: MediaService) -> None:
        a, b, phone_a, phone_b = bridged_pair(service)
        phone_a.send(a)
        await settle(service)
        port, slot = b.local_address[1], b.endpoint.slot  # type: ignore[attr-defined]
        final = b.stats()
        service.close_leg(b)
        phone_a.send(a)  # To a leg routed nowhere now.
        await settle(service)
        # The ring no longer holds the companion: the port can be bound by anyone.
        sock = bind_udp("127.0.0.1", port)
        assert sock is not None
        sock.close()
        assert b.stats().packets_sent == final.packets_sent == 1  # Kept past the slot.
        c = service.open_leg("c")
        assert c.endpoint.slot == slot  # type: ignore[attr-defined]
        phone_c = Phone(0x3)
        c.configure(MediaFormat(), phone_c.address)
        bridge(a, c)
        assert c.stats().packets_sent == 0 and c.stats().received.packets_received == 0
        for _ in range(3):
            phone_a.send(a)
            phone_c.send(c)
        await settle(service)
        assert len(phone_c.collect()) == 3 and len(phone_a.collect()) == 3
        assert len(phone_b.collect()) == 1
        for phone in (phone_a, phone_b, phone_c):
            phone.close()

    run(scenario)


@pytest.mark.parametrize("chunk", [1, None], ids=["one-per-chunk", "whole-chunks"])
def test_sends_the_kernel_refuses_are_counted_as_errors(chunk: int | None) -> None:
    async def scenario(service: MediaService) -> None:
        a, b, phone_a, phone_b = bridged_pair(service)
        phone_a.send(a)
        await settle(service)
        # Batched sends to B go through a socket with no destination from now on: the
        # kernel refuses each (EDESTADDRREQ), which only a failure's completion reports.
        unconnected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        table, slot = b.endpoint.table, b.endpoint.slot  # type: ignore[attr-defined]
        table.send_fd[slot] = unconnected.fileno()
        for _ in range(4):
            phone_a.send(a)
        await settle(service)
        stats = b.stats()
        assert (stats.packets_sent, stats.send_errors) == (1, 4)
        assert len(phone_b.collect()) == 1
        unconnected.close()
        phone_a.close()
        phone_b.close()

    run(scenario, chunk)


def test_the_plain_path_when_io_uring_is_turned_off() -> None:
    async def scenario(service: MediaService) -> None:
        service.open_leg("a")
        assert not isinstance(service.reactor, UringReactor)

    run(scenario, uring=False)


def test_a_socket_error_on_a_receive_rearms_it() -> None:
    async def scenario(service: MediaService) -> None:
        a, b, phone_a, phone_b = bridged_pair(service)
        phone_a.close()  # B's packets to A draw ICMP errors onto A's connected socket.
        for _ in range(3):
            phone_b.send(b)
            await settle(service)
        phone_a = Phone(0x1)
        phone_a.sock.close()
        phone_a.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        phone_a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            phone_a.sock.bind(a.endpoint.peer)  # type: ignore[arg-type]
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE
            pytest.skip("the phone's port was taken meanwhile")
        phone_a.sock.setblocking(False)
        for _ in range(3):
            phone_a.send(a)
        await settle(service)
        assert len(phone_b.collect()) == 3  # A still receives after its socket's errors.
        phone_a.close()
        phone_b.close()

    run(scenario)


def test_a_leg_opened_by_a_packet_handler_grows_the_table_under_traffic() -> None:
    async def scenario(service: MediaService) -> None:
        # The table starts with 64 slots; a DTMF handler opening 80 legs mid-batch moves
        # every column while the batch's later packets are still to be relayed.
        opened: list[Leg] = []

        def on_dtmf(leg: Leg, notice: object) -> None:
            if not opened:
                opened.extend(service.open_leg(f"x{i}") for i in range(80))

        a, b, phone_a, phone_b = bridged_pair(service)
        a.on_dtmf = on_dtmf
        for _ in range(3):
            phone_a.send(a)
        await settle(service)
        reactor = service.reactor
        assert isinstance(reactor, UringReactor)
        for chunk in (1, reactor.chunk):  # One completion per chunk, then all at once.
            reactor.chunk = chunk
            opened.clear()
            phone_a.send(a, pt=101, payload=bytes([5, 0x80, 0, 160]))
            for _ in range(5):
                phone_a.send(a)
            await settle(service)
            assert len(opened) == 80
            for _ in range(3):
                phone_a.send(a)
            await settle(service)
        packets = [RtpPacket.parse(p) for p in phone_b.collect()]
        audio = [p for p in packets if p.payload_type == 0]
        assert len(audio) == 19
        assert all((q.sequence - p.sequence) & 0xFFFF == 1
                   for p, q in zip(packets, packets[1:], strict=False))
        assert a.stats().received.packets_received == 21
        assert b.stats().packets_sent == len(packets)
        phone_a.close()
        phone_b.close()

    run(scenario)
