"""The push fast path: committed batches written straight to caught-up WebSocket and SSE clients.

A real `Cti` and journal behind a real aiohttp server on loopback; clients are
aiohttp's own, so the bytes written by the fast path (one write per batch and
socket, SSE inside HTTP/1.1 chunked framing) must parse as standard frames.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cms.acd.engine import Acd
from cms.config import parse_config
from cms.cti import Cti
from cms.events import Journal
from cms.net.batch_write import BatchWriter
from cms.net.uring import UringError

CONFIG: dict[str, Any] = {
    "cms": {"api_keys": {"k": "crm"}},
    "users": [{"name": "agent1", "password": "pw1", "extension": "1001"}],
}
CRM = {"X-API-Key": "k"}


def run(tmp_path: Path, body: Callable[[TestClient, Journal, Cti], Awaitable[None]]) -> None:
    async def scenario() -> None:
        config = parse_config(CONFIG)
        journal = Journal(tmp_path / "events.sqlite3")
        await journal.start()
        cti = Cti(config, Acd.from_config(config), journal, lambda outputs: None)
        app = web.Application()
        cti.mount(app)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            await body(client, journal, cti)
        finally:
            await client.close()
            await journal.close()

    asyncio.run(scenario())


async def until_live(cti: Cti, count: int) -> None:
    for _ in range(200):
        if len(cti.delivery._live) == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(cti.delivery._live)} live channels, expected {count}")


async def sse_events(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    event_id = None
    while len(events) < count:
        line = (await asyncio.wait_for(response.content.readline(), 5)).decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: ") and event_id is not None:
            event = json.loads(line[6:])
            assert event["seq"] == event_id
            events.append(event)
            event_id = None
    return events


def test_live_sse_clients_get_every_batch_in_order_in_valid_chunked_framing(
        tmp_path: Path) -> None:
    async def body(client: TestClient, journal: Journal, cti: Cti) -> None:
        streams = [await client.get("/api/v1/events/sse", headers=CRM) for _ in range(3)]
        await until_live(cti, 3)
        for turn in range(20):  # 20 commits of 1..20 events each
            for index in range(turn + 1):
                journal.append("test.counted", {"turn": turn, "n": index, "pad": "x" * turn})
            await journal.flush()
        total = sum(range(1, 21))
        for stream in streams:
            events = await sse_events(stream, total)
            assert [e["seq"] for e in events] == list(range(1, total + 1))
            assert stream.headers["Transfer-Encoding"] == "chunked"
            stream.close()

    run(tmp_path, body)


def test_a_live_agent_sse_stream_gets_only_what_the_agent_may_see(tmp_path: Path) -> None:
    async def body(client: TestClient, journal: Journal, cti: Cti) -> None:
        login = await client.post("/api/v1/sessions", json={"user": "agent1", "password": "pw1"})
        token = (await login.json())["token"]
        agent = await client.get("/api/v1/events/sse", params={"token": token})
        crm = await client.get("/api/v1/events/sse", headers=CRM)
        await until_live(cti, 2)
        journal.append("agent.state_changed", {"user": "someone"})
        journal.append("agent.state_changed", {"user": "agent1"})
        journal.append("presence.changed", {"user": "someone", "presence": "away"})
        await journal.flush()
        assert [e["seq"] for e in await sse_events(agent, 2)] == [2, 3]
        assert [e["seq"] for e in await sse_events(crm, 3)] == [1, 2, 3]
        agent.close()
        crm.close()

    run(tmp_path, body)


def test_a_batch_written_in_one_piece_arrives_as_one_websocket_message_per_event(
        tmp_path: Path) -> None:
    async def body(client: TestClient, journal: Journal, cti: Cti) -> None:
        ws = await client.ws_connect("/api/v1/events/ws", headers=CRM)
        await until_live(cti, 1)
        for index in range(50):
            journal.append("test.counted", {"n": index, "pad": "y" * (index * 10)})
        await journal.flush()
        seqs = [json.loads((await ws.receive(timeout=5)).data)["seq"] for _ in range(50)]
        assert seqs == list(range(1, 51))
        assert len(cti.delivery._live) == 1  # still on the fast path
        await ws.close()

    run(tmp_path, body)


def test_fan_out_keeps_each_socket_in_order_and_its_frames_whole(tmp_path: Path) -> None:
    async def body(client: TestClient, journal: Journal, cti: Cti) -> None:
        sockets = [await client.ws_connect("/api/v1/events/ws", headers=CRM) for _ in range(9)]
        await until_live(cti, 9)
        for turn in range(30):
            for index in range(turn % 4 + 1):
                journal.append("test.counted", {"turn": turn, "n": index, "pad": "z" * 300})
            await journal.flush()
        total = journal.last_seq
        for ws in sockets:
            seqs = [json.loads((await ws.receive(timeout=5)).data)["seq"] for _ in range(total)]
            assert seqs == list(range(1, total + 1))
        assert len(cti.delivery._live) == 9
        if BatchWriter.available():  # the writes went out batched, not through transports
            assert cti.delivery.batched_writes >= 9 * 30
        for ws in sockets:
            await ws.close()

    run(tmp_path, body)


def test_a_socket_that_stops_reading_leaves_the_fast_path_and_catches_up_in_order(
        tmp_path: Path) -> None:
    async def body(client: TestClient, journal: Journal, cti: Cti) -> None:
        slow = await client.ws_connect("/api/v1/events/ws", headers=CRM, max_msg_size=0)
        fast = await client.ws_connect("/api/v1/events/ws", headers=CRM, max_msg_size=0)
        await until_live(cti, 2)
        slow_transport = slow._response.connection.transport  # type: ignore[union-attr]
        slow_transport.pause_reading()  # its kernel buffers fill, then the transport's
        pad = "p" * 60_000
        seen: list[int] = []
        for index in range(150):  # ~9 MB: more than the kernel and the fast path hold
            journal.append("test.big", {"n": index, "pad": pad})
            await journal.flush()
            seen.append(json.loads((await fast.receive(timeout=5)).data)["seq"])
        assert seen == list(range(1, 151))
        assert cti.delivery.fallbacks >= 1  # the stalled one left the fast path
        slow_transport.resume_reading()
        seqs = [json.loads((await slow.receive(timeout=10)).data)["seq"] for _ in range(150)]
        assert seqs == list(range(1, 151))
        await until_live(cti, 2)  # caught up: back on the fast path
        await slow.close()
        await fast.close()

    run(tmp_path, body)


def test_waiting_long_polls_of_one_principal_share_the_batch_body(tmp_path: Path) -> None:
    async def body(client: TestClient, journal: Journal, cti: Cti) -> None:
        login = await client.post("/api/v1/sessions", json={"user": "agent1", "password": "pw1"})
        agent = {"Authorization": f"Bearer {(await login.json())['token']}"}
        polls = [asyncio.ensure_future(client.get("/api/v1/events",
                                                  params={"after": 0, "wait": 5}, headers=h))
                 for h in (CRM, CRM, agent, agent)]
        await asyncio.sleep(0.2)
        built: list[int] = []  # pages read from the journal once the four polls wait
        page = cti.delivery._page
        cti.delivery._page = lambda principal, cursor, limit: (  # type: ignore[method-assign]
            built.append(cursor), page(principal, cursor, limit))[1]
        journal.append("agent.state_changed", {"user": "someone"})
        journal.append("agent.state_changed", {"user": "agent1"})
        await journal.flush()
        bodies = [await (await poll).read() for poll in polls]
        assert built == [0, 0]  # one body for the two that see all, one for the two agent1s
        crm1, crm2, agent1, agent2 = (json.loads(b) for b in bodies)
        assert crm1 == crm2 and [e["seq"] for e in crm1["events"]] == [1, 2]
        assert agent1 == agent2 and [e["seq"] for e in agent1["events"]] == [2]
        assert crm1["next"] == agent1["next"] == 2
        # An agent that sees nothing of a batch keeps waiting past it.
        waiting = asyncio.ensure_future(client.get("/api/v1/events", headers=agent,
                                                   params={"after": 2, "wait": 5}))
        await asyncio.sleep(0.1)
        journal.append("agent.state_changed", {"user": "someone"})
        await journal.flush()
        await asyncio.sleep(0.1)
        assert not waiting.done()
        journal.append("agent.state_changed", {"user": "agent1"})
        await journal.flush()
        later = json.loads(await (await waiting).read())
        assert [e["seq"] for e in later["events"]] == [4] and later["next"] == 4

    run(tmp_path, body)


def test_a_failed_batched_write_still_delivers_the_batch_through_the_transports(
        tmp_path: Path) -> None:
    async def body(client: TestClient, journal: Journal, cti: Cti) -> None:
        sockets = [await client.ws_connect("/api/v1/events/ws", headers=CRM) for _ in range(3)]
        await until_live(cti, 3)
        delivery = cti.delivery

        class Broken:
            def write(self, fds: object, payloads: object) -> object:
                raise UringError(0, "refused")

            def close(self) -> None:
                pass

        delivery._batch = Broken()  # type: ignore[assignment]
        for turn in range(3):
            journal.append("test.counted", {"turn": turn})
            await journal.flush()
        for ws in sockets:
            seqs = [json.loads((await ws.receive(timeout=5)).data)["seq"] for _ in range(3)]
            assert seqs == [1, 2, 3]
        assert delivery._batch is None  # later batches go through the transports
        for ws in sockets:
            await ws.close()

    run(tmp_path, body)
