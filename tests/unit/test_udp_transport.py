"""The UDP transport reads every datagram, with its source, in bursts and one by one."""

from __future__ import annotations

import asyncio
import socket

import pytest

from cms.net import udp
from cms.net.udp import Address, UdpTransport


async def exchange(payloads: list[bytes], burst: bool) -> list[tuple[bytes, Address]]:
    got: list[tuple[bytes, Address]] = []
    batches: list[int] = []
    transport = UdpTransport.bind(
        "127.0.0.1", 0, lambda data, addr: got.append((data, addr)),
        lambda: batches.append(len(got)),
    )
    assert (transport._batch is not None) == (udp._recvmmsg is not None)
    # An ICMP port unreachable for a datagram we sent is reported on our next read.
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    closed_address = closed.getsockname()
    closed.close()
    transport.send(b"to nobody", closed_address)
    await asyncio.sleep(0.01)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sender.bind(("127.0.0.1", 0))
    try:
        for payload in payloads:
            sender.sendto(payload, transport.local_address)
            if not burst:
                await asyncio.sleep(0.001)
        for _ in range(200):
            if len(got) >= len(payloads):
                break
            await asyncio.sleep(0.01)
        assert transport.received == len(payloads)
        assert batches  # the batch-end callback ran
        return [(data, (host, port - sender.getsockname()[1])) for data, (host, port) in got]
    finally:
        sender.close()
        transport.close()


@pytest.mark.parametrize("burst", [True, False])
@pytest.mark.parametrize("batched", [True, False])
def test_every_datagram_arrives_whole_with_its_source(
    burst: bool, batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not batched:
        monkeypatch.setattr(udp, "_recvmmsg", None)
    elif udp._recvmmsg is None:
        pytest.skip("no recvmmsg here")
    # More than a batch and more than a wake-up's budget, of every size up to the largest.
    payloads = [f"datagram {i} ".encode() * (i % 7 + 1) for i in range(150)]
    payloads[3] = b"x" * 65_000
    payloads[40] = b"y"
    got = asyncio.run(exchange(payloads, burst))
    assert got == [(payload, ("127.0.0.1", 0)) for payload in payloads]


def test_local_address_is_the_bound_one_and_stays_so() -> None:
    async def addresses() -> tuple[Address, Address, Address]:
        transport = UdpTransport.bind("127.0.0.1", 0, lambda data, addr: None)
        try:
            first, second = transport.local_address, transport.local_address
            return first, second, transport.sock.getsockname()[:2]
        finally:
            transport.close()

    first, second, bound = asyncio.run(addresses())
    assert first == second == bound and first[1] != 0
