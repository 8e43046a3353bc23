"""The CTI bench's kernel floor: one payload to N real loopback TCP readers, timed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/ is not installed

from cms.net.batch_write import BatchWriter  # noqa: E402
from scripts.tcp_floor import measure  # noqa: E402

pytestmark = pytest.mark.skipif(not BatchWriter.available(), reason="no io_uring here")


def test_every_reader_gets_the_payload_in_each_round_and_the_time_is_reported() -> None:
    floor = measure(clients=6, payload=300, rounds=4)

    # measure() raises when a send comes back short, so every round reached all six.
    assert (floor.clients, floor.payload, floor.rounds) == (6, 300, 4)
    assert 0 < floor.p50_ms <= floor.p90_ms
    assert "6 loopback TCP sends of 300 bytes" in floor.line()
