"""The relay's common case for a whole batch of received packets, as numpy array operations.

The common case is what `Leg._on_packet` does for nearly every packet: an RTP audio packet
with the leg's audio payload type, routed to another leg without transcoding, from the SSRC
the target's stream already follows (not held by injected DTMF), continuing the sequence
numbers its receive statistics expect. For those, `relay` does what that code does —
`ReceiveStats.update`'s common branch, the mapping onto the target's `OutboundStream`, the
header rewrite — for all of them at once, on the state in a `SlotTable` and on the headers
in place in the receive buffers; the caller sends them. Every other packet is reported
back, for the per-packet Python path. `relay_one` is the same for a single packet, in plain
Python on the table's flat views: below a few dozen packets, numpy's cost per call is more
than it saves.

A leg's packets must be seen in order. Within one call every leg appears at most once per
round (a second packet of a leg waits for the next round, seeing the state the first left),
and once a leg's packet leaves the common case, its later packets in the batch leave it too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .formats import CLOCK_RATE
from .rtp import FIXED_HEADER
from .slots import FLOAT, FLOAT_WIDTH, INT, WIDTH, SlotTable
from .stats import _WINDOW_MASK, MAX_DROPOUT

# The fixed RTP header (RFC 3550 5.1), big-endian, laid over a receive buffer's first bytes.
HEADER = np.dtype([("vpxcc", np.uint8), ("mpt", np.uint8), ("seq", ">u2"), ("ts", ">u4"),
                   ("ssrc", ">u4")])
HEADER_SIZE = HEADER.itemsize
_CLOCK = float(CLOCK_RATE)
_unpack_header = FIXED_HEADER.unpack_from
_rewrite = struct.Struct("!BHII").pack_into  # Marker/PT, sequence, timestamp, SSRC.


def header_view(data: np.ndarray) -> np.ndarray:
    """The headers of a (buffers, size) uint8 array as one structured array, one per row."""
    view: np.ndarray = data[:, :HEADER_SIZE].view(HEADER)[:, 0]
    return view


@dataclass(slots=True)
class Relayed:
    """What `relay` did with a batch: rewritten packets to send, and the rest, in order."""

    fast: np.ndarray  # Indexes into the batch, rewritten and accounted: send them ...
    targets: np.ndarray  # ... on the slot each one goes to ...
    fds: np.ndarray  # ... through this socket.
    slow: np.ndarray  # Indexes of the packets left for the per-packet path, in batch order.
    rounds: int = 1  # More than one: a leg (so a target) may appear more than once.


class FastPath:
    """Relays batches against one SlotTable (see the module docstring)."""

    def __init__(self, table: SlotTable) -> None:
        self.table = table
        self._mark = np.zeros(0, dtype=np.int64)  # Scratch, by slot: who came first.
        self._blocked = np.zeros(0, dtype=np.bool_)  # Scratch, by slot: left the fast path.

    def relay(self, headers: np.ndarray, slots: np.ndarray, bids: np.ndarray,
              lengths: np.ndarray, now: float) -> Relayed:
        """Relay what the common case covers among packets (slot, buffer id, length)."""
        count = len(slots)
        positions = np.arange(count)
        if len(self._mark) < self.table.capacity:
            self._mark = np.zeros(self.table.capacity, dtype=np.int64)
            self._blocked = np.zeros(self.table.capacity, dtype=np.bool_)
        mark = self._mark
        mark[slots[::-1]] = positions[::-1]  # The first write of a slot is the last one kept.
        if (mark[slots] == positions).all():  # Every leg once: one round.
            ok, targets, fds = self._round(headers, slots, bids, lengths, now)
            return Relayed(positions[ok], targets, fds, positions[~ok])
        return self._rounds(headers, slots, bids, lengths, now)

    def relay_one(self, packet: memoryview, offset: int, length: int, slot: int,
                  now: float) -> int:
        """The common case for one packet at `packet[offset:offset + length]` (a few packets
        cost less this way than through numpy): the target slot it is now rewritten for,
        or -1 (untouched: the per-packet path takes it)."""
        if length < HEADER_SIZE:
            return -1
        first, mpt, seq, ts, ssrc = _unpack_header(packet, offset)
        cells = self.table.int_cells
        row = slot * WIDTH
        target = cells[row + _TARGET]
        highest = cells[row + _RX_MAX]
        step = (seq - highest) & 0xFFFF
        if (target < 0 or first & 0xC0 != 0x80 or mpt & 0x7F != cells[row + _AUDIO_PT]
                or cells[row + _RX_SSRC] != ssrc or not 0 < step < MAX_DROPOUT):
            return -1
        out = target * WIDTH
        if (cells[out + _OUT_FEED] != ssrc or cells[out + _OUT_HELD]
                or cells[out + _SEND_FD] < 0):
            return -1
        # As ReceiveStats.update's common branch.
        if seq < highest:
            cells[row + _RX_CYCLES] += 1 << 16
        cells[row + _RX_MAX] = seq
        cells[row + _RX_SEEN] = ((cells[row + _RX_SEEN] << step) | 1) & _WINDOW_MASK
        cells[row + _RX_RECEIVED] += 1
        cells[row + _RECEIVED] += 1
        floats = self.table.float_cells
        timing = slot * FLOAT_WIDTH
        transit = now * _CLOCK - ts
        delta = transit - floats[timing + _RX_TRANSIT]
        floats[timing + _RX_TRANSIT] = transit
        if delta < 0:
            delta = -delta
        if delta < 2147483648.0:
            jitter = floats[timing + _RX_JITTER]
            floats[timing + _RX_JITTER] = jitter + (delta - jitter) * 0.0625
        # As OutboundStream.map_relayed.
        seq = (seq + cells[out + _OUT_SEQ_OFFSET]) & 0xFFFF
        ts = (ts + cells[out + _OUT_TS_OFFSET]) & 0xFFFFFFFF
        if (seq - cells[out + _OUT_SEQ]) & 0xFFFF < 0x8000:
            cells[out + _OUT_SEQ] = seq
        if (ts - cells[out + _OUT_TS]) & 0xFFFFFFFF < 0x80000000:
            cells[out + _OUT_TS] = ts
            floats[target * FLOAT_WIDTH + _OUT_TIME] = now
        _rewrite(packet, offset + 1, (mpt & 0x80) | cells[row + _OUT_PT], seq, ts,
                 cells[out + _OUT_SSRC])
        return target

    def _rounds(self, headers: np.ndarray, slots: np.ndarray, bids: np.ndarray,
                lengths: np.ndarray, now: float) -> Relayed:
        mark, blocked = self._mark, self._blocked
        remaining = np.arange(len(slots))
        fast, targets, fds, slow = [], [], [], []
        while len(remaining):
            legs = slots[remaining]
            mark[legs[::-1]] = remaining[::-1]
            first = mark[legs] == remaining
            this, remaining = remaining[first], remaining[~first]
            legs = slots[this]
            open_ = ~blocked[legs]
            this_open = this[open_]
            ok, round_targets, round_fds = self._round(headers, legs[open_], bids[this_open],
                                                       lengths[this_open], now)
            fast.append(this_open[ok])
            targets.append(round_targets)
            fds.append(round_fds)
            slow.append(this[~open_])
            slow.append(this_open[~ok])
            blocked[legs[open_][~ok]] = True
        blocked[slots] = False
        left = np.concatenate(slow)
        left.sort()
        return Relayed(np.concatenate(fast), np.concatenate(targets), np.concatenate(fds),
                       left, len(fast))

    def _round(self, headers: np.ndarray, slots: np.ndarray, bids: np.ndarray,
               lengths: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # One packet per leg: (ok mask, target slots and fds of the ok ones). Rows are taken
        # whole and written back by column group: a leg may be one packet's source and
        # another's target in the same round.
        table = self.table
        ints, floats = table.ints, table.floats
        head = headers[bids]
        seq = head["seq"].astype(np.int64)
        ssrc = head["ssrc"].astype(np.int64)
        source = ints[slots]
        targets = source[:, _TARGET]
        target = ints[targets]  # A target of -1 reads the last row: the first test fails.
        # Leg._on_packet's tests, in its order.
        step = (seq - source[:, _RX_MAX]) & 0xFFFF
        ok = ((targets >= 0) & (lengths >= HEADER_SIZE) & ((head["vpxcc"] & 0xC0) == 0x80)
              & ((head["mpt"] & 0x7F) == source[:, _AUDIO_PT])
              & (source[:, _RX_SSRC] == ssrc) & (step > 0) & (step < MAX_DROPOUT)
              & (target[:, _OUT_FEED] == ssrc) & (target[:, _OUT_HELD] == 0)
              & (target[:, _SEND_FD] >= 0))
        if not ok.all():
            slots, bids, head, seq, targets, source, target, step = (
                slots[ok], bids[ok], head[ok], seq[ok], targets[ok], source[ok], target[ok],
                step[ok])
        ts = head["ts"].astype(np.int64)
        # ReceiveStats.update, its common branch.
        highest = source[:, _RX_MAX]
        source[:, _RX_CYCLES] += (seq < highest) << 16
        source[:, _RX_MAX] = seq
        source[:, _RX_SEEN] = ((source[:, _RX_SEEN] << np.minimum(step, 31)) | 1) & _WINDOW_MASK
        source[:, _RX_RECEIVED] += 1
        source[:, _RECEIVED] += 1
        ints[slots[:, None], _SOURCE_COLUMNS] = source[:, _SOURCE_COLUMNS]
        timing = floats[slots]
        transit = now * _CLOCK - ts
        delta = np.abs(transit - timing[:, _RX_TRANSIT])  # NaN before a first transit.
        jitter = timing[:, _RX_JITTER]
        timing[:, _RX_JITTER] = np.where(delta < 2147483648.0,
                                         jitter + (delta - jitter) * 0.0625, jitter)
        timing[:, _RX_TRANSIT] = transit
        floats[slots[:, None], _RX_TIMING] = timing[:, _RX_TIMING]
        # OutboundStream.map_relayed on each target.
        seq = (seq + target[:, _OUT_SEQ_OFFSET]) & 0xFFFF
        ts = (ts + target[:, _OUT_TS_OFFSET]) & 0xFFFFFFFF
        last = target[:, _OUT_SEQ]
        target[:, _OUT_SEQ] = np.where((seq - last) & 0xFFFF < 0x8000, seq, last)
        last = target[:, _OUT_TS]
        forward = (ts - last) & 0xFFFFFFFF < 0x80000000
        target[:, _OUT_TS] = np.where(forward, ts, last)
        ints[targets[:, None], _TARGET_COLUMNS] = target[:, _TARGET_COLUMNS]
        if forward.all():
            floats[targets, _OUT_TIME] = now
        else:
            floats[targets[forward], _OUT_TIME] = now
        # The header the target's phone sees; the marker bit is kept.
        head["mpt"] = (head["mpt"] & 0x80) | source[:, _OUT_PT]
        head["seq"] = seq
        head["ts"] = ts
        head["ssrc"] = target[:, _OUT_SSRC]
        headers[bids] = head
        return ok, targets, target[:, _SEND_FD]


_TARGET, _AUDIO_PT, _OUT_PT = INT["target"], INT["audio_pt"], INT["out_pt"]
_RX_SSRC, _RX_MAX, _RX_CYCLES = INT["rx_ssrc"], INT["rx_max"], INT["rx_cycles"]
_RX_SEEN, _RX_RECEIVED, _RECEIVED = INT["rx_seen"], INT["rx_received"], INT["received"]
_OUT_FEED, _OUT_HELD, _SEND_FD = INT["out_feed"], INT["out_held"], INT["send_fd"]
_OUT_SEQ, _OUT_TS, _OUT_SSRC = INT["out_seq"], INT["out_ts"], INT["out_ssrc"]
_OUT_SEQ_OFFSET, _OUT_TS_OFFSET = INT["out_seq_offset"], INT["out_ts_offset"]
_RX_TRANSIT, _RX_JITTER, _OUT_TIME = FLOAT["rx_transit"], FLOAT["rx_jitter"], FLOAT["out_time"]
# What a round writes: a source's receive columns, a target's outbound ones.
_SOURCE_COLUMNS = np.array([_RX_MAX, _RX_CYCLES, _RX_SEEN, _RX_RECEIVED, _RECEIVED])
_TARGET_COLUMNS = np.array([_OUT_SEQ, _OUT_TS])
_RX_TIMING = np.array([_RX_TRANSIT, _RX_JITTER])
