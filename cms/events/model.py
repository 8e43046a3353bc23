"""What the journal holds: events with a sequence number, and the resync signal."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["RESERVED_KEYS", "Event", "ResyncRequired", "iso_time"]

RESERVED_KEYS = frozenset({"seq", "time", "type"})
"""Keys every event has at its top level; event data may not use them."""


_second: tuple[int, str] = (-1, "")  # the last whole second formatted, reused within it


def iso_time(timestamp: float) -> str:
    """A Unix time as ISO 8601 in UTC with milliseconds: 2024-05-01T12:00:00.000Z."""
    global _second
    millis = int(timestamp * 1000)
    whole, fraction = divmod(millis, 1000)
    cached, prefix = _second
    if whole != cached:
        prefix = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (whole, prefix)
    return f"{prefix}.{fraction:03d}Z"


@dataclass(frozen=True, slots=True)
class Event:
    """One journal entry: `{seq, time, type, **data}` on the wire."""

    seq: int
    """Strictly increasing over the journal's whole life, also across restarts."""
    time: str
    """When it happened, ISO 8601 UTC."""
    type: str
    """What happened, e.g. "agent.state_changed" (DESIGN.md section 5)."""
    data: Mapping[str, Any]
    """The event's fields besides seq, time and type."""
    json: str
    """The whole event serialized once, so fan-out to many clients costs no re-encoding."""

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict."""
        return {"seq": self.seq, "time": self.time, "type": self.type, **self.data}

    @classmethod
    def from_json(cls, text: str) -> Event:
        """Rebuild an event from its stored JSON."""
        decoded = json.loads(text)
        seq, time, kind = decoded.pop("seq"), decoded.pop("time"), decoded.pop("type")
        return cls(seq, time, kind, decoded, text)


class ResyncRequired(Exception):
    """The client's position is not in the journal any more (or never was).

    It either fell behind the retained history, or names a sequence number
    beyond the newest event (for instance after the data directory was
    wiped). The client rebuilds its view from the snapshot endpoints and
    resumes after `last_seq`.
    """

    def __init__(self, after: int, first_seq: int, last_seq: int) -> None:
        super().__init__(
            f"cannot resume after seq {after}: the journal holds {first_seq}..{last_seq}"
        )
        self.after = after
        self.first_seq = first_seq
        self.last_seq = last_seq
