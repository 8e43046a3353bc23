"""Read-only snapshots of the ACD's state, for CTI queries and tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .settings import Strategy
from .states import AgentState, CallerState, Presence

__all__ = ["AgentView", "CallerView", "Destination", "QueueView"]


@dataclass(frozen=True, slots=True)
class Destination:
    """What a dialled number or name reaches in the ACD."""

    kind: Literal["queue", "menu"]
    name: str


@dataclass(frozen=True, slots=True)
class AgentView:
    """A snapshot of one agent (for CTI `GET /agents`)."""

    user: str
    state: AgentState
    reason: str
    presence: Presence
    since: float
    device: str | None
    idle_since: float
    misses: int
    offer: str | None
    calls: tuple[str, ...]
    calls_taken: int
    deadline: float | None  # when the current transient state is reclaimed or ends


@dataclass(frozen=True, slots=True)
class CallerView:
    """A snapshot of a caller the ACD holds."""

    call_id: str
    state: CallerState
    queue: str | None
    menu: str | None
    position: int  # 1-based in its queue; 0 in a menu
    priority: int
    arrived_at: float
    joined_at: float
    offered_to: tuple[str, ...]
    deadline: float | None  # ring timeout, maximum wait or menu timeout, the earliest


@dataclass(frozen=True, slots=True)
class QueueView:
    """A snapshot of one queue (for CTI `GET /queues/{name}`)."""

    name: str
    number: str
    strategy: Strategy
    callers: tuple[CallerView, ...]  # in service order
    agents: tuple[tuple[str, AgentState], ...]  # members in member order

    def longest_wait(self, now: float) -> float:
        """Seconds the longest-waiting caller has been in this queue."""
        return max((now - c.joined_at for c in self.callers), default=0.0)
