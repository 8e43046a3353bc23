"""The binding store: changes reach SQLite behind the SIP path, in batches, and load back."""

from __future__ import annotations

import time
from pathlib import Path

from cms.registrar.bindings import Binding, BindingChange
from cms.store.bindings import FLUSH_INTERVAL, BindingStore


def binding(aor: str, cseq: int, expires_at: float = 2e9) -> Binding:
    return Binding(aor, f"sip:{aor}@192.0.2.1", expires_at, "call-1", cseq, None, "UDP x", "ua")


def test_changes_are_written_by_the_thread_and_survive_a_restart(tmp_path: Path) -> None:
    store = BindingStore(tmp_path / "b.sqlite3")
    store.start()
    store.submit(BindingChange("a1", (("k1", binding("a1", 1)),)))
    store.submit(BindingChange("a2", (("k2", binding("a2", 1)),)))
    deadline = time.monotonic() + 5
    while store.written < 2 and time.monotonic() < deadline:
        time.sleep(FLUSH_INTERVAL / 5)
    assert store.written == 2
    # An idle writer wakes again for a change that arrives later.
    time.sleep(FLUSH_INTERVAL * 3)
    store.submit(BindingChange("a1", (("k1", binding("a1", 7)),)))
    store.submit(BindingChange("a2", (), ("k2",)))
    deadline = time.monotonic() + 5
    while store.written < 4 and time.monotonic() < deadline:
        time.sleep(FLUSH_INTERVAL / 5)
    assert store.written == 4
    store.submit(BindingChange("a3", (("k3", binding("a3", 1)),)))
    store.close()  # writes what is still queued
    again = BindingStore(tmp_path / "b.sqlite3")
    loaded = sorted((key, b.aor, b.cseq) for key, b in again.load(1e9))
    again.close()
    assert loaded == [("k1", "a1", 7), ("k3", "a3", 1)]


def test_close_without_start_writes_the_queue(tmp_path: Path) -> None:
    store = BindingStore(tmp_path / "b.sqlite3")
    store.submit(BindingChange("a1", (("k1", binding("a1", 1)),)))
    store.close()
    again = BindingStore(tmp_path / "b.sqlite3")
    assert [key for key, _ in again.load(1e9)] == ["k1"]
    again.close()
