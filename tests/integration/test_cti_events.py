"""The CTI of a real `cms serve`: one journal delivered by poll, WebSocket and SSE alike.

A phone registers by digest over UDP (auto_logon), and the agent's log on must
reach every channel with the same seqs; resuming from any seq gives exactly
the rest, also after kill -9 and a restart on the same data directory.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cms_process import CmsProcess, config_text, user_name, user_password
from cti_client import SUPERVISOR, Api, serve_with_supervisor
from sip_client import SipUdpClient
from sipp_runner import SIPP, free_media_port, start_sipp
from test_calls import register_sipp_agent

pytestmark = pytest.mark.integration

TIMEOUT = aiohttp.ClientTimeout(total=10)


@pytest.fixture
def cms(tmp_path: Path) -> Iterator[CmsProcess]:
    """A CMS with agent0001..agent0003 (auto_logon) and the supervisor `boss`."""
    with serve_with_supervisor(tmp_path, config_text(users=3)) as server:
        yield server


def register(cms: CmsProcess, index: int) -> None:
    """Register agent000<index>'s phone by digest (its agent is logged on automatically)."""
    name = user_name(index)
    with SipUdpClient(cms.sip_address) as client:
        contact = f"Contact: <sip:{name}@127.0.0.1:{client.local_port}>"
        response = client.request("REGISTER", name, [contact, "Expires: 600"],
                                  password=user_password(name))
    assert response.status == 200, response.raw


def logged_on(user: str) -> Any:
    def check(events: list[dict[str, Any]]) -> bool:
        return any(e["type"] == "agent.logged_on" and e["user"] == user for e in events)
    return check


async def ws_events(ws: aiohttp.ClientWebSocketResponse, until_seq: int) -> list[dict[str, Any]]:
    """Events from a WebSocket (heartbeats skipped) up to and including `until_seq`."""
    events: list[dict[str, Any]] = []
    while not events or events[-1]["seq"] < until_seq:
        message = await ws.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        data = json.loads(message.data)
        if "seq" in data:
            events.append(data)
    return events


async def sse_events(response: aiohttp.ClientResponse, until_seq: int) -> list[dict[str, Any]]:
    """Events from an SSE stream up to `until_seq`; checks each `id:` matches its seq."""
    events: list[dict[str, Any]] = []
    event_id = None
    while not events or events[-1]["seq"] < until_seq:
        line = (await asyncio.wait_for(response.content.readline(), 10)).decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: ") and event_id is not None:
            event = json.loads(line[6:])
            assert event["seq"] == event_id
            events.append(event)
            event_id = None
    return events


def test_agent_logged_on_reaches_poll_websocket_and_sse_with_identical_seqs(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            api = await Api(cms, session).login(*SUPERVISOR)
            start = (await api.poll())["next"]
            ws = await session.ws_connect(f"{api.base}/events/ws",
                                          params={"after": start, "token": api.token})
            sse = await session.get(f"{api.base}/events/sse", headers={
                **api.headers, "Last-Event-ID": str(start)})
            assert sse.status == 200
            await asyncio.to_thread(register, cms, 1)
            polled = await api.poll_until(start, logged_on(user_name(1)))
            last = polled[-1]["seq"]
            pushed = await ws_events(ws, last)
            streamed = await sse_events(sse, last)
            assert pushed == polled
            assert streamed == polled
            assert [e["seq"] for e in polled] == list(range(start + 1, last + 1))
            logon = next(e for e in polled if e["type"] == "agent.logged_on")
            assert logon["automatic"] is True and logon["device"] == user_name(1)
            await ws.close()
            sse.close()

    asyncio.run(scenario())


def test_resuming_from_a_middle_seq_gives_exactly_the_rest_on_every_channel(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            api = await Api(cms, session).login(*SUPERVISOR)
            for user in (user_name(2), user_name(3)):
                status, _ = await api.request("POST", f"/agents/{user}/logon")
                assert status == 200
                for state, reason in (("not_ready", "lunch"), ("ready", "")):
                    status, _ = await api.request("PUT", f"/agents/{user}/state",
                                                  json={"state": state, "reason": reason})
                    assert status == 200
            # Per agent: logged_on, then state_changed + presence.changed three times.
            everything = await api.poll_until(0, lambda events: len(events) >= 14)
            seqs = [e["seq"] for e in everything]
            assert seqs == list(range(1, 15))
            middle = seqs[len(seqs) // 2]
            rest = everything[middle:]
            assert await api.all_events(middle) == rest
            ws = await session.ws_connect(f"{api.base}/events/ws",
                                          params={"after": middle, "token": api.token})
            assert await ws_events(ws, seqs[-1]) == rest
            await ws.close()
            async with session.get(f"{api.base}/events/sse", params={"token": api.token},
                                   headers={"Last-Event-ID": str(middle)}) as sse:
                assert await sse_events(sse, seqs[-1]) == rest

    asyncio.run(scenario())


def test_journal_survives_kill_9_and_seq_continues_after_restart(cms: CmsProcess) -> None:
    async def before() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            api = await Api(cms, session).login(*SUPERVISOR)
            await asyncio.to_thread(register, cms, 1)
            await api.poll_until(0, logged_on(user_name(1)))
            status, _ = await api.request("PUT", f"/agents/{user_name(1)}/state",
                                          json={"state": "not_ready", "reason": "meeting"})
            assert status == 200
            return await api.poll_until(
                0, lambda events: any(e.get("reason") == "meeting" for e in events))

    async def after(seen: list[dict[str, Any]]) -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            api = await Api(cms, session).login(*SUPERVISOR)
            last = seen[-1]["seq"]
            assert (await api.all_events(0))[:last] == seen
            middle = last // 2
            assert (await api.all_events(middle))[:last - middle] == seen[middle:]
            status, _ = await api.request("PUT", f"/agents/{user_name(2)}/state",
                                          json={"state": "ready"})
            assert status == 409  # agent0002 is not logged on: refused, nothing journalled
            status, _ = await api.request("POST", f"/agents/{user_name(2)}/logon")
            assert status == 200
            newer = await api.poll_until(last, logged_on(user_name(2)))
            assert newer[0]["seq"] == last + 1
            assert [e["seq"] for e in newer] == list(range(last + 1, last + 1 + len(newer)))

    seen = asyncio.run(before())
    cms.kill()
    assert cms.exit_codes[-1] == -9
    cms.start()
    asyncio.run(after(seen))


def test_role_and_input_errors_are_json_4xx(cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            agent = await Api(cms, session).login(user_name(1), user_password(user_name(1)))
            status, body = await agent.request("PUT", f"/agents/{user_name(2)}/state",
                                               json={"state": "ready"})
            assert (status, body["error"]["code"]) == (403, "forbidden")
            status, body = await agent.request("PUT", f"/agents/{user_name(1)}/state",
                                               data=b'{"state": "rea')
            assert (status, body["error"]["code"]) == (400, "malformed_json")
            supervisor = await Api(cms, session).login(*SUPERVISOR)
            status, body = await supervisor.request("POST", "/agents/nobody/logon")
            assert (status, body["error"]["code"]) == (404, "unknown_user")
            async with session.post(f"{agent.base}/sessions",
                                    json={"user": user_name(1), "password": "wrong"}) as response:
                assert response.status == 401
                assert (await response.json())["error"]["code"] == "invalid_credentials"
        assert user_password(user_name(1)) not in cms.log_text()
        assert "wrong" not in cms.log_text()

    asyncio.run(scenario())


def test_sigterm_with_open_push_channels_exits_cleanly_and_quickly(cms: CmsProcess) -> None:
    async def scenario() -> tuple[aiohttp.WSMessage, float]:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            api = await Api(cms, session).login(*SUPERVISOR)
            ws = await session.ws_connect(f"{api.base}/events/ws", headers=api.headers)
            sse = await session.get(f"{api.base}/events/sse", headers=api.headers)
            poll = asyncio.create_task(api.poll(wait=30))
            await asyncio.sleep(0.2)
            started = time.monotonic()
            code = await asyncio.to_thread(cms.stop)
            took = time.monotonic() - started
            assert code == 0
            closing = await ws.receive(timeout=5)
            sse.close()
            poll.cancel()
            return closing, took

    closing, took = asyncio.run(scenario())
    assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert took < 5.0


def test_a_sipp_call_through_the_queue_reaches_poll_websocket_and_sse_in_the_same_order(
    cms: CmsProcess, tmp_path: Path,
) -> None:
    """The issue's scenario: offered, established, ended, with increasing seqs everywhere."""
    if SIPP is None:
        pytest.skip("sipp (Debian sip-tester) is not installed")
    agent = start_sipp(cms.sip_target, tmp_path, scenario="uas_answer.xml", calls=1, timeout=20,
                       extra=["-rtp_echo", "-mp", str(free_media_port())])
    try:
        register_sipp_agent(cms, tmp_path, user_name(1), agent.port)

        async def scenario() -> None:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
                api = await Api(cms, session).login(*SUPERVISOR)
                await api.poll_until(0, logged_on(user_name(1)))
                start = (await api.poll())["next"]
                ws = await session.ws_connect(f"{api.base}/events/ws",
                                              params={"after": str(start)}, headers=api.headers)
                sse = await session.get(f"{api.base}/events/sse", headers={
                    **api.headers, "Last-Event-ID": str(start)})
                caller = start_sipp(cms.sip_target, tmp_path, builtin="uac", calls=1,
                                    timeout=20, extra=["-s", "600", "-d", "1000",
                                                       "-mp", str(free_media_port())])
                called = await asyncio.to_thread(caller.wait, 25)
                assert called.returncode == 0 and called.successful == 1, called.describe()

                polled = await api.poll_until(start, lambda events: any(
                    e["type"] == "call.ended" for e in events))
                last = polled[-1]["seq"]
                assert [e["seq"] for e in polled] == list(range(start + 1, last + 1))
                call_id = next(e["call_id"] for e in polled if e["type"] == "call.ended")
                kinds = [e["type"] for e in polled if e.get("call_id") == call_id]
                for earlier, later in (("interaction.created", "call.offered"),
                                       ("call.offered", "call.established"),
                                       ("call.established", "call.ended")):
                    assert kinds.index(earlier) < kinds.index(later), kinds
                assert await ws_events(ws, last) == polled
                assert await sse_events(sse, last) == polled
                await ws.close()
                sse.close()

        asyncio.run(scenario())
        answered = agent.wait(10)
        assert answered.returncode == 0 and answered.successful == 1, answered.describe()
    finally:
        agent.stop()
