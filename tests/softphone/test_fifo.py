"""The bounded FIFO between PortAudio's clock and the bridge's clock."""

from __future__ import annotations

import numpy as np

from softphone.audio.fifo import SampleFifo


def ramp(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.float32)


def test_samples_come_out_in_order() -> None:
    fifo = SampleFifo(10)
    fifo.write(ramp(0, 4))
    fifo.write(ramp(4, 3))

    assert list(fifo.read(5)) == [0, 1, 2, 3, 4]
    assert list(fifo.read(2)) == [5, 6]
    assert len(fifo) == 0


def test_an_underrun_is_zero_filled_and_counted() -> None:
    fifo = SampleFifo(10)
    fifo.write(ramp(1, 2))

    assert list(fifo.read(4)) == [1, 2, 0, 0]
    assert fifo.underruns == 2


def test_an_overrun_drops_the_oldest_samples_to_bound_latency() -> None:
    fifo = SampleFifo(4)
    fifo.write(ramp(0, 3))
    fifo.write(ramp(3, 3))

    assert list(fifo.read(4)) == [2, 3, 4, 5]
    assert fifo.overruns == 2


def test_a_write_larger_than_the_capacity_keeps_its_newest_part() -> None:
    fifo = SampleFifo(3)
    fifo.write(ramp(0, 5))

    assert list(fifo.read(3)) == [2, 3, 4]
