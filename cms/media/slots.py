"""Per-leg relay state in numpy columns, so a batch of packets is relayed with array operations.

A `SlotTable` row ("slot") belongs to one leg on an io_uring reactor. The fields the relay's
common case reads and writes per packet live in the columns, not in Python attributes:
the leg's receive statistics (`SlotReceiveStats`), its outbound stream (`SlotOutboundStream`),
its endpoint's counters, and where its route goes. The classes here are the usual
`ReceiveStats` and `OutboundStream` with those fields as properties over the row, so every
Python path (DTMF, SSRC changes, generated audio, snapshots) keeps working on the same state
the vectorised path updates: there is one copy of it, never two to keep in step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .stats import ReceiveStats
from .stream import OutboundStream

NO_SLOT = -1
NO_FEED = -3  # `OutboundStream.feed is None` (GENERATED is -1, DTMF -2, SSRCs are >= 0).
NO_SSRC = -1  # `ReceiveStats.ssrc is None`.

# name: (dtype, value of a fresh row)
_COLUMNS: dict[str, tuple[type, Any]] = {
    # The endpoint: the peer-connected socket received through the ring and the one
    # `connected_send` sends on (-1: none), counters, generation (see release).
    "fd": (np.int64, -1),
    "send_fd": (np.int64, -1),
    "received": (np.int64, 0),
    "sent": (np.int64, 0),
    "generation": (np.int64, 0),
    # The leg's route: the target slot (-1: none, or one the vectorised path cannot take),
    # the payload type sent there, and the audio payload type this leg accepts.
    "target": (np.int64, NO_SLOT),
    "out_pt": (np.int64, 0),
    "audio_pt": (np.int64, -1),
    # OutboundStream of what this leg sends.
    "out_ssrc": (np.int64, 0),
    "out_seq": (np.int64, 0),
    "out_ts": (np.int64, 0),
    "out_time": (np.float64, math.nan),
    "out_feed": (np.int64, NO_FEED),
    "out_held": (np.bool_, False),
    "out_seq_offset": (np.int64, 0),
    "out_ts_offset": (np.int64, 0),
    # ReceiveStats of what this leg receives (the fields its common case touches).
    "rx_ssrc": (np.int64, NO_SSRC),
    "rx_max": (np.int64, 0),
    "rx_cycles": (np.int64, 0),
    "rx_seen": (np.int64, 0),
    "rx_received": (np.int64, 0),
    "rx_transit": (np.float64, math.nan),
    "rx_jitter": (np.float64, 0.0),
}


class SlotTable:
    """Columns of per-leg state, one row per slot; rows are handed out and taken back."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = 0
        self._free: list[int] = []
        self._owners: dict[int, list[Slotted]] = {}
        for name, (dtype, _) in _COLUMNS.items():
            setattr(self, name, np.zeros(0, dtype=dtype))
        self._grow(capacity)

    def _grow(self, capacity: int) -> None:
        # Columns are replaced, never resized in place: owners look them up per access.
        old = self.capacity
        for name, (dtype, fresh) in _COLUMNS.items():
            column = np.full(capacity, fresh, dtype=dtype)
            column[:old] = getattr(self, name)
            setattr(self, name, column)
        self._free.extend(range(capacity - 1, old - 1, -1))
        self.capacity = capacity

    def allocate(self) -> int:
        """A fresh row's slot."""
        if not self._free:
            self._grow(2 * self.capacity)
        slot = self._free.pop()
        self._owners[slot] = []
        return slot

    def own(self, slot: int, owner: Slotted) -> None:
        """Note that `owner` keeps its state in `slot` (it is detached on `release`)."""
        self._owners[slot].append(owner)

    def release(self, slot: int) -> None:
        """Take a slot back: its owners keep their values in a private one-row table."""
        private = SlotTable(1)
        private.allocate()
        for name in _COLUMNS:
            getattr(private, name)[0] = getattr(self, name)[slot]
        for owner in self._owners.pop(slot, []):
            owner._table, owner._slot = private, 0
        generation = int(self.generation[slot]) + 1
        for name, (_, fresh) in _COLUMNS.items():
            getattr(self, name)[slot] = fresh
        self.generation[slot] = generation  # Completions of the old occupant are ignored.
        self._free.append(slot)


class Slotted:
    """Something whose state lives in one row of a SlotTable."""

    __slots__ = ()
    _table: SlotTable
    _slot: int


class _Int:
    """A Python int attribute stored in a column (`none`: the value standing for None)."""

    def __init__(self, column: str, none: int | None = None) -> None:
        self.column = column
        self.none = none

    def __get__(self, owner: Any, kind: type | None = None) -> Any:
        if owner is None:
            return self
        value = int(getattr(owner._table, self.column).item(owner._slot))
        return None if value == self.none else value

    def __set__(self, owner: Any, value: int | None) -> None:
        getattr(owner._table, self.column)[owner._slot] = self.none if value is None else value


class _Float:
    """A Python float attribute stored in a column (`optional`: NaN stands for None)."""

    def __init__(self, column: str, optional: bool = False) -> None:
        self.column = column
        self.optional = optional

    def __get__(self, owner: Any, kind: type | None = None) -> Any:
        if owner is None:
            return self
        value = float(getattr(owner._table, self.column).item(owner._slot))
        return None if self.optional and value != value else value

    def __set__(self, owner: Any, value: float | None) -> None:
        getattr(owner._table, self.column)[owner._slot] = math.nan if value is None else value


class _Bool:
    def __init__(self, column: str) -> None:
        self.column = column

    def __get__(self, owner: Any, kind: type | None = None) -> Any:
        if owner is None:
            return self
        return bool(getattr(owner._table, self.column).item(owner._slot))

    def __set__(self, owner: Any, value: bool) -> None:
        getattr(owner._table, self.column)[owner._slot] = value


class SlotOutboundStream(OutboundStream, Slotted):
    """An OutboundStream whose relay-path fields live in a SlotTable row."""

    __slots__ = ("_table", "_slot")

    ssrc = _Int("out_ssrc")  # type: ignore[assignment]
    seq = _Int("out_seq")  # type: ignore[assignment]
    ts = _Int("out_ts")  # type: ignore[assignment]
    time = _Float("out_time", optional=True)  # type: ignore[assignment]
    feed = _Int("out_feed", none=NO_FEED)  # type: ignore[assignment]
    held = _Bool("out_held")  # type: ignore[assignment]
    seq_offset = _Int("out_seq_offset")  # type: ignore[assignment]
    ts_offset = _Int("out_ts_offset")  # type: ignore[assignment]

    def __init__(self, table: SlotTable, slot: int) -> None:
        self._table, self._slot = table, slot
        table.own(slot, self)
        super().__init__()


class SlotReceiveStats(ReceiveStats, Slotted):
    """A ReceiveStats whose per-packet fields live in a SlotTable row."""

    __slots__ = ("_table", "_slot")

    ssrc = _Int("rx_ssrc", none=NO_SSRC)  # type: ignore[assignment]
    _max = _Int("rx_max")  # type: ignore[assignment]
    _cycles = _Int("rx_cycles")  # type: ignore[assignment]
    _seen = _Int("rx_seen")  # type: ignore[assignment]
    _received = _Int("rx_received")  # type: ignore[assignment]
    _transit = _Float("rx_transit")  # type: ignore[assignment]
    jitter = _Float("rx_jitter")  # type: ignore[assignment]

    def __init__(self, table: SlotTable, slot: int) -> None:
        self._table, self._slot = table, slot
        table.own(slot, self)
        super().__init__()
