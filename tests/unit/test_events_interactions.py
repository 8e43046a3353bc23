"""The interaction log: records derived from journal events in the journal's own transactions."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cms.events import Event, InteractionLog, Journal
from cms.events.interactions import business_partner, to_e164


@pytest.mark.parametrize(("number", "country", "expected"), [
    ("+49 30 1234567", "", "+49301234567"),
    ("0049301234567", "", "+49301234567"),
    ("030-123 4567", "49", "+49301234567"),
    ("030 1234567", "", None),  # national, and no country code configured
    ("sip:+14155550100@carrier.example;user=phone", "", "+14155550100"),
    ("1001", "49", None),  # an extension
    ("anonymous", "49", None),
    ("+0123456789", "", None),
    ("+1234", "", None),
    ("", "49", None),
])
def test_numbers_are_normalised_to_e164_where_known(number: str, country: str,
                                                    expected: str | None) -> None:
    assert to_e164(number, country) == expected


def test_the_business_partner_comes_from_the_first_known_key() -> None:
    assert business_partner({"bp": "4711", "partner": "x"}) == "4711"
    assert business_partner({"business_partner": 17}) == "17"
    assert business_partner({"bp": True, "topic": "billing"}) is None


def _lifecycle(journal: Journal) -> None:
    journal.append("interaction.created", {
        "interaction_id": "c1", "call_id": "c1", "kind": "queue", "direction": "inbound",
        "caller": "0301234567", "target": "600", "queue": "sales",
        "attached_data": {"bp": "100"}}, at=1000.0)
    journal.append("call.offered", {"call_id": "c1", "queue": "sales", "agent": "agent2"},
                   at=1001.0)
    journal.append("call.offered", {"call_id": "c1", "queue": "sales", "agent": "agent1"},
                   at=1005.0)
    journal.append("queue.caller_left", {"call_id": "c1", "queue": "sales",
                                         "reason": "answered", "agent": "agent1"}, at=1007.0)
    journal.append("call.attached_data_changed", {"call_id": "c1",
                                                  "attached_data": {"bp": "200"}}, at=1010.0)
    journal.append("call.ended", {"call_id": "c1", "agent": "agent1", "queue": "sales",
                                  "outcome": "answered", "talk": 30.0,
                                  "attached_data": {"bp": "200", "case": 9}}, at=1037.0)
    journal.append("agent.state_changed", {"user": "agent1", "state": "not_ready",
                                           "previous": "wrap_up", "reason": "follow_up"},
                   at=1040.0)


def test_a_queue_call_becomes_one_complete_record(tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any] | None:
        log = InteractionLog(country_code="49")
        journal = Journal(tmp_path / "events.sqlite3", projections=[log])
        await journal.start()
        _lifecycle(journal)
        await journal.flush()
        record = log.get("c1")
        await journal.close()
        return record

    record = asyncio.run(scenario())
    assert record is not None
    assert {k: record[k] for k in ("caller", "caller_e164", "business_partner", "agent",
                                   "queue", "created", "answered", "ended", "outcome",
                                   "wrap_up_reason", "attached_data")} == {
        "caller": "0301234567", "caller_e164": "+49301234567", "business_partner": "200",
        "agent": "agent1", "queue": "sales", "created": "1970-01-01T00:16:40.000Z",
        "answered": "1970-01-01T00:16:47.000Z", "ended": "1970-01-01T00:17:17.000Z",
        "outcome": "answered", "wrap_up_reason": "follow_up",
        "attached_data": {"bp": "200", "case": 9}}


def test_records_are_written_in_the_same_transaction_as_their_events(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal = Journal(tmp_path / "events.sqlite3", projections=[InteractionLog()])
        await journal.start()
        _lifecycle(journal)
        await journal.flush()
        # No close(): what is on disk now is what a kill -9 would leave.
        db = sqlite3.connect(tmp_path / "events.sqlite3")
        seqs = [row[0] for row in db.execute("SELECT seq FROM events")]
        updated = db.execute("SELECT updated_seq FROM interactions WHERE id='c1'").fetchone()
        db.close()
        assert updated[0] == max(seqs) == 7
        await journal.close()

    asyncio.run(scenario())


class Broken:
    """A projection with a bug."""

    def setup(self, db: sqlite3.Connection, path: Path) -> None:
        db.execute("CREATE TABLE IF NOT EXISTS broken (x)")

    def apply(self, db: sqlite3.Connection, events: Sequence[Event]) -> None:
        db.execute("INSERT INTO broken VALUES (1)")
        raise KeyError("bug")

    def close(self) -> None:
        pass


def test_a_failing_projection_does_not_stop_the_journal(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = InteractionLog()
        journal = Journal(tmp_path / "events.sqlite3", projections=[Broken(), log])
        await journal.start()
        _lifecycle(journal)
        await journal.flush()
        assert journal.last_seq == 7
        assert log.get("c1") is not None
        db = sqlite3.connect(tmp_path / "events.sqlite3")
        assert db.execute("SELECT COUNT(*) FROM broken").fetchone()[0] == 0
        db.close()
        await journal.close()

    asyncio.run(scenario())
