"""Media of a test phone: a `cms.media` leg that plays a source and records what it hears.

The recording is judged in blocks of 100 ms (level and dominant FFT frequency),
so a test or driver can tell whose tone a phone heard, and from when.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from cms.media.endpoint import Address
from cms.media.formats import CLOCK_RATE, CODECS, PCMU, Codec, MediaFormat
from cms.media.relay import Leg
from cms.media.rtp import RtpError, payload_bounds
from cms.media.service import MediaService
from cms.media.sources import AudioSource
from cms.sip.sdp import Direction, Negotiated

BLOCK_PACKETS = 5  # Audio is judged in blocks of 5 packets (100 ms at 20 ms ptime).
SILENCE_DBFS = -50.0  # Quieter than this is not "audio heard".
TONE_TOLERANCE_HZ = 20.0
MAX_RECORDED_PACKETS = 3000  # One minute at 20 ms; later packets are counted, not kept.


def dominant_frequency(samples: np.ndarray) -> float:
    """The frequency (Hz, 8 kHz audio) of the strongest FFT bin, DC excluded."""
    if samples.size < 16:
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * CLOCK_RATE / samples.size)


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level relative to a full-scale square wave (a full-scale sine is -3 dBFS)."""
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return 20.0 * float(np.log10(max(rms, 1e-3) / 32768.0))


@dataclass(frozen=True, slots=True)
class ReceivedPacket:
    """One RTP packet a call's media leg received (from its negotiated peer only)."""

    arrival: float  # time.monotonic()
    payload_type: int
    sequence: int
    ssrc: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class AudioBlock:
    """About 100 ms of received audio: when it began, its level and dominant frequency."""

    arrival: float
    level_dbfs: float
    frequency: float


class Recording:
    """What a media leg received, kept for analysis (the first MAX_RECORDED_PACKETS)."""

    def __init__(self, limit: int = MAX_RECORDED_PACKETS) -> None:
        self.limit = limit
        self.packets: list[ReceivedPacket] = []
        self.count = 0

    def add(self, buf: bytearray, length: int) -> None:
        """Keep one packet (called from the leg's socket reader)."""
        self.count += 1
        if len(self.packets) >= self.limit:
            return
        try:
            start, end = payload_bounds(buf, length)
        except RtpError:
            return
        sequence = buf[2] << 8 | buf[3]
        ssrc = int.from_bytes(buf[8:12], "big")
        self.packets.append(ReceivedPacket(time.monotonic(), buf[1] & 0x7F, sequence, ssrc,
                                           bytes(buf[start:end])))

    def audio_packets(self, payload_type: int, since: float = 0.0) -> list[ReceivedPacket]:
        """Audio packets of one payload type that arrived at or after `since`."""
        return [p for p in self.packets if p.payload_type == payload_type and p.arrival >= since]

    def samples(self, codec: Codec, payload_type: int, since: float = 0.0) -> np.ndarray:
        """The decoded audio, in arrival order."""
        packets = self.audio_packets(payload_type, since)
        if not packets:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate([codec.decode(p.payload) for p in packets])

    def blocks(self, codec: Codec, payload_type: int) -> list[AudioBlock]:
        """The audio cut into blocks of BLOCK_PACKETS packets, each with level and frequency."""
        packets = self.audio_packets(payload_type)
        blocks = []
        for first in range(0, len(packets) - BLOCK_PACKETS + 1, BLOCK_PACKETS):
            chunk = packets[first:first + BLOCK_PACKETS]
            audio = np.concatenate([codec.decode(p.payload) for p in chunk])
            blocks.append(AudioBlock(chunk[0].arrival, level_dbfs(audio),
                                     dominant_frequency(audio)))
        return blocks


def is_tone(block: AudioBlock, frequency: float, tolerance: float = TONE_TOLERANCE_HZ) -> bool:
    """True when a block is audible and dominated by `frequency`."""
    return block.level_dbfs > SILENCE_DBFS and abs(block.frequency - frequency) <= tolerance


class CallMedia:
    """One call's RTP: a `cms.media` leg that plays a source and records what it receives."""

    def __init__(self, service: MediaService, name: str) -> None:
        self.service = service
        self.leg: Leg = service.open_leg(name=name)
        self.recording = Recording()
        self.negotiated: Negotiated | None = None
        self.source: AudioSource | None = None
        inner = self.leg.endpoint.sink

        def sink(buf: bytearray, length: int) -> None:
            self.recording.add(buf, length)
            inner(buf, length)

        self.leg.endpoint.sink = sink

    @property
    def address(self) -> Address:
        """Our RTP (host, port), for SDP."""
        return self.leg.local_address

    @property
    def codec(self) -> Codec:
        """The negotiated audio codec (PCMU before negotiation)."""
        if self.negotiated is None:
            return PCMU
        return CODECS.get(self.negotiated.codec.name.upper(), PCMU)

    @property
    def payload_type(self) -> int:
        """The negotiated audio payload type."""
        return self.negotiated.codec.payload_type if self.negotiated else 0

    def configure(self, negotiated: Negotiated) -> None:
        """Apply negotiated SDP: codec, payload types and where the peer's RTP is."""
        self.negotiated = negotiated
        media_format = MediaFormat(
            codec=self.codec, payload_type=negotiated.codec.payload_type,
            dtmf_payload_type=negotiated.telephone_event_pt, ptime_ms=negotiated.ptime,
        )
        self.leg.configure(media_format, negotiated.remote if negotiated.remote[1] else None)
        self.apply_direction(negotiated.direction)

    def apply_direction(self, direction: Direction) -> None:
        """Send the source when the direction lets us send, else send nothing."""
        if direction in ("sendrecv", "sendonly") and self.source is not None:
            if self.leg.playing is not self.source:
                self.leg.play(self.source)
        else:
            self.leg.stop_audio()

    def play(self, source: AudioSource | None) -> None:
        """What to send once media flows (now, if it already does)."""
        self.source = source
        if self.negotiated is not None:
            self.apply_direction(self.negotiated.direction)

    def send_dtmf(self, digits: str) -> None:
        """Send RFC 4733 digits (needs telephone-event in the negotiated SDP)."""
        self.leg.send_dtmf(digits)

    def blocks(self) -> list[AudioBlock]:
        """What was received, in 100 ms blocks."""
        return self.recording.blocks(self.codec, self.payload_type)

    def samples(self, since: float = 0.0) -> np.ndarray:
        """Received audio since a monotonic time."""
        return self.recording.samples(self.codec, self.payload_type, since)

    def close(self) -> None:
        """Stop sending and free the RTP port (the recording stays)."""
        if not self.leg.endpoint.closed:
            self.service.close_leg(self.leg)
