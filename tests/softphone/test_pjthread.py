"""The thread that owns pjsua2: jobs in order, timers, errors that never vanish."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from softphone.sip.pjthread import PjThread, ThreadStopped


@pytest.fixture
def thread() -> Iterator[PjThread]:
    errors: list[tuple[str, BaseException]] = []
    worker = PjThread(name="test", poll_ms=5, on_error=lambda w, e: errors.append((w, e)))
    worker.errors = errors  # type: ignore[attr-defined]
    worker.start()
    yield worker
    worker.stop()


def test_jobs_run_in_order_on_the_one_thread(thread: PjThread) -> None:
    seen: list[tuple[int, str]] = []
    futures = [thread.submit(lambda i=i: seen.append((i, threading.current_thread().name)))
               for i in range(20)]
    for future in futures:
        future.result(2)

    assert [i for i, _ in seen] == list(range(20))
    assert {name for _, name in seen} == {"test"}


def test_a_job_exception_reaches_the_submitter(thread: PjThread) -> None:
    future = thread.submit(lambda: 1 / 0)

    with pytest.raises(ZeroDivisionError):
        future.result(2)


def test_timers_fire_in_due_order_and_can_be_cancelled(thread: PjThread) -> None:
    fired: list[str] = []

    def schedule() -> None:
        thread.call_later(0.05, lambda: fired.append("late"))
        thread.call_later(0.01, lambda: fired.append("early"))
        thread.call_later(0.02, lambda: fired.append("cancelled")).cancel()

    thread.submit(schedule).result(2)
    time.sleep(0.15)

    assert fired == ["early", "late"]


def test_a_failing_timer_is_reported_and_the_thread_lives_on(thread: PjThread) -> None:
    thread.submit(lambda: thread.call_soon(lambda: 1 / 0)).result(2)
    time.sleep(0.05)

    assert thread.submit(lambda: "alive").result(2) == "alive"
    errors = thread.errors  # type: ignore[attr-defined]
    assert [where for where, _ in errors] == ["timer callback"]
    assert isinstance(errors[0][1], ZeroDivisionError)


def test_the_pump_runs_between_jobs(thread: PjThread) -> None:
    calls: list[int] = []
    thread.submit(lambda: thread.set_pump(lambda ms: (calls.append(ms), time.sleep(ms / 1000))))
    time.sleep(0.05)

    assert calls and all(0 <= ms <= 5 for ms in calls)


def test_after_stop_jobs_fail_with_thread_stopped() -> None:
    worker = PjThread(name="short")
    worker.start()
    worker.stop()

    with pytest.raises(ThreadStopped):
        worker.submit(lambda: None).result(1)
    assert not worker.running
