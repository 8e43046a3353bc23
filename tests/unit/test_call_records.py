"""Call records carry each leg's media statistics as plain JSON-ready values."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from cms.calls.records import as_plain
from cms.media.stats import StreamStats

Pair = collections.namedtuple("Pair", "left right")


def stream_stats(received: int) -> StreamStats:
    return StreamStats(
        ssrc=None, packets_received=received, packets_expected=received + 1, packets_lost=1,
        loss_fraction=0.5, interval_loss_fraction=0.25, jitter=12.0, jitter_ms=1.5,
        duplicates=0, late=0, restarts=0, highest_sequence=received,
    )


@dataclasses.dataclass
class Nested:
    name: str
    address: tuple[str, int]
    streams: list[StreamStats]
    by_role: dict[str, StreamStats]
    pair: Pair
    last: StreamStats | None
    extra: Any = None


def test_as_plain_gives_what_dataclasses_asdict_gives() -> None:
    value = Nested("caller 600", ("127.0.0.1", 4000), [stream_stats(1), stream_stats(2)],
                   {"agent": stream_stats(3)}, Pair(stream_stats(4), [5]), None,
                   extra={"set": frozenset({1})})
    plain = as_plain(value)
    assert plain == dataclasses.asdict(value)
    assert repr(plain) == repr(dataclasses.asdict(value))  # same types, same key order


def test_as_plain_copies_containers_rather_than_sharing_them() -> None:
    value = Nested("x", ("h", 1), [], {}, Pair(1, 2), stream_stats(0), extra=[1, [2]])
    plain = as_plain(value)
    assert plain["extra"] == [1, [2]] and plain["extra"] is not value.extra
    assert plain["extra"][1] is not value.extra[1]
