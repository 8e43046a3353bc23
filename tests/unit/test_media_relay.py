"""Legs and bridges on loopback: pass-through, transcoding, DTMF, hold audio, continuity."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from cms.media.dtmf import DigitPressed, DigitReleased, DtmfNotice, DtmfSender, TelephoneEvent
from cms.media.formats import PCMA, PCMU, MediaFormat
from cms.media.g711 import ulaw_to_alaw
from cms.media.relay import Leg, bridge, connect, disconnect
from cms.media.rtp import RtpPacket
from cms.media.service import MediaService
from cms.media.sources import LoopSource, ToneSource

SEQ_MASK, TS_MASK = 0xFFFF, 0xFFFFFFFF


class Phone:
    """A UDP socket on loopback that sends and collects RTP packets."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.seq, self.ts = 1000, 50000
        self.received: list[RtpPacket] = []

    def send(self, leg: Leg, payload: bytes = b"\xff" * 160, pt: int = 0, *,
             marker: bool = False, ssrc: int = 0x5555, timestamp: int | None = None) -> None:
        packet = RtpPacket(payload_type=pt, sequence=self.seq, ssrc=ssrc, payload=payload,
                           timestamp=self.ts if timestamp is None else timestamp, marker=marker)
        self.sock.sendto(packet.serialize(), leg.local_address)
        self.seq = (self.seq + 1) & SEQ_MASK
        self.ts = (self.ts + 160) & TS_MASK

    def collect(self) -> list[RtpPacket]:
        while True:
            try:
                self.received.append(RtpPacket.parse(self.sock.recv(2048)))
            except BlockingIOError:
                return self.received

    def close(self) -> None:
        self.sock.close()


def run(scenario: Callable[[MediaService], Awaitable[None]]) -> None:
    async def main() -> None:
        service = MediaService("127.0.0.1", (0, 0))
        service.start()
        try:
            await scenario(service)
        finally:
            service.close()

    asyncio.run(main())


def call(service: MediaService, format_a: MediaFormat, format_b: MediaFormat,
         **options: object) -> tuple[Leg, Leg, Phone, Phone]:
    a, b = service.open_leg("a", **options), service.open_leg("b", **options)  # type: ignore[arg-type]
    phone_a, phone_b = Phone(), Phone()
    a.configure(format_a, phone_a.address)
    b.configure(format_b, phone_b.address)
    return a, b, phone_a, phone_b


def assert_continuous(packets: list[RtpPacket], events_pt: int = -1) -> None:
    """One SSRC, sequence +1 each packet, timestamps forward (equal within one event)."""
    assert len({p.ssrc for p in packets}) == 1
    for before, after in zip(packets, packets[1:], strict=False):
        assert (after.sequence - before.sequence) & SEQ_MASK == 1
        step = (after.timestamp - before.timestamp) & TS_MASK
        if after.payload_type == events_pt and not after.marker:
            assert step == 0
        else:
            assert 0 < step < 0x80000000


def test_same_codec_passes_payload_through_with_the_legs_own_header() -> None:
    async def scenario(service: MediaService) -> None:
        a, b, phone_a, phone_b = call(service, MediaFormat(), MediaFormat())
        bridge(a, b)
        payloads = [bytes([i]) * 160 for i in range(5)]
        for payload in payloads:
            phone_a.send(a, payload)
        phone_b.send(b, b"\x01" * 160)
        await asyncio.sleep(0.05)
        at_b, at_a = phone_b.collect(), phone_a.collect()
        assert [p.payload for p in at_b] == payloads
        assert {p.ssrc for p in at_b} == {b.out.ssrc} and b.out.ssrc != 0x5555
        assert at_b[0].marker and not any(p.marker for p in at_b[1:])
        assert_continuous(at_b)
        assert [p.payload for p in at_a] == [b"\x01" * 160]

    run(scenario)


def test_different_codecs_are_transcoded_and_get_the_other_payload_type() -> None:
    async def scenario(service: MediaService) -> None:
        a, b, phone_a, phone_b = call(service, MediaFormat(codec=PCMU),
                                      MediaFormat(codec=PCMA))
        bridge(a, b)
        payload = bytes(range(160))
        phone_a.send(a, payload, pt=0)
        await asyncio.sleep(0.03)
        (packet,) = phone_b.collect()
        assert packet.payload_type == 8
        assert packet.payload == ulaw_to_alaw(payload)

    run(scenario)


def test_dtmf_is_relayed_with_the_target_payload_type_and_reported_once() -> None:
    async def scenario(service: MediaService) -> None:
        notices: list[tuple[str, DtmfNotice]] = []
        a, b, phone_a, phone_b = call(
            service, MediaFormat(dtmf_payload_type=101), MediaFormat(dtmf_payload_type=96),
            on_dtmf=lambda leg, notice: notices.append((leg.name, notice)))
        bridge(a, b)
        sender = DtmfSender("4", duration_ms=60, pause_ms=0)
        while (packet := sender.next_packet()) is not None:
            phone_a.send(a, packet.payload, pt=101, marker=packet.marker, timestamp=7000)
        await asyncio.sleep(0.05)
        at_b = phone_b.collect()
        assert len(at_b) == 5 and {p.payload_type for p in at_b} == {96}
        assert len({p.timestamp for p in at_b}) == 1
        assert [TelephoneEvent.parse(p.payload).end for p in at_b] == [False, False] + [True] * 3
        assert [type(n) for _, n in notices] == [DigitPressed, DigitReleased]
        assert notices[0] == ("a", DigitPressed("4", 4, 7000))
        assert a.stats().digits == "4"

    run(scenario)


def test_dtmf_is_not_relayed_to_a_leg_without_telephone_events() -> None:
    async def scenario(service: MediaService) -> None:
        a, b, phone_a, phone_b = call(service, MediaFormat(),
                                      MediaFormat(dtmf_payload_type=None))
        bridge(a, b)
        phone_a.send(a, TelephoneEvent(event=1, end=True).serialize(), pt=101)
        phone_a.send(a)
        await asyncio.sleep(0.03)
        assert [p.payload_type for p in phone_b.collect()] == [0]
        assert a.stats().digits == "1"

    run(scenario)


def test_unnegotiated_payload_types_and_strangers_are_dropped() -> None:
    async def scenario(service: MediaService) -> None:
        a, b, phone_a, phone_b = call(service, MediaFormat(), MediaFormat())
        bridge(a, b)
        stranger = Phone()
        stranger.send(a, b"\x00" * 160)
        phone_a.send(a, b"\x13" * 2, pt=13)  # comfort noise, not negotiated
        await asyncio.sleep(0.03)
        assert phone_b.collect() == []
        stats = a.stats()
        assert stats.dropped_strangers == 1 and stats.dropped_payload_type == 1
        stranger.close()

    run(scenario)


def test_hold_music_then_agent_audio_is_one_continuous_stream() -> None:
    async def scenario(service: MediaService) -> None:
        caller, agent, phone_caller, phone_agent = call(service, MediaFormat(), MediaFormat())
        caller.play(ToneSource(440))
        await asyncio.sleep(0.2)
        music = phone_caller.collect()[:]
        assert len(music) >= 5 and music[0].marker
        assert_continuous(music)
        bridge(caller, agent)  # the agent answers
        assert caller.playing is None
        for _ in range(3):
            phone_agent.send(agent, b"\x42" * 160, ssrc=0xA9E)
        await asyncio.sleep(0.05)
        everything = phone_caller.collect()
        assert everything[-1].payload == b"\x42" * 160
        assert_continuous(everything)
        first_relayed = everything[-3]
        assert first_relayed.marker and first_relayed.ssrc == caller.out.ssrc
        # Agent on hold: music again, still the same stream.
        agent.stop_audio()
        caller.play(ToneSource(440))
        await asyncio.sleep(0.1)
        assert_continuous(phone_caller.collect())
        assert agent.relaying_to is None and caller.fed_by is None

    run(scenario)


def test_announcement_ends_and_reports_done() -> None:
    async def scenario(service: MediaService) -> None:
        leg, _, phone, _ = call(service, MediaFormat(codec=PCMA), MediaFormat())
        done: list[Leg] = []
        leg.play(LoopSource(np.full(480, 1000, dtype=np.int16), loop=False), done.append)
        await asyncio.sleep(0.15)
        packets = phone.collect()
        assert len(packets) == 3 and done == [leg] and leg.playing is None
        assert {p.payload_type for p in packets} == {8}

    run(scenario)


def test_injected_dtmf_pauses_audio_and_follows_rfc_4733() -> None:
    async def scenario(service: MediaService) -> None:
        leg, _, phone, _ = call(service, MediaFormat(dtmf_payload_type=101), MediaFormat())
        leg.play(ToneSource(500))
        await asyncio.sleep(0.06)
        leg.send_dtmf("9", duration_ms=60, pause_ms=0)
        await asyncio.sleep(0.25)
        packets = phone.collect()
        kinds = "".join("E" if p.payload_type == 101 else "a" for p in packets)
        assert "aEEEEEa" in kinds and kinds.count("E") == 5
        events = [p for p in packets if p.payload_type == 101]
        assert events[0].marker and len({p.timestamp for p in events}) == 1
        assert_continuous(packets, events_pt=101)

    run(scenario)


def test_send_dtmf_needs_a_negotiated_payload_type() -> None:
    async def scenario(service: MediaService) -> None:
        leg, _, _, _ = call(service, MediaFormat(dtmf_payload_type=None), MediaFormat())
        with pytest.raises(ValueError, match="telephone-event"):
            leg.send_dtmf("1")

    run(scenario)


def test_one_way_connect_and_disconnect() -> None:
    async def scenario(service: MediaService) -> None:
        a, b, phone_a, phone_b = call(service, MediaFormat(), MediaFormat())
        connect(a, b)
        phone_a.send(a)
        phone_b.send(b)
        await asyncio.sleep(0.03)
        assert len(phone_b.collect()) == 1 and phone_a.collect() == []
        disconnect(a)
        phone_a.send(a)
        await asyncio.sleep(0.03)
        assert len(phone_b.collect()) == 1

    run(scenario)


def test_leg_stats_report_loss_and_close_frees_the_port() -> None:
    async def scenario(service: MediaService) -> None:
        a, b, phone_a, _ = call(service, MediaFormat(), MediaFormat())
        for seq in range(10):
            if seq != 4:
                phone_a.seq = seq
                phone_a.send(a)
        await asyncio.sleep(0.03)
        stats = a.close()
        assert stats.received.packets_lost == 1 and stats.received.packets_received == 9
        assert stats.codec == "PCMU" and stats.remote == phone_a.address
        assert service.allocator.in_use == 1

    run(scenario)


def test_bridging_requires_configured_legs() -> None:
    async def scenario(service: MediaService) -> None:
        a, b = service.open_leg(), service.open_leg()
        with pytest.raises(ValueError):
            bridge(a, b)

    run(scenario)


def test_calls_on_one_reactor_share_a_receive_buffer_without_crosstalk() -> None:
    async def scenario(service: MediaService) -> None:
        calls = [call(service, MediaFormat(codec=PCMU), MediaFormat(codec=PCMU))
                 for _ in range(3)]
        buffers = {id(leg.endpoint.buffer) for a, b, _, _ in calls for leg in (a, b)}
        assert len(buffers) == 1  # One buffer for every leg on the reactor.
        for a, b, _, _ in calls:
            bridge(a, b)
        for _ in range(5):  # Interleaved: each read overwrites the one buffer.
            for index, (a, b, phone_a, phone_b) in enumerate(calls):
                phone_a.send(a, bytes([index]) * 160, ssrc=100 + index)
                phone_b.send(b, bytes([0x80 | index]) * 160, ssrc=200 + index)
        await asyncio.sleep(0.1)
        for index, (a, b, phone_a, phone_b) in enumerate(calls):
            to_b, to_a = phone_b.collect(), phone_a.collect()
            assert [p.payload for p in to_b] == [bytes([index]) * 160] * 5
            assert [p.payload for p in to_a] == [bytes([0x80 | index]) * 160] * 5
            assert {p.ssrc for p in to_b} == {b.out.ssrc}
            assert_continuous(to_b)
            assert b.stats().packets_sent == 5 and a.stats().packets_sent == 5
            phone_a.close()
            phone_b.close()

    run(scenario)


def test_relayed_packets_the_kernel_refuses_are_counted_as_send_errors() -> None:
    async def scenario(service: MediaService) -> None:
        a, b, phone_a, phone_b = call(service, MediaFormat(codec=PCMU),
                                      MediaFormat(codec=PCMU))
        bridge(a, b)
        phone_a.send(a)
        await asyncio.sleep(0.05)

        def refuse(data: object) -> int:
            raise OSError(errno.ENOBUFS, "No buffer space available")

        b.endpoint.connected_send = refuse  # The peer-connected socket the relay sends on.
        for _ in range(3):
            phone_a.send(a)
        await asyncio.sleep(0.05)
        stats = b.stats()
        assert (stats.packets_sent, stats.send_errors) == (1, 3)
        assert len(phone_b.collect()) == 1
        phone_a.close()
        phone_b.close()

    run(scenario)
