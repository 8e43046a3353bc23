"""What the B2BUA plays for an ACD announcement name."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from cms.calls.manager import CallManager
from cms.media.sources import SilenceSource, ToneSource, WavSource


def announcement(name: str, sounds: Path | None = None):  # type: ignore[no-untyped-def]
    manager = CallManager.__new__(CallManager)  # only the announcement lookup is exercised
    manager.sounds = sounds
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


def test_a_bare_name_is_a_prompt_of_the_sounds_directory() -> None:
    sounds = Path(__file__).resolve().parents[2] / "sip_profiles" / "sounds"
    played = announcement("all-agents-busy", sounds)
    assert isinstance(played, WavSource) and played.path == sounds / "all-agents-busy.wav"
    assert isinstance(announcement("all-agents-busy"), SilenceSource)  # no sounds directory
