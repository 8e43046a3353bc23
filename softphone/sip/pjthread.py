"""A thread that owns a C library which must only be driven from one thread (pjsua2).

Work reaches it as jobs (`submit`, returning a `concurrent.futures.Future`) and timers
(`call_later`, only from the thread itself). Between jobs it runs the library's event pump
(`libHandleEvents`) with a short timeout, so SIP timers, transports and callbacks all run
here too. An exception in a timer callback goes to `on_error`, never silently away.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("softphone.sip.thread")

Pump = Callable[[int], object]  # run the library's events for up to N milliseconds


class ThreadStopped(RuntimeError):
    """The thread has stopped; the job will never run."""


class TimerHandle:
    """A scheduled callback; `cancel()` before it runs and it never will."""

    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Stop:
    pass


class PjThread:
    """One dedicated thread: jobs in order, timers, and the library's pump in between."""

    def __init__(self, name: str = "pjsua2", poll_ms: int = 10,
                 on_error: Callable[[str, BaseException], None] | None = None) -> None:
        self.name = name
        self.poll_ms = poll_ms
        self.on_error = on_error
        self._pump: Pump | None = None
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | _Stop] = (
            queue.SimpleQueue()
        )
        self._timers: list[tuple[float, int, TimerHandle]] = []
        self._sequence = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._early: tuple[Future[Any], Callable[[], Any]] | _Stop | None = None

    # -- any thread

    def start(self) -> None:
        """Start the thread (jobs submitted before run first)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run `fn(*args)` on the thread; the future holds its result or exception."""
        future: Future[T] = Future()
        if self._stopped.is_set():
            future.set_exception(ThreadStopped(f"{self.name} thread has stopped"))
            return future
        self._jobs.put((future, lambda: fn(*args)))
        return future

    def call(self, fn: Callable[..., T], *args: Any, timeout: float | None = 10.0) -> T:
        """Run `fn(*args)` on the thread and wait for its result (inline when already there)."""
        if self.in_thread:
            return fn(*args)
        return self.submit(fn, *args).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Let queued jobs run, then end the thread; later jobs fail with ThreadStopped."""
        thread = self._thread
        if thread is None or self._stopped.is_set():
            return
        self._jobs.put(_Stop())
        if threading.current_thread() is not thread:
            thread.join(timeout)
            if thread.is_alive():
                log.error("%s thread did not stop within %.0f s", self.name, timeout)

    @property
    def in_thread(self) -> bool:
        return threading.current_thread() is self._thread

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread itself

    def set_pump(self, pump: Pump | None) -> None:
        """The library's event pump, once it exists (None: just wait for jobs)."""
        self._pump = pump

    def call_later(self, delay: float, callback: Callable[[], object]) -> TimerHandle:
        """Run `callback` on this thread after `delay` seconds."""
        assert self.in_thread or self._thread is None, "call_later only from the thread"
        handle = TimerHandle(time.monotonic() + max(0.0, delay), callback)
        heapq.heappush(self._timers, (handle.when, next(self._sequence), handle))
        return handle

    def call_soon(self, callback: Callable[[], object]) -> TimerHandle:
        """Run `callback` on this thread after the current job or callback returns."""
        return self.call_later(0.0, callback)

    def _run(self) -> None:
        try:
            while True:
                self._run_timers()
                if self._run_jobs():
                    return
                self._wait()
        finally:
            self._stopped.set()
            self._fail_pending()

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, handle = heapq.heappop(self._timers)
            if handle.cancelled:
                continue
            try:
                handle.callback()
            except Exception as exc:  # report, keep the thread alive
                self._report("timer callback", exc)

    def _run_jobs(self) -> bool:
        """Run every queued job; True when asked to stop."""
        while True:
            if self._early is not None:
                item, self._early = self._early, None
            else:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    return False
            if isinstance(item, _Stop):
                return True
            future, job = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # the submitter sees it through the future
                future.set_exception(exc)

    def _wait(self) -> None:
        timeout_ms = self.poll_ms
        if self._timers:
            until = (self._timers[0][0] - time.monotonic()) * 1000.0
            timeout_ms = max(0, min(timeout_ms, int(until) + 1))
        pump = self._pump
        if pump is not None:
            try:
                pump(timeout_ms)
            except Exception as exc:
                self._report("event pump", exc)
                time.sleep(timeout_ms / 1000.0)
            return
        try:
            self._early = self._jobs.get(timeout=timeout_ms / 1000.0)  # runs first next turn
        except queue.Empty:
            return

    def _fail_pending(self) -> None:
        if isinstance(self._early, tuple):
            self._early[0].set_exception(ThreadStopped(f"{self.name} thread has stopped"))
        self._early = None
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not isinstance(item, _Stop):
                item[0].set_exception(ThreadStopped(f"{self.name} thread has stopped"))

    def _report(self, where: str, exc: BaseException) -> None:
        log.error("%s failed on the %s thread", where, self.name, exc_info=exc)
        if self.on_error is not None:
            try:
                self.on_error(where, exc)
            except Exception:
                log.exception("error reporter failed")
