"""Codecs and the media format a leg negotiated in SDP (payload types, packet time)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import g711

CLOCK_RATE = 8000  # G.711 and telephone-event/8000: one timestamp unit per sample.
FRAME_MS = 20
FRAME_SAMPLES = CLOCK_RATE * FRAME_MS // 1000  # 160


@dataclass(frozen=True, slots=True)
class Codec:
    """An audio codec: its SDP encoding name and static RTP payload type (RFC 3551)."""

    name: str
    static_payload_type: int
    encode: Callable[[g711.Samples], bytes]
    decode: Callable[[bytes | bytearray | memoryview], g711.Samples]
    clock_rate: int = CLOCK_RATE


PCMU = Codec("PCMU", 0, g711.ulaw_encode, g711.ulaw_decode)
PCMA = Codec("PCMA", 8, g711.alaw_encode, g711.alaw_decode)
CODECS = {codec.name: codec for codec in (PCMU, PCMA)}

_TRANSCODE = {(PCMU.name, PCMA.name): g711.ULAW_TO_ALAW, (PCMA.name, PCMU.name): g711.ALAW_TO_ULAW}


def transcode_table(source: Codec, target: Codec) -> bytes | None:
    """The `bytes.translate` table from source to target codec; None when they are the same."""
    if source.name == target.name:
        return None
    return _TRANSCODE[(source.name, target.name)]


def silence_payload(codec: Codec, samples: int = FRAME_SAMPLES) -> bytes:
    """A payload of digital silence in this codec."""
    return codec.encode(np.zeros(samples, dtype=np.int16))


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaFormat:
    """What one leg negotiated: audio codec and payload type, telephone-event payload type."""

    codec: Codec = PCMU
    payload_type: int = -1  # -1: the codec's static payload type.
    dtmf_payload_type: int | None = 101
    ptime_ms: int = FRAME_MS

    def __post_init__(self) -> None:
        if self.payload_type == -1:
            object.__setattr__(self, "payload_type", self.codec.static_payload_type)
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type out of range: {self.payload_type}")
        if self.dtmf_payload_type is not None and not 96 <= self.dtmf_payload_type <= 127:
            raise ValueError(f"telephone-event needs a dynamic payload type: "
                             f"{self.dtmf_payload_type}")
        if self.dtmf_payload_type == self.payload_type:
            raise ValueError("audio and telephone-event share a payload type")
        if self.ptime_ms <= 0 or self.ptime_ms % 10:
            raise ValueError(f"ptime must be a positive multiple of 10 ms: {self.ptime_ms}")

    @property
    def samples_per_packet(self) -> int:
        """Timestamp units (samples) in one packet."""
        return self.codec.clock_rate * self.ptime_ms // 1000
