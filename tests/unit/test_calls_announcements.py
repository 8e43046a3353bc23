"""What the B2BUA plays for an ACD announcement name."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from cms.calls.manager import CallManager
from cms.media.sources import SilenceSource, ToneSource, WavSource


def announcement(name: str):  # type: ignore[no-untyped-def]
    manager = CallManager.__new__(CallManager)
    return manager._announcement(name)


def test_tone_names_play_that_tone() -> None:
    assert isinstance(announcement("tone:425"), ToneSource)


def test_a_wav_file_is_played_once(tmp_path: Path) -> None:
    path = tmp_path / "welcome.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(np.zeros(800, dtype=np.int16).tobytes())
    assert isinstance(announcement(str(path)), WavSource)


def test_unknown_or_broken_announcements_are_silence_not_a_crash(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav file")
    for name in ("", "no-such-file.wav", "tone:loud", str(bad)):
        assert isinstance(announcement(name), SilenceSource)
