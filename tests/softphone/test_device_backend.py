"""The sound-device backend on PortAudio's real path, against an ALSA `null` device.

PortAudio reads the ALSA configuration when it initialises, so each test runs in a fresh
process whose HOME holds an asoundrc that makes the default PCM a `null` device (no sound
card needed). The null device has no clock of its own: it shows that streams open, audio
flows through the callbacks, devices are listed and chosen by name and a lost stream is
reopened, not timing or audio quality.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from softphone_process import ApiError, EventRecorder, StartSoftphone, wait_until

ASOUNDRC = "pcm.!default {\n    type null\n}\n"


def portaudio_available() -> bool:
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):  # not installed, or no libportaudio2
        return False
    return True


pytestmark = pytest.mark.skipif(not portaudio_available(),
                                 reason="sounddevice or PortAudio (libportaudio2) missing")


@pytest.fixture
def alsa_home(tmp_path: Path) -> Path:
    home = tmp_path / "alsa-home"
    home.mkdir()
    (home / ".asoundrc").write_text(ASOUNDRC)
    return home


SCRIPT = textwrap.dedent("""
    import json, time
    from softphone.audio.device import DeviceBackend
    from softphone.audio.dsp import to_pcm16, tone
    from softphone.audio.engine import AudioEngine

    backend = DeviceBackend()
    changes = []
    backend.on_device_changed = lambda i, o, reason: changes.append([i, o, reason])
    engine = AudioEngine(backend)
    engine.open()
    result = {"devices": [d.name for d in backend.devices()],
              "current": [backend.input_device, backend.output_device]}
    block = to_pcm16(tone(1000, 0.02, 16000, 0.5))
    sizes = set()
    for _ in range(10):
        engine.write(block)
        sizes.add(len(engine.read()))
        time.sleep(0.01)
    result["block_sizes"] = sorted(sizes)
    result["callbacks_ran"] = backend._playback.underruns > 0
    try:
        backend.select_devices("no such microphone", None)
    except ValueError as exc:
        result["unknown_device"] = str(exc)
    backend.select_devices("default", "default")
    backend._stream.abort()  # as if the device vanished: the stream stops on its own
    time.sleep(0.1)
    backend.check()
    result["after_loss"] = [backend._stream.active, changes]
    engine.close()
    print(json.dumps(result))
""")


def test_portaudio_streams_open_flow_switch_and_recover_on_the_null_device(
    alsa_home: Path,
) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
        env={"HOME": str(alsa_home), "PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    assert "default" in result["devices"]
    assert result["current"] == ["default", "default"]
    assert result["block_sizes"] == [640]
    assert result["callbacks_ran"]
    assert "no input device named" in result["unknown_device"]
    active, changes = result["after_loss"]
    assert active is True
    assert changes == [["default", "default", "device lost"]]


@pytest.mark.integration
def test_softphone_runs_on_a_sound_device_and_switches_devices_by_name(
    start_softphone: StartSoftphone, alsa_home: Path,
) -> None:
    phone = start_softphone("a", audio="device", env={"HOME": str(alsa_home)})
    events = EventRecorder(phone)
    try:
        audio = phone.get("/audio")
        assert audio["backend"] == "device"
        assert "default" in [d["name"] for d in audio["devices"]]

        changed = phone.put("/audio", {"output_device": "default", "speaker_volume": 0.7})

        assert changed["output_device"] == "default" and changed["speaker_volume"] == 0.7
        event = events.wait_for(lambda e: e["type"] == "audio.device_changed")
        assert event["reason"] == "selected"
        assert wait_until(lambda: "audio.levels" in events.types(), 3.0)
        with pytest.raises(ApiError) as refused:
            phone.put("/audio", {"input_device": "no such microphone"})
        assert refused.value.status == 400
        assert phone.get("/audio")["input_device"] == "default"
    finally:
        events.close()
