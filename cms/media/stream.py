"""RTP header continuity of one outgoing stream, whatever feeds it (relay, generated, DTMF).

RFC 3550 as the receiving phone sees it: one SSRC for the whole call; sequence numbers
continue by +1 when the feed switches; timestamps never step back, and step forward by the
wall-clock time since the last packet (at least one frame), so jitter buffers stay sane.
The relay hot path maps a relayed packet with the public offsets and updates `seq`, `ts`
and `time` itself; everything else goes through the methods here.
"""

from __future__ import annotations

import secrets

from .formats import CLOCK_RATE, FRAME_SAMPLES

SEQ_MASK = 0xFFFF
TS_MASK = 0xFFFFFFFF
HALF_SEQ = 0x8000
HALF_TS = 0x80000000

# Feed tokens; a relayed feed is identified by the source's SSRC (0 .. 2**32 - 1).
GENERATED = -1
DTMF = -2


class OutboundStream:
    """Sequence, timestamp and SSRC state of what one leg sends."""

    __slots__ = ("ssrc", "clock_rate", "seq", "ts", "time", "feed", "held", "seq_offset",
                 "ts_offset", "_tick", "_event_ts")

    def __init__(self, ssrc: int | None = None, clock_rate: int = CLOCK_RATE) -> None:
        # RFC 3550 §5.1: random SSRC, initial sequence number and timestamp.
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self.clock_rate = clock_rate
        self.seq = secrets.randbits(16)  # Highest sequence number sent.
        self.ts = secrets.randbits(32)  # Media position (timestamp) reached ...
        self.time: float | None = None  # ... at this monotonic time; None before any packet.
        self.feed: int | None = None  # Who feeds the stream now; None: next feed re-anchors.
        self.held = False  # Generated DTMF owns the stream: drop relayed and generated audio.
        self.seq_offset = 0  # Relayed packet -> outgoing: add these (mod 2**16, 2**32).
        self.ts_offset = 0
        self._tick = 0
        self._event_ts = 0

    def release(self) -> None:
        """Whatever feeds the stream next starts a new anchor (a switch of source)."""
        self.feed = None

    def anchor(self, now: float) -> int:
        """The timestamp for a switch at `now`: last position plus elapsed time, >= 1 frame."""
        elapsed = FRAME_SAMPLES
        if self.time is not None:
            elapsed = max(FRAME_SAMPLES, round((now - self.time) * self.clock_rate))
        return (self.ts + elapsed) & TS_MASK

    def follow(self, sequence: int, timestamp: int, ssrc: int, now: float) -> None:
        """Map a new relayed source onto this stream, its next packet continuing it."""
        self.seq_offset = (self.seq + 1 - sequence) & SEQ_MASK
        self.ts_offset = (self.anchor(now) - timestamp) & TS_MASK
        self.feed = ssrc

    def map_relayed(self, sequence: int, timestamp: int, now: float) -> tuple[int, int]:
        """(sequence, timestamp) out for a relayed packet of the followed source."""
        sequence = (sequence + self.seq_offset) & SEQ_MASK
        timestamp = (timestamp + self.ts_offset) & TS_MASK
        if (sequence - self.seq) & SEQ_MASK < HALF_SEQ:
            self.seq = sequence
        if (timestamp - self.ts) & TS_MASK < HALF_TS:
            self.ts = timestamp
            self.time = now
        return sequence, timestamp

    def next_generated(self, tick: int, now: float) -> tuple[int, int, bool]:
        """(sequence, timestamp, marker) of a generated audio packet sent on clock `tick`."""
        marker = self.feed != GENERATED
        self._step(tick, marker, now)
        self.feed = GENERATED
        return self.seq, self.ts, marker

    def next_event(self, tick: int, start: bool, now: float) -> tuple[int, int]:
        """(sequence, timestamp) of a generated telephone-event packet on clock `tick`.

        All packets of one event carry its start timestamp (RFC 4733 §2.3.1); the media
        position still advances with the clock so what follows the event continues after it.
        """
        start = start or self.feed != DTMF
        self._step(tick, start, now)
        if start:
            self._event_ts = self.ts
            self.feed = DTMF
        return self.seq, self._event_ts

    def _step(self, tick: int, reanchor: bool, now: float) -> None:
        """Advance to the next generated packet on clock `tick`."""
        if reanchor:
            self.ts = self.anchor(now)
        else:
            # Ticks the clock skipped show as a timestamp jump, as on a real phone.
            self.ts = (self.ts + (tick - self._tick) * FRAME_SAMPLES) & TS_MASK
        self._tick = tick
        self.seq = (self.seq + 1) & SEQ_MASK
        self.time = now
