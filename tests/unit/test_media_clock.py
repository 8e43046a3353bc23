"""The shared media clock: drift-free tick schedule, bounded catch-up, subscribers."""

from __future__ import annotations

import asyncio

import pytest

from cms.media.clock import MediaClock, TickSchedule


def test_ticks_are_due_at_start_plus_n_intervals() -> None:
    schedule = TickSchedule(start=100.0, interval=0.02)
    assert schedule.deadline() == 100.0
    assert list(schedule.due(100.0)) == [0]
    assert list(schedule.due(100.019)) == []
    assert schedule.deadline() == pytest.approx(100.02)
    assert list(schedule.due(100.02)) == [1]
    # No drift: tick 1000 is due at exactly start + 20 s, whatever happened before.
    schedule.next_tick = 1000
    assert schedule.deadline() == pytest.approx(120.0)


def test_a_late_wakeup_catches_up_within_the_burst_bound() -> None:
    schedule = TickSchedule(start=0.0, interval=0.02, max_burst=3)
    assert list(schedule.due(0.0)) == [0]
    assert list(schedule.due(0.041)) == [1, 2]  # 20 ms late: two ticks back to back
    assert schedule.skipped == 0


def test_a_very_late_wakeup_skips_instead_of_bursting() -> None:
    schedule = TickSchedule(start=0.0, interval=0.02, max_burst=3)
    assert list(schedule.due(0.0)) == [0]
    assert list(schedule.due(0.200)) == [8, 9, 10]  # ticks 1..7 skipped
    assert schedule.skipped == 7
    assert schedule.deadline() == pytest.approx(0.22)


def test_timer_firing_a_hair_early_still_runs_the_tick() -> None:
    schedule = TickSchedule(start=5.0, interval=0.02)
    schedule.next_tick = 3
    assert list(schedule.due(5.06 - 1e-9)) == [3]


def test_clock_calls_each_subscriber_once_per_tick() -> None:
    async def scenario() -> tuple[list[int], list[int], MediaClock]:
        clock = MediaClock()
        first: list[int] = []
        second: list[int] = []
        clock.subscribe(first.append)
        clock.subscribe(second.append)
        clock.start()
        await asyncio.sleep(0.105)
        clock.unsubscribe(second.append)
        await asyncio.sleep(0.06)
        clock.stop()
        return first, second, clock

    first, second, clock = asyncio.run(scenario())
    assert first == list(range(len(first))), "consecutive ticks, each once"
    assert 6 <= len(first) <= 10
    assert second == first[:len(second)] and len(second) < len(first)
    assert not clock.running and clock.ticks == len(first)


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    async def scenario() -> tuple[list[int], MediaClock]:
        clock = MediaClock()
        seen: list[int] = []

        def broken(tick: int) -> None:
            raise RuntimeError("boom")

        clock.subscribe(broken)
        clock.subscribe(seen.append)
        clock.start()
        await asyncio.sleep(0.05)
        clock.stop()
        return seen, clock

    seen, clock = asyncio.run(scenario())
    assert seen and clock.errors == len(seen)
