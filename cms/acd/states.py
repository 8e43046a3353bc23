"""The states of the ACD's machines, apart so events and machines can both import them."""

from __future__ import annotations

from enum import Enum

__all__ = ["PRESENCE", "AgentState", "CallerState", "Presence"]


class AgentState(Enum):
    """An agent's state; `ringing`, `on_call` and `wrap_up` are transient and always timed."""

    LOGGED_OFF = "logged_off"
    READY = "ready"
    NOT_READY = "not_ready"
    RINGING = "ringing"  # reserved for one offered call
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"


class Presence(Enum):
    """A user's presence as the CRM shows it (dial pad, business-partner views)."""

    AVAILABLE = "available"
    BUSY = "busy"
    NOT_READY = "not_ready"
    WRAP_UP = "wrap_up"
    LOGGED_OFF = "logged_off"


PRESENCE: dict[AgentState, Presence] = {
    AgentState.LOGGED_OFF: Presence.LOGGED_OFF,
    AgentState.READY: Presence.AVAILABLE,
    # Ringing counts as busy: the agent is reserved and cannot take another call.
    AgentState.RINGING: Presence.BUSY,
    AgentState.ON_CALL: Presence.BUSY,
    AgentState.NOT_READY: Presence.NOT_READY,
    AgentState.WRAP_UP: Presence.WRAP_UP,
}


class CallerState(Enum):
    """Where a caller the ACD holds is: an entry menu, waiting, or being offered to agents."""

    IN_MENU = "in_menu"
    WAITING = "waiting"
    OFFERING = "offering"
