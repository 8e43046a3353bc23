"""The null backend: silence in, audio out discarded; meters and gains still work."""

from __future__ import annotations

import numpy as np

from softphone.audio.backend import AudioBackend, AudioFormat, Processor
from softphone.audio.dsp import from_pcm16, to_pcm16


class NullBackend(AudioBackend):
    """No sound device: the microphone is silent, the speaker is discarded."""

    name = "null"

    def __init__(self) -> None:
        super().__init__()
        self._processor: Processor | None = None
        self._silence = np.zeros(0, dtype=np.float32)

    def open(self, fmt: AudioFormat, processor: Processor) -> None:
        self.format = fmt
        self._processor = processor
        self._silence = np.zeros(fmt.block, dtype=np.float32)

    def read(self) -> bytes:
        assert self._processor is not None, "open() first"
        return to_pcm16(self._processor.process_mic(self._silence))

    def write(self, pcm: bytes) -> None:
        assert self._processor is not None, "open() first"
        self._processor.process_speaker(from_pcm16(pcm))

    def close(self) -> None:
        self._processor = None
