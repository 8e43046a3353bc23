"""Pure signal helpers on float32 blocks in [-1, 1]: PCM conversion, gain, levels, tones."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float32]

SILENCE_DBFS = -120.0  # what a level meter shows for digital silence
_INT16_SCALE = 32768.0


def from_pcm16(data: bytes) -> Samples:
    """Little-endian signed 16-bit PCM to float32 samples."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / _INT16_SCALE


def to_pcm16(samples: Samples) -> bytes:
    """Float32 samples to little-endian signed 16-bit PCM, clipping at full scale."""
    scaled = np.clip(samples * _INT16_SCALE, -32768.0, 32767.0)
    return bytes(scaled.astype("<i2").tobytes())


def apply_gain(samples: Samples, gain: float) -> Samples:
    """Scale by a linear gain; unity returns the block unchanged, zero a silent block."""
    if gain == 1.0:
        return samples
    if gain == 0.0:
        return np.zeros_like(samples)
    out: Samples = np.clip(samples * np.float32(gain), -1.0, 1.0)
    return out


def to_dbfs(amplitude: float) -> float:
    """A linear amplitude (1.0 = full scale) in dBFS, floored at SILENCE_DBFS."""
    if amplitude <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(amplitude))


def rms_dbfs(samples: Samples) -> float:
    """RMS level in dBFS (full-scale sine: -3 dBFS; the AES17 convention is not used)."""
    if samples.size == 0:
        return SILENCE_DBFS
    x = samples.astype(np.float64)
    return to_dbfs(math.sqrt(float(np.mean(x * x))))


def peak_dbfs(samples: Samples) -> float:
    """Peak level in dBFS."""
    if samples.size == 0:
        return SILENCE_DBFS
    return to_dbfs(float(np.max(np.abs(samples))))


def tone(frequency: float, seconds: float, rate: int, amplitude: float = 0.5) -> Samples:
    """A sine tone (for tests and synthetic agents)."""
    t = np.arange(int(round(seconds * rate)), dtype=np.float64) / rate
    return (amplitude * np.sin(2.0 * np.pi * frequency * t)).astype(np.float32)


def resample(samples: Samples, rate_in: int, rate_out: int) -> Samples:
    """Linear-interpolation resampling (good enough for test signals and file input)."""
    if rate_in == rate_out or samples.size == 0:
        return samples
    count = int(round(samples.size * rate_out / rate_in))
    positions = np.arange(count, dtype=np.float64) * (rate_in / rate_out)
    source = np.arange(samples.size, dtype=np.float64)
    return np.interp(positions, source, samples).astype(np.float32)
