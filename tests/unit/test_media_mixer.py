"""The conference mix: each member hears the sum of the others, never itself."""

from __future__ import annotations

import numpy as np

from cms.media.formats import FRAME_SAMPLES
from cms.media.mixer import MAX_BACKLOG, Mix, MixSource


def frame(value: int, frames: int = 1) -> np.ndarray:
    return np.full(FRAME_SAMPLES * frames, value, dtype=np.int16)


def test_each_member_hears_the_others_summed_not_itself() -> None:
    mix = Mix()
    for member in "abc":
        mix.add(member)
    mix.push("a", frame(100))
    mix.push("b", frame(20))
    mix.push("c", frame(3))
    mix.advance()
    assert int(mix.frame_for("a")[0]) == 23
    assert int(mix.frame_for("b")[0]) == 103
    assert int(MixSource(mix, "c").next_frame()[0]) == 120


def test_sum_is_clipped_to_int16() -> None:
    mix = Mix()
    for member in "abc":
        mix.add(member)
    mix.push("a", frame(30000))
    mix.push("b", frame(30000))
    mix.advance()
    assert int(mix.frame_for("c")[0]) == 32767


def test_a_silent_member_contributes_silence_and_long_packets_split_into_frames() -> None:
    mix = Mix()
    mix.add("a")
    mix.add("b")
    mix.push("a", frame(5, frames=2))  # a 40 ms packet
    mix.advance()
    assert int(mix.frame_for("b")[0]) == 5 and int(mix.frame_for("a")[0]) == 0
    mix.advance()
    assert int(mix.frame_for("b")[0]) == 5
    mix.advance()
    assert int(mix.frame_for("b")[0]) == 0


def test_backlog_is_bounded_and_removed_members_are_ignored() -> None:
    mix = Mix()
    mix.add("a")
    mix.add("b")
    for value in range(MAX_BACKLOG + 3):
        mix.push("a", frame(value))
    mix.advance()
    assert int(mix.frame_for("b")[0]) == 3  # the oldest frames were dropped
    mix.remove("a")
    mix.push("a", frame(9))
    mix.advance()
    assert mix.members == ["b"] and int(mix.frame_for("b")[0]) == 0
