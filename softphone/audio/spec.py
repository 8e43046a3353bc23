"""Turn the `--audio` argument into a backend: null | wav:IN.wav:OUT.wav | device."""

from __future__ import annotations

from pathlib import Path

from softphone.audio.backend import AudioBackend

AUDIO_HELP = "null | wav:IN.wav:OUT.wav | device (default: device)"


def parse_spec(value: str) -> tuple[str, tuple[str, ...]]:
    """Split an audio spec into its kind and arguments; ValueError when malformed."""
    if value in ("null", "device"):
        return value, ()
    parts = value.split(":")
    if len(parts) == 3 and parts[0] == "wav" and parts[1] and parts[2]:
        return "wav", (parts[1], parts[2])
    raise ValueError(f"expected {AUDIO_HELP}, got {value!r}")


def open_backend(value: str, input_device: str | None = None,
                 output_device: str | None = None) -> AudioBackend:
    """A (not yet opened) backend for an audio spec."""
    kind, args = parse_spec(value)
    if kind == "null":
        from softphone.audio.null import NullBackend

        return NullBackend()
    if kind == "wav":
        from softphone.audio.wav import WavBackend

        source, sink = args
        if not Path(source).is_file():
            raise ValueError(f"input WAV file not found: {source}")
        return WavBackend(Path(source), Path(sink))
    from softphone.audio.device import DeviceBackend

    return DeviceBackend(input_device, output_device)
