"""The WAV backend: the microphone plays IN.wav in a loop, the speaker is recorded to OUT.wav.

For tests and synthetic agents. OUT.wav is mono 16-bit at the bridge rate, written
unbuffered with its header rewritten after every block, so another process may read it
while the call goes on and sees every block as soon as it was played.
"""

from __future__ import annotations

import threading
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np

from softphone.audio.backend import AudioBackend, AudioFormat, Processor
from softphone.audio.dsp import Samples, from_pcm16, resample, to_pcm16


def read_wav(path: Path, rate: int) -> Samples:
    """A WAV file (8/16/32-bit PCM, any channels) as mono float32 at `rate`."""
    with wave.open(str(path), "rb") as reader:
        width = reader.getsampwidth()
        channels = reader.getnchannels()
        source_rate = reader.getframerate()
        raw = reader.readframes(reader.getnframes())
    if width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    else:
        raise ValueError(f"{path}: {8 * width}-bit WAV is not supported")
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.float32)
    return resample(data, source_rate, rate)


def write_wav(path: Path, samples: Samples, rate: int) -> None:
    """Write mono float32 samples as a 16-bit WAV file."""
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(to_pcm16(samples))


class WavBackend(AudioBackend):
    """Microphone from a WAV file (looped), speaker into a WAV file."""

    name = "wav"

    def __init__(self, input_path: Path, output_path: Path) -> None:
        super().__init__()
        self.input_path = input_path
        self.output_path = output_path
        self._processor: Processor | None = None
        self._source = np.zeros(0, dtype=np.float32)
        self._position = 0
        self._writer: wave.Wave_write | None = None
        self._file: BinaryIO | None = None
        self._lock = threading.Lock()  # close() may race a last write() from the bridge

    def open(self, fmt: AudioFormat, processor: Processor) -> None:
        self.format = fmt
        self._processor = processor
        source = read_wav(self.input_path, fmt.rate)
        if source.size == 0:
            source = np.zeros(fmt.block, dtype=np.float32)
        self._source = source
        self._position = 0
        # Unbuffered, so that what was played is on disk at once (readers follow the file)
        self._file = open(self.output_path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        writer = wave.open(self._file, "wb")
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(fmt.rate)
        writer.writeframes(b"")  # a valid (empty) file from the start
        self._writer = writer

    def read(self) -> bytes:
        assert self._processor is not None, "open() first"
        block = self.format.block
        source = self._source
        start = self._position
        if start + block <= source.size:
            chunk = source[start:start + block]
        else:
            indices = (start + np.arange(block)) % source.size
            chunk = source[indices]
        self._position = (start + block) % source.size
        return to_pcm16(self._processor.process_mic(chunk))

    def write(self, pcm: bytes) -> None:
        assert self._processor is not None, "open() first"
        out = to_pcm16(self._processor.process_speaker(from_pcm16(pcm)))
        with self._lock:
            if self._writer is not None:
                self._writer.writeframes(out)

    def close(self) -> None:
        with self._lock:
            writer, self._writer = self._writer, None
            file, self._file = self._file, None
        if writer is not None:
            writer.close()
        if file is not None:
            file.close()
