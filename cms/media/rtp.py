"""RTP packets (RFC 3550 §5.1): parse and serialize, plus header peeks for the relay hot path."""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
HEADER_SIZE = 12
MAX_SEQUENCE = 0xFFFF
MAX_TIMESTAMP = 0xFFFFFFFF

# Fixed header: V/P/X/CC, M/PT, sequence, timestamp, SSRC.
FIXED_HEADER = struct.Struct("!BBHII")
# Sequence, timestamp and SSRC as one unit at offset 2, for peeking and rewriting in place.
SEQ_TS_SSRC = struct.Struct("!HII")
_EXTENSION_HEADER = struct.Struct("!HH")


class RtpError(ValueError):
    """The bytes are not a valid RTP packet."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RtpPacket:
    """One RTP packet; `payload` excludes padding, `padding` is the pad length to emit."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    # (profile, data): RFC 3550 §5.3.1 header extension; data is a multiple of 4 bytes.
    extension: tuple[int, bytes] | None = None
    padding: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type out of range: {self.payload_type}")
        if not 0 <= self.sequence <= MAX_SEQUENCE:
            raise ValueError(f"sequence out of range: {self.sequence}")
        if not 0 <= self.timestamp <= MAX_TIMESTAMP:
            raise ValueError(f"timestamp out of range: {self.timestamp}")
        if not 0 <= self.ssrc <= MAX_TIMESTAMP:
            raise ValueError(f"SSRC out of range: {self.ssrc}")
        if len(self.csrc) > 15 or any(not 0 <= c <= MAX_TIMESTAMP for c in self.csrc):
            raise ValueError("at most 15 CSRCs, each 32 bits")
        if self.extension is not None:
            profile, data = self.extension
            if not 0 <= profile <= 0xFFFF or len(data) % 4 or len(data) > 4 * 0xFFFF:
                raise ValueError("extension: 16-bit profile and data a multiple of 4 bytes")
        if not 0 <= self.padding <= 255:
            raise ValueError(f"padding out of range: {self.padding}")

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        """Parse one RTP packet; raises RtpError if it is not valid RTP version 2."""
        start, end = payload_bounds(data, len(data))
        first, second, sequence, timestamp, ssrc = FIXED_HEADER.unpack_from(data, 0)
        count = first & 0x0F
        csrc = struct.unpack_from(f"!{count}I", data, HEADER_SIZE) if count else ()
        extension = None
        if first & 0x10:
            offset = HEADER_SIZE + 4 * count
            profile, _ = _EXTENSION_HEADER.unpack_from(data, offset)
            extension = (profile, bytes(data[offset + 4:start]))
        return cls(payload_type=second & 0x7F, sequence=sequence, timestamp=timestamp,
                   ssrc=ssrc, payload=bytes(data[start:end]), marker=bool(second & 0x80),
                   csrc=tuple(csrc), extension=extension, padding=len(data) - end)

    def serialize(self) -> bytes:
        """The packet as bytes on the wire."""
        first = RTP_VERSION << 6 | len(self.csrc)
        if self.padding:
            first |= 0x20
        if self.extension is not None:
            first |= 0x10
        parts = [FIXED_HEADER.pack(first, self.marker << 7 | self.payload_type, self.sequence,
                                   self.timestamp, self.ssrc)]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            profile, data = self.extension
            parts.append(_EXTENSION_HEADER.pack(profile, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)

    def __bytes__(self) -> bytes:
        return self.serialize()


def payload_bounds(data: bytes | bytearray | memoryview, length: int) -> tuple[int, int]:
    """(start, end) of the payload in the first `length` bytes; raises RtpError if not RTP.

    Checks RFC 3550 A.1: version 2, CSRC list, extension and padding fit in the packet, and
    the payload type is not one that RTCP SR/RR would show (72, 73) when multiplexed.
    """
    if length < HEADER_SIZE:
        raise RtpError(f"too short for RTP: {length} bytes")
    first = data[0]
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6}, expected 2")
    if data[1] & 0x7F in (72, 73):
        raise RtpError("payload type 72/73: an RTCP packet, not RTP")
    start = HEADER_SIZE + 4 * (first & 0x0F)
    if first & 0x10:
        if length < start + 4:
            raise RtpError("truncated header extension")
        (words,) = struct.unpack_from("!H", data, start + 2)
        start += 4 + 4 * words
    end = length
    if first & 0x20:
        pad = data[length - 1]
        if pad == 0:
            raise RtpError("padding bit set with a zero pad count")
        end -= pad
    if start > end:
        raise RtpError("header, extension or padding longer than the packet")
    return start, end


def is_plain(data: bytes | bytearray | memoryview) -> bool:
    """True for version 2 without padding, extension or CSRCs: payload starts at byte 12."""
    return data[0] == 0x80


def peek_payload_type(data: bytes | bytearray | memoryview) -> int:
    """The payload type of a packet, without parsing it."""
    return data[1] & 0x7F


def peek_marker(data: bytes | bytearray | memoryview) -> bool:
    """The marker bit of a packet, without parsing it."""
    return bool(data[1] & 0x80)


def peek_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(sequence, timestamp, ssrc) of a packet, without parsing it."""
    sequence, timestamp, ssrc = SEQ_TS_SSRC.unpack_from(data, 2)
    return sequence, timestamp, ssrc


def peek_sequence(data: bytes | bytearray | memoryview) -> int:
    """The sequence number of a packet, without parsing it."""
    return int(struct.unpack_from("!H", data, 2)[0])


def peek_timestamp(data: bytes | bytearray | memoryview) -> int:
    """The timestamp of a packet, without parsing it."""
    return int(struct.unpack_from("!I", data, 4)[0])


def peek_ssrc(data: bytes | bytearray | memoryview) -> int:
    """The SSRC of a packet, without parsing it."""
    return int(struct.unpack_from("!I", data, 8)[0])
