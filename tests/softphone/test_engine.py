"""The audio engine: settings, gains, mute and level meters, block by block."""

from __future__ import annotations

import numpy as np
import pytest

from softphone.audio.dsp import SILENCE_DBFS, from_pcm16, rms_dbfs, to_pcm16, tone
from softphone.audio.engine import AudioEngine, AudioSettings, LevelMeter
from softphone.audio.null import NullBackend

BLOCK = 320  # 20 ms at 16 kHz


def far_end_block(amplitude: float = 0.5) -> bytes:
    return to_pcm16(tone(1000, BLOCK / 16000, 16000, amplitude))


@pytest.fixture
def engine() -> AudioEngine:
    engine = AudioEngine(NullBackend())
    engine.open()
    return engine


def test_settings_default_to_unity_gain_and_unmuted() -> None:
    settings = AudioSettings()

    assert (settings.speaker_volume, settings.mic_volume, settings.mute) == (1.0, 1.0, False)


@pytest.mark.parametrize("bad", [-0.1, 2.01, float("nan"), float("inf"), True, "1"])
def test_volumes_outside_0_to_2_or_not_numbers_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        AudioSettings(speaker_volume=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AudioSettings(mic_volume=bad)  # type: ignore[arg-type]


def test_mute_must_be_a_boolean() -> None:
    with pytest.raises(ValueError):
        AudioSettings(mute=1)  # type: ignore[arg-type]


def test_update_changes_only_what_is_named(engine: AudioEngine) -> None:
    engine.update(speaker_volume=0.5)
    settings = engine.update(mute=True)

    assert settings == AudioSettings(speaker_volume=0.5, mute=True)


def test_update_refuses_unknown_settings_and_keeps_the_old_ones(engine: AudioEngine) -> None:
    with pytest.raises(ValueError):
        engine.update(loudness=2)
    with pytest.raises(ValueError):
        engine.update(speaker_volume=3)
    assert engine.settings == AudioSettings()


def test_speaker_volume_applies_to_the_very_next_block(engine: AudioEngine) -> None:
    played = []
    engine.process_speaker = _recording(engine.process_speaker, played)  # type: ignore[method-assign]
    engine.write(far_end_block())
    engine.update(speaker_volume=0.5)
    engine.write(far_end_block())

    assert rms_dbfs(played[1]) - rms_dbfs(played[0]) == pytest.approx(-6.02, abs=0.05)


def test_mute_silences_the_next_microphone_block(engine: AudioEngine) -> None:
    loud = tone(1000, BLOCK / 16000, 16000, 0.5)

    assert rms_dbfs(engine.process_mic(loud)) == pytest.approx(-9.03, abs=0.05)
    engine.update(mute=True)
    assert rms_dbfs(engine.process_mic(loud)) == SILENCE_DBFS


def test_mic_volume_scales_what_is_sent(engine: AudioEngine) -> None:
    engine.update(mic_volume=2.0)
    loud = tone(1000, BLOCK / 16000, 16000, 0.25)

    assert rms_dbfs(engine.process_mic(loud)) == pytest.approx(rms_dbfs(loud) + 6.02, abs=0.05)


def test_meters_report_rms_and_peak_of_what_is_played_and_sent(engine: AudioEngine) -> None:
    for _ in range(5):
        engine.write(far_end_block(0.5))
        engine.process_mic(tone(1000, BLOCK / 16000, 16000, 0.25))

    levels = engine.levels()

    assert levels.speaker.rms_dbfs == pytest.approx(-9.03, abs=0.1)
    assert levels.speaker.peak_dbfs == pytest.approx(-6.02, abs=0.1)
    assert levels.microphone.rms_dbfs == pytest.approx(-15.05, abs=0.1)


def test_a_meter_falls_to_silence_when_audio_stops_flowing() -> None:
    now = [100.0]
    meter = LevelMeter(window=5, max_age=0.25, clock=lambda: now[0])
    meter.feed(tone(1000, 0.02, 16000, 0.5))
    assert meter.reading().rms_dbfs == pytest.approx(-9.03, abs=0.1)

    now[0] += 1.0

    assert meter.reading().rms_dbfs == SILENCE_DBFS
    assert meter.reading().peak_dbfs == SILENCE_DBFS


def test_null_backend_sends_silence_of_one_block(engine: AudioEngine) -> None:
    block = engine.read()

    assert len(block) == 2 * BLOCK
    assert not np.any(from_pcm16(block))


def _recording(process, sink):  # type: ignore[no-untyped-def]
    def wrapper(samples):  # type: ignore[no-untyped-def]
        out = process(samples)
        sink.append(out)
        return out

    return wrapper
