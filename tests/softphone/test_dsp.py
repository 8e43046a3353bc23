"""Pure audio helpers: PCM conversion, gain, dBFS levels, resampling."""

from __future__ import annotations

import numpy as np
import pytest

from softphone.audio.dsp import (
    SILENCE_DBFS,
    apply_gain,
    from_pcm16,
    peak_dbfs,
    resample,
    rms_dbfs,
    to_pcm16,
    tone,
)


def test_pcm16_round_trip_keeps_samples() -> None:
    samples = np.array([0.0, 0.5, -0.5, 0.999, -1.0], dtype=np.float32)

    back = from_pcm16(to_pcm16(samples))

    assert np.allclose(back, samples, atol=1 / 32768)


def test_pcm16_clips_instead_of_wrapping_around() -> None:
    pcm = to_pcm16(np.array([1.5, -1.5], dtype=np.float32))

    assert list(np.frombuffer(pcm, dtype="<i2")) == [32767, -32768]


def test_full_scale_sine_is_minus_3_dbfs_rms_and_0_dbfs_peak() -> None:
    signal = tone(1000, 1.0, 16000, amplitude=1.0)

    assert rms_dbfs(signal) == pytest.approx(-3.01, abs=0.01)
    assert peak_dbfs(signal) == pytest.approx(0.0, abs=0.01)


def test_half_gain_is_minus_6_db() -> None:
    signal = tone(440, 0.5, 16000, amplitude=0.5)

    assert rms_dbfs(apply_gain(signal, 0.5)) - rms_dbfs(signal) == pytest.approx(-6.02, abs=0.01)


def test_gain_clips_at_full_scale() -> None:
    assert float(np.max(apply_gain(tone(440, 0.1, 16000, 0.8), 2.0))) <= 1.0


def test_zero_gain_and_empty_blocks_read_as_silence() -> None:
    assert rms_dbfs(apply_gain(tone(440, 0.1, 16000), 0.0)) == SILENCE_DBFS
    assert rms_dbfs(np.zeros(0, dtype=np.float32)) == SILENCE_DBFS
    assert peak_dbfs(np.zeros(10, dtype=np.float32)) == SILENCE_DBFS


def test_resampling_keeps_duration_and_frequency() -> None:
    signal = tone(500, 1.0, 8000)

    up = resample(signal, 8000, 16000)

    assert up.size == 16000
    spectrum = np.abs(np.fft.rfft(up))
    assert np.fft.rfftfreq(up.size, 1 / 16000)[int(np.argmax(spectrum))] == pytest.approx(500)
