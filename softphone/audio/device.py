"""The sound-device backend: PortAudio through sounddevice, bridged by two bounded FIFOs.

PortAudio and the SIP stack's bridge run on different clocks, so audio crosses between
them through FIFOs capped at a few blocks (bounded latency; drift is absorbed by dropping
or zero-filling). Gains and meters run inside the PortAudio callback, at the microphone
and at the speaker, so a volume change or mute is heard within one device block.

A stream that stops on its own (device unplugged, driver error) is noticed by `check()`,
reopened on the default devices, and reported through `on_device_changed`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from softphone.audio.backend import AudioBackend, AudioFormat, DeviceInfo, Processor
from softphone.audio.dsp import from_pcm16, to_pcm16
from softphone.audio.fifo import SampleFifo

log = logging.getLogger("softphone.audio.device")

FIFO_BLOCKS = 2  # at most this many bridge blocks (40 ms) wait in each direction


def _sounddevice() -> Any:
    """Import sounddevice lazily: only this backend needs PortAudio."""
    import sounddevice

    return sounddevice


def find_device(devices: list[DeviceInfo], name: str, output: bool) -> int:
    """Index of the device called `name` (exact, else a unique case-insensitive substring)."""
    usable = [
        (index, device) for index, device in enumerate(devices)
        if (device.outputs if output else device.inputs) > 0
    ]
    for index, device in usable:
        if device.name == name:
            return index
    wanted = name.lower()
    matches = [index for index, device in usable if wanted in device.name.lower()]
    if len(matches) == 1:
        return matches[0]
    kind = "output" if output else "input"
    if not matches:
        raise ValueError(f"no {kind} device named {name!r}")
    raise ValueError(f"{kind} device name {name!r} is ambiguous")


class DeviceBackend(AudioBackend):
    """Microphone and speaker on real sound devices (PortAudio)."""

    name = "device"

    def __init__(self, input_device: str | None = None, output_device: str | None = None,
                 sd: Any = None) -> None:
        super().__init__()
        self._sd = sd or _sounddevice()
        self._wanted = (input_device, output_device)
        self._current: tuple[str | None, str | None] = (None, None)
        self._processor: Processor | None = None
        self._stream: Any = None
        self._capture = SampleFifo(1)
        self._playback = SampleFifo(1)
        self._lost = threading.Event()
        self._closing = False
        self._lock = threading.RLock()  # open/close/switch from the API vs check()

    # -- devices

    def devices(self) -> list[DeviceInfo]:
        sd = self._sd
        default_in, default_out = sd.default.device
        result = []
        for index, device in enumerate(sd.query_devices()):
            result.append(DeviceInfo(
                name=str(device["name"]),
                inputs=int(device["max_input_channels"]),
                outputs=int(device["max_output_channels"]),
                default_input=index == default_in,
                default_output=index == default_out,
            ))
        return result

    @property
    def input_device(self) -> str | None:
        return self._current[0]

    @property
    def output_device(self) -> str | None:
        return self._current[1]

    def select_devices(self, input_device: str | None, output_device: str | None) -> None:
        with self._lock:
            wanted = (
                input_device if input_device is not None else self._wanted[0],
                output_device if output_device is not None else self._wanted[1],
            )
            previous = self._wanted
            self._wanted = wanted
            if self._processor is None:
                return
            self._close_stream()
            try:
                self._open_stream(wanted)
            except Exception:
                self._wanted = previous
                self._open_stream(previous)
                raise

    # -- lifecycle

    def open(self, fmt: AudioFormat, processor: Processor) -> None:
        with self._lock:
            self.format = fmt
            self._processor = processor
            self._capture = SampleFifo(FIFO_BLOCKS * fmt.block)
            self._playback = SampleFifo(FIFO_BLOCKS * fmt.block)
            try:
                self._open_stream(self._wanted)
            except Exception as exc:
                if self._wanted == (None, None):
                    raise
                log.warning("cannot open %s (%s): using the default devices", self._wanted, exc)
                self._open_stream((None, None))
                self._report(f"cannot open the chosen device: {exc}")

    def _open_stream(self, wanted: tuple[str | None, str | None]) -> None:
        sd = self._sd
        devices = self.devices()
        input_index = find_device(devices, wanted[0], output=False) if wanted[0] else None
        output_index = find_device(devices, wanted[1], output=True) if wanted[1] else None
        self._lost.clear()
        self._closing = False
        stream = sd.Stream(
            samplerate=self.format.rate,
            blocksize=self.format.block,
            channels=1,
            dtype="float32",
            latency="low",
            device=(input_index, output_index),
            callback=self._callback,
            finished_callback=self._finished,
        )
        stream.start()
        self._stream = stream
        default_in, default_out = sd.default.device
        names = [d.name for d in devices]
        in_index = input_index if input_index is not None else default_in
        out_index = output_index if output_index is not None else default_out
        self._current = (
            names[in_index] if 0 <= in_index < len(names) else None,
            names[out_index] if 0 <= out_index < len(names) else None,
        )
        log.info("audio devices: input %r, output %r", *self._current)

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            self._closing = True
            try:
                stream.abort()
            finally:
                stream.close()
        self._capture.clear()
        self._playback.clear()

    def close(self) -> None:
        with self._lock:
            self._close_stream()
            self._processor = None

    # -- health

    def check(self) -> None:
        with self._lock:
            if self._processor is None or not self._lost.is_set():
                return
            log.warning("audio stream stopped (device lost?): reopening on the default devices")
            self._close_stream()
            try:
                self._open_stream((None, None))
            except Exception as exc:  # no device at all: try again on the next check
                log.error("cannot reopen audio devices: %s", exc)
                self._lost.set()
                return
            self._report("device lost")

    def _report(self, reason: str) -> None:
        if self.on_device_changed is not None:
            self.on_device_changed(self._current[0], self._current[1], reason)

    def _finished(self) -> None:
        if not self._closing:
            self._lost.set()

    # -- audio threads

    def _callback(self, indata: Any, outdata: Any, frames: int, time: Any, status: Any) -> None:
        processor = self._processor
        if processor is None:
            outdata.fill(0)
            return
        # A driver may hand over garbage (NaN from an uninitialised buffer): never pass it on.
        captured = np.clip(np.nan_to_num(indata[:, 0], nan=0.0, posinf=0.0, neginf=0.0),
                           -1.0, 1.0)
        self._capture.write(processor.process_mic(captured))
        outdata[:, 0] = processor.process_speaker(self._playback.read(frames))

    def read(self) -> bytes:
        return to_pcm16(self._capture.read(self.format.block))

    def write(self, pcm: bytes) -> None:
        self._playback.write(from_pcm16(pcm))


