"""Position prompts: spoken from the committed sounds, beeps without them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cms.media.formats import FRAME_SAMPLES
from cms.media.prompts import BEEP_HZ, MAX_BEEPS, SequenceSource, position_prompt
from cms.media.sources import ToneSource, read_wav

SOUNDS = Path(__file__).resolve().parents[2] / "sip_profiles" / "sounds"


def contains(haystack: np.ndarray, needle: np.ndarray) -> bool:
    text = haystack.astype("<i2").tobytes()
    return needle.astype("<i2").tobytes() in text


def test_spoken_position_is_intro_then_the_number() -> None:
    audio = np.concatenate(position_prompt(7, SOUNDS))
    assert contains(audio, read_wav(SOUNDS / "position.wav"))
    assert contains(audio, read_wav(SOUNDS / "number-7.wav"))
    assert not contains(audio, read_wav(SOUNDS / "number-1.wav"))


def test_large_positions_are_read_digit_by_digit() -> None:
    audio = np.concatenate(position_prompt(42, SOUNDS))
    for digit in ("4", "2"):
        assert contains(audio, read_wav(SOUNDS / f"number-{digit}.wav"))


def count_bursts(audio: np.ndarray) -> int:
    """Beeps at BEEP_HZ: frames whose spectrum peaks there, counted as runs."""
    frames = audio[: audio.size // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    loud = []
    for frame in frames:
        spectrum = np.abs(np.fft.rfft(frame.astype(np.float64)))
        peak_hz = np.argmax(spectrum) * 8000 / FRAME_SAMPLES
        loud.append(spectrum.max() > 1e5 and abs(peak_hz - BEEP_HZ) < 60)
    return sum(1 for i, on in enumerate(loud) if on and (i == 0 or not loud[i - 1]))


def test_missing_sounds_fall_back_to_beeps(tmp_path: Path) -> None:
    assert count_bursts(np.concatenate(position_prompt(3, tmp_path))) == 3
    assert count_bursts(np.concatenate(position_prompt(50, None))) == MAX_BEEPS


def test_sequence_plays_the_prompt_then_the_follow_on_source() -> None:
    prompt = [np.full(FRAME_SAMPLES * 2, 1000, dtype=np.int16)]
    source = SequenceSource(prompt, ToneSource(1000.0))
    assert source.duration == 2 * FRAME_SAMPLES / 8000
    first = [source.next_frame() for _ in range(2)]
    assert all((frame == 1000).all() for frame in first)
    after = source.next_frame()
    assert not (after == 1000).all() and np.abs(after).max() > 1000
