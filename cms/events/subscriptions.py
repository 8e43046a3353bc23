"""Webhook subscriptions and their delivered positions, kept in SQLite.

A subscription names a callback URL, an optional type filter and the seq up
to which the callback has acknowledged the journal (`position`). The
position is written (fsync'd, `synchronous=FULL`) only after the callback
answered 2xx, so after a crash delivery resumes from the last acknowledged
event: at least once, in order, without gaps.

The store keeps every subscription in memory as well; reads never touch the
disk. Writes are small synchronous statements: call them from a thread
(`asyncio.to_thread`) when the event loop must not wait for the fsync.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from cms.store.sqlite import open_db

__all__ = ["ACTIVE", "ENDED", "Subscription", "SubscriptionStore", "matches"]

ACTIVE = "active"
ENDED = "ended"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    callback_url TEXT NOT NULL,
    types TEXT NOT NULL,
    secret TEXT,
    owner TEXT NOT NULL,
    created REAL NOT NULL,
    position INTEGER NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
)
"""


@dataclass(frozen=True, slots=True)
class Subscription:
    """One webhook subscription."""

    id: str
    callback_url: str
    types: tuple[str, ...]
    """Exact event types, or prefixes ending in "." ("call."); empty: every type."""
    secret: str | None
    """Signs each delivery (X-CMS-Signature) when set; never shown by the API."""
    owner: str
    created: float
    position: int
    """The last seq the callback acknowledged (or that the filter skipped)."""
    state: str = ACTIVE
    reason: str = ""
    """Why it ended (empty while active)."""


def matches(types: Iterable[str], event_type: str) -> bool:
    """Whether `event_type` passes a filter of exact types and "prefix." entries."""
    empty = True
    for wanted in types:
        empty = False
        if event_type == wanted or (wanted.endswith(".") and event_type.startswith(wanted)):
            return True
    return empty


class SubscriptionStore:
    """Subscriptions by id, in memory and in one SQLite table (`path` may be ":memory:")."""

    def __init__(self, path: str | Path) -> None:
        if str(path) == ":memory:":
            self._db = sqlite3.connect(":memory:", isolation_level=None,
                                       check_same_thread=False)
        else:
            self._db = open_db(path, synchronous="FULL")
        self._lock = threading.Lock()
        self._closed = False
        self._db.execute(_SCHEMA)
        rows = self._db.execute(
            "SELECT id, callback_url, types, secret, owner, created, position, state, reason"
            " FROM subscriptions ORDER BY created").fetchall()
        self._items: dict[str, Subscription] = {}
        for row in rows:
            sub = Subscription(row[0], row[1], tuple(json.loads(row[2])), row[3], row[4],
                               row[5], row[6], row[7], row[8])
            self._items[sub.id] = sub

    def all(self) -> list[Subscription]:
        """Every subscription, oldest first."""
        return list(self._items.values())

    def get(self, sub_id: str) -> Subscription | None:
        return self._items.get(sub_id)

    def add(self, sub: Subscription) -> None:
        """Store a new subscription (durably, before it is acknowledged to the client)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO subscriptions (id, callback_url, types, secret, owner, created,"
                " position, state, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sub.id, sub.callback_url, json.dumps(list(sub.types)), sub.secret, sub.owner,
                 sub.created, sub.position, sub.state, sub.reason))
            self._items[sub.id] = sub

    def acknowledge(self, sub_id: str, position: int) -> Subscription | None:
        """Record that the callback has everything up to `position` (never moves back)."""
        with self._lock:
            sub = self._items.get(sub_id)
            if sub is None or position <= sub.position or self._closed:
                return sub
            self._db.execute("UPDATE subscriptions SET position = ? WHERE id = ?",
                             (position, sub_id))
            sub = self._items[sub_id] = replace(sub, position=position)
            return sub

    def end(self, sub_id: str, reason: str) -> Subscription | None:
        """Mark a subscription ended with `reason`; None if it does not exist."""
        with self._lock:
            sub = self._items.get(sub_id)
            if sub is None or self._closed:
                return None
            self._db.execute("UPDATE subscriptions SET state = ?, reason = ? WHERE id = ?",
                             (ENDED, reason, sub_id))
            sub = self._items[sub_id] = replace(sub, state=ENDED, reason=reason)
            return sub

    def remove(self, sub_id: str) -> bool:
        """Delete a subscription; whether it existed."""
        with self._lock:
            if sub_id not in self._items or self._closed:
                return False
            self._db.execute("DELETE FROM subscriptions WHERE id = ?", (sub_id,))
            del self._items[sub_id]
            return True

    def close(self) -> None:
        """Close the database; later writes are ignored (they happen again after a restart)."""
        with self._lock:
            self._closed = True
            self._db.close()
