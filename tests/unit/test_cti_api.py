"""The CTI HTTP API in process: sessions, roles, agent commands, snapshots, event delivery.

A real `Acd` and `Journal` behind a real aiohttp server on a loopback port
(aiohttp's test utilities, no pytest plugin); ACD outputs are "executed" by
publishing their events to the journal, as `CmsServer` does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cms.acd.engine import Acd
from cms.acd.events import AcdEvent
from cms.acd.states import AgentState
from cms.calls.control import CallCommandError, CallView, PartyView
from cms.config import parse_config
from cms.cti import OPENAPI, Cti, Sessions
from cms.cti.messaging import Delivered
from cms.events import InteractionLog, Journal, JournalFeed

CONFIG: dict[str, Any] = {
    "users": [
        {"name": "agent1", "password": "pw1", "extension": "1001", "queues": ["sales"]},
        {"name": "agent2", "password": "pw2", "extension": "1002", "queues": ["sales"]},
        {"name": "agent3", "password": "pw3", "extension": "1003", "queues": ["support"]},
        {"name": "boss", "password": "pwb", "extension": "1900", "role": "supervisor",
         "auto_logon": False},
    ],
    "work_centres": [{"name": "desk-12", "extension": "2012"}],
    "queues": [{"name": "sales", "number": "600"}, {"name": "support", "number": "601"}],
}


class Clock:
    """Time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class FakeCalls:
    """A stand-in B2BUA implementing `CallControl`: records commands, keeps views by id."""

    def __init__(self) -> None:
        self.views: dict[str, CallView] = {}
        self.commands: list[tuple[Any, ...]] = []
        self.refuse: CallCommandError | None = None
        self._next = 0

    def add(self, call_id: str, *users: str, state: str = "connected",
            attached_data: dict[str, Any] | None = None) -> CallView:
        view = CallView(
            id=call_id, kind="queue", direction="inbound", state=state, caller="+4930123",
            target="600", queue="sales", agent=users[0] if users else "",
            created=1_700_000_000.0, answered=None, users=frozenset(users),
            parties=(PartyView("caller", "+4930123", "", "up"),),
            attached_data=dict(attached_data or {}))
        self.views[call_id] = view
        return view

    def _do(self, *command: Any) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.commands.append(command)

    def _changed(self, call_id: str, **changes: Any) -> CallView:
        view = self.views[call_id]
        self.views[call_id] = dataclasses.replace(view, **changes)
        return self.views[call_id]

    def list_calls(self) -> list[CallView]:
        return list(self.views.values())

    def get_call(self, call_id: str) -> CallView | None:
        return self.views.get(call_id)

    async def make_call(self, user: str, to: str,
                        attached_data: Any = None) -> CallView:
        self._do("make_call", user, to, dict(attached_data or {}))
        self._next += 1
        view = self.add(f"c2d-{self._next}", user, state="ringing",
                        attached_data=dict(attached_data or {}))
        return self._changed(view.id, kind="click_to_dial", direction="outbound", target=to)

    async def answer(self, call_id: str, user: str | None) -> CallView:
        self._do("answer", call_id, user)
        return self._changed(call_id, state="connected", answered=1_700_000_005.0)

    async def reject(self, call_id: str, user: str | None) -> CallView:
        self._do("reject", call_id, user)
        return self._changed(call_id, state="ended")

    async def hangup(self, call_id: str, user: str | None) -> CallView:
        self._do("hangup", call_id, user)
        return self._changed(call_id, state="ended")

    async def hold(self, call_id: str, user: str | None) -> CallView:
        self._do("hold", call_id, user)
        return self._changed(call_id, state="held")

    async def retrieve(self, call_id: str, user: str | None) -> CallView:
        self._do("retrieve", call_id, user)
        return self._changed(call_id, state="connected")

    async def send_dtmf(self, call_id: str, user: str | None, digits: str) -> CallView:
        self._do("dtmf", call_id, user, digits)
        return self.views[call_id]

    async def transfer(self, call_id: str, user: str | None, to: str, mode: Any) -> CallView:
        self._do("transfer", call_id, user, to, mode)
        return self.views[call_id]

    async def consult(self, call_id: str, user: str | None, to: str) -> CallView:
        self._do("consult", call_id, user, to)
        return self.add(f"{call_id}-consult", *self.views[call_id].users)

    async def complete(self, call_id: str, user: str | None, consult_id: str,
                       as_: Any) -> CallView:
        self._do("complete", call_id, user, consult_id, as_)
        return self.views[call_id]

    def attached_data(self, call_id: str) -> dict[str, Any]:
        return dict(self.views[call_id].attached_data)

    def update_attached_data(self, call_id: str, user: str | None,
                             changes: Any) -> dict[str, Any]:
        self._do("attach", call_id, user, dict(changes))
        data = dict(self.views[call_id].attached_data)
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        self._changed(call_id, attached_data=data)
        return data


class FakeMessenger:
    """Phones that answer MESSAGE with a set outcome per device (after `delay` seconds)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Delivered] = {}
        self.sent: list[tuple[str, str, str]] = []
        self.delay = 0.0

    async def send(self, device: str, text: str, sender: str) -> Delivered:
        self.sent.append((device, text, sender))
        await asyncio.sleep(self.delay)
        return self.outcomes.get(device, Delivered("no_device"))


@dataclass
class Harness:
    client: TestClient
    cti: Cti
    acd: Acd
    journal: Journal
    clock: Clock
    calls: FakeCalls
    phones: FakeMessenger
    interactions: InteractionLog

    def execute(self, outputs: list[Any]) -> None:
        self.cti.execute(outputs)

    async def login(self, user: str, password: str) -> dict[str, str]:
        response = await self.client.post("/api/v1/sessions",
                                          json={"user": user, "password": password})
        assert response.status == 201, await response.text()
        return {"Authorization": f"Bearer {(await response.json())['token']}"}

    async def supervisor(self) -> dict[str, str]:
        return await self.login("boss", "pwb")

    async def agent(self, name: str = "agent1") -> dict[str, str]:
        return await self.login(name, {"agent1": "pw1", "agent2": "pw2", "agent3": "pw3"}[name])

    async def poll(self, headers: dict[str, str], after: int, **params: Any) -> dict[str, Any]:
        response = await self.client.get("/api/v1/events",
                                         params={"after": after, **params}, headers=headers)
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


def run(tmp_path: Path, body: Callable[[Harness], Awaitable[None]]) -> None:
    """Start the CTI on a loopback port with a fresh journal, run `body`, stop everything."""

    async def scenario() -> None:
        config = parse_config(CONFIG)
        acd = Acd.from_config(config)
        interactions = InteractionLog(country_code="49")
        journal = Journal(tmp_path / "events.sqlite3", projections=[interactions])
        await journal.start()
        feed = JournalFeed(journal)
        clock = Clock()

        def execute(outputs: list[Any]) -> None:
            for output in outputs:
                if isinstance(output, AcdEvent):
                    feed.acd_event(output)

        calls = FakeCalls()
        phones = FakeMessenger()
        cti = Cti(config, acd, journal, execute, clock=clock, calls=calls, messenger=phones)
        app = web.Application()
        cti.mount(app)
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            await body(Harness(client, cti, acd, journal, clock, calls, phones, interactions))
        finally:
            await client.close()
            await journal.close()

    asyncio.run(scenario())


async def expect_error(response: aiohttp.ClientResponse, status: int, code: str) -> dict[str, Any]:
    """The response is `status` with the JSON error shape and `code`."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "application/json", text
    error = json.loads(text)["error"]
    assert error["code"] == code, text
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


# --------------------------------------------------------------------------- sessions


def test_login_gives_a_bearer_token_with_role_and_expiry(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        response = await h.client.post("/api/v1/sessions",
                                       json={"user": "agent1", "password": "pw1"})
        assert response.status == 201
        session = await response.json()
        assert session["user"] == "agent1" and session["role"] == "agent"
        assert session["expires"].endswith("Z") and len(session["token"]) >= 32
        assert "password" not in session and "pw1" not in json.dumps(session)
        me = await h.client.get("/api/v1/sessions",
                                headers={"Authorization": f"Bearer {session['token']}"})
        assert (await me.json())["user"] == "agent1"

    run(tmp_path, body)


def test_wrong_password_and_unknown_user_get_the_same_401(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        wrong = await h.client.post("/api/v1/sessions",
                                    json={"user": "agent1", "password": "nope"})
        unknown = await h.client.post("/api/v1/sessions",
                                      json={"user": "ghost", "password": "nope"})
        first = await expect_error(wrong, 401, "invalid_credentials")
        second = await expect_error(unknown, 401, "invalid_credentials")
        assert first == second

    run(tmp_path, body)


def test_requests_without_a_valid_token_are_401(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await expect_error(await h.client.get("/api/v1/agents"), 401, "unauthorized")
        bad = await h.client.get("/api/v1/agents", headers={"Authorization": "Bearer nope"})
        await expect_error(bad, 401, "unauthorized")
        assert bad.headers["WWW-Authenticate"].startswith("Bearer")

    run(tmp_path, body)


def test_logging_off_revokes_the_token(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.agent()
        response = await h.client.delete("/api/v1/sessions", headers=headers)
        assert response.status == 204
        await expect_error(await h.client.get("/api/v1/agents", headers=headers),
                           401, "unauthorized")

    run(tmp_path, body)


def test_tokens_expire(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.agent()
        assert (await h.client.get("/api/v1/agents", headers=headers)).status == 200
        h.clock.now += h.cti.sessions.ttl + 1
        await expect_error(await h.client.get("/api/v1/agents", headers=headers),
                           401, "unauthorized")

    run(tmp_path, body)


def test_an_api_key_acts_as_an_integration_that_sees_all(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        h.cti.sessions = Sessions(h.cti.config.users, {"secret-key": "crm"})
        headers = {"X-API-Key": "secret-key"}
        response = await h.client.get("/api/v1/agents", headers=headers)
        assert len((await response.json())["agents"]) == 4
        await expect_error(await h.client.get("/api/v1/agents", headers={"X-API-Key": "x"}),
                           401, "unauthorized")

    run(tmp_path, body)


# --------------------------------------------------------------------------- agents


def test_an_agent_sets_its_own_state_with_a_reason(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.agent()
        response = await h.client.post("/api/v1/agents/agent1/logon", headers=headers)
        assert (await response.json())["state"] == "ready"
        response = await h.client.put("/api/v1/agents/agent1/state", headers=headers,
                                      json={"state": "not_ready", "reason": "lunch"})
        agent = await response.json()
        assert response.status == 200
        assert (agent["state"], agent["reason"], agent["presence"]) == (
            "not_ready", "lunch", "not_ready")
        assert agent["seq"] == h.journal.head

    run(tmp_path, body)


def test_an_agent_cannot_change_another_agents_state(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.agent("agent1")
        for method, path, payload in [
            ("PUT", "/api/v1/agents/agent2/state", {"state": "ready"}),
            ("POST", "/api/v1/agents/agent2/logon", {}),
            ("POST", "/api/v1/agents/agent2/logoff", None),
            ("GET", "/api/v1/agents/agent2", None),
        ]:
            response = await h.client.request(method, path, headers=headers, json=payload)
            await expect_error(response, 403, "forbidden")
        assert h.acd.agent("agent2").state.value == "logged_off"  # type: ignore[union-attr]

    run(tmp_path, body)


def test_a_supervisor_controls_any_agent(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.supervisor()
        response = await h.client.post("/api/v1/agents/agent2/logon", headers=headers,
                                       json={"device": "desk-12"})
        agent = await response.json()
        assert (agent["state"], agent["device"]) == ("ready", "desk-12")
        response = await h.client.post("/api/v1/agents/agent2/logoff", headers=headers)
        assert (await response.json())["state"] == "logged_off"

    run(tmp_path, body)


def test_an_unknown_user_is_404(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.supervisor()
        response = await h.client.put("/api/v1/agents/ghost/state", headers=headers,
                                      json={"state": "ready"})
        await expect_error(response, 404, "unknown_user")
        await expect_error(await h.client.get("/api/v1/queues/nowhere", headers=headers),
                           404, "unknown_queue")

    run(tmp_path, body)


def test_logon_at_a_device_that_is_not_the_agents_is_refused(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.supervisor()
        response = await h.client.post("/api/v1/agents/agent1/logon", headers=headers,
                                       json={"device": "1002"})
        await expect_error(response, 422, "unknown_device")
        await h.client.post("/api/v1/agents/agent1/logon", headers=headers,
                            json={"device": "2012"})
        taken = await h.client.post("/api/v1/agents/agent2/logon", headers=headers,
                                    json={"device": "desk-12"})
        error = await expect_error(taken, 409, "refused")
        assert "agent1" in error["message"]

    run(tmp_path, body)


def test_a_state_the_acd_refuses_now_is_409(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.agent()
        response = await h.client.put("/api/v1/agents/agent1/state", headers=headers,
                                      json={"state": "ready"})
        await expect_error(response, 409, "refused")  # not logged on

    run(tmp_path, body)


def test_an_agent_lists_only_itself_a_supervisor_everyone(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        mine = await (await h.client.get("/api/v1/agents", headers=await h.agent())).json()
        everyone = await (await h.client.get("/api/v1/agents",
                                             headers=await h.supervisor())).json()
        assert [a["user"] for a in mine["agents"]] == ["agent1"]
        assert [a["user"] for a in everyone["agents"]] == ["agent1", "agent2", "agent3", "boss"]

    run(tmp_path, body)


# --------------------------------------------------------------------------- bad input


BAD_BODIES: list[bytes] = [
    b"{", b"[]", b"42", b'"ready"', b"null", b"\xff\xfe", b"[" * 100_000,
    b'{"state": 5}', b'{"state": "ready", "extra": 1}', b'{"state": "ready", "reason": 7}',
    b'{"state": "ready", "reason": "' + b"x" * 500 + b'"}', b'{"device": ["desk-12"]}',
    b'{"user": true, "password": null}', b'{"state": "asleep"}',
]


def test_malformed_json_is_400_with_the_error_shape(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.agent()
        response = await h.client.put("/api/v1/agents/agent1/state", headers=headers,
                                      data=b'{"state": ')
        await expect_error(response, 400, "malformed_json")
        response = await h.client.put("/api/v1/agents/agent1/state", headers=headers)
        await expect_error(response, 400, "missing_body")

    run(tmp_path, body)


def test_a_body_that_breaks_the_schema_is_422_naming_the_field(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.agent()
        response = await h.client.put("/api/v1/agents/agent1/state", headers=headers,
                                      json={"state": "sleeping"})
        error = await expect_error(response, 422, "invalid_request")
        assert error["path"] == "/state"

    run(tmp_path, body)


def test_no_bad_input_ever_gets_a_500(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.supervisor()
        h.calls.add("c1", "agent1")
        targets = [("PUT", "/api/v1/agents/agent1/state"), ("POST", "/api/v1/agents/agent1/logon"),
                   ("POST", "/api/v1/sessions"), ("POST", "/api/v1/calls"),
                   ("POST", "/api/v1/calls/c1/dtmf"), ("POST", "/api/v1/calls/c1/complete"),
                   ("POST", "/api/v1/calls/c1/transfer")]
        for method, path in targets:
            for raw in BAD_BODIES:
                response = await h.client.request(method, path, headers=headers, data=raw)
                text = await response.text()
                assert 400 <= response.status < 500, (path, raw[:40], text)
                assert set(json.loads(text)["error"]) >= {"code", "message"}
        for query in ["after=x", "after=-1", "wait=1e999", "wait=nan", "limit=0", "limit=5000",
                      "after=99999999"]:
            response = await h.client.get(f"/api/v1/events?{query}", headers=headers)
            assert 400 <= response.status < 500, (query, await response.text())
        long_name = "/api/v1/agents/" + "x" * 300
        for path in ["/api/v1/nothing", "/api/v1/agents/a%20b/state", long_name]:
            response = await h.client.get(path, headers=headers)
            assert 400 <= response.status < 500
            assert "error" in await response.json()

    run(tmp_path, body)


def test_unknown_routes_and_methods_get_the_error_shape(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await expect_error(await h.client.get("/api/v1/nope"), 404, "not_found")
        response = await h.client.delete("/api/v1/queues")
        await expect_error(response, 405, "method_not_allowed")
        assert "GET" in response.headers["Allow"]

    run(tmp_path, body)


# --------------------------------------------------------------------------- OpenAPI


def test_the_openapi_document_lists_exactly_the_served_routes(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        served = await (await h.client.get("/api/v1/openapi.json")).json()
        assert served == json.loads(json.dumps(OPENAPI))
        documented = {(method.upper(), path) for path, item in served["paths"].items()
                      for method in item if method in ("get", "put", "post", "delete", "patch")}
        app = h.cti.build_app()
        routed = {(route.method, route.resource.canonical)  # type: ignore[union-attr]
                  for route in app.router.routes() if route.method != "HEAD"}
        assert routed == documented
        assert set(h.cti.handlers) == {op["operationId"] for item in served["paths"].values()
                                       for op in item.values() if isinstance(op, dict)
                                       and "operationId" in op}

    run(tmp_path, body)


def test_every_documented_operation_answers_on_the_running_server(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.supervisor()
        h.calls.add("c1", "agent1")
        for path, item in OPENAPI["paths"].items():
            for method, operation in item.items():
                if method == "parameters":
                    continue
                url = "/api/v1" + path.replace("{user}", "agent1").replace(
                    "{name}", "sales").replace("{id}", "c1")
                if operation["operationId"] == "deleteSession":
                    continue  # would end the session the loop uses
                payload = {"createSession": {"user": "agent2", "password": "pw2"},
                           "setAgentState": {"state": "not_ready"},
                           "makeCall": {"to": "1002", "user": "agent1"},
                           "transferCall": {"to": "1002"},
                           "consultCall": {"to": "1002"},
                           "completeCall": {"consult_id": "c1-consult", "as": "transfer"},
                           "sendDtmf": {"digits": "12#"},
                           "patchAttachedData": {"bp": "4711"},
                           "updateInteraction": {"wrap_up_reason": "sale"},
                           "createBroadcast": {"text": "hello"},
                           "createAlert": {"user": "agent1", "text": "psst"},
                           }.get(operation["operationId"])
                if operation["operationId"] == "eventsSse":
                    url += "?heartbeat=0.05"
                response = await h.client.request(method.upper(), url, headers=headers,
                                                  json=payload, timeout=aiohttp.ClientTimeout(1))
                status = str(response.status)
                response.close()
                assert status in operation["responses"], (method, path, status)

    run(tmp_path, body)


# --------------------------------------------------------------------------- events


def test_poll_returns_the_events_after_a_seq_and_a_cursor(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.supervisor()
        h.execute(h.acd.device_registered("agent1", h.clock()))
        await h.journal.flush()
        page = await h.poll(headers, 0)
        assert [e["type"] for e in page["events"]] == [
            "agent.logged_on", "agent.state_changed", "presence.changed"]
        assert [e["seq"] for e in page["events"]] == [1, 2, 3] and page["next"] == 3
        assert (await h.poll(headers, 1))["events"] == page["events"][1:]
        assert (await h.poll(headers, 3)) == {"events": [], "next": 3}

    run(tmp_path, body)


def test_a_long_poll_returns_as_soon_as_an_event_is_committed(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.supervisor()
        waiting = asyncio.create_task(h.poll(headers, 0, wait=10))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        started = asyncio.get_running_loop().time()
        h.execute(h.acd.logon("agent1", None, h.clock()))
        page = await waiting
        assert asyncio.get_running_loop().time() - started < 1.0
        assert page["events"][0]["type"] == "agent.logged_on"
        empty = await h.poll(headers, page["next"], wait=0.1)
        assert empty["events"] == []

    run(tmp_path, body)


def test_an_agent_sees_only_its_own_events_but_everyones_presence(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.agent("agent1")
        h.execute(h.acd.logon("agent2", None, h.clock()))
        h.execute(h.acd.logon("agent1", None, h.clock()))
        await h.journal.flush()
        page = await h.poll(headers, 0)
        seen = [(e["type"], e["user"]) for e in page["events"]]
        assert ("agent.logged_on", "agent2") not in seen
        assert ("presence.changed", "agent2") in seen
        assert ("agent.logged_on", "agent1") in seen
        assert page["next"] == h.journal.last_seq

    run(tmp_path, body)


def test_polling_from_an_unknown_position_asks_for_a_resync(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.supervisor()
        response = await h.client.get("/api/v1/events?after=500", headers=headers)
        error = await expect_error(response, 410, "resync_required")
        assert error["resync"]["snapshots"] == [
            "/api/v1/agents", "/api/v1/queues", "/api/v1/presence"]

    run(tmp_path, body)


def test_websocket_pushes_events_then_heartbeats(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        token = (await h.supervisor())["Authorization"].split()[1]
        h.execute(h.acd.logon("agent1", None, h.clock()))
        await h.journal.flush()
        ws = await h.client.ws_connect("/api/v1/events/ws",
                                       params={"after": 1, "heartbeat": 0.1, "token": token})
        first = [json.loads((await ws.receive(timeout=2)).data) for _ in range(2)]
        assert [e["seq"] for e in first] == [2, 3]
        heartbeat = json.loads((await ws.receive(timeout=2)).data)
        assert heartbeat["type"] == "heartbeat" and "seq" not in heartbeat
        h.execute(h.acd.set_state("agent1", AgentState.NOT_READY, "break", h.clock()))
        pushed = json.loads((await ws.receive(timeout=2)).data)
        assert (pushed["seq"], pushed["type"], pushed["reason"]) == (
            4, "agent.state_changed", "break")
        await ws.close()

    run(tmp_path, body)


def test_websocket_from_an_unknown_position_gets_resync_and_close_4410(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        ws = await h.client.ws_connect("/api/v1/events/ws?after=77",
                                       headers=await h.supervisor())
        message = json.loads((await ws.receive(timeout=2)).data)
        assert message["type"] == "resync" and "snapshots" in message
        closing = await ws.receive(timeout=2)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4410

    run(tmp_path, body)


def test_sse_resumes_after_last_event_id(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.supervisor()
        h.execute(h.acd.logon("agent1", None, h.clock()))
        await h.journal.flush()
        response = await h.client.get("/api/v1/events/sse",
                                      headers={**headers, "Last-Event-ID": "1"},
                                      params={"heartbeat": 0.1})
        assert response.headers["Content-Type"].startswith("text/event-stream")
        lines: list[str] = []
        while lines.count("event: heartbeat") < 1:
            lines.append((await response.content.readline()).decode().rstrip("\n"))
        response.close()
        ids = [int(line[4:]) for line in lines if line.startswith("id: ")]
        data = [json.loads(line[6:]) for line in lines if line.startswith("data: {\"seq")]
        assert ids == [2, 3] and [d["seq"] for d in data] == [2, 3]

    run(tmp_path, body)


def test_server_shutdown_closes_push_channels_promptly(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        headers = await h.supervisor()
        ws = await h.client.ws_connect("/api/v1/events/ws", headers=headers)
        sse = await h.client.get("/api/v1/events/sse", headers=headers)
        started = asyncio.get_running_loop().time()
        await h.cti.delivery.shutdown()
        closing = await ws.receive(timeout=2)
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001
        assert await asyncio.wait_for(sse.content.read(), 2) == b"retry: 2000\n\n"
        assert asyncio.get_running_loop().time() - started < 1.0

    run(tmp_path, body)


def test_websocket_fast_path_carries_small_medium_and_large_frames(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        ws = await h.client.ws_connect("/api/v1/events/ws", headers=await h.supervisor())
        await asyncio.sleep(0.05)  # caught up: the socket is served from the commit callback
        assert len(h.cti.delivery._live) == 1
        sizes = [10, 300, 70_000]
        for size in sizes:
            h.journal.append("test.blob", {"blob": "x" * size})
        received = [json.loads((await ws.receive(timeout=2)).data) for _ in sizes]
        assert [len(e["blob"]) for e in received] == sizes
        assert [e["seq"] for e in received] == [1, 2, 3]
        await ws.close()

    run(tmp_path, body)


def test_a_websocket_that_falls_behind_is_caught_up_without_gaps_or_duplicates(
        tmp_path: Path, monkeypatch: Any) -> None:
    import cms.cti.stream as stream

    # Every batch overflows the "buffer": each socket leaves the fast path after each batch
    # and its own task has to take over from where the commit callback stopped.
    monkeypatch.setattr(stream, "LIVE_BUFFER_LIMIT", -1)

    async def body(h: Harness) -> None:
        ws = await h.client.ws_connect("/api/v1/events/ws", headers=await h.supervisor(),
                                       params={"heartbeat": 0.05})
        for burst in range(20):
            for index in range(5):
                h.journal.append("test.counted", {"n": burst * 5 + index})
            await asyncio.sleep(0.005 * (burst % 3))
        seqs: list[int] = []
        while len(seqs) < 100:
            message = json.loads((await ws.receive(timeout=2)).data)
            if "seq" in message:
                seqs.append(message["seq"])
        assert seqs == list(range(1, 101))
        await ws.close()

    run(tmp_path, body)


def test_an_agents_websocket_gets_only_what_the_agent_may_see(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        ws = await h.client.ws_connect("/api/v1/events/ws", headers=await h.agent("agent1"),
                                       params={"heartbeat": 0.2})
        await asyncio.sleep(0.05)
        h.execute(h.acd.logon("agent2", None, h.clock()))
        h.execute(h.acd.logon("agent1", None, h.clock()))
        seen: list[tuple[str, str]] = []
        while ("presence.changed", "agent1") not in seen:
            message = json.loads((await ws.receive(timeout=2)).data)
            if "seq" in message:
                seen.append((message["type"], message["user"]))
        assert seen == [("presence.changed", "agent2"), ("agent.logged_on", "agent1"),
                        ("agent.state_changed", "agent1"), ("presence.changed", "agent1")]
        await ws.close()

    run(tmp_path, body)


# --------------------------------------------------------------------------- calls


async def _json_of(response: aiohttp.ClientResponse, status: int = 200) -> Any:
    text = await response.text()
    assert response.status == status, text
    return json.loads(text)


def test_an_agent_lists_only_its_own_calls_a_supervisor_all(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        h.calls.add("c1", "agent1")
        h.calls.add("c2", "agent2")
        h.calls.add("c3", "agent1", "agent2")
        mine = await _json_of(await h.client.get("/api/v1/calls", headers=await h.agent()))
        assert [c["id"] for c in mine["calls"]] == ["c1", "c3"]
        assert mine["calls"][0]["created"] == "2023-11-14T22:13:20.000Z"
        everyone = await _json_of(await h.client.get("/api/v1/calls",
                                                     headers=await h.supervisor()))
        assert [c["id"] for c in everyone["calls"]] == ["c1", "c2", "c3"]

    run(tmp_path, body)


def test_someone_elses_call_is_403_an_unknown_call_404(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        h.calls.add("c2", "agent2")
        headers = await h.agent("agent1")
        for method, path, payload in [
            ("GET", "/api/v1/calls/c2", None),
            ("POST", "/api/v1/calls/c2/hangup", None),
            ("POST", "/api/v1/calls/c2/transfer", {"to": "600"}),
            ("GET", "/api/v1/calls/c2/attached_data", None),
            ("PATCH", "/api/v1/calls/c2/attached_data", {"x": 1}),
        ]:
            response = await h.client.request(method, path, headers=headers, json=payload)
            await expect_error(response, 403, "forbidden")
        await expect_error(await h.client.post("/api/v1/calls/nope/answer", headers=headers),
                           404, "unknown_call")
        assert h.calls.commands == []

    run(tmp_path, body)


def test_an_agent_commands_its_call_as_itself_a_supervisor_as_nobody(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        h.calls.add("c1", "agent1", state="ringing")
        agent = await h.agent()
        call = await _json_of(await h.client.post("/api/v1/calls/c1/answer", headers=agent))
        assert call["state"] == "connected" and call["answered"].endswith("Z")
        assert call["seq"] == h.journal.head
        for action, state in [("hold", "held"), ("retrieve", "connected")]:
            call = await _json_of(await h.client.post(f"/api/v1/calls/c1/{action}",
                                                      headers=agent))
            assert call["state"] == state
        await _json_of(await h.client.post("/api/v1/calls/c1/dtmf", headers=agent,
                                           json={"digits": "0123456789*#ABCD"}))
        await _json_of(await h.client.post("/api/v1/calls/c1/transfer", headers=agent,
                                           json={"to": "agent2", "mode": "consult"}))
        await _json_of(await h.client.post("/api/v1/calls/c1/transfer", headers=agent,
                                           json={"to": "+4930999"}))
        consult = await _json_of(await h.client.post("/api/v1/calls/c1/consult", headers=agent,
                                                     json={"to": "1002"}))
        await _json_of(await h.client.post(
            "/api/v1/calls/c1/complete", headers=agent,
            json={"consult_id": consult["id"], "as": "conference"}))
        boss = await h.supervisor()
        await _json_of(await h.client.post("/api/v1/calls/c1/hangup", headers=boss))
        assert h.calls.commands == [
            ("answer", "c1", "agent1"), ("hold", "c1", "agent1"), ("retrieve", "c1", "agent1"),
            ("dtmf", "c1", "agent1", "0123456789*#ABCD"),
            ("transfer", "c1", "agent1", "agent2", "consult"),
            ("transfer", "c1", "agent1", "+4930999", "blind"),
            ("consult", "c1", "agent1", "1002"),
            ("complete", "c1", "agent1", "c1-consult", "conference"),
            ("hangup", "c1", None),
        ]

    run(tmp_path, body)


def test_invalid_dtmf_digits_and_transfer_modes_are_422(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        h.calls.add("c1", "agent1")
        agent = await h.agent()
        for digits in ["", "12x", "e", "1 2", "a", "9" * 33]:
            response = await h.client.post("/api/v1/calls/c1/dtmf", headers=agent,
                                           json={"digits": digits})
            error = await expect_error(response, 422, "invalid_request")
            assert error["path"] == "/digits"
        response = await h.client.post("/api/v1/calls/c1/transfer", headers=agent,
                                       json={"to": "600", "mode": "warm"})
        await expect_error(response, 422, "invalid_request")
        response = await h.client.post("/api/v1/calls/c1/complete", headers=agent,
                                       json={"consult_id": "c9", "as": "merge"})
        await expect_error(response, 422, "invalid_request")
        assert h.calls.commands == []

    run(tmp_path, body)


def test_a_refused_call_command_keeps_the_b2buas_status_and_code(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        h.calls.add("c1", "agent1")
        agent = await h.agent()
        h.calls.refuse = CallCommandError(409, "not_held", "the call is not on hold")
        error = await expect_error(
            await h.client.post("/api/v1/calls/c1/retrieve", headers=agent), 409, "not_held")
        assert error["message"] == "the call is not on hold"
        h.calls.refuse = CallCommandError(500, "boom", "never a 5xx for a command")
        await expect_error(await h.client.post("/api/v1/calls/c1/hold", headers=agent),
                           409, "boom")

    run(tmp_path, body)


def test_click_to_dial_uses_the_agents_own_device(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        agent = await h.agent()
        call = await _json_of(await h.client.post(
            "/api/v1/calls", headers=agent,
            json={"to": "+4930555", "attached_data": {"business_partner": "BP-7"}}), 201)
        assert call["kind"] == "click_to_dial" and call["users"] == ["agent1"]
        response = await h.client.post("/api/v1/calls", headers=agent,
                                       json={"to": "600", "user": "agent2"})
        await expect_error(response, 403, "forbidden")
        boss = await h.supervisor()
        await _json_of(await h.client.post("/api/v1/calls", headers=boss,
                                           json={"to": "600", "user": "agent2"}), 201)
        await expect_error(await h.client.post("/api/v1/calls", headers=boss,
                                               json={"to": "600", "user": "ghost"}),
                           404, "unknown_user")
        h.cti.sessions = Sessions(h.cti.config.users, {"k": "crm"})
        await expect_error(await h.client.post("/api/v1/calls", headers={"X-API-Key": "k"},
                                               json={"to": "600"}), 422, "user_required")
        assert h.calls.commands == [
            ("make_call", "agent1", "+4930555", {"business_partner": "BP-7"}),
            ("make_call", "agent2", "600", {}),
        ]

    run(tmp_path, body)


def test_attached_data_is_read_and_merge_patched(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        h.calls.add("c1", "agent1", attached_data={"bp": "1", "topic": "billing"})
        agent = await h.agent()
        data = await _json_of(await h.client.get("/api/v1/calls/c1/attached_data",
                                                 headers=agent))
        assert data == {"bp": "1", "topic": "billing"}
        data = await _json_of(await h.client.patch("/api/v1/calls/c1/attached_data",
                                                   headers=agent,
                                                   json={"topic": None, "case": 42}))
        assert data == {"bp": "1", "case": 42}
        for bad in [b"[1]", b'"x"', json.dumps({f"k{i}": i for i in range(101)}).encode()]:
            response = await h.client.patch("/api/v1/calls/c1/attached_data", headers=agent,
                                            data=bad)
            assert response.status == 422, await response.text()
        deep: Any = 1
        for _ in range(20):
            deep = {"d": deep}
        await expect_error(await h.client.patch("/api/v1/calls/c1/attached_data",
                                                headers=agent, json=deep),
                           422, "invalid_request")

    run(tmp_path, body)


# --------------------------------------------------------------------------- interactions


def created(call_id: str, **data: Any) -> dict[str, Any]:
    return {"interaction_id": call_id, "call_id": call_id, "kind": "queue",
            "direction": "inbound", "caller": "030 1234567", "target": "600", "queue": "sales",
            "attached_data": {}, **data}


async def _interactions(h: Harness, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    return dict(await _json_of(await h.client.get("/api/v1/interactions", headers=headers,
                                                  params=params)))


def test_agents_see_only_their_interactions_supervisors_filter_them(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        h.journal.append("interaction.created", created("c1"))
        h.journal.append("call.offered", {"call_id": "c1", "queue": "sales", "agent": "agent1"})
        h.journal.append("interaction.created", created("c2", queue="support"))
        h.journal.append("call.established", {"call_id": "c2", "user": "agent3",
                                              "agent": "agent3"})
        h.journal.append("interaction.created", created("c3", caller="+14155550100"))
        await h.journal.flush()
        mine = await _interactions(h, await h.agent("agent1"))
        assert [r["id"] for r in mine["interactions"]] == ["c1"]
        assert mine["interactions"][0]["caller_e164"] == "+49301234567"
        await expect_error(await h.client.get("/api/v1/interactions/c2",
                                              headers=await h.agent("agent1")),
                           403, "forbidden")
        await expect_error(await h.client.get("/api/v1/interactions", params={"agent": "agent3"},
                                              headers=await h.agent("agent1")),
                           403, "forbidden")
        boss = await h.supervisor()
        newest = await _interactions(h, boss)
        assert [r["id"] for r in newest["interactions"]] == ["c3", "c2", "c1"]
        oldest = await _interactions(h, boss, after=0, limit=2)
        assert [r["id"] for r in oldest["interactions"]] == ["c1", "c2"]
        rest = await _interactions(h, boss, after=oldest["next"])
        assert [r["id"] for r in rest["interactions"]] == ["c3"]
        support = await _interactions(h, boss, queue="support")
        assert [r["id"] for r in support["interactions"]] == ["c2"]
        assert support["interactions"][0]["answered"] is not None
        by_agent = await _interactions(h, boss, agent="agent3")
        assert [r["id"] for r in by_agent["interactions"]] == ["c2"]
        await expect_error(await h.client.get("/api/v1/interactions/nope", headers=boss),
                           404, "unknown_interaction")

    run(tmp_path, body)


def test_a_wrap_up_reason_is_set_by_patch_and_by_leaving_wrap_up(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        for call_id in ("c1", "c2"):
            h.journal.append("interaction.created", created(call_id))
            h.journal.append("call.established", {"call_id": call_id, "agent": "agent1"})
            h.journal.append("call.ended", {"call_id": call_id, "agent": "agent1",
                                            "outcome": "answered", "attached_data": {}})
        h.journal.append("agent.state_changed", {"user": "agent1", "state": "ready",
                                                 "previous": "wrap_up", "reason": "sold"})
        await h.journal.flush()
        agent = await h.agent("agent1")
        record = await _json_of(await h.client.get("/api/v1/interactions/c2", headers=agent))
        assert (record["wrap_up_reason"], record["outcome"]) == ("sold", "answered")
        first = await _json_of(await h.client.get("/api/v1/interactions/c1", headers=agent))
        assert first["wrap_up_reason"] is None
        record = await _json_of(await h.client.patch("/api/v1/interactions/c1", headers=agent,
                                                     json={"wrap_up_reason": "callback"}))
        assert record["wrap_up_reason"] == "callback"
        await expect_error(await h.client.patch("/api/v1/interactions/c1",
                                                headers=await h.agent("agent2"),
                                                json={"wrap_up_reason": "x"}), 403, "forbidden")
        await expect_error(await h.client.patch("/api/v1/interactions/c1", headers=agent,
                                                json={"wrap_up_reason": ""}),
                           422, "invalid_request")

    run(tmp_path, body)


# --------------------------------------------------------------------------- broadcasts


def test_a_broadcast_to_a_queue_reaches_its_members_events_and_phones(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        h.execute(h.acd.logon("agent1", "desk-12", h.clock()))
        h.phones.outcomes = {"desk-12": Delivered("accepted", 200),
                             "agent2": Delivered("rejected", 415)}
        await expect_error(await h.client.post("/api/v1/broadcasts", headers=await h.agent(),
                                               json={"text": "hi"}), 403, "forbidden")
        boss = await h.supervisor()
        start = h.journal.head
        report = await _json_of(await h.client.post(
            "/api/v1/broadcasts", headers=boss, json={"text": "Queue is long", "to": "600"}),
            201)
        assert sorted((r["user"], r["device"], r["status"], r["sip_status"])
                      for r in report["recipients"]) == [
            ("agent1", "desk-12", "accepted", 200), ("agent2", "agent2", "rejected", 415)]
        assert sorted(h.phones.sent) == [("agent2", "Queue is long", "boss"),
                                         ("desk-12", "Queue is long", "boss")]
        await h.journal.flush()
        for user, sees in (("agent1", True), ("agent2", True), ("agent3", False)):
            events = (await h.poll(await h.agent(user), start))["events"]
            texts = [e.get("text") for e in events if e["type"] == "broadcast"]
            assert texts == (["Queue is long"] if sees else []), (user, events)
        everyone = await _json_of(await h.client.post("/api/v1/broadcasts", headers=boss,
                                                      json={"text": "Fire drill"}), 201)
        assert sorted(r["user"] for r in everyone["recipients"]) == ["agent1", "agent2",
                                                                     "agent3"]
        await expect_error(await h.client.post("/api/v1/broadcasts", headers=boss,
                                               json={"text": "x", "to": "nowhere"}),
                           404, "unknown_queue")

    run(tmp_path, body)


def test_an_alert_reaches_one_agent_and_slow_phones_report_later(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        h.cti.messages.wait = 0.05
        h.phones.delay = 0.3
        h.phones.outcomes = {"agent2": Delivered("accepted", 200)}
        boss = await h.supervisor()
        start = h.journal.head
        report = await _json_of(await h.client.post(
            "/api/v1/alerts", headers=boss, json={"user": "agent2", "text": "Call me"}), 201)
        assert [(r["user"], r["status"]) for r in report["recipients"]] == [("agent2", "pending")]
        agent2 = await h.agent("agent2")
        page = await h.poll(agent2, start, wait=2)
        events = page["events"]
        while not any(e["type"] == "message.delivered" for e in events):
            page = await h.poll(agent2, page["next"], wait=2)
            events += page["events"]
        alert = next(e for e in events if e["type"] == "alert")
        delivered = next(e for e in events if e["type"] == "message.delivered")
        assert (alert["text"], alert["from"]) == ("Call me", "boss")
        assert (delivered["message_id"], delivered["status"], delivered["sip_status"]) == (
            report["message_id"], "accepted", 200)
        assert not (await h.poll(await h.agent("agent1"), start))["events"]
        await expect_error(await h.client.post("/api/v1/alerts", headers=boss,
                                               json={"user": "ghost", "text": "x"}),
                           404, "unknown_user")

    run(tmp_path, body)
