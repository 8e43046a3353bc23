"""Writes a batch of byte strings to many sockets, split across threads.

A loopback `send()` costs a few microseconds in the kernel (the whole TCP
path and the reader's wake-up run in the sender's context), and CPython
releases the GIL for it. Writing 500 sockets from one thread is therefore
mostly kernel time on one core; with helper threads the sends of one batch
run on several cores at once.

The caller owns correctness: it passes only sockets whose own transport has
nothing buffered, and it stays inside `write()` (so no other code of its
event loop runs) until every helper is done. Each socket is in exactly one
share, so writes to one socket never interleave. A socket that takes less
than its whole data (`EAGAIN`) or fails is reported back, with how much it
took, for the caller to finish through its transport.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

__all__ = ["MIN_SHARE", "THREADS_ENV", "RawWriter", "Short", "default_threads", "write_one"]

MIN_SHARE = 64  # sockets per thread below which handing work over costs more than it saves
THREADS_ENV = "CMS_CTI_FANOUT_THREADS"

Short = tuple[int, int]
"""(index of the item, bytes it took: 0..len-1, or -1 when the socket failed)."""


def default_threads() -> int:
    """Writer threads: $CMS_CTI_FANOUT_THREADS ("auto": one per usable core, at most 4), else 1.

    Opt-in: on a 2-core machine whose other core is busy with the readers the
    helpers measured no faster than one thread (see scripts/bench_cti.py).
    """
    wanted = os.environ.get(THREADS_ENV, "").strip().lower()
    if wanted == "auto":
        try:
            return max(1, min(4, len(os.sched_getaffinity(0))))
        except (AttributeError, OSError):
            return max(1, min(4, os.cpu_count() or 1))
    try:
        return max(1, int(wanted)) if wanted else 1
    except ValueError:
        return 1


def write_one(fd: int, data: bytes) -> int:
    """Write without blocking: the bytes taken (0 when the socket is full), or -1 on failure."""
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError:
        return -1


def write_each(items: Sequence[tuple[int, bytes]], base: int = 0) -> list[Short]:
    """Write each (fd, data) without blocking; the items not written whole (indexes + base)."""
    short: list[Short] = []
    write = os.write
    for index, (fd, data) in enumerate(items, base):
        try:
            sent = write(fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = -1
        if sent != len(data):
            short.append((index, sent))
    return short


class _Helper:
    """One parked thread that writes the share it is handed, then reports."""

    def __init__(self, name: str) -> None:
        # Bare locks as binary semaphores: the cheapest hand-over CPython has.
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()
        self._done.acquire()
        self._items: Sequence[tuple[int, bytes]] = ()
        self._base = 0
        self._stop = False
        self.result: list[Short] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def start(self, items: Sequence[tuple[int, bytes]], base: int) -> None:
        self._items, self._base = items, base
        self._go.release()

    def join(self) -> list[Short]:
        self._done.acquire()
        self._items = ()
        return self.result

    def stop(self) -> None:
        self._stop = True
        self._go.release()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            self._go.acquire()
            if self._stop:
                return
            try:
                self.result = write_each(self._items, self._base)
            except BaseException:  # never leave the caller waiting
                self.result = [(i, -1) for i in range(self._base, self._base + len(self._items))]
            finally:
                self._done.release()


class RawWriter:
    """Writes (fd, data) items with up to `threads` threads (the caller's one included)."""

    def __init__(self, threads: int = 1, min_share: int = MIN_SHARE) -> None:
        self.threads = max(1, threads)
        self.min_share = max(1, min_share)
        self._helpers = [_Helper(f"cti-fanout-{n}") for n in range(1, self.threads)]

    def write(self, items: Sequence[tuple[int, bytes]]) -> list[Short]:
        """Write every item; returns those not written whole, in index order."""
        shares = min(len(self._helpers) + 1, max(1, len(items) // self.min_share))
        if shares == 1:
            return write_each(items)
        size = -(-len(items) // shares)
        helpers = self._helpers[:shares - 1]
        for number, helper in enumerate(helpers, 1):
            helper.start(items[number * size:(number + 1) * size], number * size)
        short = write_each(items[:size])
        for helper in helpers:
            short += helper.join()
        return short

    def close(self) -> None:
        """Stop the helper threads."""
        for helper in self._helpers:
            helper.stop()
        self._helpers = []
