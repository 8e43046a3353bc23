"""RFC 4733 telephone-events: payload codec, a sender of one packet per 20 ms, and a detector."""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from .formats import CLOCK_RATE, FRAME_SAMPLES

# RFC 4733 §3.2: events 0-9, *, #, A-D, flash.
DIGITS = "0123456789*#ABCD"
FLASH = 16
_PAYLOAD = struct.Struct("!BBH")
MAX_DURATION = 0xFFFF
END_REPEATS = 3  # RFC 4733 §2.5.1.4: the final packet is sent three times.


class DtmfError(ValueError):
    """Bytes that are not a telephone-event payload, or an unknown digit."""


def digit_to_event(digit: str) -> int:
    """The RFC 4733 event code of a DTMF digit ("0"-"9", "*", "#", "A"-"D")."""
    index = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise DtmfError(f"not a DTMF digit: {digit!r}")
    return index


def event_to_digit(event: int) -> str:
    """The DTMF digit of an event code; "!" for hook flash, "?" for other events."""
    if 0 <= event < len(DIGITS):
        return DIGITS[event]
    return "!" if event == FLASH else "?"


@dataclass(frozen=True, slots=True, kw_only=True)
class TelephoneEvent:
    """One telephone-event payload (RFC 4733 §2.3)."""

    event: int
    end: bool = False
    volume: int = 10  # Power level in -dBm0, 0..63.
    duration: int = 0  # In timestamp units since the event's timestamp.

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError(f"event out of range: {self.event}")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"volume out of range: {self.volume}")
        if not 0 <= self.duration <= MAX_DURATION:
            raise ValueError(f"duration out of range: {self.duration}")

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> TelephoneEvent:
        """Decode a 4-byte payload (extra bytes, from redundant blocks, are ignored)."""
        if len(data) < 4:
            raise DtmfError(f"telephone-event payload too short: {len(data)} bytes")
        event, flags, duration = _PAYLOAD.unpack_from(data, 0)
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def serialize(self) -> bytes:
        """The 4-byte payload."""
        return _PAYLOAD.pack(self.event, self.end << 7 | self.volume, self.duration)

    @property
    def digit(self) -> str:
        """The digit this event stands for."""
        return event_to_digit(self.event)


@dataclass(frozen=True, slots=True)
class DtmfPacket:
    """A telephone-event packet to send; every packet of one event shares its RTP timestamp.

    `marker` is set on an event's first packet: the sender's stream starts the event there.
    """

    payload: bytes
    marker: bool
    end: bool


class DtmfSender:
    """Yields one packet per 20 ms tick for a string of digits, then None when idle.

    Each digit: a first packet with the marker bit, updates every tick with a growing
    duration, the final packet (end bit) three times, then a pause before the next digit.
    """

    def __init__(self, digits: str = "", *, duration_ms: int = 100, pause_ms: int = 60,
                 volume: int = 10) -> None:
        if duration_ms < 20 or pause_ms < 0:
            raise ValueError("duration must be at least 20 ms and pause not negative")
        self._ticks_on = max(1, duration_ms * CLOCK_RATE // 1000 // FRAME_SAMPLES)
        self._ticks_pause = -(-pause_ms * CLOCK_RATE // 1000 // FRAME_SAMPLES)
        self._volume = volume
        self._queue: deque[int] = deque()
        self._tick = 0  # Ticks since the current digit started.
        self.add(digits)

    def add(self, digits: str) -> None:
        """Queue more digits."""
        self._queue.extend(digit_to_event(d) for d in digits)

    @property
    def busy(self) -> bool:
        """True while a digit or a pause remains to be played."""
        return bool(self._queue)

    @property
    def sending(self) -> bool:
        """True while the current tick belongs to a digit's packets (not its pause)."""
        return bool(self._queue) and self._tick < self._ticks_on + END_REPEATS - 1

    def next_packet(self) -> DtmfPacket | None:
        """The packet for this 20 ms tick, or None (pause or idle)."""
        if not self._queue:
            return None
        tick = self._tick
        self._tick += 1
        last_on = self._ticks_on - 1
        packet: DtmfPacket | None = None
        if tick <= last_on + END_REPEATS - 1:
            end = tick >= last_on
            duration = FRAME_SAMPLES * (min(tick, last_on) + 1)
            event = TelephoneEvent(event=self._queue[0], end=end, volume=self._volume,
                                   duration=min(duration, MAX_DURATION))
            packet = DtmfPacket(event.serialize(), tick == 0, end)
        if tick >= last_on + END_REPEATS - 1 + self._ticks_pause:
            self._queue.popleft()
            self._tick = 0
        return packet


@dataclass(frozen=True, slots=True)
class DigitPressed:
    """A new telephone-event began (reported once, from whichever of its packets came first)."""

    digit: str
    event: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class DigitReleased:
    """A telephone-event ended; `duration_ms` from its end packet."""

    digit: str
    event: int
    timestamp: int
    duration_ms: float


DtmfNotice = DigitPressed | DigitReleased


class DtmfDetector:
    """Turns received telephone-event packets into one press and one release per event.

    An event is known by its RTP timestamp (RFC 4733 §2.5.2), so lost start packets,
    repeated end packets and late reordered packets do not duplicate or lose a digit.
    """

    def __init__(self, clock_rate: int = CLOCK_RATE, memory: int = 16) -> None:
        self._clock_rate = clock_rate
        self._pressed: deque[tuple[int, int]] = deque(maxlen=memory)
        self._released: deque[tuple[int, int]] = deque(maxlen=memory)

    def feed(self, payload: bytes | bytearray | memoryview, timestamp: int
             ) -> tuple[DtmfNotice, ...]:
        """Notices for one received telephone-event packet; () for repeats or bad payloads."""
        try:
            event = TelephoneEvent.parse(payload)
        except DtmfError:
            return ()
        key = (timestamp, event.event)
        notices: list[DtmfNotice] = []
        if key not in self._pressed and key not in self._released:
            self._pressed.append(key)
            notices.append(DigitPressed(event.digit, event.event, timestamp))
        if event.end and key not in self._released:
            self._released.append(key)
            notices.append(DigitReleased(event.digit, event.event, timestamp,
                                         1000.0 * event.duration / self._clock_rate))
        return tuple(notices)
