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
