"""A bounded sample FIFO between two audio threads running on different clocks."""

from __future__ import annotations

import threading

import numpy as np

from softphone.audio.dsp import Samples


class SampleFifo:
    """Float32 mono samples; the writer drops the oldest beyond `capacity` (bounded latency),
    the reader gets zeros for what is missing (an underrun plays as a short gap)."""

    def __init__(self, capacity: int) -> None:
        self._buffer = np.zeros(capacity, dtype=np.float32)
        self._fill = 0
        self._lock = threading.Lock()
        self.overruns = 0  # samples dropped because the reader fell behind
        self.underruns = 0  # samples zero-filled because the writer fell behind

    @property
    def capacity(self) -> int:
        return int(self._buffer.size)

    def __len__(self) -> int:
        return self._fill

    def write(self, samples: Samples) -> None:
        """Append samples, dropping the oldest when full."""
        capacity = self._buffer.size
        with self._lock:
            if samples.size >= capacity:
                self.overruns += self._fill + samples.size - capacity
                self._buffer[:] = samples[-capacity:]
                self._fill = capacity
                return
            excess = self._fill + samples.size - capacity
            if excess > 0:
                self.overruns += excess
                keep = self._fill - excess
                self._buffer[:keep] = self._buffer[excess:self._fill]
                self._fill = keep
            self._buffer[self._fill:self._fill + samples.size] = samples
            self._fill += samples.size

    def read(self, count: int) -> Samples:
        """Take `count` samples, zero-padded at the end when fewer are buffered."""
        out = np.zeros(count, dtype=np.float32)
        with self._lock:
            take = min(count, self._fill)
            out[:take] = self._buffer[:take]
            remaining = self._fill - take
            self._buffer[:remaining] = self._buffer[take:self._fill]
            self._fill = remaining
            self.underruns += count - take
        return out

    def clear(self) -> None:
        with self._lock:
            self._fill = 0
