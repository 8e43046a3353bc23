"""The CTI's interaction log routes: list, one record, set a wrap-up reason.

Records come from `cms.events.interactions.InteractionLog` (derived in the
journal's transactions). An agent sees only its own records (those it
answered, placed, or was last offered); asking for another agent's is 403.
Setting a wrap-up reason is a journal event (`interaction.updated`), applied
to the record in the same transaction, and acknowledged once committed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from cms.events import InteractionLog, Journal

from .errors import ApiError, journal_open

if TYPE_CHECKING:
    from .app import Handler, Request

__all__ = ["InteractionRoutes"]


class InteractionRoutes:
    """The handlers of the /interactions operations."""

    def __init__(self, log: InteractionLog | None, journal: Journal) -> None:
        self.log = log
        self.journal = journal

    def handlers(self) -> dict[str, Handler]:
        """operationId -> handler."""
        return {
            "listInteractions": self.list_interactions,
            "getInteraction": self.get_interaction,
            "updateInteraction": self.update_interaction,
        }

    def _log(self) -> InteractionLog:
        if self.log is None:
            raise ApiError(503, "interactions_unavailable", "this server keeps no interaction log")
        return self.log

    def _append(self, kind: str, data: dict[str, Any]) -> None:
        with journal_open():
            self.journal.append(kind, data)

    async def _caught_up(self) -> InteractionLog:
        """The log, once every event appended before this request is committed.

        A client that just changed something (a state with a reason, a hang-up)
        reads its effect: records are written with the events, at commit.
        """
        log = self._log()
        with journal_open():
            await self.journal.flush()
        return log

    async def _record_for(self, request: Request) -> dict[str, Any]:
        interaction_id = str(request.params["id"])
        record = (await self._caught_up()).get(interaction_id)
        if record is None:
            raise ApiError(404, "unknown_interaction", f"no interaction {interaction_id!r}")
        who = request.who
        if not who.sees_all and record["agent"] != who.name:
            raise ApiError(403, "forbidden", "an agent sees only its own interactions")
        return record

    async def list_interactions(self, request: Request) -> web.StreamResponse:
        params = request.params
        who = request.who
        agent = params.get("agent")
        if not who.sees_all:
            if agent is not None and agent != who.name:
                raise ApiError(403, "forbidden", "an agent sees only its own interactions")
            agent = who.name
        after = params.get("after")
        records = (await self._caught_up()).find(after=after, before=params.get("before"),
                                   limit=int(params.get("limit", 100)), agent=agent,
                                   queue=params.get("queue"))
        if records:
            cursor = records[-1]["seq"]
        else:
            cursor = after if after is not None else params.get("before", 0)
        return web.json_response({"interactions": records, "next": cursor})

    async def get_interaction(self, request: Request) -> web.StreamResponse:
        return web.json_response(await self._record_for(request))

    async def update_interaction(self, request: Request) -> web.StreamResponse:
        record = await self._record_for(request)
        assert request.body is not None
        self._append("interaction.updated", {
            "interaction_id": record["id"], "call_id": record["id"],
            "agent": record["agent"], "user": request.who.name,
            "wrap_up_reason": request.body["wrap_up_reason"],
        })
        return web.json_response(await self._record_for(request))  # after the commit
