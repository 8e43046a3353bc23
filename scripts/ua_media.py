"""Media of a test phone: a `cms.media` leg that plays a source and records what it hears.

The recording is judged in blocks of 100 ms (level and dominant FFT frequency),
so a test or driver can tell whose tone a phone heard, and from when. A leg opened
without a recording only counts what it receives (a load generator judging a sample
of its calls). A periodic tone (`ToneLoop`) is sent as pre-encoded packets.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np

from cms.media.endpoint import Address
from cms.media.formats import CLOCK_RATE, CODECS, FRAME_MS, FRAME_SAMPLES, PCMU, Codec, MediaFormat
from cms.media.relay import Leg
from cms.media.rtp import FIXED_HEADER, RtpError, payload_bounds
from cms.media.service import MediaService
from cms.media.sources import AudioSource, dbfs_to_amplitude
from cms.sip.sdp import Direction, Negotiated

BLOCK_PACKETS = 5  # Audio is judged in blocks of 5 packets (100 ms at 20 ms ptime).
SILENCE_DBFS = -50.0  # Quieter than this is not "audio heard".
TONE_TOLERANCE_HZ = 20.0
MAX_RECORDED_PACKETS = 3000  # One minute at 20 ms; later packets are counted, not kept.
MAX_LOOP_FRAMES = 50  # A tone that repeats within 1 s (any whole number of Hz) is looped.


def dominant_frequency(samples: np.ndarray) -> float:
    """The frequency (Hz, 8 kHz audio) of the strongest FFT bin, DC excluded."""
    if samples.size < 16:
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * _hanning(samples.size)))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum) * CLOCK_RATE / samples.size)


@functools.lru_cache(maxsize=64)
def _hanning(size: int) -> np.ndarray:
    # Blocks and seconds of audio come in a few sizes: build each window once.
    window = np.hanning(size)
    window.flags.writeable = False
    return window


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


class ToneLoop:
    """A sine tone as a loop of whole 20 ms frames, encoded once per codec.

    Same samples as `ToneSource` (phase continuous across frames and loops), but the
    frames and their payloads are computed once per process and shared by every call,
    which sends a cached payload per tick: a load generator sends thousands a second.
    """

    def __init__(self, frequency: float, level_dbfs: float = -10.0) -> None:
        self.frequency = frequency
        self.level_dbfs = level_dbfs
        self.frames = _tone_frames(frequency, level_dbfs)
        self._position = 0

    def next_frame(self) -> np.ndarray:
        """The next 160 samples (an `AudioSource`, for legs that packetise it themselves)."""
        frame = self.frames[self._position]
        self._position = (self._position + 1) % len(self.frames)
        return frame

    def payloads(self, codec: Codec) -> tuple[bytes, ...]:
        """The loop's frames encoded in `codec` (cached)."""
        return _tone_payloads(self.frequency, self.level_dbfs, codec.name)


@functools.lru_cache(maxsize=32)
def _tone_frames(frequency: float, level_dbfs: float) -> tuple[np.ndarray, ...]:
    frames = loop_frames(frequency)
    if frames is None or not 0 < frequency < CLOCK_RATE / 2:
        raise ValueError(f"{frequency} Hz: not a tone that repeats within "
                         f"{MAX_LOOP_FRAMES} frames below {CLOCK_RATE // 2} Hz")
    n = np.arange(frames * FRAME_SAMPLES)
    wave = dbfs_to_amplitude(level_dbfs) * np.sin(2.0 * np.pi * frequency * n / CLOCK_RATE)
    samples = np.rint(wave).astype(np.int16)
    samples.flags.writeable = False
    return tuple(samples[i:i + FRAME_SAMPLES] for i in range(0, samples.size, FRAME_SAMPLES))


@functools.lru_cache(maxsize=32)
def _tone_payloads(frequency: float, level_dbfs: float, codec: str) -> tuple[bytes, ...]:
    encode = CODECS[codec].encode
    return tuple(encode(frame) for frame in _tone_frames(frequency, level_dbfs))


def loop_frames(frequency: float) -> int | None:
    """How many 20 ms frames a tone takes to repeat exactly (None: more than 1 s)."""
    for frames in range(1, MAX_LOOP_FRAMES + 1):
        cycles = frequency * frames * FRAME_MS / 1000.0
        if math.isclose(cycles, round(cycles), abs_tol=1e-9):
            return frames
    return None


class CallMedia:
    """One call's RTP: a `cms.media` leg that plays a source and records what it receives.

    With `record=False` nothing is kept: `received` counts the RTP packets from the peer.
    """

    def __init__(self, service: MediaService, name: str, record: bool = True) -> None:
        self.service = service
        self.leg: Leg = service.open_leg(name=name)
        self._address = self.leg.local_address  # one getsockname per call, not per SDP
        self.recording = Recording()
        self.recorded = record
        self.negotiated: Negotiated | None = None
        self.source: AudioSource | None = None
        # Pre-encoded payloads sent on our own clock subscription (a ToneLoop at 20 ms
        # ptime, until DTMF is sent); otherwise the leg packetises the source itself.
        self._loop: tuple[bytes, ...] = ()
        self._loop_allowed = True
        self._loop_at = 0
        self._loop_pt = 0
        self._looping = False
        if record:
            inner = self.leg.endpoint.sink

            def sink(buf: bytearray, length: int) -> None:
                self.recording.add(buf, length)
                inner(buf, length)

            self.leg.endpoint.sink = sink

    @property
    def received(self) -> int:
        """RTP packets received from the peer (audio, DTMF and any other payload type)."""
        return self.recording.count if self.recorded else self.leg.endpoint.received

    @property
    def address(self) -> Address:
        """Our RTP (host, port), for SDP."""
        return self._address

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
        source = self.source
        if direction not in ("sendrecv", "sendonly") or source is None:
            self._stop_loop()
            self.leg.stop_audio()
            return
        negotiated = self.negotiated
        if (isinstance(source, ToneLoop) and negotiated is not None
                and negotiated.ptime == FRAME_MS and self._loop_allowed):
            self._start_loop(source, negotiated.codec.payload_type)
        elif self.leg.playing is not source:
            self._stop_loop()
            self.leg.play(source)

    def play(self, source: AudioSource | None) -> None:
        """What to send once media flows (now, if it already does)."""
        if source is not self.source:
            self._stop_loop()
        self.source = source
        if self.negotiated is not None:
            self.apply_direction(self.negotiated.direction)

    def send_dtmf(self, digits: str) -> None:
        """Send RFC 4733 digits (needs telephone-event in the negotiated SDP)."""
        if self._looping:
            # The leg pauses its own audio around each digit: let it packetise the tone.
            self._stop_loop()
            self._loop_allowed = False
            if self.source is not None:
                self.leg.play(self.source)
        self.leg.send_dtmf(digits)

    def _start_loop(self, tone: ToneLoop, payload_type: int) -> None:
        self._loop = tone.payloads(self.codec)
        self._loop_pt = payload_type
        if not self._looping:
            self.leg.stop_audio()  # no other feed; the next packet re-anchors with a marker
            self.leg.clock.subscribe(self._on_tick)
            self._looping = True

    def _stop_loop(self) -> None:
        if self._looping:
            self.leg.clock.unsubscribe(self._on_tick)
            self._looping = False
            self.leg.out.release()

    def _on_tick(self, tick: int) -> None:
        # Leg._on_tick for a cached payload: header, payload, send (nothing to compute).
        # Subscribed only by _start_loop, once `_loop` holds the tone's payloads.
        loop = self._loop
        out = self.leg.out
        seq, ts, marker = out.next_generated(tick, time.monotonic())
        payload = loop[self._loop_at]
        self._loop_at = (self._loop_at + 1) % len(loop)
        self.leg.endpoint.send(FIXED_HEADER.pack(0x80, marker << 7 | self._loop_pt, seq, ts,
                                                 out.ssrc) + payload)

    def blocks(self) -> list[AudioBlock]:
        """What was received, in 100 ms blocks."""
        return self.recording.blocks(self.codec, self.payload_type)

    def samples(self, since: float = 0.0) -> np.ndarray:
        """Received audio since a monotonic time."""
        return self.recording.samples(self.codec, self.payload_type, since)

    def close(self) -> None:
        """Stop sending and free the RTP port (the recording stays)."""
        self._stop_loop()
        if not self.leg.endpoint.closed:
            self.service.close_leg(self.leg)
