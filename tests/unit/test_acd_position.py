"""Position announcements: when they come, what they say, and when they stop."""

from __future__ import annotations

from cms.acd import (
    Acd,
    AcdSettings,
    AgentSettings,
    AnnouncePosition,
    Output,
    QueueSettings,
)

T0 = 1_000.0


def announcements(outputs: list[Output]) -> list[tuple[str, int, int]]:
    return [(o.call_id, o.position, o.waiting) for o in outputs
            if isinstance(o, AnnouncePosition)]


def make_acd(**queue: float) -> Acd:
    settings = QueueSettings(name="sales", number="600", **queue)  # type: ignore[arg-type]
    return Acd(AcdSettings(
        agents=(AgentSettings(name="a1", extension="1001", queues=("sales",)),),
        work_centres=(), queues=(settings,), menus=(),
    ))


def test_no_announcements_unless_configured() -> None:
    acd = make_acd()
    acd.caller_arrived("c1", "600", T0)
    assert acd.next_deadline() is None


def test_first_announcement_then_every_interval_with_the_current_position() -> None:
    acd = make_acd(announce_position=30, announce_position_first=2)
    acd.caller_arrived("c1", "600", T0)
    acd.caller_arrived("c2", "600", T0 + 1)
    assert acd.next_deadline() == T0 + 2
    assert announcements(acd.handle_timer(T0 + 2)) == [("c1", 1, 2)]
    assert announcements(acd.handle_timer(T0 + 3)) == [("c2", 2, 2)]
    # The first caller gives up: the second moves up and hears it next time.
    acd.caller_abandoned("c1", T0 + 10)
    assert announcements(acd.handle_timer(T0 + 32)) == []
    assert announcements(acd.handle_timer(T0 + 33)) == [("c2", 1, 1)]
    assert acd.next_deadline() == T0 + 63


def test_announcements_stop_when_the_caller_leaves_the_queue() -> None:
    acd = make_acd(announce_position=5, announce_position_first=1)
    acd.caller_arrived("c1", "600", T0)
    acd.caller_abandoned("c1", T0 + 0.5)
    assert acd.next_deadline() is None
    assert announcements(acd.handle_timer(T0 + 100)) == []


def test_no_announcement_while_an_agent_rings_and_none_after_the_answer() -> None:
    acd = make_acd(announce_position=5, announce_position_first=1, ring_timeout=60)
    acd.device_registered("a1", T0)
    acd.caller_arrived("c1", "600", T0)  # offered to a1 at once
    assert announcements(acd.handle_timer(T0 + 1)) == []
    acd.offer_answered("c1", "a1", T0 + 2)
    outputs = acd.handle_timer(T0 + 6)
    assert announcements(outputs) == []
