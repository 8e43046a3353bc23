"""Delays between registration attempts after failures: doubling, capped, with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """initial, 2x, 4x, ... up to `maximum` seconds; each delay is spread by ±`jitter`
    (a fraction) so that phones that lost the same registrar do not return in lockstep."""

    def __init__(self, initial: float = 1.0, maximum: float = 60.0, factor: float = 2.0,
                 jitter: float = 0.1, rand: Callable[[], float] = random.random) -> None:
        if initial <= 0 or maximum < initial or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("bad back-off parameters")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rand = rand
        self.failures = 0

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next attempt."""
        base = min(self.maximum, self.initial * self.factor ** self.failures)
        self.failures += 1
        spread = base * self.jitter * (2.0 * self._rand() - 1.0)
        return max(0.0, base + spread)

    def reset(self) -> None:
        """A success: the next failure starts from `initial` again."""
        self.failures = 0
