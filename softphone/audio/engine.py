"""Speaker volume, microphone volume, mute and level meters, applied to each audio block.

Settings are one immutable value replaced as a whole, so the audio thread always sees a
consistent set and a change takes effect on the next block. Meters keep the last few
blocks' energy and peak so that any number of readers (HTTP, WebSocket) see the same
~100 ms window without resetting each other.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from softphone.audio.backend import AudioBackend, AudioFormat
from softphone.audio.dsp import SILENCE_DBFS, Samples, apply_gain, to_dbfs

MAX_VOLUME = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioSettings:
    """What the user controls: linear gains 0..2 (0.5 = -6 dB) and mute."""

    speaker_volume: float = 1.0
    mic_volume: float = 1.0
    mute: bool = False

    def __post_init__(self) -> None:
        for name in ("speaker_volume", "mic_volume"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            if not (math.isfinite(value) and 0.0 <= value <= MAX_VOLUME):
                raise ValueError(f"{name} must be between 0 and {MAX_VOLUME:g}")
        if not isinstance(self.mute, bool):
            raise ValueError("mute must be true or false")


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterReading:
    """One direction's level over the meter window, in dBFS."""

    rms_dbfs: float
    peak_dbfs: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Levels:
    """Both directions: what the speaker plays and what the microphone sends."""

    speaker: MeterReading
    microphone: MeterReading


class LevelMeter:
    """RMS and peak over the last `window` blocks, ignoring blocks older than `max_age`
    seconds (no audio flowing reads as silence); written by one thread, read by any."""

    def __init__(self, window: int = 5, max_age: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._energy = np.zeros(window, dtype=np.float64)  # sum of squares per block
        self._count = np.zeros(window, dtype=np.int64)
        self._peak = np.zeros(window, dtype=np.float64)
        self._time = np.full(window, -np.inf)
        self._index = 0
        self._max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()

    def feed(self, samples: Samples) -> None:
        """Account one block."""
        x = samples.astype(np.float64)
        energy = float(np.dot(x, x))
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        now = self._clock()
        with self._lock:
            i = self._index
            self._energy[i] = energy
            self._count[i] = x.size
            self._peak[i] = peak
            self._time[i] = now
            self._index = (i + 1) % self._energy.size

    def reading(self) -> MeterReading:
        """The level over the window (silence when nothing recent was fed)."""
        oldest = self._clock() - self._max_age
        with self._lock:
            fresh = self._time >= oldest
            energy = float(self._energy[fresh].sum())
            count = int(self._count[fresh].sum())
            peak = float(self._peak[fresh].max()) if fresh.any() else 0.0
        if count == 0:
            return MeterReading(rms_dbfs=SILENCE_DBFS, peak_dbfs=SILENCE_DBFS)
        return MeterReading(rms_dbfs=to_dbfs(math.sqrt(energy / count)), peak_dbfs=to_dbfs(peak))

    def reset(self) -> None:
        with self._lock:
            self._energy[:] = 0.0
            self._count[:] = 0
            self._peak[:] = 0.0
            self._time[:] = -np.inf


class AudioEngine:
    """One backend plus the user's settings and both meters (the backend's `Processor`)."""

    def __init__(self, backend: AudioBackend, fmt: AudioFormat | None = None) -> None:
        self.backend = backend
        self.format = fmt or AudioFormat()
        self.settings = AudioSettings()
        self.speaker_meter = LevelMeter()
        self.mic_meter = LevelMeter()
        self._opened = False

    # -- lifecycle

    def open(self) -> None:
        """Start the backend."""
        if not self._opened:
            self.backend.open(self.format, self)
            self._opened = True

    def close(self) -> None:
        """Stop the backend; idempotent."""
        if self._opened:
            self._opened = False
            self.backend.close()

    # -- control (any thread)

    def update(self, **changes: object) -> AudioSettings:
        """Replace some settings (speaker_volume, mic_volume, mute); validated as a whole."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(AudioSettings)}
        if unknown:
            raise ValueError(f"unknown audio settings: {', '.join(sorted(unknown))}")
        settings = dataclasses.replace(self.settings, **changes)  # type: ignore[arg-type]
        self.settings = settings
        return settings

    def levels(self) -> Levels:
        return Levels(speaker=self.speaker_meter.reading(), microphone=self.mic_meter.reading())

    # -- Processor (the backend's audio thread)

    def process_mic(self, samples: Samples) -> Samples:
        settings = self.settings
        if settings.mute:
            out = np.zeros_like(samples)
        else:
            out = apply_gain(samples, settings.mic_volume)
        self.mic_meter.feed(out)
        return out

    def process_speaker(self, samples: Samples) -> Samples:
        out = apply_gain(samples, self.settings.speaker_volume)
        self.speaker_meter.feed(out)
        return out

    # -- the bridge side (the SIP stack's media thread)

    def read(self) -> bytes:
        """One block of microphone audio for the bridge."""
        return self.backend.read()

    def write(self, pcm: bytes) -> None:
        """One block of far-end audio from the bridge."""
        self.backend.write(pcm)
