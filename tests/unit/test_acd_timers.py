"""The ACD's keyed timers fire in deadline order and do not keep cancelled entries forever."""

from __future__ import annotations

from cms.acd.timers import Timers


def test_cancelled_timers_do_not_pile_up_and_the_live_ones_still_fire_in_order() -> None:
    timers: Timers[str] = Timers()
    timers.set("early", 5.0)
    timers.set("late", 50.0)
    for i in range(20_000):  # a call each: a long timer armed, then cancelled
        timers.set(f"call-{i}", 14_400.0 + i)
        timers.cancel(f"call-{i}")
    timers.set("late", 40.0)  # re-armed: the old entry is dead
    assert len(timers._heap) < 2 * len(timers) + 2000
    assert timers.next_deadline() == 5.0
    assert [timers.pop_due(100.0), timers.pop_due(100.0), timers.pop_due(100.0)] == [
        "early", "late", None,
    ]
    assert len(timers) == 0 and timers.next_deadline() is None
