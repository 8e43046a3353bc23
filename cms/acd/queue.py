"""Queues: waiting callers in service order, and the strategies that pick agents.

Service order, within a queue and across queues alike: higher priority
first, then earlier arrival at the ACD (an overflowed caller keeps its
arrival time, so it is not sent to the back), then arrival sequence. An agent
who is a member of several queues therefore gets the caller that comes first
in this order among the queues it serves.

Strategies are small pure functions over the eligible agents (ready, with a
registered device, not yet tried by this caller in the current round). Every
strategy first keeps only the agents with the lowest penalty, so a penalty
means "only when nobody better is free" (as in Asterisk); `linear` then takes
the first in member order.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from .settings import QueueSettings, Strategy
from .states import CallerState

__all__ = ["STRATEGIES", "Caller", "Candidate", "QueueRuntime", "choose"]


@dataclass(slots=True, eq=False)
class Caller:
    """A call the ACD holds: in an entry menu, waiting in a queue, or being offered."""

    call_id: str
    arrived_at: float
    seq: int  # arrival order; breaks ties between equal arrival times
    priority: int
    explicit_priority: bool  # given on arrival; else each queue's default applies
    state: CallerState = CallerState.WAITING
    queue: str | None = None
    menu: str | None = None
    joined_at: float = 0.0  # when it joined its current queue (for max_wait and `waited`)
    attempts: int = 0  # failed menu attempts
    offers: set[str] = field(default_factory=set)  # agents ringing for it now
    tried: set[str] = field(default_factory=set)  # agents that missed it this round
    visited: set[str] = field(default_factory=set)  # queues passed through (overflow loops)

    def order(self) -> tuple[int, float, int]:
        """The service-order key: lower is served first."""
        return (-self.priority, self.arrived_at, self.seq)


@dataclass(slots=True, eq=False)
class QueueRuntime:
    """A queue's live state: its ordered members, its callers, its round-robin position."""

    settings: QueueSettings
    members: tuple[str, ...]  # ordered: settings.members, then users listing the queue
    callers: list[Caller] = field(default_factory=list)  # in service order
    last_offered: int | None = None  # member index of the last round-robin pick
    order: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.order = {user: i for i, user in enumerate(self.members)}

    @property
    def name(self) -> str:
        """The queue's name."""
        return self.settings.name

    def add(self, caller: Caller) -> int:
        """Insert a caller in service order; returns its 1-based position."""
        index = bisect.bisect_right(self.callers, caller.order(), key=Caller.order)
        self.callers.insert(index, caller)
        return index + 1

    def remove(self, caller: Caller) -> None:
        """Take a caller out of the queue."""
        self.callers.remove(caller)

    def position(self, caller: Caller) -> int:
        """A queued caller's 1-based position."""
        return self.callers.index(caller) + 1

    def penalty(self, user: str) -> int:
        """A member's penalty in this queue (0 unless configured)."""
        return self.settings.penalties.get(user, 0)


class Candidate(NamedTuple):
    """An eligible agent as the strategies see it.

    A named tuple, not a frozen dataclass: one is built per ready member at every
    offer, and a frozen dataclass's __init__ costs several times more.
    """

    user: str
    order: int  # index in the queue's member list
    penalty: int
    idle_since: float
    calls_taken: int  # answered offers from this queue


Pick = Callable[[Sequence[Candidate], int | None], list[Candidate]]


def _longest_idle(pool: Sequence[Candidate], last: int | None) -> list[Candidate]:
    return [min(pool, key=lambda c: (c.idle_since, c.order))]


def _round_robin(pool: Sequence[Candidate], last: int | None) -> list[Candidate]:
    # The first member after the previous pick, wrapping round (Asterisk's rrmemory).
    after = [c for c in pool if last is not None and c.order > last]
    return [after[0] if after else pool[0]]


def _fewest_calls(pool: Sequence[Candidate], last: int | None) -> list[Candidate]:
    return [min(pool, key=lambda c: (c.calls_taken, c.idle_since, c.order))]


def _ring_all(pool: Sequence[Candidate], last: int | None) -> list[Candidate]:
    return list(pool)


def _linear(pool: Sequence[Candidate], last: int | None) -> list[Candidate]:
    return [pool[0]]


STRATEGIES: dict[Strategy, Pick] = {
    Strategy.LONGEST_IDLE: _longest_idle,
    Strategy.ROUND_ROBIN: _round_robin,
    Strategy.FEWEST_CALLS: _fewest_calls,
    Strategy.RING_ALL: _ring_all,
    Strategy.LINEAR: _linear,
}


def choose(
    strategy: Strategy, candidates: Sequence[Candidate], last: int | None
) -> list[Candidate]:
    """The agents to offer a call to (one, or all for ring-all); `candidates` must not be empty."""
    best = min(c.penalty for c in candidates)
    pool = sorted((c for c in candidates if c.penalty == best), key=lambda c: c.order)
    return STRATEGIES[strategy](pool, last)
