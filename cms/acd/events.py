"""What the ACD tells the world: events (for the journal and CTI) and actions (for the B2BUA).

Every `Acd` input returns one list of outputs, in the order they happened.
Events are past-tense facts, one per state change; `TYPE` is the journal's
event type and `payload()` its JSON-ready data. Actions are requests to the
B2BUA, which executes them in order and reports the outcome back through the
`Acd` methods (`offer_answered`, `offer_failed`, `call_ended`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import ClassVar, TypeAlias

from .states import AgentState, Presence

__all__ = [
    "AcdEvent",
    "Action",
    "AgentLoggedOff",
    "AnnouncePosition",
    "AgentLoggedOn",
    "AgentStateChanged",
    "CallOffered",
    "CallerJoinedQueue",
    "CallerLeftQueue",
    "CancelOffer",
    "CancelReason",
    "ConnectAgent",
    "EndCall",
    "HangUpCaller",
    "HangUpReason",
    "LeaveReason",
    "MenuEntered",
    "MenuExit",
    "MenuLeft",
    "OfferCall",
    "OfferEnded",
    "OfferFailure",
    "OfferOutcome",
    "Output",
    "PlayToCaller",
    "PresenceChanged",
    "SendToOverflow",
]


class LeaveReason(Enum):
    """Why a caller left a queue."""

    ANSWERED = "answered"
    ABANDONED = "abandoned"
    OVERFLOW = "overflow"  # the empty-queue rule sent the caller on
    TIMEOUT = "timeout"  # the maximum wait ran out; the caller went to the overflow target


class OfferOutcome(Enum):
    """How an offer to one agent ended."""

    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    REJECTED = "rejected"
    ERROR = "error"
    CANCELLED = "cancelled"  # withdrawn by the ACD: answered elsewhere, caller gone, agent away


class OfferFailure(Enum):
    """Why the B2BUA reports an offer failed (all count as a miss toward max_no_answer)."""

    BUSY = "busy"  # 486/600 from the device
    NO_ANSWER = "no_answer"  # the B2BUA's own ring timer, or 480/408
    REJECTED = "rejected"  # the agent declined (603, or Reject in the CRM)
    ERROR = "error"  # unreachable or other failure


class CancelReason(Enum):
    """Why the ACD withdraws an offer."""

    NO_ANSWER = "no_answer"  # ring timeout
    ANSWERED_ELSEWHERE = "answered_elsewhere"
    ABANDONED = "abandoned"
    CALLER_MOVED = "caller_moved"  # maximum wait or empty queue: the caller goes elsewhere
    AGENT_UNAVAILABLE = "agent_unavailable"  # logged off, not ready, or busy on another call
    WITHDRAWN = "withdrawn"  # an answer for an offer that is no longer live: drop that leg


class HangUpReason(Enum):
    """Why the ACD ends a caller's call."""

    OVERFLOW = "overflow"
    NO_CHOICE = "no_choice"  # an entry menu got no valid digit


class MenuExit(Enum):
    """How a caller left an entry menu."""

    CHOICE = "choice"
    DEFAULT = "default"
    FAILED = "failed"
    ABANDONED = "abandoned"


# ---------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True, kw_only=True)
class AcdEvent:
    """Base of all ACD events; `time` is the `now` of the input that caused it."""

    TYPE: ClassVar[str] = ""
    time: float

    def payload(self) -> dict[str, object]:
        """The fields as JSON-ready values (enums as their value), without `time`."""
        names = _PAYLOAD_FIELDS.get(type(self))
        if names is None:  # once per event class: fields() is slow for every event
            names = tuple(f.name for f in fields(self) if f.name != "time")
            _PAYLOAD_FIELDS[type(self)] = names
        data: dict[str, object] = {}
        for name in names:
            value = getattr(self, name)
            data[name] = value.value if isinstance(value, Enum) else value
        return data


_PAYLOAD_FIELDS: dict[type[AcdEvent], tuple[str, ...]] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentLoggedOn(AcdEvent):
    """An agent logged on at a device (its own phone or a work centre's)."""

    TYPE: ClassVar[str] = "agent.logged_on"
    user: str
    device: str
    automatic: bool  # by auto_logon when the device registered


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentLoggedOff(AcdEvent):
    """An agent logged off; `reason` is "logoff" or "device_unregistered"."""

    TYPE: ClassVar[str] = "agent.logged_off"
    user: str
    device: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStateChanged(AcdEvent):
    """An agent's state (or its not-ready reason) changed."""

    TYPE: ClassVar[str] = "agent.state_changed"
    user: str
    state: AgentState
    previous: AgentState
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceChanged(AcdEvent):
    """A user's presence changed (derived from the agent state)."""

    TYPE: ClassVar[str] = "presence.changed"
    user: str
    presence: Presence


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerJoinedQueue(AcdEvent):
    """A caller joined a queue at 1-based `position`."""

    TYPE: ClassVar[str] = "queue.caller_joined"
    call_id: str
    queue: str
    position: int
    priority: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerLeftQueue(AcdEvent):
    """A caller left a queue after `waited` seconds.

    `agent` is set when answered; `target` is where an overflow sent the
    caller (a queue, a number, or "" for announcement then hang-up).
    """

    TYPE: ClassVar[str] = "queue.caller_left"
    call_id: str
    queue: str
    reason: LeaveReason
    waited: float
    agent: str = ""
    target: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallOffered(AcdEvent):
    """A queued call was offered to an agent (the CRM flashes Accept / Reject)."""

    TYPE: ClassVar[str] = "call.offered"
    call_id: str
    queue: str
    agent: str
    device: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferEnded(AcdEvent):
    """An offer to one agent ended (the CRM stops flashing)."""

    TYPE: ClassVar[str] = "call.offer_ended"
    call_id: str
    agent: str
    outcome: OfferOutcome


@dataclass(frozen=True, slots=True, kw_only=True)
class MenuEntered(AcdEvent):
    """A caller reached an entry menu."""

    TYPE: ClassVar[str] = "menu.entered"
    call_id: str
    menu: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MenuLeft(AcdEvent):
    """A caller left an entry menu; `digit` is the choice made, if any."""

    TYPE: ClassVar[str] = "menu.left"
    call_id: str
    menu: str
    exit: MenuExit
    digit: str = ""


# ---------------------------------------------------------------------------
# Actions


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    """Base of all requests to the B2BUA."""

    call_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferCall(Action):
    """Ring `agent` on `device` (an AOR of the registrar) for this caller.

    Report back with `offer_answered` or `offer_failed`. The ACD runs the
    ring timeout itself (`timeout` is informational) and cancels the offer.
    """

    agent: str
    device: str
    queue: str
    timeout: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelOffer(Action):
    """Stop ringing `agent` for this call, or hang up that leg if it was answered."""

    agent: str
    device: str
    reason: CancelReason


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectAgent(Action):
    """The agent's answer won: bridge the caller to that agent's leg."""

    agent: str
    device: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PlayToCaller(Action):
    """Play an announcement to the caller (menu prompt); the caller stays with the ACD."""

    announcement: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnouncePosition(Action):
    """Tell a waiting caller its place in the queue, then go back to hold audio."""

    queue: str
    position: int  # 1-based, in service order
    waiting: int  # callers in the queue, this one included


@dataclass(frozen=True, slots=True, kw_only=True)
class SendToOverflow(Action):
    """Route the caller to a number outside the ACD; the ACD forgets the caller."""

    target: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HangUpCaller(Action):
    """Play `announcement` (if not empty) to its end, then hang up; the ACD forgets the caller."""

    reason: HangUpReason
    announcement: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class EndCall(Action):
    """Release both legs of an answered call if it still exists (a lost BYE was reclaimed)."""

    agent: str
    reason: str


Output: TypeAlias = AcdEvent | Action
"""One item of what an `Acd` input returns."""
