"""The cti benchmark's event clients: kernel receive timestamps (SO_TIMESTAMPNS) on raw sockets."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/ is not installed

from scripts.bench_cti import call_latencies  # noqa: E402
from scripts.cti_load import (  # noqa: E402
    ANCILLARY_SIZE,
    SCM_TIMESTAMPNS,
    TIMESPEC,
    EventClient,
    enable_receive_timestamps,
    kernel_time,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_TIMESTAMPNS is Linux's")

EVENT = (b'{"type":"interaction.created","seq":7,"data":{"caller":"b000042","queue":"sales"}}')


def loop_factories() -> list[Any]:
    factories: list[Any] = [pytest.param(None, id="asyncio")]
    try:
        import uvloop

        factories.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    except ImportError:
        pass
    return factories


def run(factory: Any, main: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(asyncio.wait_for(main(), 10))


def read_timestamped(sock: socket.socket) -> tuple[bytes, float | None]:
    """One `recvmsg` as EventClient reads: the data and its kernel receive time."""
    data, ancillary, flags, _ = sock.recvmsg(65536, ANCILLARY_SIZE)
    assert not flags & socket.MSG_CTRUNC, "control data truncated"
    return data, kernel_time(ancillary)


def test_a_loopback_tcp_read_carries_the_kernels_receive_time_on_the_wall_clock() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            enable_receive_timestamps(client)
            # The kernel turns receive timestamps on machine-wide a moment after the first
            # socket asks (deferred work): until then reads carry none. Probe until they do.
            deadline = time.monotonic() + 2.0
            while True:
                peer.sendall(b"probe")
                probe, stamped = read_timestamped(client)
                assert probe == b"probe"
                if stamped is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            before = time.time()
            peer.sendall(b"one event")
            time.sleep(0.02)  # the read comes well after the arrival
            data, at = read_timestamped(client)
            after = time.time()

    assert data == b"one event"
    assert at is not None, "no SCM_TIMESTAMPNS control message on a TCP read"
    # Stamped on arrival (between the send and the read), not when read: far from `after`.
    assert before - 0.001 <= at <= after
    assert after - at >= 0.015


def test_a_read_without_the_control_message_or_with_a_zero_stamp_has_no_time() -> None:
    stamp = TIMESPEC.pack(1_700_000_000, 250_000_000)

    assert kernel_time([(socket.SOL_SOCKET, SCM_TIMESTAMPNS, stamp)]) == 1_700_000_000.25
    assert kernel_time([]) is None
    assert kernel_time([(socket.SOL_SOCKET, SCM_TIMESTAMPNS, TIMESPEC.pack(0, 0))]) is None
    assert kernel_time([(socket.IPPROTO_IP, SCM_TIMESTAMPNS, stamp)]) is None


async def _connect(kind: str, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                Awaitable[None]]
                   ) -> tuple[asyncio.Server, EventClient]:
    """A loopback server running `handler`, and a `kind` client connected to it."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = EventClient(kind, f"127.0.0.1:{port}", "k")
    await client.open(("127.0.0.1", port))
    return server, client


@pytest.mark.parametrize("factory", loop_factories())
def test_a_websocket_client_notes_both_arrival_times_of_the_calls_event(factory: Any) -> None:
    sent: dict[str, float] = {}
    requests: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        sent["wall"], sent["mono"] = time.time(), time.monotonic()
        writer.write(bytes([0x81, 126]) + len(EVENT).to_bytes(2, "big") + EVENT)
        await writer.drain()
        await reader.read()  # until the client closes

    async def main() -> None:
        server, client = await _connect("ws", handler)
        await client.ready
        while not client.hits:
            await asyncio.sleep(0.01)
        client.close()
        server.close()
        process, kernel = client.arrivals()
        assert client.untimed == 0
        assert set(process) == set(kernel) == {"b000042"}
        assert 0 <= kernel["b000042"] - sent["wall"] < 0.05
        assert 0 <= process["b000042"] - sent["mono"] < 0.05
        assert b"Upgrade: websocket" in requests[0] and b"X-API-Key: k" in requests[0]

    run(factory, main)


def test_a_channel_whose_reads_carry_no_receive_time_fails_to_connect(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import scripts.cti_load

    monkeypatch.setattr(scripts.cti_load, "enable_receive_timestamps", lambda sock: None)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def main() -> None:
        server, client = await _connect("sse", handler)
        with pytest.raises(RuntimeError, match="SO_TIMESTAMPNS"):
            await client.ready
        assert client.untimed == 1
        client.close()
        server.close()

    run(None, main)


def _poll_pages(pages: int, asked: list[tuple[float, bytes]]) -> Any:
    """A server handler answering `pages` poll requests, each with one event and next=8;
    notes when each request came, and what it was."""
    body = b'{"events":[' + EVENT + b'],"next":8}'

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(pages):
            request = await reader.readuntil(b"\r\n\r\n")
            asked.append((time.monotonic(), request))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        await reader.read()

    return handler


@pytest.mark.parametrize("factory", loop_factories())
def test_a_long_poll_client_asks_again_after_the_cursor_of_each_page(factory: Any) -> None:
    asked: list[tuple[float, bytes]] = []

    async def main() -> None:
        server, client = await _connect("poll", _poll_pages(2, asked))
        await client.ready
        while len(asked) < 2 or len(client.hits) < 2:
            await asyncio.sleep(0.01)
        client.close()
        server.close()
        requests = [request for _, request in asked]
        assert b"after=" not in requests[0]
        assert b"GET /api/v1/events?wait=30&limit=1000&after=8 " in requests[1]
        assert client.untimed == 0
        # (each hit keeps its read's control messages: decoded, they hold a time)
        assert all(kernel_time(ancillary) is not None for _, ancillary, _ in client.hits)

    run(factory, main)


def test_an_interval_poll_client_asks_without_waiting_once_per_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import scripts.cti_load

    monkeypatch.setitem(scripts.cti_load.POLL_INTERVALS, "poll-1s", 0.2)
    asked: list[tuple[float, bytes]] = []

    async def main() -> None:
        server, client = await _connect("poll-1s", _poll_pages(3, asked))
        await client.ready
        while len(asked) < 3:
            await asyncio.sleep(0.01)
        client.close()
        server.close()
        requests = [request for _, request in asked]
        assert all(b"wait=" not in request for request in requests)
        assert b"GET /api/v1/events?limit=1000&after=8 " in requests[1]
        # Answered at once, the client still waits for its next tick (a long poll would not):
        # the first at its own phase within an interval, then one interval apart.
        times = [at for at, _ in asked]
        assert times[1] - times[0] < 0.6
        assert 0.15 < times[2] - times[1] < 0.6

    run(None, main)


def test_latencies_pair_each_client_arrival_with_its_calls_send_on_one_clock() -> None:
    sent = {"b1": 100.0, "b2": 200.0}
    arrivals = [{"b1": 100.004, "b2": 200.002}, {"b1": 100.010}]

    figures = call_latencies(sent, arrivals)

    assert figures.all == pytest.approx([2.0, 4.0, 10.0])
    assert figures.firsts == pytest.approx([4.0, 2.0])
    assert figures.spreads == pytest.approx([6.0, 0.0])
    assert figures.max() == pytest.approx(10.0)
