"""Generated audio sources: frame shape, tone frequency and level, WAV input, hold music."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from cms.media.sources import (
    HoldMusicSource,
    LoopSource,
    SilenceSource,
    ToneSource,
    WavSource,
    dbfs_to_amplitude,
    decimate,
    read_wav,
)


def collect(source: object, frames: int) -> np.ndarray:
    return np.concatenate([source.next_frame() for _ in range(frames)])  # type: ignore[attr-defined]


def dominant_hz(samples: np.ndarray, rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)


def rms_dbfs(samples: np.ndarray) -> float:
    rms = np.sqrt(np.mean(samples.astype(np.float64) ** 2))
    return float(20 * np.log10(rms / (32767 / np.sqrt(2))))


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())


def test_every_source_gives_160_int16_samples() -> None:
    for source in (SilenceSource(), ToneSource(440), HoldMusicSource()):
        frame = source.next_frame()
        assert frame.shape == (160,) and frame.dtype == np.int16


def test_tone_has_its_frequency_and_level_and_no_phase_jumps() -> None:
    samples = collect(ToneSource(1000, level_dbfs=-10), 50)
    assert dominant_hz(samples) == pytest.approx(1000, abs=10)
    assert rms_dbfs(samples) == pytest.approx(-10, abs=0.1)
    assert np.abs(samples).max() <= dbfs_to_amplitude(-10) + 1
    # A continuous sine: consecutive samples never jump more than its slope allows.
    assert np.abs(np.diff(samples.astype(int))).max() <= 2 * np.pi * 1000 / 8000 * 10400


def test_loop_source_pads_loops_and_can_finish() -> None:
    source = LoopSource(np.arange(200, dtype=np.int16), loop=False)
    first, second, third = (source.next_frame() for _ in range(3))
    assert first[0] == 0 and second[39] == 199 and not second[40:].any()
    assert source.finished and not third.any()
    looping = LoopSource(np.ones(160, dtype=np.int16))
    assert collect(looping, 3).sum() == 480 and not looping.finished


def test_wav_at_8_khz_is_played_as_is(tmp_path: Path) -> None:
    samples = (np.arange(800) % 100).astype(np.int16)
    write_wav(tmp_path / "a.wav", samples, 8000)
    source = WavSource(tmp_path / "a.wav")
    assert np.array_equal(collect(source, 5), samples)


def test_wav_at_48_khz_is_decimated(tmp_path: Path) -> None:
    t = np.arange(48000) / 48000
    write_wav(tmp_path / "b.wav", 10000 * np.sin(2 * np.pi * 1000 * t), 48000)
    samples = read_wav(tmp_path / "b.wav")
    assert samples.size == 8000
    assert dominant_hz(samples[500:-500]) == pytest.approx(1000, abs=5)
    assert np.abs(samples[500:-500]).max() == pytest.approx(10000, rel=0.02)


def test_decimation_removes_what_8_khz_cannot_carry() -> None:
    t = np.arange(16000) / 16000
    alias = decimate((10000 * np.sin(2 * np.pi * 6000 * t)).astype(np.int16), 2)
    assert np.abs(alias[100:-100]).max() < 300  # 6 kHz would alias to 2 kHz


@pytest.mark.parametrize("rate, channels, message", [
    (11025, 1, "sample rate 11025"),
    (8000, 2, "mono 16-bit"),
])
def test_unsupported_wav_files_are_rejected_clearly(tmp_path: Path, rate: int, channels: int,
                                                    message: str) -> None:
    write_wav(tmp_path / "c.wav", np.zeros(1000 * channels, dtype=np.int16), rate, channels)
    with pytest.raises(ValueError, match=message):
        read_wav(tmp_path / "c.wav")


def test_hold_music_is_audible_not_clipped_and_shared() -> None:
    a, b = HoldMusicSource(), HoldMusicSource()
    samples = collect(a, 400)  # 8 s: one pass through the four chords
    assert -30 < rms_dbfs(samples) < -15
    assert np.abs(samples).max() <= dbfs_to_amplitude(-18) + 1
    assert np.shares_memory(a.next_frame(), b.next_frame())
    # Four different chords: the dominant note changes between the two-second blocks.
    peaks = {round(dominant_hz(samples[i * 16000 + 2000:(i + 1) * 16000 - 2000]))
             for i in range(4)}
    assert len(peaks) >= 3
