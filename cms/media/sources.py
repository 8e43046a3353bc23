"""Generated audio: sources that each give the next 20 ms frame of 160 int16 samples at 8 kHz."""

from __future__ import annotations

import functools
import wave
from pathlib import Path
from typing import Protocol

import numpy as np

from .formats import CLOCK_RATE, FRAME_SAMPLES
from .g711 import Samples

FULL_SCALE = 32767.0
_RESAMPLE_RATES = (16000, 24000, 32000, 48000)  # Integer multiples of 8 kHz we decimate.


class AudioSource(Protocol):
    """Anything that produces 20 ms frames of 8 kHz 16-bit mono audio."""

    def next_frame(self) -> Samples:
        """The next 160 samples."""
        ...


def dbfs_to_amplitude(level_dbfs: float) -> float:
    """Peak amplitude of a sine at this level (0 dBFS: full-scale sine)."""
    return float(FULL_SCALE * 10.0 ** (level_dbfs / 20.0))


class SilenceSource:
    """Digital silence."""

    def __init__(self) -> None:
        self._frame = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._frame.flags.writeable = False

    def next_frame(self) -> Samples:
        """160 zero samples."""
        return self._frame


class ToneSource:
    """A continuous sine tone; phase carries over between frames."""

    def __init__(self, frequency: float, level_dbfs: float = -10.0) -> None:
        if not 0 < frequency < CLOCK_RATE / 2:
            raise ValueError(f"frequency must be between 0 and {CLOCK_RATE // 2} Hz")
        self.frequency = frequency
        self._amplitude = dbfs_to_amplitude(level_dbfs)
        self._step = 2.0 * np.pi * frequency / CLOCK_RATE
        self._ramp = np.arange(FRAME_SAMPLES) * self._step
        self._phase = 0.0

    def next_frame(self) -> Samples:
        """The next 160 samples of the tone."""
        frame = self._amplitude * np.sin(self._phase + self._ramp)
        # Keep the phase small so float precision does not degrade on long calls.
        self._phase = (self._phase + FRAME_SAMPLES * self._step) % (2.0 * np.pi)
        samples: Samples = np.rint(frame).astype(np.int16)
        return samples


class LoopSource:
    """Plays a fixed buffer of samples frame by frame, looping (or silence after the end)."""

    def __init__(self, samples: Samples, loop: bool = True) -> None:
        samples = np.asarray(samples, dtype=np.int16)
        if samples.size == 0:
            raise ValueError("empty audio")
        if samples.size % FRAME_SAMPLES or samples.flags.writeable:
            # Pad to whole frames in a private read-only copy; read-only whole-frame buffers
            # (hold music) are shared by every source playing them.
            padded = np.zeros(-(-samples.size // FRAME_SAMPLES) * FRAME_SAMPLES, dtype=np.int16)
            padded[:samples.size] = samples
            padded.flags.writeable = False
            samples = padded
        self._samples = samples
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._position = 0
        self.loop = loop
        self.finished = False

    @property
    def duration(self) -> float:
        """Seconds of audio in one pass."""
        return self._samples.size / CLOCK_RATE

    def next_frame(self) -> Samples:
        """The next 160 samples; frames are views into the shared buffer (do not modify)."""
        if self.finished:
            return self._silence
        start = self._position
        self._position += FRAME_SAMPLES
        if self._position >= self._samples.size:
            self._position = 0
            self.finished = not self.loop
        return self._samples[start:start + FRAME_SAMPLES]


def read_wav(path: str | Path) -> Samples:
    """Read a mono 16-bit PCM WAV file as 8 kHz samples.

    8 kHz is used as is; 16, 24, 32 and 48 kHz are low-pass filtered and decimated. Any other
    rate, channel count or sample width raises ValueError saying what the file is.
    """
    with wave.open(str(path), "rb") as wav:
        channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        if channels != 1 or width != 2:
            raise ValueError(f"{path}: need mono 16-bit PCM, got {channels} channel(s) of "
                             f"{8 * width}-bit samples")
        if rate != CLOCK_RATE and rate not in _RESAMPLE_RATES:
            raise ValueError(f"{path}: sample rate {rate} Hz; supported: 8000, "
                             + ", ".join(str(r) for r in _RESAMPLE_RATES))
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if rate == CLOCK_RATE:
        return samples.astype(np.int16)
    return decimate(samples, rate // CLOCK_RATE)


def decimate(samples: Samples, factor: int, taps_per_phase: int = 16) -> Samples:
    """Reduce the sample rate by an integer factor behind a windowed-sinc low-pass filter."""
    if factor == 1:
        return np.asarray(samples, dtype=np.int16)
    taps = taps_per_phase * factor + 1
    n = np.arange(taps) - (taps - 1) / 2
    cutoff = 0.45 / factor  # Just below the new Nyquist frequency, in cycles per input sample.
    kernel = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(taps)
    kernel /= kernel.sum()
    filtered = np.convolve(samples.astype(np.float64), kernel, mode="same")[::factor]
    return np.clip(np.rint(filtered), -32768, 32767).astype(np.int16)


class WavSource(LoopSource):
    """A WAV file (see `read_wav`), looped by default."""

    def __init__(self, path: str | Path, loop: bool = True) -> None:
        super().__init__(read_wav(path), loop=loop)
        self.path = Path(path)


# A gentle I-vi-IV-V progression in C major, one chord every two seconds.
_CHORDS_HZ = (
    (261.63, 329.63, 392.00),  # C
    (220.00, 261.63, 329.63),  # Am
    (174.61, 220.00, 261.63),  # F
    (196.00, 246.94, 293.66),  # G
)


@functools.lru_cache(maxsize=8)
def hold_music(level_dbfs: float = -18.0, chord_seconds: float = 2.0) -> Samples:
    """One loop of generated hold music (read-only): soft chords, each faded in and out."""
    length = int(chord_seconds * CLOCK_RATE)
    t = np.arange(length) / CLOCK_RATE
    fade = int(0.15 * CLOCK_RATE)
    envelope = np.ones(length)
    envelope[:fade] = np.linspace(0.0, 1.0, fade)
    envelope[-fade:] = np.linspace(1.0, 0.0, fade)
    chords = []
    for notes in _CHORDS_HZ:
        # A little second harmonic makes the tones rounder than pure sines.
        chord = sum(np.sin(2 * np.pi * f * t) + 0.25 * np.sin(4 * np.pi * f * t) for f in notes)
        chords.append(chord * envelope)
    music = np.concatenate(chords)
    music *= dbfs_to_amplitude(level_dbfs) / np.max(np.abs(music))
    result = np.rint(music).astype(np.int16)
    result.flags.writeable = False
    return result


class HoldMusicSource(LoopSource):
    """Generated hold music (see `hold_music`), looped."""

    def __init__(self, level_dbfs: float = -18.0) -> None:
        super().__init__(hold_music(level_dbfs), loop=True)
