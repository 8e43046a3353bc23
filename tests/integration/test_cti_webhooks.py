"""Webhooks of a real `cms serve`: a SIPp caller into the queue, the same events as polling.

The callback is a real aiohttp server on 127.0.0.1. The webhook must carry
exactly the events (same seqs, same bodies) that `GET /events` returns, and
after kill -9 and a restart on the same data directory it must resume from
the last acknowledged seq: nothing missing, in order.
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
from aiohttp import web
from cms_process import CmsProcess, config_text
from cti_client import SUPERVISOR, serve_with_supervisor
from sipp_runner import SIPP, free_media_port, start_sipp

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(SIPP is None, reason="sipp (sip-tester) is not installed")]

TIMEOUT = aiohttp.ClientTimeout(total=10)


@pytest.fixture
def cms(tmp_path: Path) -> Iterator[CmsProcess]:
    """A CMS (queue sales 600, no agent logged on) with fast webhook retries."""
    text = config_text(users=2).replace("[cms]\n", "\n".join([
        "[cms]", "webhook_retry_base = 0.05", "webhook_retry_cap = 0.2",
        "webhook_give_up_after = 120", ""]), 1)
    with serve_with_supervisor(tmp_path, text) as server:
        yield server


class Receiver:
    """The CRM's webhook endpoint: records every POST; answers 500 while `failing`."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []  # acknowledged ones
        self.refused = 0
        self.failing = False
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/crm/events", self._receive)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/crm/events"
        return self

    async def _receive(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if self.failing:
            self.refused += 1
            return web.Response(status=500)
        self.batches.append(body["events"])
        return web.Response(status=204)

    def events(self) -> list[dict[str, Any]]:
        return [e for batch in self.batches for e in batch]

    async def until(self, seq: int, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while not self.events() or self.events()[-1]["seq"] < seq:
            assert time.monotonic() < deadline, f"webhook got {self.events()}"
            await asyncio.sleep(0.05)
        return self.events()


async def login(session: aiohttp.ClientSession, cms: CmsProcess) -> dict[str, str]:
    async with session.post(f"{cms.base_url}/api/v1/sessions",
                            json={"user": SUPERVISOR[0], "password": SUPERVISOR[1]}) as response:
        assert response.status == 201
        return {"Authorization": f"Bearer {(await response.json())['token']}"}


async def poll_until_ended(session: aiohttp.ClientSession, cms: CmsProcess,
                           headers: dict[str, str], after: int,
                           calls: int) -> list[dict[str, Any]]:
    """Long-poll from `after` until `calls` call.ended events arrived."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while sum(e["type"] == "call.ended" for e in events) < calls:
        assert time.monotonic() < deadline, f"polled {events}"
        async with session.get(f"{cms.base_url}/api/v1/events", headers=headers,
                               params={"after": after, "wait": 2}) as response:
            page = await response.json()
        events += page["events"]
        after = page["next"]
    return events


def sipp_call(cms: CmsProcess, tmp_path: Path) -> None:
    """One SIPp caller into the queue (number 600): it waits 1 s, then hangs up."""
    caller = start_sipp(cms.sip_target, tmp_path, builtin="uac", calls=1, timeout=20,
                        extra=["-s", "600", "-d", "1000", "-mp", str(free_media_port())])
    result = caller.wait(25)
    assert result.returncode == 0 and result.successful == 1, result.describe()


def test_webhook_gets_the_polled_events_of_a_sipp_call_and_resumes_after_kill_9(
        cms: CmsProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        receiver = await Receiver().start()
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
                headers = await login(session, cms)
                async with session.post(f"{cms.base_url}/api/v1/subscriptions",
                                        headers=headers,
                                        json={"callback_url": receiver.url}) as response:
                    assert response.status == 201, await response.text()
                    sub = await response.json()
                start = sub["after"]

                await asyncio.to_thread(sipp_call, cms, tmp_path)
                polled = await poll_until_ended(session, cms, headers, start, 1)
                kinds = [e["type"] for e in polled]
                assert {"interaction.created", "queue.caller_joined", "call.ended"} <= set(kinds)
                assert await receiver.until(polled[-1]["seq"]) == polled
                acked = polled[-1]["seq"]
                for _ in range(50):  # the position is stored right after the 2xx
                    async with session.get(f"{cms.base_url}/api/v1/subscriptions/{sub['id']}",
                                           headers=headers) as response:
                        if (await response.json())["after"] == acked:
                            break
                    await asyncio.sleep(0.05)

                # The CRM fails; a second call's events are journalled but not acknowledged.
                receiver.failing = True
                await asyncio.to_thread(sipp_call, cms, tmp_path)
                second = await poll_until_ended(session, cms, headers, acked, 1)
                while receiver.refused < 2:
                    await asyncio.sleep(0.05)

            await asyncio.to_thread(cms.kill)
            assert cms.exit_codes[-1] == -9
            receiver.failing = False
            await asyncio.to_thread(cms.start)

            async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
                headers = await login(session, cms)
                await receiver.until(second[-1]["seq"])
                got = receiver.events()
                seqs = [e["seq"] for e in got]
                # In order, no gap, no duplicate: nothing before `acked` was sent again.
                assert seqs == list(range(start + 1, seqs[-1] + 1))
                assert got[len(polled):len(polled) + len(second)] == second
                async with session.get(f"{cms.base_url}/api/v1/subscriptions/{sub['id']}",
                                       headers=headers) as response:
                    state = await response.json()
                assert state["state"] == "active"
        finally:
            if receiver.runner is not None:
                await receiver.runner.cleanup()

    asyncio.run(scenario())
