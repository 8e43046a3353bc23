"""Measuring what a soft phone played: tone levels by FFT, read from growing WAV files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float64]

RATE = 16000
TONE_A = 1000.0  # what phone A's microphone "says" (a.wav)
TONE_B = 1500.0  # what phone B's microphone "says" (b.wav)
TONE_C = 2000.0  # what phone C's microphone "says" (c.wav)
TONE_AMPLITUDE = 0.5  # -9.03 dBFS RMS
TONE_LEVEL = -9.03


def read_wav_samples(path: Path) -> tuple[Samples, int]:
    """A mono 16-bit WAV as float samples in [-1, 1] and its rate.

    The file may be growing (a soft phone is still writing it): the data chunk is taken
    as whatever follows the 44-byte header, whole samples only.
    """
    data = path.read_bytes()
    if len(data) < 44:  # not even a header yet
        return np.zeros(0), RATE
    channels, rate, _, _, width = struct.unpack_from("<HIIHH", data, 22)
    assert channels == 1 and width == 16, path
    raw = data[44:]
    raw = raw[: len(raw) - len(raw) % 2]
    return np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0, rate


def tail(path: Path, seconds: float) -> tuple[Samples, int]:
    """The last `seconds` of a WAV file (or all of it when shorter)."""
    samples, rate = read_wav_samples(path)
    return samples[-int(seconds * rate):], rate


def rms_dbfs(samples: Samples) -> float:
    """RMS level in dBFS (-120 for silence or no samples)."""
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(samples * samples)))
    return max(-120.0, 20.0 * np.log10(rms)) if rms > 0 else -120.0


def tone_dbfs(samples: Samples, rate: int, frequency: float, width: float = 60.0) -> float:
    """Level in dBFS (RMS) of the energy within ±`width` Hz of `frequency`, by FFT."""
    if samples.size < 64:
        return -120.0
    window = np.hanning(samples.size)
    spectrum = np.fft.rfft(samples * window)
    freqs = np.fft.rfftfreq(samples.size, 1.0 / rate)
    band = np.abs(freqs - frequency) <= width
    # Parseval with the window's power: mean-square of the band-limited signal
    power = 2.0 * np.sum(np.abs(spectrum[band]) ** 2) / (samples.size * np.sum(window**2))
    return max(-120.0, 10.0 * np.log10(power)) if power > 0 else -120.0


def dominant_frequency(samples: Samples, rate: int) -> float:
    """The frequency of the strongest FFT bin (Hz)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    spectrum[0] = 0.0
    return float(np.fft.rfftfreq(samples.size, 1.0 / rate)[int(np.argmax(spectrum))])
