"""The agent state machine: everything that affects an agent's state lives here.

The engine decides *which* state an agent goes to; `transition()` is the one
place that changes it: it checks the move against `TRANSITIONS`, keeps the
idle-since timestamp, and returns the events that make the change visible
(`agent.state_changed`, plus `presence.changed` when the presence differs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import AcdError
from .events import AcdEvent, AgentLoggedOff, AgentLoggedOn, AgentStateChanged, PresenceChanged
from .states import PRESENCE, AgentState, Presence

__all__ = ["TRANSITIONS", "Agent", "AgentState", "Presence", "log_off", "log_on", "transition"]

_OFF = AgentState.LOGGED_OFF
_READY = AgentState.READY
_NOT_READY = AgentState.NOT_READY
_RINGING = AgentState.RINGING
_ON_CALL = AgentState.ON_CALL
_WRAP_UP = AgentState.WRAP_UP

TRANSITIONS: dict[AgentState, frozenset[AgentState]] = {
    _OFF: frozenset({_READY, _NOT_READY}),
    # READY -> ON_CALL and NOT_READY -> ON_CALL: a call the agent makes or takes directly.
    _READY: frozenset({_NOT_READY, _RINGING, _ON_CALL, _WRAP_UP, _OFF}),
    # NOT_READY -> NOT_READY: the reason code changed.
    _NOT_READY: frozenset({_READY, _NOT_READY, _ON_CALL, _WRAP_UP, _OFF}),
    # RINGING ends answered, missed, withdrawn, or pre-empted by the agent's own call.
    _RINGING: frozenset({_ON_CALL, _READY, _NOT_READY, _OFF}),
    _ON_CALL: frozenset({_WRAP_UP, _READY, _NOT_READY, _OFF}),
    _WRAP_UP: frozenset({_READY, _NOT_READY, _ON_CALL, _OFF}),
}
"""Allowed moves: state -> states it may go to."""


@dataclass(slots=True, eq=False)
class Agent:
    """One agent's live state; owned and mutated by the engine only."""

    user: str
    state: AgentState = AgentState.LOGGED_OFF
    reason: str = ""
    since: float = 0.0  # when `state` (or `reason`) last changed
    device: str | None = None  # while logged on: the AOR its offers ring
    # Longest-idle order: set on becoming ready, and on a missed offer so a
    # silent phone moves to the back; kept across a withdrawn offer.
    idle_since: float = 0.0
    misses: int = 0  # consecutive unanswered offers
    offer: str | None = None  # the call it is ringing for
    calls: dict[str, str | None] = field(default_factory=dict)  # call id -> queue (None: direct)
    wrap_queue: str | None = None  # the queue whose wrap-up follows the current calls
    resume: tuple[AgentState, str] = (AgentState.READY, "")  # state after direct calls only
    after_call: tuple[AgentState, str] | None = None  # asked for during a call
    calls_taken: dict[str, int] = field(default_factory=dict)  # queue -> answered offers
    total_calls: int = 0

    @property
    def presence(self) -> Presence:
        """The presence the agent's state shows."""
        return PRESENCE[self.state]


def transition(agent: Agent, state: AgentState, reason: str, now: float) -> list[AcdEvent]:
    """Move `agent` to `state`; returns its events (none if nothing changed)."""
    previous = agent.state
    if state is previous and reason == agent.reason:
        return []
    if state not in TRANSITIONS[previous]:
        raise AcdError(f"agent {agent.user!r}: {previous.value} -> {state.value} is not allowed")
    agent.state = state
    agent.reason = reason
    agent.since = now
    if state is _READY and previous is not _RINGING:
        agent.idle_since = now
    events: list[AcdEvent] = [
        AgentStateChanged(time=now, user=agent.user, state=state, previous=previous, reason=reason)
    ]
    if PRESENCE[state] is not PRESENCE[previous]:
        events.append(PresenceChanged(time=now, user=agent.user, presence=PRESENCE[state]))
    return events


def log_on(
    agent: Agent, device: str, state: AgentState, reason: str, now: float, *, automatic: bool
) -> list[AcdEvent]:
    """Log a logged-off agent on at `device` in `state` (ready or not_ready)."""
    if agent.state is not _OFF:
        raise AcdError(f"agent {agent.user!r} is already logged on")
    if state not in (_READY, _NOT_READY):
        raise AcdError(f"an agent logs on ready or not_ready, not {state.value}")
    agent.device = device
    agent.misses = 0
    agent.idle_since = now
    agent.after_call = None
    events: list[AcdEvent] = [
        AgentLoggedOn(time=now, user=agent.user, device=device, automatic=automatic)
    ]
    return events + transition(agent, state, reason, now)


def log_off(agent: Agent, reason: str, now: float) -> list[AcdEvent]:
    """Log an agent off; the engine has already withdrawn its offer and forgotten its calls."""
    device = agent.device or ""
    events = transition(agent, _OFF, reason, now)
    agent.device = None
    agent.offer = None
    agent.calls.clear()
    agent.wrap_queue = None
    agent.after_call = None
    events.append(AgentLoggedOff(time=now, user=agent.user, device=device, reason=reason))
    return events
