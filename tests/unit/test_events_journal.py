"""The event journal: ordered, durable before delivery, resumable across restarts."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from cms.events import Event, Journal, JournalClosed, JournalFeed, ResyncRequired, iso_time


async def _filled(path: Path, count: int, **options: int) -> Journal:
    journal = Journal(path, **options)
    await journal.start()
    for index in range(count):
        journal.append("test.counted", {"n": index})
    await journal.flush()
    return journal


def test_sequence_numbers_start_at_one_and_increase_by_one(tmp_path: Path) -> None:
    async def scenario() -> list[Event]:
        journal = await _filled(tmp_path / "j.sqlite3", 50)
        events = journal.since(0, 1000)
        await journal.close()
        return events

    events = asyncio.run(scenario())
    assert [e.seq for e in events] == list(range(1, 51))
    assert [e.data["n"] for e in events] == list(range(50))


def test_event_json_has_seq_time_type_and_data_at_top_level(tmp_path: Path) -> None:
    async def scenario() -> Event:
        journal = Journal(tmp_path / "j.sqlite3")
        await journal.start()
        journal.append("agent.logged_on", {"user": "agent1", "device": "agent1"}, at=0.25)
        await journal.flush()
        (event,) = journal.since(0)
        await journal.close()
        return event

    event = asyncio.run(scenario())
    assert json.loads(event.json) == {
        "seq": 1, "time": "1970-01-01T00:00:00.250Z", "type": "agent.logged_on",
        "user": "agent1", "device": "agent1",
    }
    assert event.to_dict() == json.loads(event.json)


def test_iso_time_is_utc_with_milliseconds() -> None:
    assert iso_time(1714564800.1234) == "2024-05-01T12:00:00.123Z"
    assert iso_time(1714564801.0) == "2024-05-01T12:00:01.000Z"


def test_event_data_may_not_shadow_seq_time_or_type(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite3")
    with pytest.raises(ValueError):
        journal.append("x", {"seq": 5})


def test_appends_of_one_loop_turn_are_committed_in_one_transaction(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, list[list[int]]]:
        journal = Journal(tmp_path / "j.sqlite3")
        await journal.start()
        batches: list[list[int]] = []
        journal.subscribe(lambda events: batches.append([e.seq for e in events]))
        for index in range(300):
            journal.append("test.counted", {"n": index})
        await journal.flush()
        commits = journal.commits
        await journal.close()
        return commits, batches

    commits, batches = asyncio.run(scenario())
    assert commits == 1
    assert batches == [list(range(1, 301))]


def test_delivery_stages_are_timed_per_commit(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, dict[str, float]]:
        journal = Journal(tmp_path / "j.sqlite3")
        await journal.start()
        for index in range(3):
            journal.append("test.counted", {"n": index})
            await journal.flush()
        commits, stages = journal.commits, dict(journal.stage_seconds)
        await journal.close()
        return commits, stages

    commits, stages = asyncio.run(scenario())
    assert commits == 3
    assert set(stages) == {"queued", "commit", "to_loop"}
    assert all(0.0 < seconds < 10.0 for seconds in stages.values())


def test_an_event_is_on_disk_before_subscribers_or_readers_see_it(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"

    async def scenario() -> tuple[list[int], list[int]]:
        journal = Journal(path)
        await journal.start()
        on_disk_when_delivered: list[int] = []
        visible_before_commit: list[int] = []

        def check(events: Sequence[Event]) -> None:
            # A separate connection sees only committed rows.
            with sqlite3.connect(path) as other:
                (count,) = other.execute("SELECT COUNT(*) FROM events WHERE seq <= ?",
                                         (events[-1].seq,)).fetchone()
            on_disk_when_delivered.append(count)

        journal.subscribe(check)
        for index in range(10):
            journal.append("test.counted", {"n": index})
            visible_before_commit.extend(e.seq for e in journal.since(0))
        assert journal.head == 10 and journal.last_seq == 0
        await journal.flush()
        await journal.close()
        return on_disk_when_delivered, visible_before_commit

    on_disk, visible = asyncio.run(scenario())
    assert on_disk == [10]
    assert visible == []


def test_resume_after_restart_gives_exactly_the_rest_and_seq_continues(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"

    async def first_run() -> None:
        journal = await _filled(path, 120)
        await journal.close()

    async def second_run() -> tuple[list[int], list[int], int]:
        journal = Journal(path)
        await journal.start()
        rest = [e.seq for e in journal.since(70, 1000)]
        journal.append("test.after_restart")
        await journal.flush()
        newer = [e.seq for e in journal.since(118, 1000)]
        head = journal.head
        await journal.close()
        return rest, newer, head

    asyncio.run(first_run())
    rest, newer, head = asyncio.run(second_run())
    assert rest == list(range(71, 121))
    assert newer == [119, 120, 121]
    assert head == 121


def test_reading_across_the_memory_ring_and_the_disk_has_no_gap_or_duplicate(
        tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"

    async def scenario() -> list[int]:
        journal = await _filled(path, 40)
        await journal.close()
        journal = await _filled(path, 500, ring_size=100)  # 40 on disk only, ring trimmed
        seen: list[int] = []
        after = 0
        while batch := journal.since(after, 37):
            seen += [e.seq for e in batch]
            after = batch[-1].seq
        await journal.close()
        return seen

    assert asyncio.run(scenario()) == list(range(1, 541))


def test_limit_bounds_one_read(tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        journal = await _filled(tmp_path / "j.sqlite3", 20)
        seqs = [e.seq for e in journal.since(5, 3)]
        await journal.close()
        return seqs

    assert asyncio.run(scenario()) == [6, 7, 8]


def test_concurrent_appends_from_tasks_and_threads_get_unique_ordered_seqs(
        tmp_path: Path) -> None:
    async def scenario() -> tuple[list[Event], list[int]]:
        journal = Journal(tmp_path / "j.sqlite3")
        await journal.start()
        delivered: list[int] = []
        journal.subscribe(lambda events: delivered.extend(e.seq for e in events))

        async def task(name: str) -> None:
            for index in range(200):
                journal.append("test.task", {"who": name, "n": index})
                if index % 7 == 0:
                    await asyncio.sleep(0)

        def thread(name: str) -> None:
            for index in range(200):
                journal.append("test.thread", {"who": name, "n": index})

        threads = [threading.Thread(target=thread, args=(f"t{i}",)) for i in range(3)]
        for t in threads:
            t.start()
        await asyncio.gather(*(task(f"a{i}") for i in range(5)))
        for t in threads:
            await asyncio.to_thread(t.join)
        await journal.flush()
        events = journal.since(0, 10_000)
        await journal.close()
        return events, delivered

    events, delivered = asyncio.run(scenario())
    assert [e.seq for e in events] == list(range(1, 1601))
    assert delivered == list(range(1, 1601))
    for who in [f"a{i}" for i in range(5)] + [f"t{i}" for i in range(3)]:
        # Each producer's own events keep their order.
        assert [e.data["n"] for e in events if e.data["who"] == who] == list(range(200))


def test_waiters_wake_when_a_newer_event_is_committed(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, bool, list[int]]:
        journal = Journal(tmp_path / "j.sqlite3")
        await journal.start()
        timed_out = await journal.wait(0, 0.05)
        waiter = asyncio.create_task(journal.wait(0, 5.0))
        await asyncio.sleep(0.01)
        journal.append("test.one")
        woke = await waiter
        seqs = [e.seq for e in journal.since(0)]
        await journal.close()
        return timed_out, woke, seqs

    assert asyncio.run(scenario()) == (False, True, [1])


def test_a_position_outside_the_journal_requires_a_resync(tmp_path: Path) -> None:
    async def scenario() -> tuple[ResyncRequired, ResyncRequired, list[int]]:
        journal = await _filled(tmp_path / "j.sqlite3", 10)
        with pytest.raises(ResyncRequired) as ahead:
            journal.since(11)
        with pytest.raises(ResyncRequired) as negative:
            journal.since(-1)
        at_head = [e.seq for e in journal.since(10)]
        await journal.close()
        return ahead.value, negative.value, at_head

    ahead, _, at_head = asyncio.run(scenario())
    assert (ahead.first_seq, ahead.last_seq) == (1, 10)
    assert at_head == []


def test_history_beyond_retention_is_pruned_and_old_positions_resync(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, list[int]]:
        journal = Journal(tmp_path / "j.sqlite3", retain=100, ring_size=10)
        await journal.start()
        for burst in range(30):
            for index in range(100):
                journal.append("test.counted", {"n": burst * 100 + index})
            await journal.flush()
        first = journal.first_seq
        with pytest.raises(ResyncRequired):
            journal.since(0)
        kept = [e.seq for e in journal.since(first - 1, 5)]
        await journal.close()
        return first, kept

    first, kept = asyncio.run(scenario())
    assert 1 < first <= 3000 - 100 + 1
    assert kept == list(range(first, first + 5))


def test_append_after_close_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = Journal(tmp_path / "j.sqlite3")
        await journal.start()
        await journal.close()
        with pytest.raises(JournalClosed):
            journal.append("late")

    asyncio.run(scenario())


def test_feed_maps_acd_events_one_to_one_and_records_to_interactions(tmp_path: Path) -> None:
    class Joined:
        TYPE = "queue.caller_joined"
        time = 100.0

        def payload(self) -> dict[str, object]:
            return {"call_id": "c1", "queue": "sales", "position": 1, "priority": 0}

    record = {"id": "c1", "kind": "queue", "caller": "555", "target": "600", "queue": "sales",
              "agent": "agent1", "created": 99.5, "wait": 1.0, "ring": 2.0, "talk": 3.0,
              "outcome": "completed", "ended_by": "caller", "attached_data": {"crm": "x"},
              "quality": {}}
    direct = dict(record, id="c2", kind="direct", queue="")

    async def scenario() -> list[Event]:
        journal = Journal(tmp_path / "j.sqlite3")
        await journal.start()
        feed = JournalFeed(journal, lambda call_id: {"caller": "555", "target": "600",
                                                     "kind": "queue"})
        feed.acd_event(Joined())
        feed.call_record(record)
        feed.call_record(direct)
        await journal.flush()
        events = journal.since(0)
        await journal.close()
        return events

    events = asyncio.run(scenario())
    assert [(e.type, e.data["call_id"]) for e in events] == [
        ("interaction.created", "c1"), ("queue.caller_joined", "c1"), ("call.ended", "c1"),
        ("interaction.created", "c2"), ("call.ended", "c2"),
    ]
    assert events[1].data == {"call_id": "c1", "queue": "sales", "position": 1, "priority": 0}
    assert events[1].time == "1970-01-01T00:01:40.000Z"
    assert events[0].data["caller"] == "555"
    assert events[2].data["outcome"] == "completed"
    assert events[3].data["kind"] == "direct"
