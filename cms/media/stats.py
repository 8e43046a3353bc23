"""Receive statistics of one RTP stream: loss, duplicates and interarrival jitter (RFC 3550 A)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .formats import CLOCK_RATE

SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000  # RFC 3550 A.1: a forward jump larger than this is suspicious ...
MAX_MISORDER = 100  # ... and a packet this far behind the highest is late, not a restart.
# Sequence numbers behind the highest for which duplicates are recognised (600 ms at 20 ms);
# 30 bits keep the bit set a one-digit Python int, which is cheapest to shift.
_WINDOW = 30
_WINDOW_MASK = (1 << _WINDOW) - 1
_NO_TRANSIT = math.nan  # No packet's transit time known yet (see ReceiveStats.update).


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamStats:
    """A snapshot of one received stream, to store with the call record."""

    ssrc: int | None
    packets_received: int  # Distinct packets (duplicates not counted).
    packets_expected: int
    packets_lost: int
    loss_fraction: float  # Cumulative: lost / expected.
    interval_loss_fraction: float  # Since the previous report (RFC 3550 "fraction lost").
    jitter: float  # Interarrival jitter in timestamp units (RFC 3550 A.8).
    jitter_ms: float
    duplicates: int
    late: int  # Arrived after a later-numbered packet (reordered or duplicate too old to tell).
    restarts: int  # Sequence or SSRC discontinuities treated as a new source.
    highest_sequence: int  # Extended (cycles * 65536 + sequence).


class ReceiveStats:
    """Per-stream receive statistics updated per packet; `snapshot()` freezes them.

    Sources come from a negotiated peer, so there is no RFC 3550 probation: the first packet
    initialises the stream. A new SSRC, or two sequential packets after a jump beyond
    MAX_DROPOUT, start a new stream whose counts add to the previous ones.
    """

    __slots__ = ("clock_rate", "ssrc", "jitter", "duplicates", "late", "restarts", "_base",
                 "_max", "_cycles", "_received", "_seen", "_bad", "_transit",
                 "_done_expected", "_done_received", "_prior_expected", "_prior_received")

    def __init__(self, clock_rate: int = CLOCK_RATE) -> None:
        # A float: float * float is CPython's fast path, float * int not.
        self.clock_rate = float(clock_rate)
        self.ssrc: int | None = None
        self.jitter = 0.0
        self.duplicates = 0
        self.late = 0
        self.restarts = -1  # The first packet's initialisation is not a restart.
        self._base = 0
        self._max = 0  # Highest sequence seen, 16 bits.
        self._cycles = 0
        self._received = 0
        self._seen = 0  # Bit k: sequence (max - k) arrived.
        self._bad = SEQ_MOD + 1
        self._transit = _NO_TRANSIT
        self._done_expected = 0  # Counts of earlier sources (before a restart).
        self._done_received = 0
        self._prior_expected = 0
        self._prior_received = 0

    def update(self, sequence: int, timestamp: int, ssrc: int, arrival: float) -> None:
        """Account one audio packet arriving at `arrival` (seconds, monotonic)."""
        highest = self._max
        step = (sequence - highest) & 0xFFFF
        if ssrc == self.ssrc and 0 < step < MAX_DROPOUT:
            # The common case, inlined from update_sequence: this runs for every packet.
            if sequence < highest:
                self._cycles += SEQ_MOD
            self._max = sequence
            self._seen = ((self._seen << step) | 1) & _WINDOW_MASK
            self._received += 1
        elif not self.update_sequence(sequence, ssrc):
            return
        # Interarrival jitter (RFC 3550 A.8), in timestamp units; the transit time's constant
        # offset cancels out in the difference. Before a first transit, _transit is NaN: then
        # the comparisons below are false and the jitter is left alone.
        transit = arrival * self.clock_rate - timestamp
        delta = transit - self._transit
        self._transit = transit
        if delta < 0:
            delta = -delta
        if delta < 2147483648.0:  # A timestamp wrap is not jitter.
            self.jitter += (delta - self.jitter) * 0.0625

    def update_sequence(self, sequence: int, ssrc: int) -> bool:
        """Account one packet's sequence number (non-audio payloads: no jitter); False if
        it is a duplicate or cannot be placed."""
        if ssrc != self.ssrc:
            self._restart(sequence, ssrc)
            return True
        delta = (sequence - self._max) & 0xFFFF
        if 0 < delta < MAX_DROPOUT:
            if sequence < self._max:
                self._cycles += SEQ_MOD
            self._max = sequence
            self._seen = ((self._seen << delta) | 1) & _WINDOW_MASK
        elif delta == 0 or delta > SEQ_MOD - MAX_MISORDER:
            behind = (self._max - sequence) & 0xFFFF
            if behind < _WINDOW and self._seen >> behind & 1:
                self.duplicates += 1
                return False
            self.late += 1
            if behind < _WINDOW:
                self._seen |= 1 << behind
        elif sequence == self._bad:
            # Two sequential packets after a big jump: the source restarted its numbering.
            self._restart(sequence, ssrc)
            return True
        else:
            self._bad = (sequence + 1) & 0xFFFF
            return False
        self._received += 1
        return True

    def _restart(self, sequence: int, ssrc: int) -> None:
        if self.ssrc is not None:
            self._done_expected += self._expected()
            self._done_received += self._received
        self.ssrc = ssrc
        self.restarts += 1
        self._base = self._max = sequence
        self._cycles = 0
        self._received = 1
        self._seen = 1
        self._bad = SEQ_MOD + 1
        self._transit = _NO_TRANSIT

    def _expected(self) -> int:
        return self._cycles + self._max - self._base + 1 if self.ssrc is not None else 0

    def snapshot(self) -> StreamStats:
        """The statistics so far; the interval loss fraction is since the last `report()`."""
        expected = self._done_expected + self._expected()
        received = self._done_received + self._received
        lost = max(0, expected - received)
        interval_expected = expected - self._prior_expected
        interval_lost = interval_expected - (received - self._prior_received)
        return StreamStats(
            ssrc=self.ssrc,
            packets_received=received,
            packets_expected=expected,
            packets_lost=lost,
            loss_fraction=lost / expected if expected else 0.0,
            interval_loss_fraction=(max(0, interval_lost) / interval_expected
                                    if interval_expected > 0 else 0.0),
            jitter=self.jitter,
            jitter_ms=1000.0 * self.jitter / self.clock_rate,
            duplicates=self.duplicates,
            late=self.late,
            restarts=max(0, self.restarts),
            highest_sequence=self._cycles + self._max,
        )

    def report(self) -> StreamStats:
        """A snapshot that also starts a new interval for the interval loss fraction."""
        snapshot = self.snapshot()
        self._prior_expected = snapshot.packets_expected
        self._prior_received = snapshot.packets_received
        return snapshot
