"""The CTI's call routes: list, click-to-dial, call commands and attached data.

They drive a `cms.calls.control.CallControl` (the B2BUA). Who may do what:
an agent sees and acts on the calls whose `CallView.users` include it; a
call that does not exist is 404 `unknown_call`, someone else's call is 403
`forbidden` (as for `/agents/{user}`). Supervisors and API keys see and act on
every call, and the B2BUA is told no acting user (`None`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cms.calls.control import CallCommandError, CallControl, CallView
from cms.events import Journal, iso_time

from .errors import ApiError

if TYPE_CHECKING:
    from .app import Handler, Request

__all__ = ["CallRoutes", "call_json"]

# Attached data may not nest deeper than this (a merge patch recurses over it).
MAX_DEPTH = 8


def call_json(view: CallView) -> dict[str, Any]:
    """A call as the API shows it (times as ISO 8601)."""
    data = view.to_json()
    data["created"] = iso_time(view.created) if view.created else None
    data["answered"] = iso_time(view.answered) if view.answered is not None else None
    return data


class CallRoutes:
    """The handlers of the /calls operations."""

    def __init__(self, calls: CallControl | None, journal: Journal,
                 users: Mapping[str, object]) -> None:
        self.calls = calls
        self.journal = journal
        self.users = users

    def handlers(self) -> dict[str, Handler]:
        """operationId -> handler."""
        return {
            "listCalls": self.list_calls,
            "makeCall": self.make_call,
            "getCall": self.get_call,
            "answerCall": self._command(lambda c, i, u, b: c.answer(i, u)),
            "rejectCall": self._command(lambda c, i, u, b: c.reject(i, u)),
            "holdCall": self._command(lambda c, i, u, b: c.hold(i, u)),
            "retrieveCall": self._command(lambda c, i, u, b: c.retrieve(i, u)),
            "hangupCall": self._command(lambda c, i, u, b: c.hangup(i, u)),
            "transferCall": self._command(
                lambda c, i, u, b: c.transfer(i, u, b["to"], b.get("mode", "blind"))),
            "consultCall": self._command(lambda c, i, u, b: c.consult(i, u, b["to"])),
            "completeCall": self._command(
                lambda c, i, u, b: c.complete(i, u, b["consult_id"], b["as"])),
            "sendDtmf": self._command(lambda c, i, u, b: c.send_dtmf(i, u, b["digits"])),
            "getAttachedData": self.get_attached_data,
            "patchAttachedData": self.patch_attached_data,
        }

    # -- access

    def _control(self) -> CallControl:
        if self.calls is None:
            raise ApiError(503, "calls_unavailable", "this server has no call control")
        return self.calls

    def _call_for(self, request: Request) -> CallView:
        """The path's call, if it exists (404) and the caller may see it (403)."""
        call_id = str(request.params["id"])
        view = self._control().get_call(call_id)
        if view is None:
            raise ApiError(404, "unknown_call", f"no live call {call_id!r}")
        who = request.who
        if not who.sees_all and who.name not in view.users:
            raise ApiError(403, "forbidden", "an agent may only act on its own calls")
        return view

    @staticmethod
    def _acting(request: Request) -> str | None:
        """The user the B2BUA acts for: the agent itself, None for supervisors and keys."""
        return None if request.who.sees_all else request.who.name

    def _respond(self, view: CallView, status: int = 200) -> web.Response:
        return web.json_response({**call_json(view), "seq": self.journal.head}, status=status)

    # -- handlers

    async def list_calls(self, request: Request) -> web.StreamResponse:
        who = request.who
        views = self._control().list_calls()
        if not who.sees_all:
            views = [v for v in views if who.name in v.users]
        return web.json_response({"seq": self.journal.head,
                                  "calls": [call_json(v) for v in views]})

    async def get_call(self, request: Request) -> web.StreamResponse:
        return self._respond(self._call_for(request))

    async def make_call(self, request: Request) -> web.StreamResponse:
        control = self._control()
        body = request.body or {}
        who = request.who
        user = body.get("user")
        if not who.sees_all:
            if user is not None and user != who.name:
                raise ApiError(403, "forbidden", "an agent dials only from its own device")
            user = who.name
        elif user is None:
            if who.name not in self.users:
                raise ApiError(422, "user_required",
                               "an API key must name the `user` whose device dials",
                               path="/user")
            user = who.name
        if user not in self.users:
            raise ApiError(404, "unknown_user", f"no user {user!r}")
        attached = body.get("attached_data") or {}
        _check_depth(attached, "/attached_data")
        view = await _run(control.make_call(user, body["to"], attached))
        return self._respond(view, 201)

    def _command(self, action: Callable[[CallControl, str, str | None, dict[str, Any]],
                                        Awaitable[CallView]]) -> Handler:
        async def handler(request: Request) -> web.StreamResponse:
            view = self._call_for(request)
            result = await _run(action(self._control(), view.id, self._acting(request),
                                       request.body or {}))
            return self._respond(result)

        return handler

    async def get_attached_data(self, request: Request) -> web.StreamResponse:
        view = self._call_for(request)
        data = _sync(lambda: self._control().attached_data(view.id))
        return web.json_response(data)

    async def patch_attached_data(self, request: Request) -> web.StreamResponse:
        view = self._call_for(request)
        changes = request.body or {}
        _check_depth(changes, "")
        data = _sync(lambda: self._control().update_attached_data(
            view.id, self._acting(request), changes))
        return web.json_response(data)


async def _run(command: Awaitable[CallView]) -> CallView:
    """Await a call command; its refusal becomes the API's error shape."""
    try:
        return await command
    except CallCommandError as exc:
        raise _api_error(exc) from None


def _sync(command: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return command()
    except CallCommandError as exc:
        raise _api_error(exc) from None


def _api_error(exc: CallCommandError) -> ApiError:
    # The B2BUA promises 4xx; anything else would break the API's own promise.
    status = exc.status if 400 <= exc.status < 500 else 409
    return ApiError(status, exc.code, exc.message)


def _check_depth(value: Any, path: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise ApiError(422, "invalid_request", f"nested deeper than {MAX_DEPTH} levels",
                       path=path or "/")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_depth(item, f"{path}/{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_depth(item, f"{path}/{index}", depth + 1)
