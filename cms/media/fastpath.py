"""The relay's common case for a whole batch of received packets, as numpy array operations.

The common case is what `Leg._on_packet` does for nearly every packet: an RTP audio packet
with the leg's audio payload type, routed to another leg without transcoding, from the SSRC
the target's stream already follows (not held by injected DTMF), continuing the sequence
numbers its receive statistics expect. For those, `relay` does what that code does —
`ReceiveStats.update`'s common branch, the mapping onto the target's `OutboundStream`, the
header rewrite — for all of them at once, on the state in a `SlotTable` and on the headers
in place in the receive buffers; the caller sends them. Every other packet is reported
back, for the per-packet Python path.

A leg's packets must be seen in order. Within one call every leg appears at most once per
round (a second packet of a leg waits for the next round, seeing the state the first left),
and once a leg's packet leaves the common case, its later packets in the batch leave it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .formats import CLOCK_RATE
from .slots import SlotTable
from .stats import _WINDOW_MASK, MAX_DROPOUT

# The fixed RTP header (RFC 3550 5.1), big-endian, laid over a receive buffer's first bytes.
HEADER = np.dtype([("vpxcc", np.uint8), ("mpt", np.uint8), ("seq", ">u2"), ("ts", ">u4"),
                   ("ssrc", ">u4")])
HEADER_SIZE = HEADER.itemsize
_CLOCK = float(CLOCK_RATE)


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
                       left)

    def _round(self, headers: np.ndarray, slots: np.ndarray, bids: np.ndarray,
               lengths: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # One packet per leg: (ok mask, target slots and fds of the ok ones).
        table = self.table
        head = headers[bids]
        seq = head["seq"].astype(np.int64)
        ssrc = head["ssrc"].astype(np.int64)
        targets = table.target[slots]
        # Leg._on_packet's tests, in its order; a target of -1 reads the last row, harmlessly,
        # as the first test already failed.
        ok = (targets >= 0) & (lengths >= HEADER_SIZE) & (head["vpxcc"] & 0xC0 == 0x80)
        ok &= (head["mpt"] & 0x7F) == table.audio_pt[slots]
        ok &= table.rx_ssrc[slots] == ssrc
        highest = table.rx_max[slots]
        step = (seq - highest) & 0xFFFF
        ok &= (step > 0) & (step < MAX_DROPOUT)
        ok &= (table.out_feed[targets] == ssrc) & ~table.out_held[targets]
        ok &= table.send_fd[targets] >= 0
        if not ok.all():
            slots, bids, head, seq, targets, highest, step = (
                slots[ok], bids[ok], head[ok], seq[ok], targets[ok], highest[ok], step[ok])
        ts = head["ts"].astype(np.int64)
        # ReceiveStats.update, its common branch.
        table.rx_cycles[slots] += np.where(seq < highest, 1 << 16, 0)
        table.rx_max[slots] = seq
        seen = table.rx_seen[slots] << np.minimum(step, 31)  # Shifted out past 30 bits.
        table.rx_seen[slots] = (seen | 1) & _WINDOW_MASK
        table.rx_received[slots] += 1
        transit = now * _CLOCK - ts
        delta = np.abs(transit - table.rx_transit[slots])  # NaN before a first transit.
        table.rx_transit[slots] = transit
        jitter = table.rx_jitter[slots]
        table.rx_jitter[slots] = np.where(delta < 2147483648.0,
                                          jitter + (delta - jitter) * 0.0625, jitter)
        # OutboundStream.map_relayed on each target.
        seq = (seq + table.out_seq_offset[targets]) & 0xFFFF
        ts = (ts + table.out_ts_offset[targets]) & 0xFFFFFFFF
        last = table.out_seq[targets]
        table.out_seq[targets] = np.where((seq - last) & 0xFFFF < 0x8000, seq, last)
        last = table.out_ts[targets]
        forward = (ts - last) & 0xFFFFFFFF < 0x80000000
        table.out_ts[targets] = np.where(forward, ts, last)
        table.out_time[targets] = np.where(forward, now, table.out_time[targets])
        # The header the target's phone sees; the marker bit is kept.
        head["mpt"] = (head["mpt"] & 0x80) | table.out_pt[slots]
        head["seq"] = seq
        head["ts"] = ts
        head["ssrc"] = table.out_ssrc[targets]
        headers[bids] = head
        table.received[slots] += 1
        return ok, targets, table.send_fd[targets]
