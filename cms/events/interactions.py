"""The interaction log: one record per offered or placed call, derived from the journal.

`InteractionLog` is a journal projection: the journal's writer calls
`apply()` inside the same SQLite transaction that stores a batch of events,
so a record never lags or leads the events that shaped it, also across
kill -9 (what was acknowledged was committed, with its records).

Which events change a record:
- `interaction.created`: the record (caller, caller in E.164 where known,
  business partner from the attached data, kind, direction, queue, agent);
- `call.offered`: the agent it is offered to (the last offer wins until answered);
- `queue.caller_left` with an agent, `call.established`: answered (time, agent);
- `call.attached_data_changed`: attached data and business partner;
- `call.ended`: ended, outcome, final agent and attached data;
- `agent.state_changed` out of `wrap_up` with a reason: the wrap-up reason of
  that agent's last interaction (its call.ended may still be on the way);
- `interaction.updated`: a wrap-up reason set by `PATCH /interactions/{id}`.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cms.store.sqlite import open_db

from .model import Event, iso_time

__all__ = ["BUSINESS_PARTNER_KEYS", "InteractionLog", "to_e164"]

BUSINESS_PARTNER_KEYS = ("business_partner", "bp", "businessPartner", "partner")
"""Attached-data keys that name the CRM's business partner, first found wins."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS interactions (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        kind TEXT NOT NULL DEFAULT '',
        direction TEXT NOT NULL DEFAULT '',
        caller TEXT NOT NULL DEFAULT '',
        caller_e164 TEXT,
        target TEXT NOT NULL DEFAULT '',
        business_partner TEXT,
        agent TEXT NOT NULL DEFAULT '',
        queue TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL,
        answered TEXT,
        ended TEXT,
        outcome TEXT,
        wrap_up_reason TEXT,
        attached_data TEXT NOT NULL DEFAULT '{}',
        updated_seq INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS interactions_agent ON interactions (agent, seq)",
    "CREATE INDEX IF NOT EXISTS interactions_queue ON interactions (queue, seq)",
)
_COLUMNS = ("id", "seq", "kind", "direction", "caller", "caller_e164", "target",
            "business_partner", "agent", "queue", "created", "answered", "ended", "outcome",
            "wrap_up_reason", "attached_data", "updated_seq")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM interactions"
_RELEVANT = frozenset({"interaction.created", "call.offered", "queue.caller_left",
                       "call.established", "call.attached_data_changed", "call.ended",
                       "agent.state_changed", "interaction.updated"})
_SEPARATORS = re.compile(r"[\s().\-/]")
_ENDED_SET = (
    "ended = COALESCE(ended, ?), outcome = ?, answered = COALESCE(answered, ?),"
    " agent = CASE WHEN ? != '' THEN ? ELSE agent END,"
    " queue = CASE WHEN queue = '' THEN ? ELSE queue END, updated_seq = ? WHERE id = ?"
)
_ENDED = f"UPDATE interactions SET {_ENDED_SET}"
_ENDED_WITH_ATTACHED = (
    f"UPDATE interactions SET attached_data = ?, business_partner = ?, {_ENDED_SET}"
)


def to_e164(number: str, country_code: str = "") -> str | None:
    """A dialled or presented number in E.164 (`+4930123456`), or None when unknown.

    `+...` and `00...` are international already; `0...` is national and needs
    `country_code` (digits, e.g. "49"). Extensions, names and anonymous callers
    have no E.164 form.
    """
    text = _SEPARATORS.sub("", number.strip())
    if text.lower().startswith(("sip:", "tel:")):
        text = text[4:].split("@", 1)[0].split(";", 1)[0]
    if text.startswith("+"):
        digits = text[1:]
    elif text.startswith("00"):
        digits = text[2:]
    elif text.startswith("0") and country_code.isdigit():
        digits = country_code + text[1:]
    else:
        return None
    if not digits.isdigit() or digits.startswith("0") or not 7 <= len(digits) <= 15:
        return None
    return "+" + digits


def business_partner(attached: Mapping[str, Any]) -> str | None:
    """The business partner named by attached data, if any."""
    for key in BUSINESS_PARTNER_KEYS:
        value = attached.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _attached_columns(attached: Mapping[str, Any]) -> tuple[str, str | None]:
    """The attached_data and business_partner columns for attached data."""
    return json.dumps(attached, separators=(",", ":")), business_partner(attached)


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


class InteractionLog:
    """The `interactions` table in the events database: written by the journal, read by the CTI."""

    def __init__(self, country_code: str = "") -> None:
        self.country_code = country_code
        self._reader: sqlite3.Connection | None = None

    # -- the journal's side (writer thread, inside its transaction)

    def setup(self, db: sqlite3.Connection, path: Path) -> None:
        """Create the table (on the journal's connection) and open a reader."""
        for statement in _SCHEMA:
            db.execute(statement)
        self._reader = open_db(path)

    def close(self) -> None:
        """Close the reader."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def apply(self, db: sqlite3.Connection, events: Sequence[Event]) -> None:
        """Fold one batch of events into the records (the caller owns the transaction)."""
        for event in events:
            if event.type in _RELEVANT:
                self._apply(db, event)

    def _apply(self, db: sqlite3.Connection, event: Event) -> None:
        data = event.data
        kind = event.type
        if kind == "interaction.created":
            self._created(db, event)
            return
        if kind == "agent.state_changed":
            reason = str(data.get("reason") or "")
            if data.get("previous") == "wrap_up" and reason:
                db.execute(
                    "UPDATE interactions SET wrap_up_reason = ?, updated_seq = ? WHERE id = ("
                    " SELECT id FROM interactions WHERE agent = ? ORDER BY seq DESC LIMIT 1)",
                    (reason, event.seq, str(data.get("user", ""))))
            return
        call_id = str(data.get("interaction_id") or data.get("call_id") or "")
        if not call_id:
            return
        agent = str(data.get("agent") or "")
        if kind == "call.offered":
            db.execute("UPDATE interactions SET agent = ?, updated_seq = ?"
                       " WHERE id = ? AND answered IS NULL", (agent, event.seq, call_id))
        elif kind == "queue.caller_left":
            if agent:
                self._answered(db, event, call_id, agent)
        elif kind == "call.established":
            self._answered(db, event, call_id, agent or str(data.get("user") or ""))
        elif kind == "call.attached_data_changed":
            self._attached(db, event, call_id, data.get("attached_data"))
        elif kind == "call.ended":
            self._ended(db, event, call_id)
        elif kind == "interaction.updated" and "wrap_up_reason" in data:
            db.execute("UPDATE interactions SET wrap_up_reason = ?, updated_seq = ? WHERE id = ?",
                       (str(data["wrap_up_reason"]), event.seq, call_id))

    def _created(self, db: sqlite3.Connection, event: Event) -> None:
        data = event.data
        attached = data.get("attached_data") or {}
        caller = str(data.get("caller") or "")
        direction = str(data.get("direction") or "")
        # For a placed call the outside party is the target: its number is the one to log.
        party = str(data.get("target") or "") if direction == "outbound" else caller
        db.execute(
            "INSERT OR IGNORE INTO interactions (id, seq, kind, direction, caller, caller_e164,"
            " target, business_partner, agent, queue, created, attached_data, updated_seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (str(data.get("interaction_id") or data.get("call_id")), event.seq,
             str(data.get("kind") or ""), direction, caller,
             to_e164(party, self.country_code), str(data.get("target") or ""),
             business_partner(attached) if isinstance(attached, Mapping) else None,
             str(data.get("agent") or data.get("user") or ""), str(data.get("queue") or ""),
             event.time, json.dumps(attached, separators=(",", ":")), event.seq))

    def _answered(self, db: sqlite3.Connection, event: Event, call_id: str, agent: str) -> None:
        db.execute(
            "UPDATE interactions SET answered = COALESCE(answered, ?),"
            " agent = CASE WHEN ? != '' AND answered IS NULL THEN ? ELSE agent END,"
            " updated_seq = ? WHERE id = ?",
            (event.time, agent, agent, event.seq, call_id))

    def _attached(self, db: sqlite3.Connection, event: Event, call_id: str,
                  attached: Any) -> None:
        if not isinstance(attached, Mapping):
            return
        db.execute(
            "UPDATE interactions SET attached_data = ?, business_partner = ?, updated_seq = ?"
            " WHERE id = ?", (*_attached_columns(attached), event.seq, call_id))

    def _ended(self, db: sqlite3.Connection, event: Event, call_id: str) -> None:
        data = event.data
        talk = data.get("talk")
        answered = None
        if isinstance(talk, (int, float)) and not isinstance(talk, bool):
            answered = iso_time(_seconds(event.time) - float(talk))
        agent = str(data.get("agent") or "")
        values = (event.time, str(data.get("outcome") or ""), answered, agent, agent,
                  str(data.get("queue") or ""), event.seq, call_id)
        attached = data.get("attached_data")
        if isinstance(attached, Mapping):
            # One UPDATE of the row, not two: the final attached data goes with the end.
            db.execute(_ENDED_WITH_ATTACHED, (*_attached_columns(attached), *values))
        else:
            db.execute(_ENDED, values)

    # -- the CTI's side (event loop)

    def get(self, interaction_id: str) -> dict[str, Any] | None:
        """One record, or None."""
        row = self._db().execute(f"{_SELECT} WHERE id = ?", (interaction_id,)).fetchone()
        return _record(row) if row is not None else None

    def find(self, *, after: int | None = None, before: int | None = None, limit: int = 100,
             agent: str | None = None, queue: str | None = None) -> list[dict[str, Any]]:
        """Records by creation order: after `after` oldest first, else newest first."""
        where: list[str] = []
        args: list[Any] = []
        if agent is not None:
            where.append("agent = ?")
            args.append(agent)
        if queue is not None:
            where.append("queue = ?")
            args.append(queue)
        if after is not None:
            where.append("seq > ?")
            args.append(after)
        elif before is not None:
            where.append("seq < ?")
            args.append(before)
        order = "ASC" if after is not None else "DESC"
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._db().execute(f"{_SELECT}{clause} ORDER BY seq {order} LIMIT ?",
                                  (*args, limit)).fetchall()
        return [_record(row) for row in rows]

    def _db(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError("the interaction log is not attached to a journal")
        return self._reader


def _record(row: Sequence[Any]) -> dict[str, Any]:
    record = dict(zip(_COLUMNS, row, strict=True))
    record["attached_data"] = json.loads(record["attached_data"] or "{}")
    return record
