"""The interface every audio backend implements (null, WAV files, sound devices).

The SIP side's conference bridge asks for one block of microphone audio (`read`) and hands
over one block for the speaker (`write`) every block period, both as 16-bit PCM. A backend
passes each block through the engine's `Processor` at the point closest to the listener or
the microphone, so that a volume change or mute takes effect within one block whatever
buffering the backend has.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from softphone.audio.dsp import Samples


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioFormat:
    """The PCM format on the bridge side: mono, signed 16-bit little endian."""

    rate: int = 16000
    block_ms: int = 20

    @property
    def block(self) -> int:
        """Samples per block."""
        return self.rate * self.block_ms // 1000

    @property
    def block_bytes(self) -> int:
        return self.block * 2


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceInfo:
    """A sound device as offered to the user."""

    name: str
    inputs: int
    outputs: int
    default_input: bool = False
    default_output: bool = False


class Processor(Protocol):
    """What a backend calls on each block (the `AudioEngine`)."""

    def process_mic(self, samples: Samples) -> Samples:
        """Microphone gain, mute and meter, on the captured block."""
        ...

    def process_speaker(self, samples: Samples) -> Samples:
        """Speaker volume and meter, on the block about to be played."""
        ...


DeviceEvent = Callable[[str | None, str | None, str], None]  # (input, output, reason)


class AudioBackend(abc.ABC):
    """Capture and playback of one soft phone, one block at a time."""

    name: str = "backend"

    def __init__(self) -> None:
        self.format = AudioFormat()
        self.on_device_changed: DeviceEvent | None = None

    @abc.abstractmethod
    def open(self, fmt: AudioFormat, processor: Processor) -> None:
        """Start capture and playback with the bridge's format."""

    @abc.abstractmethod
    def read(self) -> bytes:
        """One block of processed microphone audio (16-bit PCM, `fmt.block_bytes` long)."""

    @abc.abstractmethod
    def write(self, pcm: bytes) -> None:
        """One block for the speaker (16-bit PCM); the backend applies the processor."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop and release everything; idempotent."""

    def devices(self) -> list[DeviceInfo]:
        """Sound devices the user can pick (none for file backends)."""
        return []

    @property
    def input_device(self) -> str | None:
        return None

    @property
    def output_device(self) -> str | None:
        return None

    def select_devices(self, input_device: str | None, output_device: str | None) -> None:
        """Switch devices by name (None: keep); only device backends support it."""
        if input_device is not None or output_device is not None:
            raise ValueError(f"the {self.name} audio backend has no devices to choose")

    def check(self) -> None:
        """Called about ten times a second: notice lost devices and recover."""
        return None
