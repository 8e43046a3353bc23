"""Companion sockets: the peer's packets through a connect()ed socket on the same port."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from cms.media.endpoint import RtpEndpoint, _Companions
from cms.media.ports import PortAllocator, bind_udp
from cms.media.reactor import EpollReactor, Packets


def rtp(seq: int = 1) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 42) + b"\xff" * 160


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(1.0)
    return sock


def sequences(packets: list[bytes]) -> list[int]:
    return [struct.unpack_from("!H", p, 2)[0] for p in packets]


def open_endpoint(reactor: EpollReactor) -> tuple[RtpEndpoint, list[bytes]]:
    """An endpoint with companions on a shared free port, and what its sink receives."""
    endpoint = RtpEndpoint(PortAllocator("127.0.0.1", 0, 0, shared=True).open(),
                           reactor=reactor, companion=True)
    received: list[bytes] = []
    endpoint.sink = lambda buf, length: received.append(bytes(buf[:length]))
    return endpoint, received


def test_a_shared_port_is_still_taken_for_everyone_else() -> None:
    first = bind_udp("127.0.0.1", 0, shared=True)
    assert first is not None
    port = first.getsockname()[1]
    assert bind_udp("127.0.0.1", port) is None
    assert bind_udp("127.0.0.1", port, shared=True) is None  # Another allocator: taken.
    first.close()


def test_peer_packets_use_the_companion_and_strangers_are_still_counted() -> None:
    async def scenario() -> None:
        reactor = EpollReactor()
        endpoint, received = open_endpoint(reactor)
        phone, stranger, moved = udp(), udp(), udp()
        endpoint.set_peer(phone.getsockname())
        assert endpoint._companion is not None
        phone.sendto(rtp(1), endpoint.local_address)
        stranger.sendto(rtp(2), endpoint.local_address)
        await asyncio.sleep(0.05)
        assert sequences(received) == [1] and endpoint.dropped_strangers == 1
        endpoint.send(rtp(3))
        data, source = phone.recvfrom(2048)
        assert sequences([data]) == [3] and source == endpoint.local_address

        endpoint.set_peer(moved.getsockname())  # A re-INVITE moved the phone.
        phone.sendto(rtp(4), endpoint.local_address)
        moved.sendto(rtp(5), endpoint.local_address)
        await asyncio.sleep(0.05)
        assert sequences(received) == [1, 5] and endpoint.dropped_strangers == 2
        endpoint.send(rtp(6))
        assert sequences([moved.recv(2048)]) == [6]

        endpoint.set_peer(None)
        assert endpoint._companion is None
        endpoint.close()
        assert endpoint.closed
        reactor.close()
        for sock in (phone, stranger, moved):
            sock.close()

    asyncio.run(scenario())


def test_latching_gets_a_companion_once_latched() -> None:
    async def scenario() -> None:
        reactor = EpollReactor()
        endpoint, received = open_endpoint(reactor)
        phone = udp()
        endpoint.set_peer(("127.0.0.1", 9), latch=True)
        assert endpoint._companion is None
        phone.sendto(rtp(1), endpoint.local_address)
        await asyncio.sleep(0.05)
        assert endpoint.peer == phone.getsockname() and endpoint._companion is not None
        phone.sendto(rtp(2), endpoint.local_address)
        await asyncio.sleep(0.05)
        assert sequences(received) == [1, 2]
        endpoint.close()
        reactor.close()
        phone.close()

    asyncio.run(scenario())


def test_closing_frees_the_port() -> None:
    async def scenario() -> None:
        reactor = EpollReactor()
        endpoint, _ = open_endpoint(reactor)
        phone = udp()
        endpoint.set_peer(phone.getsockname())
        port = endpoint.local_address[1]
        endpoint.close()
        again = bind_udp("127.0.0.1", port)
        assert again is not None
        again.close()
        reactor.close()
        phone.close()

    asyncio.run(scenario())


def test_past_the_budget_legs_do_without_a_companion(monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        monkeypatch.setattr(_Companions, "limit", _Companions.open)
        reactor = EpollReactor()
        endpoint, received = open_endpoint(reactor)
        phone = udp()
        endpoint.set_peer(phone.getsockname())
        assert endpoint._companion is None
        phone.sendto(rtp(1), endpoint.local_address)
        await asyncio.sleep(0.05)
        assert sequences(received) == [1]  # Served by the shared socket.
        endpoint.close()
        reactor.close()
        phone.close()

    asyncio.run(scenario())


def test_packet_views_are_the_buffers_first_bytes_and_reused() -> None:
    buffer = bytearray(b"0123456789")
    packets = Packets(buffer)
    assert bytes(packets[4]) == b"0123" and packets[4] is packets[4]
    buffer[0:2] = b"ab"
    assert bytes(packets[4]) == b"ab23"  # A view, not a copy.
