"""Registrar bindings persisted in SQLite, written behind the SIP path by a thread."""

from __future__ import annotations

import logging
import threading
from collections import deque
from pathlib import Path

from cms.registrar.bindings import Binding, BindingChange

from .sqlite import open_db

log = logging.getLogger("cms.store.bindings")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    aor TEXT NOT NULL,
    contact_key TEXT NOT NULL,
    contact TEXT NOT NULL,
    expires_at REAL NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    q REAL,
    source TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    instance TEXT,
    PRIMARY KEY (aor, contact_key)
)
"""

# An upsert updates the row in place: cheaper than INSERT OR REPLACE (a delete and an insert)
# for what nearly every change is, a phone refreshing its binding.
_UPSERT = (
    "INSERT INTO bindings (aor, contact_key, contact, expires_at, call_id, cseq, q,"
    " source, user_agent, instance) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (aor, contact_key) DO UPDATE SET contact = excluded.contact,"
    " expires_at = excluded.expires_at, call_id = excluded.call_id, cseq = excluded.cseq,"
    " q = excluded.q, source = excluded.source, user_agent = excluded.user_agent,"
    " instance = excluded.instance"
)
# Batching window: bindings are soft state, so a short delay costs nothing. Each commit
# rewrites every page its rows touch (and WAL checkpoints follow the pages written), so
# at 2000 refreshes/s a 250 ms batch costs several times less than 50 ms ones did.
FLUSH_INTERVAL = 0.25


class BindingStore:
    """Loads bindings at start; applies changes in batches on a writer thread.

    Bindings are soft state (phones refresh them), so a change is acknowledged
    to the phone before it reaches the disk: a kill -9 loses at most the last
    batch (at most `FLUSH_INTERVAL`), which the phones' next refresh restores.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = open_db(self.path)
        self._db.execute(_SCHEMA)
        # deque append/popleft are atomic: the SIP thread never waits for the writer.
        self._pending: deque[BindingChange] = deque()
        # Set when a change arrives in an empty queue: an idle writer sleeps until then.
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0

    def load(self, now: float) -> list[tuple[str, Binding]]:
        """All unexpired bindings as (contact key, binding); expired rows are deleted."""
        self._db.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
        rows = self._db.execute(
            "SELECT aor, contact_key, contact, expires_at, call_id, cseq, q, source, user_agent,"
            " instance FROM bindings"
        ).fetchall()
        return [
            (key, Binding(aor, contact, expires_at, call_id, cseq, q, source, ua, instance))
            for aor, key, contact, expires_at, call_id, cseq, q, source, ua, instance in rows
        ]

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(target=self._run, name="binding-store", daemon=True)
        self._thread.start()

    def submit(self, change: BindingChange) -> None:
        """Queue a change for the writer thread (written within `FLUSH_INTERVAL`)."""
        pending = self._pending
        pending.append(change)
        if len(pending) == 1:
            self._wake.set()  # once per batch: later changes find the writer awake

    def _run(self) -> None:
        # Wait for a first change, then FLUSH_INTERVAL more to batch what follows it:
        # no wake-ups at all while nothing changes (it used to poll 20 times a second).
        # A change queued after the drain finds the queue empty and sets _wake again.
        while True:
            self._wake.wait()
            self._wake.clear()
            stopping = self._stop.wait(FLUSH_INTERVAL)
            self._drain()
            if stopping:
                return

    def _drain(self) -> None:
        pending = self._pending
        batch: list[object] = []
        try:
            while True:
                batch.append(pending.popleft())
        except IndexError:
            pass
        if not batch:
            return
        try:
            self._write(batch)
        except Exception:
            log.exception("writing %d binding changes failed", len(batch))

    def _write(self, batch: list[object]) -> None:
        # Later changes win: collapse the batch to each binding's final state.
        final: dict[tuple[str, str], tuple[object, ...] | None] = {}
        for change in batch:
            assert isinstance(change, BindingChange)
            for key in change.removed:
                final[(change.aor, key)] = None
            for key, b in change.upserted:
                final[(b.aor, key)] = (
                    b.aor, key, b.contact, b.expires_at, b.call_id, b.cseq, b.q, b.source,
                    b.user_agent, b.instance,
                )
        if not final:
            return
        deletes = [ident for ident, row in final.items() if row is None]
        upserts = [row for row in final.values() if row is not None]
        db = self._db
        db.execute("BEGIN")
        try:
            if deletes:
                db.executemany("DELETE FROM bindings WHERE aor = ? AND contact_key = ?", deletes)
            if upserts:
                db.executemany(_UPSERT, upserts)
            db.execute("COMMIT")
        except Exception:
            db.execute("ROLLBACK")
            raise
        self.written += len(final)

    def close(self) -> None:
        """Write what is queued, stop the writer and close the database."""
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=10)
            self._thread = None
        self._drain()
        self._db.close()
