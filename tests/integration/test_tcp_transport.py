"""The TCP transport on real loopback sockets: framing, reuse by peer, idle close."""

from __future__ import annotations

import asyncio

import pytest

from cms.net.tcp import TcpConnection, TcpTransport

pytestmark = pytest.mark.integration

MESSAGE = (
    b"OPTIONS sip:cms SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bK1\r\n"
    b"Content-Length: 4\r\n\r\nbody"
)


async def _listening(idle: float) -> tuple[TcpTransport, list[bytes], list[TcpConnection]]:
    received: list[bytes] = []
    connections: list[TcpConnection] = []

    def on_message(data: bytes, conn: TcpConnection) -> None:
        received.append(data)
        connections.append(conn)

    transport = TcpTransport(on_message, None, idle_timeout=idle, max_size=65535)
    await transport.listen("127.0.0.1", 0)
    return transport, received, connections


def test_messages_split_across_writes_are_framed_and_keepalives_answered() -> None:
    async def run() -> None:
        transport, received, _ = await _listening(60)
        reader, writer = await asyncio.open_connection(*transport.local_address)
        writer.write(MESSAGE[:20])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(MESSAGE[20:] + MESSAGE + b"\r\n\r\n")
        await writer.drain()
        pong = await asyncio.wait_for(reader.read(2), 2)
        assert pong == b"\r\n"
        assert received == [MESSAGE, MESSAGE]
        writer.close()
        await transport.close()

    asyncio.run(run())


def test_connection_is_reused_for_requests_to_the_same_peer() -> None:
    async def run() -> None:
        transport, _, connections = await _listening(60)
        reader, writer = await asyncio.open_connection(*transport.local_address)
        writer.write(MESSAGE)
        await writer.drain()
        await asyncio.sleep(0.1)
        peer = connections[0].peer
        assert await transport.connect(peer) is connections[0]
        connections[0].send(b"hello")
        assert await asyncio.wait_for(reader.read(5), 2) == b"hello"
        writer.close()
        await transport.close()

    asyncio.run(run())


def test_idle_connection_is_closed() -> None:
    async def run() -> None:
        transport, _, _ = await _listening(1.0)
        reader, writer = await asyncio.open_connection(*transport.local_address)
        writer.write(MESSAGE)
        await writer.drain()
        # The sweeper runs every max(1, idle/4) s: closed within about two sweeps.
        data = await asyncio.wait_for(reader.read(100), 5)
        assert data == b""  # EOF: the server closed it
        assert not transport.connections
        writer.close()
        await transport.close()

    asyncio.run(run())


def test_broken_framing_closes_only_that_connection() -> None:
    async def run() -> None:
        transport, received, _ = await _listening(60)
        bad_reader, bad_writer = await asyncio.open_connection(*transport.local_address)
        bad_writer.write(MESSAGE.replace(b": 4", b": " + b"9" * 20))
        await bad_writer.drain()
        assert await asyncio.wait_for(bad_reader.read(100), 2) == b""
        reader, writer = await asyncio.open_connection(*transport.local_address)
        writer.write(MESSAGE)
        await writer.drain()
        await asyncio.sleep(0.1)
        assert received == [MESSAGE]
        writer.close()
        bad_writer.close()
        await transport.close()

    asyncio.run(run())
