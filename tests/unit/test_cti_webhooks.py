"""Webhooks: subscriptions over the CTI API, delivered to a real HTTP callback on loopback.

A real `Cti` (with its journal and subscription store in tmp_path) serves on a
loopback port; the callback is a real aiohttp server on 127.0.0.1 whose
answers the test scripts (200, 500, ...). Retry timings use a small
`webhook_retry_base` from the configuration.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cms.acd.engine import Acd
from cms.config import parse_config
from cms.cti import Cti, webhooks
from cms.cti.webhooks import backoff
from cms.events import Journal

USERS: list[dict[str, Any]] = [
    {"name": "agent1", "password": "pw1", "extension": "1001", "queues": ["sales"]},
    {"name": "boss", "password": "pwb", "extension": "1900", "role": "supervisor",
     "auto_logon": False},
]
SETTINGS: dict[str, Any] = {
    "webhook_retry_base": 0.05,
    "webhook_retry_cap": 0.4,
    "webhook_give_up_after": 30.0,
    "webhook_max_attempts": 0,
    "webhook_timeout": 2.0,
    "api_keys": {"crm-key": "crm"},
}
CRM = {"X-API-Key": "crm-key"}


@dataclass
class Delivery:
    at: float
    body: bytes
    headers: dict[str, str]

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(json.loads(self.body)["events"])


@dataclass
class Callback:
    """A webhook receiver: answers each POST with the next scripted status (then 200)."""

    statuses: list[int] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> Callback:
        app = web.Application()
        app.router.add_post("/hook", self._receive)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        self.deliveries.append(Delivery(time.monotonic(), await request.read(),
                                        dict(request.headers)))
        self.changed.set()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok")

    def acknowledged(self) -> list[dict[str, Any]]:
        """Events of the deliveries answered 2xx, in order (the last one may be in flight)."""
        return [e for d in self.deliveries for e in d.events]

    async def wait_for(self, check: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"timed out; deliveries: {len(self.deliveries)}"
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(remaining, 0.2))
            except TimeoutError:
                pass


@dataclass
class Harness:
    client: TestClient
    cti: Cti
    journal: Journal
    callback: Callback

    async def subscribe(self, status: int = 201, **body: Any) -> dict[str, Any]:
        body.setdefault("callback_url", self.callback.url)
        response = await self.client.post("/api/v1/subscriptions", json=body, headers=CRM)
        result: dict[str, Any] = await response.json()
        assert response.status == status, result
        return result

    async def subscription(self, sub_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/api/v1/subscriptions/{sub_id}", headers=CRM)
        assert response.status == 200
        result: dict[str, Any] = await response.json()
        return result

    async def subscription_when(self, sub_id: str, check: Callable[[dict[str, Any]], bool],
                                timeout: float = 4.0) -> dict[str, Any]:
        """The subscription once `check` holds for it, or as it is after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            state = await self.subscription(sub_id)
            if check(state) or time.monotonic() >= deadline:
                return state
            await asyncio.sleep(0.02)

    async def polled(self, after: int = 0) -> list[dict[str, Any]]:
        response = await self.client.get("/api/v1/events", params={"after": after, "limit": 1000},
                                         headers=CRM)
        assert response.status == 200
        return list((await response.json())["events"])

    async def append(self, count: int, kind: str = "test.counted") -> None:
        for index in range(count):
            self.journal.append(kind, {"n": index})
        await self.journal.flush()


async def _serve(data: Path, settings: dict[str, Any], callback: Callback,
                 body: Callable[[Harness], Awaitable[None]]) -> None:
    config = parse_config({"cms": settings, "users": USERS,
                           "queues": [{"name": "sales", "number": "600"}]})
    journal = Journal(data / "events.sqlite3")
    await journal.start()
    cti = Cti(config, Acd.from_config(config), journal, lambda outputs: None, data_dir=data)
    app = web.Application()
    cti.mount(app)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        await body(Harness(client, cti, journal, callback))
    finally:
        await client.close()
        await journal.close()


def run(tmp_path: Path, body: Callable[[Harness], Awaitable[None]], **settings: Any) -> None:
    """A CTI with its data in tmp_path and a callback server; run `body`, stop both."""

    async def scenario() -> None:
        callback = await Callback().start()
        try:
            await _serve(tmp_path, {**SETTINGS, **settings}, callback, body)
        finally:
            await callback.stop()

    asyncio.run(scenario())


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [int(e["seq"]) for e in events]


# --------------------------------------------------------------------------- delivery


def test_the_callback_receives_every_event_in_order_as_polling_sees_it(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.append(5)  # before the subscription: not delivered
        sub = await h.subscribe()
        assert sub["after"] == 5 and sub["state"] == "active" and sub["types"] == []
        assert sub["id"].startswith("sub_") and sub["signed"] is False
        await h.append(250)
        await h.callback.wait_for(lambda: len(h.callback.acknowledged()) >= 250)
        received = h.callback.acknowledged()
        assert received == await h.polled(5)
        assert seqs(received) == list(range(6, 256))
        first = h.callback.deliveries[0]
        assert json.loads(first.body)["subscription"] == sub["id"]
        assert first.headers["Content-Type"] == "application/json"
        assert all(len(d.events) <= 100 for d in h.callback.deliveries)  # batches
        state = await h.subscription_when(sub["id"], lambda s: s["after"] == 255)
        assert state["after"] == 255

    run(tmp_path, body)


def test_after_replays_history_from_a_given_seq(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.append(30)
        await h.subscribe(after=10)
        await h.callback.wait_for(lambda: len(h.callback.acknowledged()) >= 20)
        assert seqs(h.callback.acknowledged()) == list(range(11, 31))

    run(tmp_path, body)


def test_failed_deliveries_are_retried_with_growing_back_off_until_acknowledged(
        tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        h.callback.statuses = [500, 503, 500, 500]
        sub = await h.subscribe()
        await h.append(3)
        await h.callback.wait_for(lambda: len(h.callback.deliveries) >= 5)
        await asyncio.sleep(0.2)
        attempts = h.callback.deliveries
        assert len(attempts) == 5  # four failures, then the acknowledged one; nothing more
        assert len({d.body for d in attempts}) == 1  # the same batch each time
        assert seqs(attempts[-1].events) == [1, 2, 3]
        gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:], strict=False)]
        # base 0.05 s doubling, capped at 0.4, jittered to 50-100%: 25-50, 50-100, 100-200,
        # 200-400 ms (plus scheduling).
        for gap, floor in zip(gaps, (0.025, 0.05, 0.1, 0.2), strict=True):
            assert gap >= floor * 0.95, gaps
        assert gaps[3] > gaps[0], gaps
        state = await h.subscription(sub["id"])
        assert state["state"] == "active" and state["failures"] == 0
        assert state["last_error"] == "HTTP 500"

    run(tmp_path, body)


def test_a_refused_connection_is_retried_too(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        with_port = h.callback.url
        await h.callback.stop()  # nobody listens there now
        sub = await h.subscribe(callback_url=with_port)
        await h.append(2)
        state = await h.subscription_when(sub["id"], lambda s: s["failures"] >= 2)
        assert state["failures"] >= 2 and state["state"] == "active"
        assert state["last_error"] and "Connect" in state["last_error"]

    run(tmp_path, body)


def test_a_subscription_that_keeps_failing_ends_and_journals_subscription_ended(
        tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        h.callback.statuses = [500] * 100
        sub = await h.subscribe()
        await h.append(1)
        state = await h.subscription_when(sub["id"], lambda s: s["state"] == "ended")
        assert state["state"] == "ended"
        assert "3 times" in state["reason"] and "HTTP 500" in state["reason"]
        assert state["after"] == 0  # seq 1 was never acknowledged
        assert len(h.callback.deliveries) == 3
        # The store says "ended" just before the event is appended; it is polled once committed.
        for _ in range(100):
            ended = [e for e in await h.polled(0) if e["type"] == "subscription.ended"]
            if ended:
                break
            await asyncio.sleep(0.01)
        assert len(ended) == 1
        assert ended[0]["subscription_id"] == sub["id"]
        assert ended[0]["callback_url"] == h.callback.url
        assert ended[0]["reason"] == state["reason"]
        await h.append(2)
        await asyncio.sleep(0.2)
        assert len(h.callback.deliveries) == 3  # an ended subscription delivers nothing more

    run(tmp_path, body, webhook_max_attempts=3)


def test_a_subscription_failing_longer_than_give_up_after_ends(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        h.callback.statuses = [502] * 100
        sub = await h.subscribe()
        await h.append(1)
        state = await h.subscription_when(sub["id"], lambda s: s["state"] == "ended")
        assert state["state"] == "ended" and "HTTP 502" in state["reason"]
        assert 2 <= len(h.callback.deliveries) <= 10

    run(tmp_path, body, webhook_give_up_after=0.3, webhook_retry_cap=0.1)


def test_the_types_filter_passes_exact_types_and_dotted_prefixes(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await h.subscribe(types=["call.", "agent.logged_on"])
        for kind in ("agent.state_changed", "call.offered", "agent.logged_on", "callx.other",
                     "queue.caller_joined", "call.ended", "agent.logged_on_twice"):
            h.journal.append(kind, {})
        await h.journal.flush()
        await h.callback.wait_for(lambda: len(h.callback.acknowledged()) >= 3)
        await asyncio.sleep(0.1)
        received = h.callback.acknowledged()
        assert [e["type"] for e in received] == ["call.offered", "agent.logged_on", "call.ended"]
        assert seqs(received) == [2, 3, 6]

    run(tmp_path, body)


def test_a_subscription_with_a_secret_signs_each_delivery(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        sub = await h.subscribe(secret="s3cret")
        assert sub["signed"] is True and "secret" not in sub
        await h.append(2)
        await h.callback.wait_for(lambda: len(h.callback.deliveries) >= 1)
        delivery = h.callback.deliveries[0]
        expected = hmac.new(b"s3cret", delivery.body, hashlib.sha256).hexdigest()
        assert delivery.headers["X-CMS-Signature"] == f"sha256={expected}"
        listed = await h.client.get("/api/v1/subscriptions", headers=CRM)
        assert "s3cret" not in await listed.text()

    run(tmp_path, body)


def test_delivery_resumes_after_a_restart_from_the_acknowledged_position(tmp_path: Path) -> None:
    async def scenario() -> None:
        callback = await Callback().start()
        sub_id = ""

        async def first(h: Harness) -> None:
            nonlocal sub_id
            sub_id = (await h.subscribe())["id"]
            await h.append(40)
            await callback.wait_for(lambda: len(callback.acknowledged()) >= 40)
            state = await h.subscription_when(sub_id, lambda s: s["after"] == 40)
            assert state["after"] == 40
            callback.statuses = [500] * 1000  # from here on nothing is acknowledged
            await h.append(10)
            await callback.wait_for(lambda: len(callback.deliveries) >= 3)

        async def second(h: Harness) -> None:
            callback.statuses = []
            state = await h.subscription(sub_id)
            assert state["after"] == 40 and state["state"] == "active"
            await h.append(5)
            await callback.wait_for(lambda: seqs(callback.deliveries[-1].events)[-1] == 55)
            # Everything after 40 arrives after the restart, in order, none missing.
            after_restart = [e for d in callback.deliveries[mark:] for e in d.events]
            assert seqs(after_restart) == list(range(41, 56))

        try:
            await _serve(tmp_path, SETTINGS, callback, first)
            mark = len(callback.deliveries)
            await _serve(tmp_path, SETTINGS, callback, second)
        finally:
            await callback.stop()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- the API


def test_list_get_and_delete_a_subscription(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        one = await h.subscribe()
        two = await h.subscribe(types=["agent."])
        listed = await h.client.get("/api/v1/subscriptions", headers=CRM)
        ids = [s["id"] for s in (await listed.json())["subscriptions"]]
        assert ids == [one["id"], two["id"]]
        assert (await h.client.delete(f"/api/v1/subscriptions/{one['id']}",
                                      headers=CRM)).status == 204
        gone = await h.client.get(f"/api/v1/subscriptions/{one['id']}", headers=CRM)
        assert gone.status == 404
        assert (await gone.json())["error"]["code"] == "unknown_subscription"
        await h.append(1, "agent.logged_on")
        await h.callback.wait_for(lambda: len(h.callback.deliveries) >= 1)
        await asyncio.sleep(0.1)
        assert len(h.callback.deliveries) == 1
        assert all(json.loads(d.body)["subscription"] == two["id"]
                   for d in h.callback.deliveries)

    run(tmp_path, body)


async def _error(response: aiohttp.ClientResponse, status: int, code: str) -> None:
    text = await response.text()
    assert response.status == status, text
    assert json.loads(text)["error"]["code"] == code, text


def test_bad_subscription_requests_are_json_4xx(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        post = h.client.post
        for url in ("ftp://127.0.0.1/x", "file:///etc/passwd", "gopher://a", "javascript:x"):
            await _error(await post("/api/v1/subscriptions", json={"callback_url": url},
                                    headers=CRM), 422, "invalid_request")
        await _error(await post("/api/v1/subscriptions", json={"callback_url": "http://"},
                                headers=CRM), 422, "invalid_request")
        await _error(await post("/api/v1/subscriptions",
                                json={"callback_url": "http://:80/x"}, headers=CRM),
                     422, "invalid_callback_url")
        await _error(await post("/api/v1/subscriptions",
                                json={"callback_url": "http://h:99999/x"}, headers=CRM),
                     422, "invalid_callback_url")
        await _error(await post("/api/v1/subscriptions", json={}, headers=CRM),
                     422, "invalid_request")
        await _error(await post("/api/v1/subscriptions",
                                json={"callback_url": h.callback.url, "types": ["bad type"]},
                                headers=CRM), 422, "invalid_request")
        await _error(await post("/api/v1/subscriptions", data=b'{"callback_url": ',
                                headers=CRM), 400, "malformed_json")
        await _error(await post("/api/v1/subscriptions",
                                json={"callback_url": h.callback.url, "after": 10**6},
                                headers=CRM), 410, "resync_required")
        await _error(await post("/api/v1/subscriptions", json={"callback_url": h.callback.url}),
                     401, "unauthorized")
        await _error(await h.client.get("/api/v1/subscriptions/nope!", headers=CRM),
                     400, "invalid_parameter")
        await _error(await h.client.delete("/api/v1/subscriptions/sub_none", headers=CRM),
                     404, "unknown_subscription")

    run(tmp_path, body)


def test_an_agent_may_not_create_or_see_subscriptions(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        login = await h.client.post("/api/v1/sessions", json={"user": "agent1", "password": "pw1"})
        agent = {"Authorization": f"Bearer {(await login.json())['token']}"}
        await _error(await h.client.post("/api/v1/subscriptions",
                                         json={"callback_url": h.callback.url}, headers=agent),
                     403, "forbidden")
        await _error(await h.client.get("/api/v1/subscriptions", headers=agent),
                     403, "forbidden")
        sub = await h.subscribe()
        await _error(await h.client.get(f"/api/v1/subscriptions/{sub['id']}", headers=agent),
                     403, "forbidden")
        login = await h.client.post("/api/v1/sessions", json={"user": "boss", "password": "pwb"})
        boss = {"Authorization": f"Bearer {(await login.json())['token']}"}
        response = await h.client.get(f"/api/v1/subscriptions/{sub['id']}", headers=boss)
        assert response.status == 200

    run(tmp_path, body)


def test_back_off_doubles_up_to_the_cap_with_jitter_between_half_and_all() -> None:
    full = [backoff(n, 1.0, 60.0, lambda: 1.0) for n in (1, 2, 3, 4, 6, 7, 50)]
    assert full == [1.0, 2.0, 4.0, 8.0, 32.0, 60.0, 60.0]
    half = [backoff(n, 1.0, 60.0, lambda: 0.0) for n in (1, 2, 3, 7)]
    assert half == [0.5, 1.0, 2.0, 30.0]


def test_a_worker_that_crashes_restarts_and_redelivers_from_the_stored_position(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webhooks, "WORKER_RESTART_DELAY", 0.05)

    async def body(h: Harness) -> None:
        store = h.cti.webhooks.store
        real = store.acknowledge
        calls = 0

        def flaky(sub_id: str, position: int) -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise sqlite3.OperationalError("disk I/O error")
            return real(sub_id, position)

        monkeypatch.setattr(store, "acknowledge", flaky)
        sub = await h.subscribe()
        await h.append(3)
        await h.callback.wait_for(lambda: len(h.callback.deliveries) >= 2)
        # The acknowledged batch could not be stored: it comes again (at least once).
        assert [seqs(d.events) for d in h.callback.deliveries[:2]] == [[1, 2, 3], [1, 2, 3]]
        await h.append(1)
        await h.callback.wait_for(lambda: seqs(h.callback.acknowledged())[-1] == 4)
        state = await h.subscription_when(sub["id"], lambda s: s["after"] == 4)
        assert state["after"] == 4

    run(tmp_path, body)
