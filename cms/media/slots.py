"""Per-leg relay state in numpy columns, where compiled code (cms.media.fastpath) relays packets.

A `SlotTable` row ("slot") belongs to one leg on an io_uring reactor. The fields the relay's
common case reads and writes per packet live in the columns, not in Python attributes:
the leg's receive statistics (`SlotReceiveStats`), its outbound stream (`SlotOutboundStream`),
its endpoint's counters, and where its route goes. The classes here are the usual
`ReceiveStats` and `OutboundStream` with those fields as properties over the row, so every
Python path (DTMF, SSRC changes, generated audio, snapshots) keeps working on the same state
the compiled path updates: there is one copy of it, never two to keep in step.
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

# Integer columns (one int64 array, a row per slot), with a fresh row's values.
INT_COLUMNS: dict[str, int] = {
    # The endpoint: the peer-connected socket received through the ring and the one
    # `connected_send` sends on (-1: none), counters, generation (see release).
    "fd": -1,
    "send_fd": -1,
    "received": 0,
    "sent": 0,
    "generation": 0,
    # The leg's route: the target slot (-1: none, or one the compiled path cannot take),
    # the payload type sent there, and the audio payload type this leg accepts.
    "target": NO_SLOT,
    "out_pt": 0,
    "audio_pt": -1,
    # OutboundStream of what this leg sends.
    "out_ssrc": 0,
    "out_seq": 0,
    "out_ts": 0,
    "out_feed": NO_FEED,
    "out_held": 0,
    "out_seq_offset": 0,
    "out_ts_offset": 0,
    # ReceiveStats of what this leg receives (the fields its common case touches).
    "rx_ssrc": NO_SSRC,
    "rx_max": 0,
    "rx_cycles": 0,
    "rx_seen": 0,
    "rx_received": 0,
}
FLOAT_COLUMNS: dict[str, float] = {"out_time": math.nan, "rx_transit": math.nan,
                                   "rx_jitter": 0.0}
# Column numbers, for code that indexes the arrays itself (cms.media.fastpath).
INT = {name: index for index, name in enumerate(INT_COLUMNS)}
FLOAT = {name: index for index, name in enumerate(FLOAT_COLUMNS)}
WIDTH = len(INT_COLUMNS)
FLOAT_WIDTH = len(FLOAT_COLUMNS)
_FRESH_INTS = np.array(list(INT_COLUMNS.values()), dtype=np.int64)
_FRESH_FLOATS = np.array(list(FLOAT_COLUMNS.values()), dtype=np.float64)


class SlotTable:
    """Per-leg state, a row per slot in `ints` and `floats`; each column is also an attribute
    (a view: `table.sent[slot]`). Rows are handed out and taken back."""

    ints: np.ndarray
    floats: np.ndarray
    # The same memory as flat sequences of Python ints and floats: `int_cells[slot * WIDTH +
    # INT[name]]`. One element costs a fraction of a numpy scalar access, for per-packet code.
    int_cells: memoryview
    float_cells: memoryview

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = 0
        self._free: list[int] = []
        self._owners: dict[int, list[Slotted]] = {}
        self.ints = np.zeros((0, len(INT_COLUMNS)), dtype=np.int64)
        self.floats = np.zeros((0, len(FLOAT_COLUMNS)), dtype=np.float64)
        self._grow(capacity)

    def __getattr__(self, name: str) -> np.ndarray:
        # A column view (only reached for names that are not plain attributes).
        if name in INT:
            column: np.ndarray = self.ints[:, INT[name]]
            return column
        if name in FLOAT:
            column = self.floats[:, FLOAT[name]]
            return column
        raise AttributeError(name)

    def _grow(self, capacity: int) -> None:
        # Arrays are replaced, never resized in place: owners look them up per access.
        old = self.capacity
        ints = np.tile(_FRESH_INTS, (capacity, 1))
        floats = np.tile(_FRESH_FLOATS, (capacity, 1))
        ints[:old] = self.ints
        floats[:old] = self.floats
        self.ints, self.floats = ints, floats
        self.int_cells = memoryview(ints).cast("B").cast("q")
        self.float_cells = memoryview(floats).cast("B").cast("d")
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
        """Keep `owner`'s state in `slot` (it is detached on `release`)."""
        owner._table, owner._slot = self, slot
        self._owners[slot].append(owner)

    def release(self, slot: int) -> None:
        """Take a slot back: its owners keep their values in a private one-row table."""
        private = SlotTable(1)
        private.allocate()
        private.ints[0] = self.ints[slot]
        private.floats[0] = self.floats[slot]
        for owner in self._owners.pop(slot, []):
            owner._table, owner._slot = private, 0
        generation = int(self.ints[slot, INT["generation"]]) + 1
        self.ints[slot] = _FRESH_INTS
        self.floats[slot] = _FRESH_FLOATS
        self.ints[slot, INT["generation"]] = generation  # The old occupant's completions are stale.
        self._free.append(slot)


class Slotted:
    """Something whose state lives in one row of a SlotTable."""

    __slots__ = ()
    _table: SlotTable
    _slot: int


class _Int:
    """A Python int attribute stored in an integer column (`none`: the value for None)."""

    def __init__(self, column: str, none: int | None = None) -> None:
        self.index = INT[column]
        self.none = none

    def __get__(self, owner: Any, kind: type | None = None) -> Any:
        if owner is None:
            return self
        value = owner._table.int_cells[owner._slot * WIDTH + self.index]
        return None if value == self.none else value

    def __set__(self, owner: Any, value: int | None) -> None:
        owner._table.int_cells[owner._slot * WIDTH + self.index] = (
            self.none if value is None else value)


class _Float:
    """A Python float attribute stored in a float column (`optional`: NaN stands for None)."""

    def __init__(self, column: str, optional: bool = False) -> None:
        self.index = FLOAT[column]
        self.optional = optional

    def __get__(self, owner: Any, kind: type | None = None) -> Any:
        if owner is None:
            return self
        value = owner._table.float_cells[owner._slot * FLOAT_WIDTH + self.index]
        return None if self.optional and value != value else value

    def __set__(self, owner: Any, value: float | None) -> None:
        owner._table.float_cells[owner._slot * FLOAT_WIDTH + self.index] = (
            math.nan if value is None else value)


class _Bool(_Int):
    """A bool attribute stored in an integer column as 0 or 1."""

    def __get__(self, owner: Any, kind: type | None = None) -> Any:
        if owner is None:
            return self
        return bool(owner._table.int_cells[owner._slot * WIDTH + self.index])

    def __set__(self, owner: Any, value: int | None) -> None:
        owner._table.int_cells[owner._slot * WIDTH + self.index] = 1 if value else 0


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
        table.own(slot, self)
        super().__init__()
