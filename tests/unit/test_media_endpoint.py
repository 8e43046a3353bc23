"""RTP endpoints on loopback: only the negotiated peer gets through; ports; reading."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from cms.media.endpoint import PeerFilter, RtpEndpoint
from cms.media.ports import PortAllocator, PortsExhausted
from cms.media.reactor import EpollReactor


def rtp(seq: int = 1, version: int = 2) -> bytes:
    return struct.pack("!BBHII", version << 6, 0, seq, seq * 160, 42) + b"\xff" * 160


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def open_endpoint(**options: object) -> tuple[RtpEndpoint, list[bytes]]:
    endpoint = RtpEndpoint(udp(), **options)  # type: ignore[arg-type]
    received: list[bytes] = []
    endpoint.sink = lambda buf, length: received.append(bytes(buf[:length]))
    return endpoint, received


# -- the rule, without sockets


def test_strict_filter_admits_only_the_sdp_address() -> None:
    rule = PeerFilter()
    assert not rule.admit(("10.0.0.1", 4000)), "no peer yet: drop everything"
    rule.expect(("10.0.0.1", 4000))
    assert rule.admit(("10.0.0.1", 4000))
    assert not rule.admit(("10.0.0.1", 4002))
    assert not rule.admit(("10.0.0.9", 4000))


def test_latching_accepts_the_first_port_from_the_sdp_host_then_is_strict() -> None:
    rule = PeerFilter()
    rule.expect(("10.0.0.1", 4000), latch=True)
    assert not rule.admit(("10.6.6.6", 4000))
    assert rule.admit(("10.0.0.1", 31000))
    assert rule.peer == ("10.0.0.1", 31000) and not rule.latching
    assert not rule.admit(("10.0.0.1", 4000))


def test_latching_to_the_nat_host_the_sip_came_from() -> None:
    rule = PeerFilter()
    rule.expect(("192.168.1.20", 4000), latch=True, nat_host="203.0.113.7")
    assert rule.admit(("203.0.113.7", 61000))
    assert rule.peer == ("203.0.113.7", 61000)


# -- ports


def test_allocator_hands_out_even_ports_round_robin() -> None:
    allocator = PortAllocator("127.0.0.1", 31901, 31910)
    socks = [allocator.open() for _ in range(3)]
    ports = [s.getsockname()[1] for s in socks]
    assert ports == [31902, 31904, 31906]
    socks[0].close()
    allocator.release(31902)
    fourth = allocator.open()
    assert fourth.getsockname()[1] == 31908, "a released port is reused last"
    for sock in [*socks, fourth]:
        sock.close()


def test_allocator_skips_ports_taken_by_others_and_reports_exhaustion() -> None:
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", 31920))
    allocator = PortAllocator("127.0.0.1", 31920, 31923)
    try:
        first = allocator.open()
        assert first.getsockname()[1] == 31922
        with pytest.raises(PortsExhausted):
            allocator.open()
        first.close()
    finally:
        squatter.close()


# -- real sockets


def test_strangers_are_dropped_and_counted_and_the_peer_gets_through() -> None:
    async def scenario() -> None:
        endpoint, received = open_endpoint()
        phone, stranger = udp(), udp()
        endpoint.set_peer(phone.getsockname())
        stranger.sendto(rtp(1), endpoint.local_address)
        phone.sendto(rtp(2), endpoint.local_address)
        phone.sendto(rtp(3, version=1), endpoint.local_address)
        await asyncio.sleep(0.05)
        assert [struct.unpack_from("!H", p, 2)[0] for p in received] == [2]
        assert endpoint.dropped_strangers == 1 and endpoint.dropped_invalid == 1
        endpoint.send(b"reply")
        await asyncio.sleep(0.01)
        assert phone.recv(100) == b"reply"
        endpoint.close()
        for sock in (phone, stranger):
            sock.close()

    run(scenario)


def test_no_peer_means_nothing_is_accepted_or_sent() -> None:
    async def scenario() -> None:
        endpoint, received = open_endpoint()
        phone = udp()
        phone.sendto(rtp(), endpoint.local_address)
        endpoint.send(b"x")
        await asyncio.sleep(0.03)
        assert received == [] and endpoint.dropped_strangers == 1 and endpoint.unsent == 1
        endpoint.close()
        phone.close()

    run(scenario)


def test_latching_endpoint_follows_a_natted_phone() -> None:
    async def scenario() -> None:
        endpoint, received = open_endpoint()
        nat = udp()  # the phone's SDP says port 9, but its packets come from the NAT's port
        endpoint.set_peer(("127.0.0.1", 9), latch=True)
        nat.sendto(rtp(5), endpoint.local_address)
        await asyncio.sleep(0.03)
        assert len(received) == 1 and endpoint.peer == nat.getsockname()
        endpoint.close()
        nat.close()

    run(scenario)


@pytest.mark.parametrize("use_epoll", [False, True])
def test_kernel_filter_connects_and_strangers_never_arrive(use_epoll: bool) -> None:
    async def scenario() -> None:
        reactor = EpollReactor() if use_epoll else None
        endpoint, received = open_endpoint(kernel_filter=True, reactor=reactor)
        phone, stranger = udp(), udp()
        endpoint.set_peer(phone.getsockname())
        stranger.sendto(rtp(1), endpoint.local_address)
        phone.sendto(rtp(2), endpoint.local_address)
        await asyncio.sleep(0.05)
        assert [struct.unpack_from("!H", p, 2)[0] for p in received] == [2]
        endpoint.send(b"reply")
        await asyncio.sleep(0.01)
        assert phone.recv(100) == b"reply"
        # A re-INVITE moves the phone: the socket follows.
        endpoint.set_peer(stranger.getsockname())
        stranger.sendto(rtp(3), endpoint.local_address)
        await asyncio.sleep(0.03)
        assert len(received) == 2
        endpoint.close()
        if reactor is not None:
            reactor.close()
        for sock in (phone, stranger):
            sock.close()

    run(scenario)


def test_kernel_filter_with_latching_connects_after_latching() -> None:
    async def scenario() -> None:
        endpoint, received = open_endpoint(kernel_filter=True)
        phone, stranger = udp(), udp()
        endpoint.set_peer(("127.0.0.1", 9), latch=True)
        phone.sendto(rtp(1), endpoint.local_address)
        await asyncio.sleep(0.03)
        stranger.sendto(rtp(2), endpoint.local_address)
        phone.sendto(rtp(3), endpoint.local_address)
        await asyncio.sleep(0.03)
        assert [struct.unpack_from("!H", p, 2)[0] for p in received] == [1, 3]
        endpoint.close()
        for sock in (phone, stranger):
            sock.close()

    run(scenario)


@pytest.mark.parametrize("use_epoll", [False, True])
def test_a_burst_is_read_until_empty_in_few_wakeups(use_epoll: bool) -> None:
    async def scenario() -> None:
        reactor = EpollReactor() if use_epoll else None
        endpoint, received = open_endpoint(reactor=reactor)
        phone = udp()
        endpoint.set_peer(phone.getsockname())
        for seq in range(200):
            phone.sendto(rtp(seq), endpoint.local_address)
        await asyncio.sleep(0.05)
        assert len(received) == 200
        if reactor is not None:
            assert reactor.wakeups <= 3
            reactor.close()
        endpoint.close()
        phone.close()

    run(scenario)


def test_close_gives_the_port_back() -> None:
    async def scenario() -> None:
        released: list[int] = []
        endpoint = RtpEndpoint(udp(), on_close=released.append)
        port = endpoint.local_address[1]
        endpoint.close()
        endpoint.close()
        assert released == [port] and endpoint.closed

    run(scenario)


@pytest.mark.parametrize("use_epoll", [False, True])
def test_a_flooded_socket_does_not_starve_a_quiet_one(use_epoll: bool) -> None:
    async def scenario() -> None:
        reactor = EpollReactor() if use_epoll else None
        flooded, flood_received = open_endpoint(reactor=reactor)
        quiet = RtpEndpoint(udp(), reactor=reactor)
        phone = udp()
        flooded.set_peer(phone.getsockname())
        quiet.set_peer(phone.getsockname())
        seen_when_quiet_served: list[int] = []
        quiet.sink = lambda buf, length: seen_when_quiet_served.append(len(flood_received))
        for seq in range(200):  # (as many as a default socket buffer holds)
            phone.sendto(rtp(seq), flooded.local_address)
        phone.sendto(rtp(1), quiet.local_address)
        for _ in range(100):
            if seen_when_quiet_served:
                break
            await asyncio.sleep(0)
        # Served within the first wake-up: before the flooded socket was drained.
        assert seen_when_quiet_served and seen_when_quiet_served[0] <= 32
        await asyncio.sleep(0.05)
        assert len(flood_received) == 200
        for endpoint in (flooded, quiet):
            endpoint.close()
        if reactor is not None:
            reactor.close()
        phone.close()

    run(scenario)
