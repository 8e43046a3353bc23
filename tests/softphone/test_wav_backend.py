"""The WAV backend: a looped input file as microphone, the speaker recorded to a file."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from audio_analysis import read_wav_samples, tone_dbfs

from softphone.audio.backend import AudioFormat
from softphone.audio.dsp import from_pcm16, rms_dbfs, to_pcm16, tone
from softphone.audio.engine import AudioEngine
from softphone.audio.spec import open_backend, parse_spec
from softphone.audio.wav import WavBackend, read_wav, write_wav


def test_input_loops_so_a_short_file_lasts_a_whole_call(tmp_path: Path) -> None:
    source = tmp_path / "in.wav"
    write_wav(source, np.arange(480, dtype=np.float32) / 1000.0, 16000)  # 30 ms
    engine = AudioEngine(WavBackend(source, tmp_path / "out.wav"))
    engine.open()

    blocks = [from_pcm16(engine.read()) for _ in range(3)]  # 60 ms

    joined = np.concatenate(blocks)
    assert joined.size == 960
    assert np.allclose(joined[:480], joined[480:], atol=1e-4)
    engine.close()


def test_output_file_is_readable_while_it_grows_and_holds_what_was_played(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.wav"
    write_wav(source, tone(1000, 0.1, 16000), 16000)
    engine = AudioEngine(WavBackend(source, tmp_path / "out.wav"))
    engine.open()
    block = to_pcm16(tone(700, 0.02, 16000, 0.5))

    for _ in range(10):
        engine.write(block)
    samples, rate = read_wav_samples(tmp_path / "out.wav")  # before close

    assert rate == 16000 and samples.size == 3200
    assert tone_dbfs(samples, rate, 700) == pytest.approx(-9.03, abs=0.5)
    engine.close()
    with wave.open(str(tmp_path / "out.wav")) as reader:
        assert reader.getnframes() == 3200


def test_input_at_another_rate_and_in_stereo_is_converted(tmp_path: Path) -> None:
    source = tmp_path / "in.wav"
    left = tone(440, 0.5, 8000, 0.5)
    with wave.open(str(source), "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(to_pcm16(np.repeat(left, 2)))

    samples = read_wav(source, 16000)

    assert samples.size == 8000
    assert rms_dbfs(samples) == pytest.approx(-9.03, abs=0.2)


def test_audio_specs_are_parsed_and_a_missing_input_file_is_an_error(tmp_path: Path) -> None:
    assert parse_spec("null") == ("null", ())
    assert parse_spec("device") == ("device", ())
    assert parse_spec("wav:a.wav:b.wav") == ("wav", ("a.wav", "b.wav"))
    for bad in ("wav:a.wav", "wav::b.wav", "alsa", ""):
        with pytest.raises(ValueError):
            parse_spec(bad)
    with pytest.raises(ValueError, match="not found"):
        open_backend(f"wav:{tmp_path / 'missing.wav'}:{tmp_path / 'out.wav'}")


def test_wav_backend_has_no_devices_to_choose(tmp_path: Path) -> None:
    source = tmp_path / "in.wav"
    write_wav(source, tone(1000, 0.1, 16000), 16000)
    backend = WavBackend(source, tmp_path / "out.wav")
    backend.open(AudioFormat(), AudioEngine(backend))

    assert backend.devices() == []
    with pytest.raises(ValueError):
        backend.select_devices("USB", None)
    backend.close()
    backend.close()  # idempotent
