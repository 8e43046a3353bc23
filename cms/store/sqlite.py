"""Opening SQLite databases the way every store here wants them."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_db(path: str | Path, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Open (creating) a database in WAL mode; `synchronous=FULL` fsyncs every commit."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn
