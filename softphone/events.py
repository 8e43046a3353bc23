"""What the soft phone reports: registrations, calls, audio (one dataclass per event).

Events are created on the SIP thread or the audio side and consumed on the asyncio side
(state tables, call history, WebSocket clients). `TYPE` is the name clients see on the
wire (DESIGN.md §5 style: `call.established`, `registration.registered`, ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from softphone.audio.engine import Levels


class RegState(StrEnum):
    """Where an account's registration stands."""

    DISABLED = "disabled"  # no registrar configured (peer-to-peer account)
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"  # a retry is scheduled (`retry_in`)
    UNREGISTERED = "unregistered"


class CallState(StrEnum):
    """A call's life cycle as the agent sees it."""

    DIALING = "dialing"  # outgoing, INVITE sent
    RINGING = "ringing"  # outgoing: the far end rings (18x)
    INCOMING = "incoming"  # incoming: our phone rings
    CONNECTING = "connecting"  # answered, waiting for the ACK
    ESTABLISHED = "established"
    ENDED = "ended"


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """One account's registration state."""

    account: str
    """The account's name in the profile."""
    state: RegState
    code: int = 0
    """Last SIP status code (0: none yet)."""
    reason: str = ""
    expires: int = 0
    """Seconds the registrar granted (registered only)."""
    retry_in: float | None = None
    """Seconds until the next attempt after a failure."""
    uri: str = ""
    """The account's address of record."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallSnapshot:
    """Everything the UI and the history need about one call, at one moment."""

    id: str
    account: str
    direction: str
    """'incoming' or 'outgoing'."""
    remote: str
    """The other party's URI (with display name when known)."""
    state: CallState
    held: bool = False
    """We put the call on hold."""
    remote_held: bool = False
    """The other party put us on hold."""
    started: float = 0.0
    """Unix time the call was placed or offered."""
    answered: float | None = None
    ended: float | None = None
    code: int = 0
    """Final SIP status (200 for an answered call, 486, 603, 487, ...)."""
    reason: str = ""
    auto_answer: bool = False
    """The call was (or will be) answered automatically, as the CMS asked."""
    attached_data: dict[str, Any] | None = None
    """The CMS's contact attached data (caller, business partner, ...), when sent."""
    transferred: bool = False
    """We handed the other party on to someone else (blind or attended transfer)."""
    conference: tuple[str, ...] = ()
    """Ids of the other calls this one is mixed with (a local three-way conference)."""

    @property
    def duration(self) -> float:
        """Seconds since (or between) answer and end; 0 when never answered."""
        if self.answered is None:
            return 0.0
        end = self.ended if self.ended is not None else time.time()
        return max(0.0, end - self.answered)


class Event:
    """Base of all soft phone events."""

    TYPE: ClassVar[str] = "event"

    @property
    def type(self) -> str:
        return self.TYPE


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationChanged(Event):
    """An account's registration changed (wire type `registration.<state>`)."""

    registration: Registration

    @property
    def type(self) -> str:
        return f"registration.{self.registration.state.value}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEvent(Event):
    """Base of the call events: each carries the call as it is now."""

    call: CallSnapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class CallIncoming(CallEvent):
    TYPE = "call.incoming"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallDialing(CallEvent):
    TYPE = "call.dialing"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRinging(CallEvent):
    TYPE = "call.ringing"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEstablished(CallEvent):
    TYPE = "call.established"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallHeld(CallEvent):
    """The call went on hold; `by` is 'local' (we held it) or 'remote'."""

    TYPE = "call.held"
    by: str = "local"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRetrieved(CallEvent):
    """The call came off hold; `by` is 'local' or 'remote'."""

    TYPE = "call.retrieved"
    by: str = "local"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallConferenced(CallEvent):
    """The call was joined with others into a local conference (see `conference`)."""

    TYPE = "call.conferenced"


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded(CallEvent):
    TYPE = "call.ended"


@dataclass(frozen=True, slots=True, kw_only=True)
class DtmfReceived(Event):
    """The other party pressed a key (RFC 4733 or SIP INFO)."""

    TYPE = "call.dtmf"
    call_id: str
    digit: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioDeviceChanged(Event):
    """The audio devices in use changed (the user's choice, or a device was lost)."""

    TYPE = "audio.device_changed"
    input_device: str | None
    output_device: str | None
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AudioLevelsMeasured(Event):
    """Both level meters (sent about ten times a second to WebSocket clients)."""

    TYPE = "audio.levels"
    levels: Levels


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReported(Event):
    """Something failed outside any request (a SIP stack callback, the audio thread)."""

    TYPE = "error"
    where: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceChanged(Event):
    """A colleague's presence on the CMS changed (available, busy, not_ready, wrap_up,
    logged_off); only with a `[cms_api]` profile table."""

    TYPE = "presence.changed"
    user: str
    presence: str
