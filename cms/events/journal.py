"""The one ordered event journal: append, group-commit to SQLite, then deliver.

Written before delivered
------------------------
`append()` gives an event its sequence number at once but only queues it.
The events appended during one event-loop turn are handed to a writer
thread as one batch (a `call_soon` scheduled by the turn's first append runs
after every callback of that turn). The writer commits each batch (or
several waiting batches) in one transaction on a connection with
`PRAGMA synchronous=FULL`, so the WAL is fsync'd before COMMIT returns.
Only then does it post the batch back to the loop, where `_committed` makes
it visible: the in-memory ring that `since()` reads, the waiters of
`wait()`, and the `subscribe()` callbacks. Nothing outside the journal can
see an event that is not on disk. `head` (the last appended seq) may run
ahead of `last_seq` (the last committed) for the length of one commit.

The loop never waits for the disk: while the writer commits one batch the
next one fills up (group commit), and SQLite releases the GIL while it
writes and syncs. `stage_seconds` sums, over the commits, where the time
before delivery goes: queued (first append of a batch -> its commit starts),
commit (the fsync'd transaction) and to_loop (commit done -> delivered).

Sequence numbers continue across restarts (`MAX(seq)` on open). History
older than `retain` events is pruned; a client asking to resume from
before what is kept (or from beyond `head`) gets `ResyncRequired`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from cms.store.sqlite import open_db

from .model import RESERVED_KEYS, Event, ResyncRequired, iso_time

__all__ = ["Journal", "JournalClosed", "Projection", "Subscriber"]

log = logging.getLogger("cms.events")

Subscriber = Callable[[Sequence[Event]], None]
"""Called on the event loop with each committed batch, in seq order."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL
)
"""
# A whole batch is one statement over a JSON array of event texts: SQLite loops over the
# rows in C without the GIL. (executemany would take the GIL back for every row, and
# wait up to the 5 ms switch interval each time while the event loop is busy.)
_INSERT = (
    "INSERT INTO events (seq, time, type, body)"
    " SELECT json_extract(value, '$.seq'), json_extract(value, '$.time'),"
    " json_extract(value, '$.type'), value FROM json_each(?)"
)

RING_SIZE = 10_000  # committed events kept in memory (up to twice that) for fast resume
RETAIN = 2_000_000  # events kept on disk; older ones are pruned
READ_LIMIT = 1000
CHECKPOINT_INTERVAL = 1.0  # seconds between WAL checkpoints (off the commit path)
_RETRY_DELAYS = (0.05, 0.2, 1.0, 2.0)
# One encoder for every event: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)
_encode = _ENCODER.encode


class JournalClosed(RuntimeError):
    """An append after `close()` began."""


class Projection(Protocol):
    """A table derived from the events, written in the same transaction as they are."""

    def setup(self, db: sqlite3.Connection, path: Path) -> None:
        """Create its tables on the journal's connection; `path` is the database file."""
        ...

    def apply(self, db: sqlite3.Connection, events: Sequence[Event]) -> None:
        """Fold a batch into its tables (inside the journal's open transaction)."""
        ...

    def close(self) -> None:
        """Release what `setup` opened."""
        ...


class Journal:
    """An append-only, durable, strictly ordered event log with in-process delivery.

    Create it, `await start()` on the loop that will use it, `append()` from
    that loop (other threads may append too), `await close()` at the end.
    """

    def __init__(self, path: str | Path, *, ring_size: int = RING_SIZE, retain: int = RETAIN,
                 synchronous: str = "FULL", projections: Sequence[Projection] = ()) -> None:
        self.path = Path(path)
        self.projections = tuple(projections)
        self.ring_size = max(1, ring_size)
        self.retain = max(1, retain)
        self.synchronous = synchronous
        self._reader = open_db(self.path, synchronous=synchronous)
        self._reader.execute(_SCHEMA)
        for projection in self.projections:
            projection.setup(self._reader, self.path)
        first, last = self._reader.execute("SELECT MIN(seq), MAX(seq) FROM events").fetchone()
        self._head = last or 0  # last appended
        self._last = self._head  # last committed
        self._first = first or self._head + 1  # oldest kept on disk
        self._ring: list[Event] = []
        self._ring_first = self._head + 1  # seq of _ring[0]
        # Appends (any thread) -> _pending; the loop hands batches to the writer thread.
        self._lock = threading.Lock()
        self._pending: list[Event] = []
        self._pending_since = 0.0  # monotonic time of the oldest pending append
        self._scheduled = False
        self._closing = False
        self._batches: deque[tuple[float, list[Event]]] = deque()  # (first appended at, events)
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._changed: asyncio.Event | None = None
        self._subscribers: list[Subscriber] = []
        self.commits = 0  # transactions committed since start
        self.committed = 0  # events committed since start
        # Seconds summed over the batches since start, per stage of the way to delivery.
        self.stage_seconds = {"queued": 0.0, "commit": 0.0, "to_loop": 0.0}

    # -- positions

    @property
    def head(self) -> int:
        """The seq of the last appended event (maybe not committed yet); 0 when empty."""
        return self._head

    @property
    def last_seq(self) -> int:
        """The seq of the last committed (deliverable) event; 0 when empty."""
        return self._last

    @property
    def first_seq(self) -> int:
        """The oldest seq still kept; `last_seq + 1` while the journal is empty."""
        return self._first

    # -- lifecycle

    async def start(self) -> None:
        """Start the writer thread; appends made before are submitted now."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._changed = asyncio.Event()
        self._thread = threading.Thread(target=self._write_loop, name="event-journal",
                                        daemon=True)
        self._thread.start()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                              name="event-journal-checkpoint", daemon=True)
        self._checkpointer.start()
        with self._lock:
            if self._pending and not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self._submit)

    async def flush(self) -> None:
        """Wait until every event appended so far is committed and delivered."""
        target = self._head
        self._submit()
        while self._last < target:
            if self._thread is None or not self._thread.is_alive():
                raise JournalClosed("the journal writer is not running")
            await self.wait(self._last, None)

    async def close(self) -> None:
        """Commit what is queued, stop the writer, deliver the last batches, close."""
        with self._lock:
            self._closing = True
        if self._thread is not None:
            self._submit()
            with self._wake:
                self._stopping = True
                self._wake.notify()
            await asyncio.to_thread(self._thread.join)
            self._thread = None
            if self._checkpointer is not None:
                self._stop_checkpoints.set()
                await asyncio.to_thread(self._checkpointer.join)
                self._checkpointer = None
            # The writer posted its last batches with call_soon_threadsafe: let them run.
            await asyncio.sleep(0)
        elif self._pending:
            # Never started: write what was appended; there is nobody to deliver it to.
            self._stopping = True
            self._commit(self._reader, self._pending)
            self._pending = []
        self._reader.close()
        for projection in self.projections:
            projection.close()
        self._notify_waiters()

    # -- writing

    def append(self, type: str, data: Mapping[str, Any] | None = None, *,
               at: float | None = None) -> Event:
        """Add one event (`at`: when it happened, default now); it is delivered once committed."""
        fields = dict(data) if data else {}
        if not RESERVED_KEYS.isdisjoint(fields):
            raise ValueError(f"event data may not use {sorted(RESERVED_KEYS & fields.keys())}")
        stamp = iso_time(time.time() if at is None else at)
        # Serialize outside the lock; the seq is spliced in front under it.
        tail = _encode(fields)
        tail = "}" if tail == "{}" else "," + tail[1:]
        kind = _encode(type)
        with self._lock:
            if self._closing:
                raise JournalClosed("the journal is closing")
            seq = self._head + 1
            event = Event(seq, stamp, type, fields,
                          f'{{"seq":{seq},"time":"{stamp}","type":{kind}{tail}')
            self._head = seq
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append(event)
            schedule = not self._scheduled and self._loop is not None
            if schedule:
                self._scheduled = True
        if schedule:
            assert self._loop is not None
            if threading.get_ident() == self._loop_thread:
                self._loop.call_soon(self._submit)
            else:
                self._loop.call_soon_threadsafe(self._submit)
        return event

    def _submit(self) -> None:
        """Hand this turn's appends to the writer as one batch."""
        with self._lock:
            batch, self._pending = self._pending, []
            self._scheduled = False
            since = self._pending_since
        if batch:
            with self._wake:
                self._batches.append((since, batch))
                self._wake.notify()

    def _write_loop(self) -> None:
        db = open_db(self.path, synchronous=self.synchronous)
        # Checkpoints copy the WAL into the database and fsync it: tens of milliseconds
        # that would delay delivery. The checkpoint thread runs them instead.
        db.execute("PRAGMA wal_autocheckpoint=0")
        first = self._first
        try:
            while True:
                with self._wake:
                    while not self._batches and not self._stopping:
                        self._wake.wait()
                    if not self._batches:
                        return
                    # Batches that queued up while the last commit ran go in one transaction.
                    since = self._batches[0][0]
                    events = [e for _, batch in self._batches for e in batch]
                    self._batches.clear()
                began = time.monotonic()
                if not self._commit(db, events):
                    return
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._committed_batch, events,
                                                (since, began, time.monotonic()))
                last = events[-1].seq
                if last - first >= self.retain + max(1000, self.retain // 10):
                    first = self._prune(db, last - self.retain + 1) or first
        finally:
            db.close()

    def _commit(self, db: sqlite3.Connection, events: list[Event]) -> bool:
        """Write one transaction; retry while the disk refuses (events are never dropped)."""
        batch = _encode([e.json for e in events])
        attempt = 0
        while True:
            try:
                db.execute("BEGIN")
                db.execute(_INSERT, (batch,))
                for projection in self.projections:
                    _project(db, projection, events)
                db.execute("COMMIT")
                return True
            except sqlite3.Error:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                delay = _RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS) - 1)]
                log.exception("journal commit of seq %d..%d failed; retrying in %.2f s",
                              events[0].seq, events[-1].seq, delay)
                attempt += 1
                if self._stopping and attempt > len(_RETRY_DELAYS):
                    log.error("journal stopped with %d events not written", len(events))
                    return False
                time.sleep(delay)

    def _checkpoint_loop(self) -> None:
        db = open_db(self.path, synchronous=self.synchronous)
        done = self.committed
        try:
            while True:
                stopping = self._stop_checkpoints.wait(CHECKPOINT_INTERVAL)
                if self.committed != done or stopping:
                    done = self.committed
                    try:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    except sqlite3.Error:
                        log.exception("journal checkpoint failed")
                if stopping:
                    return
        finally:
            db.close()

    def _prune(self, db: sqlite3.Connection, first: int) -> int | None:
        try:
            db.execute("DELETE FROM events WHERE seq < ?", (first,))
        except sqlite3.Error:
            log.exception("pruning the journal failed")
            return None
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._pruned, first)
        return first

    def _pruned(self, first: int) -> None:
        self._first = max(self._first, first)

    # -- delivery (on the loop)

    def _committed_batch(self, events: list[Event], times: tuple[float, float, float]) -> None:
        # Where an event's time goes before delivery: waiting for the writer, the
        # fsync'd commit, the hop back to the loop (sums over batches, for /health).
        since, began, done = times
        stages = self.stage_seconds
        stages["queued"] += began - since
        stages["commit"] += done - began
        stages["to_loop"] += time.monotonic() - done
        self._last = events[-1].seq
        self.commits += 1
        self.committed += len(events)
        ring = self._ring
        ring.extend(events)
        if len(ring) > 2 * self.ring_size:
            drop = len(ring) - self.ring_size
            del ring[:drop]
            self._ring_first += drop
        self._notify_waiters()
        for subscriber in list(self._subscribers):
            try:
                subscriber(events)
            except Exception:
                log.exception("journal subscriber %r failed", subscriber)

    def _notify_waiters(self) -> None:
        changed = self._changed
        if changed is not None:
            self._changed = asyncio.Event()
            changed.set()

    def wake(self) -> None:
        """Wake every `wait()` now (they return and re-check, e.g. for a shutdown)."""
        self._notify_waiters()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` with every batch committed from now on; returns an unsubscribe."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    async def wait(self, after: int, timeout: float | None) -> bool:
        """Wait until an event after `after` is committed, a timeout or a `wake()`.

        Returns whether there is an event after `after` to read now.
        """
        if self._last > after:
            return True
        changed = self._changed
        if changed is None:
            raise JournalClosed("the journal was not started")
        try:
            async with asyncio.timeout(timeout):
                await changed.wait()
        except TimeoutError:
            pass
        return self._last > after

    # -- reading

    def check_position(self, after: int) -> None:
        """Raise `ResyncRequired` unless the events after `after` can be delivered."""
        if after < 0 or after > self._head or after + 1 < self._first:
            raise ResyncRequired(after, self._first, self._head)

    def since(self, after: int, limit: int = READ_LIMIT) -> list[Event]:
        """Committed events with seq > `after`, oldest first, at most `limit`.

        Empty while nothing newer is committed. Raises `ResyncRequired` when
        `after` is older than the kept history or newer than `head`.
        """
        self.check_position(after)
        if after >= self._last or limit <= 0:
            return []
        if after + 1 >= self._ring_first:
            start = after + 1 - self._ring_first
            return self._ring[start:start + limit]
        rows = self._reader.execute(
            "SELECT body FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (after, self._last, limit),
        ).fetchall()
        events = [Event.from_json(row[0]) for row in rows]
        if not events or events[0].seq != after + 1:
            # Pruned between the check and the read.
            raise ResyncRequired(after, self._first, self._head)
        return events


def _project(db: sqlite3.Connection, projection: Projection, events: list[Event]) -> None:
    """Apply a projection in a savepoint: its bug must not stop the journal.

    An operational error (disk, lock) fails the whole transaction, which is
    retried; any other failure is a projection bug: its changes for this batch
    are rolled back and logged, and the events are committed all the same.
    """
    db.execute("SAVEPOINT projection")
    try:
        projection.apply(db, events)
    except sqlite3.OperationalError:
        raise
    except Exception:
        log.exception("projection %r failed on seq %d..%d", projection, events[0].seq,
                      events[-1].seq)
        db.execute("ROLLBACK TO projection")
    db.execute("RELEASE projection")
