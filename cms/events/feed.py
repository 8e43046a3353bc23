"""Turns what the ACD and the B2BUA report into journal events, one per state change.

ACD events map 1:1 (type = the event's TYPE, data = its payload). A call's
first appearance (it joined a queue or menu, was offered, or, for calls the
ACD never saw, its final record) is preceded by `interaction.created`; its
call record becomes `call.ended`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

from .journal import Journal, JournalClosed
from .model import iso_time

__all__ = ["CallInfo", "JournalFeed", "Reported"]

log = logging.getLogger("cms.events")

CallInfo = Callable[[str], Mapping[str, Any] | None]
"""Looks up what the B2BUA knows of a live call: caller, target, kind, attached_data."""

# The first ACD event about a call that makes it an interaction.
_FIRST_SIGHT = frozenset({"queue.caller_joined", "menu.entered", "call.offered"})


class Reported(Protocol):
    """What the feed needs of an ACD event (`cms.acd.events.AcdEvent`)."""

    TYPE: ClassVar[str]

    @property
    def time(self) -> float: ...

    def payload(self) -> dict[str, object]: ...


class JournalFeed:
    """Appends ACD events and call records to the journal."""

    def __init__(self, journal: Journal, call_info: CallInfo | None = None) -> None:
        self.journal = journal
        self._call_info = call_info
        self._open: set[str] = set()  # calls with an interaction.created and no call.ended yet

    def acd_event(self, event: Reported) -> None:
        """One ACD event, as it happened."""
        data = event.payload()
        call_id = data.get("call_id")
        if isinstance(call_id, str) and call_id not in self._open and event.TYPE in _FIRST_SIGHT:
            info = self._call_info(call_id) if self._call_info is not None else None
            self._created(call_id, event.time, info or {}, queue=str(data.get("queue", "")))
        self._append(event.TYPE, data, event.time)

    def call_started(self, call_id: str, at: float, info: Mapping[str, Any]) -> None:
        """A call the B2BUA just accepted or placed: its `interaction.created`, once."""
        if call_id not in self._open:
            self._created(call_id, at, info, queue=str(info.get("queue", "")))

    def call_event(self, kind: str, data: Mapping[str, Any], at: float) -> None:
        """A B2BUA event about a live call (`call.dialing`, `call.established`, ...)."""
        self._append(kind, dict(data), at)

    def call_record(self, record: Mapping[str, Any]) -> None:
        """A finished call's record (`cms.calls.manager.CallManager._record`)."""
        call_id = str(record["id"])
        created = float(record.get("created") or 0.0)
        if call_id not in self._open:
            self._created(call_id, created, record, queue=str(record.get("queue", "")))
        self._open.discard(call_id)
        self._append("call.ended", {
            "call_id": call_id,
            "kind": record.get("kind", ""),
            "caller": record.get("caller", ""),
            "target": record.get("target", ""),
            "queue": record.get("queue", ""),
            "agent": record.get("agent", ""),
            "outcome": record.get("outcome", ""),
            "ended_by": record.get("ended_by", ""),
            "created": iso_time(created) if created else None,
            "wait": record.get("wait"),
            "ring": record.get("ring"),
            "talk": record.get("talk"),
            "attached_data": record.get("attached_data", {}),
        }, None)

    def _created(self, call_id: str, at: float, info: Mapping[str, Any], *, queue: str) -> None:
        self._open.add(call_id)
        self._append("interaction.created", {
            "interaction_id": call_id,
            "call_id": call_id,
            "kind": info.get("kind", "queue"),
            "direction": info.get("direction", "inbound"),
            "caller": info.get("caller", ""),
            "target": info.get("target", ""),
            "queue": queue or info.get("queue", ""),
            "agent": info.get("agent", ""),
            "attached_data": dict(info.get("attached_data") or {}),
        }, at)

    def _append(self, kind: str, data: dict[str, Any], at: float | None) -> None:
        try:
            self.journal.append(kind, data, at=at)
        except JournalClosed:
            # Only during shutdown, after the HTTP side stopped: nobody can miss it live.
            log.warning("journal closed: %s event dropped", kind)
