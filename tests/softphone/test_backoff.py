"""Delays between re-registration attempts."""

from __future__ import annotations

import pytest

from softphone.sip.backoff import Backoff


def test_delays_double_up_to_the_maximum() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, jitter=0.0)

    assert [backoff.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_success_starts_over() -> None:
    backoff = Backoff(initial=1.0, maximum=60.0, jitter=0.0)
    backoff.next_delay()
    backoff.next_delay()

    backoff.reset()

    assert backoff.next_delay() == 1.0


@pytest.mark.parametrize("draw", [0.0, 0.5, 1.0])
def test_jitter_spreads_each_delay_by_at_most_its_fraction(draw: float) -> None:
    backoff = Backoff(initial=10.0, maximum=60.0, jitter=0.1, rand=lambda: draw)

    assert 9.0 <= backoff.next_delay() <= 11.0


def test_nonsense_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=0)
    with pytest.raises(ValueError):
        Backoff(initial=5, maximum=1)
