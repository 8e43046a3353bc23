"""The CTI HTTP API under /api/v1 (DESIGN.md section 5): an aiohttp sub-application.

Routes come from the OpenAPI document (`schema.OPENAPI`): each operation's
`operationId` names a handler here, and its parameters and JSON body are
checked against the same document before the handler runs. Commands drive
the sans-IO ACD and hand its outputs to `execute` (the B2BUA runs the
actions and publishes the events to the journal).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from cms.acd.engine import Acd
from cms.acd.errors import AcdError
from cms.acd.states import AgentState
from cms.acd.views import AgentView, QueueView
from cms.calls.control import CallControl
from cms.config import Config
from cms.events import Event, InteractionLog, Journal, iso_time
from cms.events.subscriptions import SubscriptionStore

from .auth import DEFAULT_SESSION_TTL, Principal, Sessions
from .broadcasts import MessageRoutes
from .calls import CallRoutes
from .crm import add_crm_routes
from .errors import ApiError, error_middleware
from .interactions import InteractionRoutes
from .messaging import Messenger
from .schema import OPENAPI
from .stream import DEFAULT_HEARTBEAT, EventDelivery
from .validation import SchemaError, validate
from .webhooks import WebhookApi, Webhooks, WebhookSettings

__all__ = ["PREFIX", "Cti", "Request"]

PREFIX = "/api/v1"
_METHODS = ("get", "put", "post", "delete", "patch")
_PUBLIC_EVENT_TYPES = ("presence.",)


@dataclass(slots=True)
class Request:
    """A checked request: who asks, its coerced parameters and its validated JSON body."""

    http: web.Request
    principal: Principal | None
    params: dict[str, Any]
    body: dict[str, Any] | None

    @property
    def who(self) -> Principal:
        """The caller (for operations that require authentication)."""
        assert self.principal is not None
        return self.principal


Handler = Callable[[Request], Awaitable[web.StreamResponse]]
Execute = Callable[[list[Any]], None]


class Cti:
    """The CTI API of one CMS: sessions, agents, queues, presence and event delivery."""

    def __init__(self, config: Config, acd: Acd, journal: Journal, execute: Execute, *,
                 health: Callable[[], Mapping[str, Any]] | None = None,
                 clock: Callable[[], float] = time.time,
                 data_dir: str | Path | None = None,
                 calls: CallControl | None = None,
                 messenger: Messenger | None = None) -> None:
        self.config = config
        self.acd = acd
        self.journal = journal
        self.execute = execute
        self.clock = clock
        self._health = health
        settings = config.cms
        # Keys the configuration may gain (read by name, as the ACD settings do).
        api_keys = dict(getattr(settings, "api_keys", None) or {})
        ttl = float(getattr(settings, "session_ttl", DEFAULT_SESSION_TTL))
        self.sessions = Sessions(config.users, api_keys, ttl, clock)
        self.users = {u.name: u for u in config.users}
        self._member_of = {u.name: frozenset(u.queues) for u in config.users}
        self._devices: dict[str, set[str]] = {}  # user -> devices it may log on at
        centres = {key for w in config.work_centres for key in (w.name, w.extension) if key}
        for user in config.users:
            own = {key for key in (user.name, user.extension) if key}
            self._devices[user.name] = own | centres
        self.delivery = EventDelivery(journal, self._visible)
        # Webhook subscriptions persist in the data directory (in memory without one).
        store = SubscriptionStore(Path(data_dir) / "subscriptions.sqlite3"
                                  if data_dir is not None else ":memory:")
        self.webhooks = Webhooks(journal, store, WebhookSettings.from_settings(settings))
        self.handlers: dict[str, Handler] = {
            "getHealth": self.get_health,
            "getOpenApi": self.get_openapi,
            "createSession": self.create_session,
            "getSession": self.get_session,
            "deleteSession": self.delete_session,
            "listAgents": self.list_agents,
            "getAgent": self.get_agent,
            "logonAgent": self.logon_agent,
            "logoffAgent": self.logoff_agent,
            "setAgentState": self.set_agent_state,
            "listQueues": self.list_queues,
            "getQueue": self.get_queue,
            "listPresence": self.list_presence,
            "pollEvents": self.poll_events,
            "eventsWebSocket": self.events_websocket,
            "eventsSse": self.events_sse,
        }
        self.handlers.update(WebhookApi(self.webhooks).handlers())
        self.call_routes = CallRoutes(calls, journal, self.users)
        self.handlers.update(self.call_routes.handlers())
        # The interaction log is a projection of the journal (written in its transactions).
        log = next((p for p in journal.projections if isinstance(p, InteractionLog)), None)
        self.handlers.update(InteractionRoutes(log, journal).handlers())
        agents = [u.name for u in config.users if u.role == "agent"]
        self.messages = MessageRoutes(journal, acd, agents,
                                      lambda user: self._member_of.get(user, ()), messenger)
        self.handlers.update(self.messages.handlers())

    # -- wiring

    def build_app(self) -> web.Application:
        """The sub-application to mount at `PREFIX`, its routes built from the OpenAPI paths."""
        app = web.Application(middlewares=[error_middleware])
        for path, item in OPENAPI["paths"].items():
            shared = item.get("parameters", [])
            for method in _METHODS:
                operation = item.get(method)
                if operation is None:
                    continue
                handler = self.handlers[operation["operationId"]]
                app.router.add_route(method.upper(), path,
                                     self._endpoint(operation, shared, handler))
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    def mount(self, parent: web.Application) -> None:
        """Serve the API under /api/v1 of `parent`, and the CRM page at /crm."""
        parent.add_subapp(PREFIX, self.build_app())
        add_crm_routes(parent)  # the /crm page, a client of this API

    async def _on_startup(self, _app: web.Application) -> None:
        await self.webhooks.start()

    async def _on_shutdown(self, _app: web.Application) -> None:
        await self.webhooks.stop()
        await self.messages.shutdown()
        await self.delivery.shutdown()

    def _endpoint(self, operation: Mapping[str, Any], shared: list[Mapping[str, Any]],
                  handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        parameters = [*shared, *operation.get("parameters", [])]
        security = operation.get("security", OPENAPI["security"])
        schemes = {name for requirement in security for name in requirement}
        body_spec = operation.get("requestBody")

        async def endpoint(request: web.Request) -> web.StreamResponse:
            principal = self._authenticate(request, "token" in schemes) if schemes else None
            params = _parameters(request, parameters)
            body = await _body(request, body_spec) if body_spec is not None else None
            return await handler(Request(request, principal, params, body))

        return endpoint

    def _authenticate(self, request: web.Request, query_token: bool) -> Principal:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        principal: Principal | None = None
        if scheme.lower() == "bearer" and credentials.strip():
            principal = self.sessions.authenticate(credentials.strip())
        elif "X-API-Key" in request.headers:
            principal = self.sessions.api_key(request.headers["X-API-Key"])
        elif query_token and request.query.get("token"):
            principal = self.sessions.authenticate(request.query["token"])
        if principal is None:
            raise ApiError(401, "unauthorized", "a valid bearer token or API key is required",
                           {"WWW-Authenticate": 'Bearer realm="cms"'})
        return principal

    # -- access rules

    def _visible(self, principal: Principal, event: Event) -> bool:
        """Whether an agent may see an event: its own, presence, broadcasts, its queues."""
        if principal.sees_all:
            return True
        data = event.data
        me = principal.name
        if data.get("user") == me or data.get("agent") == me:
            return True
        if event.type.startswith(_PUBLIC_EVENT_TYPES):
            return True
        if event.type == "broadcast":
            return me in data.get("recipients", ())
        return event.type.startswith("queue.") and data.get("queue") in self._member_of.get(
            me, ())

    def _agent_for(self, request: Request) -> str:
        """The path's agent, if it exists (404) and the caller may act on it (403)."""
        user = str(request.params["user"])
        if user not in self.users:
            raise ApiError(404, "unknown_user", f"no user {user!r}")
        who = request.who
        if not who.sees_all and who.name != user:
            raise ApiError(403, "forbidden", "an agent may only act on itself")
        return user

    def _acd(self, outputs: Callable[[], list[Any]]) -> None:
        """Run one ACD command and execute what it returns; its refusals are 409."""
        try:
            result = outputs()
        except AcdError as exc:
            raise ApiError(409, "refused", str(exc)) from None
        self.execute(result)

    # -- handlers: meta and sessions

    async def get_health(self, request: Request) -> web.StreamResponse:
        health = dict(self._health()) if self._health else {"status": "ok"}
        return web.json_response({**health, "push": self.delivery.stats()})

    async def get_openapi(self, request: Request) -> web.StreamResponse:
        return web.json_response(OPENAPI)

    async def create_session(self, request: Request) -> web.StreamResponse:
        assert request.body is not None
        principal = self.sessions.login(request.body["user"], request.body["password"])
        if principal is None:
            raise ApiError(401, "invalid_credentials", "unknown user or wrong password")
        return web.json_response(_session(principal), status=201)

    async def get_session(self, request: Request) -> web.StreamResponse:
        return web.json_response(_session(request.who, with_token=False))

    async def delete_session(self, request: Request) -> web.StreamResponse:
        who = request.who
        if who.token is None:
            raise ApiError(400, "not_a_session", "an API key is not a session")
        self.sessions.revoke(who.token)
        return web.Response(status=204)

    # -- handlers: agents

    async def list_agents(self, request: Request) -> web.StreamResponse:
        who = request.who
        views = self.acd.agents() if who.sees_all else [
            v for v in (self.acd.agent(who.name),) if v is not None]
        return web.json_response({"seq": self.journal.head,
                                  "agents": [self._agent_json(v) for v in views]})

    async def get_agent(self, request: Request) -> web.StreamResponse:
        return self._agent_response(self._agent_for(request))

    async def logon_agent(self, request: Request) -> web.StreamResponse:
        user = self._agent_for(request)
        device = (request.body or {}).get("device")
        if device is not None and device not in self._devices[user]:
            raise ApiError(422, "unknown_device",
                           f"{device!r} is neither {user!r}'s phone nor a work centre")
        self._acd(lambda: self.acd.logon(user, device, self.clock()))
        return self._agent_response(user)

    async def logoff_agent(self, request: Request) -> web.StreamResponse:
        user = self._agent_for(request)
        self._acd(lambda: self.acd.logoff(user, self.clock()))
        return self._agent_response(user)

    async def set_agent_state(self, request: Request) -> web.StreamResponse:
        user = self._agent_for(request)
        assert request.body is not None
        state = AgentState(request.body["state"])
        reason = str(request.body.get("reason", ""))
        self._acd(lambda: self.acd.set_state(user, state, reason, self.clock()))
        return self._agent_response(user)

    def _agent_response(self, user: str) -> web.Response:
        view = self.acd.agent(user)
        if view is None:  # a configured user the ACD does not know (cannot happen today)
            raise ApiError(404, "unknown_user", f"no agent {user!r}")
        return web.json_response({**self._agent_json(view), "seq": self.journal.head})

    def _agent_json(self, view: AgentView) -> dict[str, Any]:
        return {
            "user": view.user,
            "state": view.state.value,
            "reason": view.reason,
            "presence": view.presence.value,
            "since": iso_time(view.since) if view.since else None,
            "device": view.device,
            "queues": sorted(self._member_of.get(view.user, ())),
            "offer": view.offer,
            "calls": list(view.calls),
            "calls_taken": view.calls_taken,
            "deadline": iso_time(view.deadline) if view.deadline is not None else None,
        }

    # -- handlers: queues and presence

    async def list_queues(self, request: Request) -> web.StreamResponse:
        now = self.clock()
        return web.json_response({
            "seq": self.journal.head,
            "queues": [self._queue_json(q, now, request.who) for q in self.acd.queues()],
        })

    async def get_queue(self, request: Request) -> web.StreamResponse:
        name = str(request.params["name"])
        view = self.acd.queue(name)
        if view is None:
            raise ApiError(404, "unknown_queue", f"no queue {name!r}")
        return web.json_response({**self._queue_json(view, self.clock(), request.who),
                                  "seq": self.journal.head})

    def _queue_json(self, view: QueueView, now: float, who: Principal) -> dict[str, Any]:
        by_state: dict[str, int] = {state.value: 0 for state in AgentState}
        for _, state in view.agents:
            by_state[state.value] += 1
        result: dict[str, Any] = {
            "name": view.name,
            "number": view.number,
            "strategy": view.strategy.value,
            "waiting": len(view.callers),
            "longest_wait": round(view.longest_wait(now), 3),
            "agents": by_state,
            "members": [{"user": user, "state": state.value} for user, state in view.agents],
        }
        if who.sees_all:
            # Callers are other agents' calls: only supervisors see them one by one.
            result["callers"] = [{
                "call_id": c.call_id,
                "state": c.state.value,
                "position": c.position,
                "priority": c.priority,
                "waited": round(now - c.joined_at, 3),
                "offered_to": list(c.offered_to),
            } for c in view.callers]
        return result

    async def list_presence(self, request: Request) -> web.StreamResponse:
        return web.json_response({
            "seq": self.journal.head,
            "presence": [{"user": v.user, "presence": v.presence.value}
                         for v in self.acd.agents()],
        })

    # -- handlers: events

    async def poll_events(self, request: Request) -> web.StreamResponse:
        params = request.params
        return await self.delivery.poll(request.who, params.get("after"),
                                        float(params.get("wait", 0.0)),
                                        int(params.get("limit", 500)))

    async def events_websocket(self, request: Request) -> web.StreamResponse:
        return await self.delivery.websocket(
            request.http, request.who, request.params.get("after"),
            float(request.params.get("heartbeat", DEFAULT_HEARTBEAT)))

    async def events_sse(self, request: Request) -> web.StreamResponse:
        params = request.params
        after = params.get("Last-Event-ID", params.get("after"))
        return await self.delivery.sse(request.http, request.who, after,
                                       float(params.get("heartbeat", DEFAULT_HEARTBEAT)))


def _session(principal: Principal, *, with_token: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {
        "user": principal.name,
        "role": principal.role,
        "expires": iso_time(principal.expires) if principal.expires is not None else None,
    }
    if with_token:
        result["token"] = principal.token
    return result


# -- request checking from the OpenAPI document

def _parameters(request: web.Request, specs: list[Mapping[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for spec in specs:
        name, where, schema = spec["name"], spec["in"], spec.get("schema", {})
        if where == "path":
            raw = request.match_info.get(name)
        elif where == "query":
            raw = request.query.get(name)
        elif where == "header":
            raw = request.headers.get(name)
        else:
            continue
        if raw is None:
            if spec.get("required"):
                raise ApiError(400, "missing_parameter", f"{where} parameter {name!r} is required")
            continue
        value = _coerce(raw, schema, name, where)
        try:
            validate(value, schema, OPENAPI)
        except SchemaError as exc:
            raise ApiError(400, "invalid_parameter",
                           f"{where} parameter {name!r}: {exc.detail}") from None
        values[name] = value
    return values


def _coerce(raw: str, schema: Mapping[str, Any], name: str, where: str) -> Any:
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(raw.strip())
        if kind == "number":
            value = float(raw.strip())
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
        if kind == "boolean":
            return {"true": True, "false": False}[raw.strip().lower()]
    except (ValueError, KeyError):
        raise ApiError(400, "invalid_parameter",
                       f"{where} parameter {name!r}: expected {kind}") from None
    return raw


async def _body(request: web.Request, spec: Mapping[str, Any]) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        if spec.get("required"):
            raise ApiError(400, "missing_body", "a JSON request body is required")
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "the request body is not valid JSON") from None
    schema = spec["content"]["application/json"]["schema"]
    try:
        validate(data, schema, OPENAPI)
    except SchemaError as exc:
        raise ApiError(422, "invalid_request", str(exc), path=exc.path) from None
    assert isinstance(data, dict)
    return data
