"""Supervisor messages to agents: broadcasts (to a queue's members or everyone) and alerts.

Each is one journal event (`broadcast` with its `recipients`, `alert` with
its `user`), committed before the request is answered, so an agent's CRM
sees it on every event channel. Each recipient's phone also gets the text as
a SIP MESSAGE at the device the agent is logged on at (else its own phone).
The response reports every recipient's outcome known within `wait` seconds
("pending" beyond); a `message.delivered` event reports each final outcome.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cms.acd.engine import Acd
from cms.events import Event, Journal, JournalClosed

from .errors import ApiError, journal_open
from .messaging import Delivered, Messenger

if TYPE_CHECKING:
    from .app import Handler, Request

__all__ = ["DELIVERY_WAIT", "MessageRoutes"]

log = logging.getLogger("cms.cti")

DELIVERY_WAIT = 2.0  # seconds the response waits for the phones' answers


class MessageRoutes:
    """The handlers of POST /broadcasts and POST /alerts."""

    def __init__(self, journal: Journal, acd: Acd, agents: Iterable[str],
                 member_of: Callable[[str], Iterable[str]], messenger: Messenger | None,
                 wait: float = DELIVERY_WAIT) -> None:
        self.journal = journal
        self.acd = acd
        self.agents = tuple(agents)
        self.member_of = member_of
        self.messenger = messenger
        self.wait = wait
        self._tasks: set[asyncio.Task[Delivered]] = set()

    def handlers(self) -> dict[str, Handler]:
        """operationId -> handler."""
        return {"createBroadcast": self.broadcast, "createAlert": self.alert}

    async def broadcast(self, request: Request) -> web.StreamResponse:
        who = _supervisor(request)
        body = request.body or {}
        to = body.get("to")
        if to is None:
            recipients = list(self.agents)
            queue = ""
        else:
            view = self.acd.queue(str(to))
            if view is None:
                raise ApiError(404, "unknown_queue", f"no queue {to!r}")
            queue = view.name
            recipients = [user for user in self.agents if queue in self.member_of(user)]
        message_id = secrets.token_hex(8)
        event = self._append("broadcast", {
            "message_id": message_id, "text": body["text"], "to": queue,
            "recipients": recipients, "from": who,
        })
        return await self._deliver(message_id, event.seq, recipients, body["text"], who)

    async def alert(self, request: Request) -> web.StreamResponse:
        who = _supervisor(request)
        body = request.body or {}
        user = str(body["user"])
        if user not in self.agents and self.acd.agent(user) is None:
            raise ApiError(404, "unknown_user", f"no user {user!r}")
        message_id = secrets.token_hex(8)
        event = self._append("alert", {
            "message_id": message_id, "user": user, "text": body["text"], "from": who,
        })
        return await self._deliver(message_id, event.seq, [user], body["text"], who)

    def _append(self, kind: str, data: dict[str, Any]) -> Event:
        with journal_open():
            return self.journal.append(kind, data)

    async def _deliver(self, message_id: str, seq: int, recipients: list[str], text: str,
                       sender: str) -> web.Response:
        with journal_open():
            await self.journal.flush()  # acknowledged only once on disk
        devices = {user: self._device(user) for user in recipients}
        tasks: dict[str, asyncio.Task[Delivered]] = {}
        for user, device in devices.items():
            task = asyncio.create_task(self._send(message_id, user, device, text, sender))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            tasks[user] = task
        if tasks:
            await asyncio.wait(tasks.values(), timeout=self.wait)
        report: list[dict[str, Any]] = []
        for user, task in tasks.items():
            outcome = task.result() if task.done() else Delivered("pending")
            report.append({"user": user, "device": devices[user], "status": outcome.status,
                           "sip_status": outcome.sip_status})
        return web.json_response({"message_id": message_id, "seq": seq,
                                  "recipients": report}, status=201)

    def _device(self, user: str) -> str:
        view = self.acd.agent(user)
        return view.device if view is not None and view.device else user

    async def _send(self, message_id: str, user: str, device: str, text: str,
                    sender: str) -> Delivered:
        outcome = Delivered("no_device")
        if self.messenger is not None:
            try:
                outcome = await self.messenger.send(device, text, sender)
            except Exception:  # a bug here must not lose the report
                log.exception("MESSAGE to %s failed", device)
                outcome = Delivered("failed")
        try:
            self.journal.append("message.delivered", {
                "message_id": message_id, "user": user, "device": device,
                "status": outcome.status, "sip_status": outcome.sip_status,
            })
        except JournalClosed:
            log.warning("journal closed: delivery report of %s dropped", message_id)
        return outcome

    async def shutdown(self) -> None:
        """Stop waiting for phones (the server is going down)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _supervisor(request: Request) -> str:
    who = request.who
    if not who.sees_all:
        raise ApiError(403, "forbidden", "only supervisors send broadcasts and alerts")
    return who.name
