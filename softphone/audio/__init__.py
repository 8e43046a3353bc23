"""Audio of the soft phone: backends (null, WAV files, sound devices) behind one interface,
with speaker and microphone gain, mute and level meters applied by `AudioEngine` (numpy)."""

from softphone.audio.backend import AudioBackend, AudioFormat, DeviceInfo
from softphone.audio.engine import AudioEngine, AudioSettings, Levels, MeterReading
from softphone.audio.spec import open_backend

__all__ = [
    "AudioBackend",
    "AudioEngine",
    "AudioFormat",
    "AudioSettings",
    "DeviceInfo",
    "Levels",
    "MeterReading",
    "open_backend",
]
