"""Call records in SQLite (WAL): one row per call, written when the call ends."""

from __future__ import annotations

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
