"""Receive statistics on synthetic arrival sequences: loss, duplicates, reordering, jitter."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cms.media.stats import ReceiveStats

SSRC = 0x1234
FRAME = 160


def feed(stats: ReceiveStats, sequences: list[int], start_seq: int = 0,
         jitter_s: list[float] | None = None) -> None:
    for index, seq in enumerate(sequences):
        offset = (seq - start_seq) & 0xFFFF
        arrival = 10.0 + offset * 0.020 + (jitter_s[index] if jitter_s else 0.0)
        stats.update(seq, (1000 + offset * FRAME) & 0xFFFFFFFF, SSRC, arrival)


def test_perfect_stream_has_no_loss_and_no_jitter() -> None:
    stats = ReceiveStats()
    feed(stats, list(range(100)))
    snap = stats.snapshot()
    assert (snap.packets_received, snap.packets_expected, snap.packets_lost) == (100, 100, 0)
    assert snap.loss_fraction == 0.0 and snap.jitter == pytest.approx(0.0, abs=1e-6)
    assert snap.ssrc == SSRC and snap.highest_sequence == 99


def test_gaps_count_as_lost() -> None:
    stats = ReceiveStats()
    feed(stats, [s for s in range(100) if s % 10 != 5])
    snap = stats.snapshot()
    assert (snap.packets_expected, snap.packets_received, snap.packets_lost) == (100, 90, 10)
    assert snap.loss_fraction == pytest.approx(0.10)


def test_sequence_wrap_extends_the_highest_sequence() -> None:
    stats = ReceiveStats()
    sequences = [(65530 + i) & 0xFFFF for i in range(12)]
    feed(stats, sequences, start_seq=65530)
    snap = stats.snapshot()
    assert snap.highest_sequence == 65536 + 5
    assert snap.packets_expected == 12 and snap.packets_lost == 0


def test_duplicates_are_counted_apart_and_do_not_hide_loss() -> None:
    stats = ReceiveStats()
    feed(stats, [0, 1, 2, 2, 3, 5, 5, 6])
    snap = stats.snapshot()
    assert snap.duplicates == 2
    assert (snap.packets_expected, snap.packets_received, snap.packets_lost) == (7, 6, 1)


def test_reordered_packets_are_late_but_not_lost() -> None:
    stats = ReceiveStats()
    feed(stats, [0, 1, 3, 2, 4, 6, 5, 7])
    snap = stats.snapshot()
    assert snap.late == 2 and snap.packets_lost == 0 and snap.duplicates == 0


def test_constant_jitter_converges_per_rfc_3550_a8() -> None:
    stats = ReceiveStats()
    # Arrivals alternate ±2 ms around the ideal: |D| is 4 ms = 32 timestamp units each time.
    offsets = [0.002 if i % 2 else -0.002 for i in range(500)]
    feed(stats, list(range(500)), jitter_s=offsets)
    snap = stats.snapshot()
    assert snap.jitter == pytest.approx(32.0, rel=0.01)
    assert snap.jitter_ms == pytest.approx(4.0, rel=0.01)


def test_first_jitter_steps_follow_the_estimator() -> None:
    stats = ReceiveStats()
    stats.update(0, 0, SSRC, 1.000)
    stats.update(1, 160, SSRC, 1.030)  # 10 ms late: D = 80 units, J = 80 / 16 = 5
    assert stats.jitter == pytest.approx(5.0)
    stats.update(2, 320, SSRC, 1.050)  # on time relative to the previous: D = 0
    assert stats.jitter == pytest.approx(5.0 - 5.0 / 16)


def test_interval_loss_fraction_resets_on_report() -> None:
    stats = ReceiveStats()
    feed(stats, [0, 1, 3])  # 1 of 4 lost
    assert stats.report().interval_loss_fraction == pytest.approx(0.25)
    feed(stats, [4, 5, 6, 7], start_seq=0)
    snap = stats.snapshot()
    assert snap.interval_loss_fraction == 0.0
    assert snap.packets_lost == 1


def test_new_ssrc_starts_a_new_stream_and_keeps_totals() -> None:
    stats = ReceiveStats()
    feed(stats, [0, 1, 3])
    stats.update(40000, 0, 0x9999, 20.0)
    stats.update(40001, 160, 0x9999, 20.02)
    snap = stats.snapshot()
    assert snap.ssrc == 0x9999 and snap.restarts == 1
    assert (snap.packets_expected, snap.packets_received, snap.packets_lost) == (6, 5, 1)


def test_big_jump_then_sequential_packets_is_a_restart_not_a_loss() -> None:
    stats = ReceiveStats()
    feed(stats, [0, 1, 2])
    for seq in (30000, 30001, 30002):
        stats.update(seq, 0, SSRC, 30.0)
    snap = stats.snapshot()
    assert snap.restarts == 1
    assert snap.packets_lost == 0


@given(st.lists(st.sampled_from(["ok", "lost", "dup", "swap"]), min_size=2, max_size=300),
       st.integers(0, 0xFFFF))
def test_loss_and_duplicates_match_what_the_network_did(fates: list[str], first: int) -> None:
    arrivals: list[int] = []
    lost = duplicated = 0
    for offset, fate in enumerate(fates):
        seq = (first + offset) & 0xFFFF
        if offset == 0 or (fate == "lost" and offset == len(fates) - 1):
            arrivals.append(seq)  # The first and last always arrive: expected is known.
        elif fate == "lost":
            lost += 1
        elif fate == "dup":
            arrivals += [seq, seq]
            duplicated += 1
        elif fate == "swap" and len(arrivals) > 1:
            arrivals.insert(len(arrivals) - 1, seq)
        else:
            arrivals.append(seq)
    stats = ReceiveStats()
    feed(stats, arrivals, start_seq=first)
    snap = stats.snapshot()
    assert snap.packets_expected == len(fates)
    assert snap.packets_lost == lost
    assert snap.duplicates == duplicated
