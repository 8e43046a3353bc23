"""Conference audio: every member hears the sum of the others, driven by the shared clock.

`Mix` is the pure part (frames in per member, one mixed frame out per member and tick);
`Conference` hooks it to legs: each leg's received audio comes in through `Leg.tap` and
each leg plays a `MixSource` that reads the other members' current frames.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable

import numpy as np

from .clock import MediaClock
from .formats import FRAME_SAMPLES
from .g711 import Samples
from .relay import Leg, disconnect
from .rtp import RtpError, payload_bounds

MAX_BACKLOG = 5  # Frames kept per member: more means the sender runs fast; drop the oldest.


class Mix:
    """N-party mixing of 20 ms frames: `push` what each member sent, `advance` once a tick."""

    def __init__(self) -> None:
        self._queued: dict[Hashable, deque[Samples]] = {}
        self._current: dict[Hashable, Samples] = {}
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)

    @property
    def members(self) -> list[Hashable]:
        """Who is in the mix."""
        return list(self._queued)

    def add(self, member: Hashable) -> None:
        """A member joins (hearing the others from the next tick)."""
        self._queued.setdefault(member, deque(maxlen=MAX_BACKLOG))
        self._current.setdefault(member, self._silence)

    def remove(self, member: Hashable) -> None:
        """A member leaves."""
        self._queued.pop(member, None)
        self._current.pop(member, None)

    def push(self, member: Hashable, samples: Samples) -> None:
        """Audio a member sent (any whole number of 20 ms frames; a partial tail is dropped)."""
        queue = self._queued.get(member)
        if queue is None:
            return
        for start in range(0, samples.size - FRAME_SAMPLES + 1, FRAME_SAMPLES):
            queue.append(samples[start:start + FRAME_SAMPLES])

    def advance(self) -> None:
        """Take each member's next frame (silence when it sent nothing in time)."""
        for member, queue in self._queued.items():
            self._current[member] = queue.popleft() if queue else self._silence

    def frame_for(self, member: Hashable) -> Samples:
        """What `member` hears this tick: everyone else's current frame, summed and clipped."""
        total = np.zeros(FRAME_SAMPLES, dtype=np.int32)
        for other, frame in self._current.items():
            if other != member:
                total += frame
        mixed: Samples = np.clip(total, -32768, 32767).astype(np.int16)
        return mixed


class MixSource:
    """The audio source a conference member's leg plays: the mix without its own voice."""

    def __init__(self, mix: Mix, member: Hashable) -> None:
        self._mix = mix
        self._member = member

    def next_frame(self) -> Samples:
        """The next 160 samples of everyone else."""
        return self._mix.frame_for(self._member)


class Conference:
    """A mix over live legs: taps their received audio and plays each the others' sum."""

    def __init__(self, clock: MediaClock, legs: Iterable[Leg] = ()) -> None:
        self.clock = clock
        self.mix = Mix()
        self.legs: list[Leg] = []
        clock.subscribe(self._on_tick)
        for leg in legs:
            self.add(leg)

    def add(self, leg: Leg) -> None:
        """Bring a leg in: no relay any more, it hears the mix and feeds it."""
        disconnect(leg)
        self.mix.add(leg)
        self.legs.append(leg)
        leg.tap = lambda buf, length: self._received(leg, buf, length)
        leg.play(MixSource(self.mix, leg))

    def remove(self, leg: Leg) -> None:
        """Take a leg out (it plays nothing until told otherwise)."""
        if leg not in self.legs:
            return
        self.legs.remove(leg)
        self.mix.remove(leg)
        leg.tap = None
        if isinstance(leg.playing, MixSource):
            leg.stop_audio()

    def close(self) -> None:
        """Take every leg out and stop ticking."""
        for leg in list(self.legs):
            self.remove(leg)
        self.clock.unsubscribe(self._on_tick)

    def _received(self, leg: Leg, buf: bytearray, length: int) -> None:
        media_format = leg.format
        if media_format is None:
            return
        try:
            start, end = payload_bounds(buf, length)
        except RtpError:
            return
        self.mix.push(leg, media_format.codec.decode(bytes(buf[start:end])))

    def _on_tick(self, tick: int) -> None:
        self.mix.advance()
