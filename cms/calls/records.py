"""Call records in SQLite (WAL): one row per call, written when the call ends."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

from cms.store.sqlite import open_db

_SCHEMA = """
CREATE TABLE IF NOT EXISTS call_records (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    kind TEXT NOT NULL,
    caller TEXT NOT NULL,
    target TEXT NOT NULL,
    queue TEXT NOT NULL,
    agent TEXT NOT NULL,
    wait REAL,
    ring REAL,
    talk REAL,
    outcome TEXT NOT NULL,
    record TEXT NOT NULL
)
"""


_ATOMIC = frozenset({int, float, str, bool, type(None)})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def as_plain(value: Any) -> Any:
    """`dataclasses.asdict` for a record's statistics, the same result at a fraction of
    the cost (asdict deep-copies every number; it ran for two legs of every call)."""
    kind = type(value)
    if kind in _ATOMIC:
        return value  # what deepcopy gives back for these
    names = _FIELD_NAMES.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELD_NAMES[kind] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {name: as_plain(getattr(value, name)) for name in names}
    if kind is list or kind is tuple:
        return kind(as_plain(item) for item in value)
    if kind is dict:
        return {as_plain(k): as_plain(v) for k, v in value.items()}
    return dataclasses.asdict(_Box(value))["value"]  # anything else: asdict's own rules


@dataclasses.dataclass(slots=True)
class _Box:
    value: Any


class CallRecordStore:
    """Writes each finished call before the call is forgotten (a commit per record).

    WAL with synchronous=NORMAL survives a crash or kill -9 of the CMS (the
    commit is in the WAL file); only an operating-system crash could lose the
    last commits.
    """

    def __init__(self, path: str | Path) -> None:
        self._db: sqlite3.Connection = open_db(path)
        self._db.execute(_SCHEMA)

    def write(self, record: dict[str, Any]) -> None:
        """Store one call record."""
        self._db.execute(
            "INSERT OR REPLACE INTO call_records (id, created, kind, caller, target, queue, agent,"
            " wait, ring, talk, outcome, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record["id"], record["created"], record["kind"], record["caller"], record["target"],
             record["queue"], record["agent"], record["wait"], record["ring"], record["talk"],
             record["outcome"], json.dumps(record, default=str)),
        )

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest records, newest first."""
        rows = self._db.execute(
            "SELECT record FROM call_records ORDER BY created DESC LIMIT ?", (limit,)
        ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def close(self) -> None:
        """Close the database."""
        self._db.close()
