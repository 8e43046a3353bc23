"""The one ordered event journal (DESIGN.md section 3): every state change, durable, in order.

`Journal` appends, group-commits to SQLite (WAL, fsync'd) and only then
delivers; `JournalFeed` turns ACD events and call records into journal events.
"""

from .feed import JournalFeed
from .interactions import InteractionLog
from .journal import Journal, JournalClosed, Projection, Subscriber
from .model import Event, ResyncRequired, iso_time

__all__ = [
    "Event",
    "InteractionLog",
    "Journal",
    "JournalClosed",
    "JournalFeed",
    "Projection",
    "ResyncRequired",
    "Subscriber",
    "iso_time",
]
