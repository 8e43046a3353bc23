"""The local HTTP API (`/api/v1`) and the web UI at `/`, on aiohttp.

Contract (DESIGN.md §5): `GET /status`, `GET|POST /calls`, `GET /calls/{id}`,
`POST /calls/{id}/{answer|reject|hangup|hold|retrieve|dtmf|transfer}`, `GET|PUT /audio`,
`GET /audio/levels`, `GET /events/ws`; also `GET /history` and
`POST /calls/{id}/conference {"with": other_id}` (a local three-way conference), and
`GET /presence`: colleagues' presence on the CMS, `[{"user", "presence"}, ...]` (empty
without a `[cms_api]` profile table; changes arrive as `presence.changed` events). Errors are
`{"error": {"code", "message"}}` with a 4xx status for anything the client got wrong.

It is a local service that can place calls, so it defends itself against web pages the
agent happens to visit: requests must name this server in `Host` (no DNS rebinding),
bodies must be JSON (a cross-site form cannot post without a CORS preflight, which is never
granted), a WebSocket from another origin is refused, and off loopback every request
except the UI's static files needs the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from softphone.api.serialize import call_json, iso_time, registration_json
from softphone.errors import NotFound, PhoneError
from softphone.phone import SoftPhone

log = logging.getLogger("softphone.api")

API = "/api/v1"
WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
CALL_ACTIONS = ("answer", "reject", "hangup", "hold", "retrieve", "dtmf", "transfer",
                "conference")

PHONE: web.AppKey[SoftPhone] = web.AppKey("phone", SoftPhone)
TOKEN: web.AppKey[str | None] = web.AppKey("token")
HOSTS: web.AppKey[set[str]] = web.AppKey("hosts", set)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as a JSON error document."""
    try:
        return await handler(request)
    except PhoneError as exc:
        return error_response(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error (see the soft phone's log)")


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host check, token check, JSON-only bodies (see the module docstring)."""
    host = (request.headers.get("Host") or "").lower()
    if host not in request.app[HOSTS]:
        return error_response(403, "forbidden", f"unexpected Host {host!r}")
    public = not request.path.startswith(API)
    token = request.app[TOKEN]
    if token is not None and not public:
        given = request.query.get("token", "")
        authorization = request.headers.get("Authorization", "")
        if authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
        if not secrets.compare_digest(given.encode(), token.encode()):
            return error_response(401, "unauthorized", "a valid token is required")
    if request.method in ("POST", "PUT", "PATCH") and request.can_read_body:
        if request.content_type != "application/json":
            return error_response(415, "unsupported_media_type", "send application/json")
    return await handler(request)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object ({} when there is no body)."""
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise PhoneError("the body is not valid JSON", code="bad_json") from None
    if not isinstance(body, dict):
        raise PhoneError("the body must be a JSON object", code="bad_json")
    return body


def _version() -> str:
    try:
        return metadata.version("sip-cms-emulator")
    except metadata.PackageNotFoundError:
        return "0"


# -- handlers


async def status(request: web.Request) -> web.Response:
    phone = request.app[PHONE]
    ua = phone.ua
    return web.json_response({
        "version": _version(),
        "started": iso_time(phone.started or None),
        "sip": {"udp": ua.sip_address or None, "tcp": ua.tcp_address or None},
        "accounts": [registration_json(r) for r in phone.registrations.values()],
        "calls": [call_json(c) for c in phone.calls.values()],
        "audio": phone.audio_document(),
        "events": {"seq": phone.hub.seq, "clients": phone.hub.subscribers},
    })


async def list_calls(request: web.Request) -> web.Response:
    phone = request.app[PHONE]
    return web.json_response({"calls": [call_json(c) for c in phone.calls.values()]})


async def get_call(request: web.Request) -> web.Response:
    phone = request.app[PHONE]
    call = phone.calls.get(request.match_info["call_id"])
    if call is None:
        raise NotFound(f"no call {request.match_info['call_id']!r}")
    return web.json_response(call_json(call))


async def create_call(request: web.Request) -> web.Response:
    body = await json_body(request)
    to, account = body.get("to"), body.get("account")
    if not isinstance(to, str) or not to.strip():
        raise PhoneError("'to' must be a number, extension, user name or SIP URI",
                         code="bad_target")
    if account is not None and not isinstance(account, str):
        raise PhoneError("'account' must be an account name")
    call = await request.app[PHONE].dial(to, account)
    return web.json_response(call_json(call), status=201)


async def call_action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in CALL_ACTIONS:
        raise NotFound(f"no call action {action!r} (one of {', '.join(CALL_ACTIONS)})")
    body = await json_body(request)
    call = await request.app[PHONE].call_action(request.match_info["call_id"], action, body)
    return web.json_response(call_json(call))


async def history(request: web.Request) -> web.Response:
    text = request.query.get("limit", "50")
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise PhoneError("limit must be 1..1000")
    entries = await asyncio.to_thread(request.app[PHONE].history.recent, int(text))
    return web.json_response({"calls": entries})


async def get_audio(request: web.Request) -> web.Response:
    return web.json_response(request.app[PHONE].audio_document())


async def put_audio(request: web.Request) -> web.Response:
    body = await json_body(request)
    return web.json_response(await request.app[PHONE].update_audio(body))


async def audio_levels(request: web.Request) -> web.Response:
    return web.json_response(request.app[PHONE].levels_document())


async def presence(request: web.Request) -> web.Response:
    return web.json_response(request.app[PHONE].presence_document())


async def events_ws(request: web.Request) -> web.WebSocketResponse:
    origin = request.headers.get("Origin")
    if origin and request.app[TOKEN] is None:  # browsers send it; only our own page may
        if (urlsplit(origin).netloc or "").lower() != request.host.lower():
            raise web.HTTPForbidden(reason=f"WebSocket from origin {origin!r} refused")
    phone = request.app[PHONE]
    ws = web.WebSocketResponse(heartbeat=20.0)
    await ws.prepare(request)
    queue = phone.hub.subscribe()
    try:
        hello = {"seq": phone.hub.seq, "time": iso_time(phone.started), "type": "hello",
                 "accounts": [registration_json(r) for r in phone.registrations.values()],
                 "calls": [call_json(c) for c in phone.calls.values()],
                 "audio": phone.audio_document()}
        await ws.send_str(json.dumps(hello))
        reader = asyncio.create_task(_drain(ws))
        try:
            while not ws.closed:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({getter, reader},
                                             return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                document = getter.result()
                if document is None:
                    break
                await ws.send_str(json.dumps(document))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    except ConnectionResetError:
        pass
    finally:
        phone.hub.unsubscribe(queue)
        await ws.close()
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends, until it closes."""
    async for message in ws:
        if message.type == WSMsgType.ERROR:
            break


async def index(request: web.Request) -> web.StreamResponse:
    page = WEB_ROOT / "index.html"
    if not page.is_file():
        return web.Response(text="soft phone: the web UI is not installed", status=404)
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


# -- the application


def allowed_hosts(host: str, port: int) -> set[str]:
    """Host header values this server answers to."""
    names = {host, "localhost", "127.0.0.1", "[::1]"} if host in (
        "127.0.0.1", "localhost", "::1") else {host}
    names = {f"[{n}]" if ":" in n and not n.startswith("[") else n for n in names}
    result = {f"{n}:{port}".lower() for n in names}
    if port == 80:
        result |= {n.lower() for n in names}
    return result


def build_app(phone: SoftPhone, token: str | None = None,
              hosts: set[str] | None = None) -> web.Application:
    """The aiohttp application.

    `hosts`: the Host values to accept, a set the caller may fill in once the server has
    bound its port (see `allowed_hosts`); None accepts any Host (in-process tests).
    """
    app = web.Application(middlewares=[errors_middleware, guard_middleware],
                          client_max_size=64 * 1024)
    app[PHONE] = phone
    app[TOKEN] = token
    app[HOSTS] = hosts if hosts is not None else _AnyHost()
    app.router.add_get(f"{API}/status", status)
    app.router.add_get(f"{API}/calls", list_calls)
    app.router.add_post(f"{API}/calls", create_call)
    app.router.add_get(f"{API}/calls/{{call_id}}", get_call)
    app.router.add_post(f"{API}/calls/{{call_id}}/{{action}}", call_action)
    app.router.add_get(f"{API}/history", history)
    app.router.add_get(f"{API}/audio", get_audio)
    app.router.add_put(f"{API}/audio", put_audio)
    app.router.add_get(f"{API}/audio/levels", audio_levels)
    app.router.add_get(f"{API}/presence", presence)
    app.router.add_get(f"{API}/events/ws", events_ws)
    app.router.add_get("/", index)
    if WEB_ROOT.is_dir():
        app.router.add_static("/static/", WEB_ROOT, append_version=False)
    return app


class _AnyHost(set[str]):
    """A host set that contains everything (before the server knows its address)."""

    def __contains__(self, item: object) -> bool:
        return True
