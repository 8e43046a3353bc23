"""What the B2BUA knows about a call: its legs (signalling + media) and its timeline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from cms.media.mixer import Conference
from cms.media.relay import Leg as MediaLeg
from cms.net.peer import Peer
from cms.sip.dialog import Dialog
from cms.sip.message import Request
from cms.sip.sdp import Negotiated, SessionDescription
from cms.sip.transaction import ClientTransaction, InviteServerTransaction, ServerTransaction

if TYPE_CHECKING:
    from .manager import CallManager


class LegState(Enum):
    """Where one SIP leg of a call stands."""

    CALLING = "calling"  # INVITE sent / received, no final answer yet
    RINGING = "ringing"  # 180 seen
    UP = "up"  # 2xx exchanged: a confirmed dialog
    ENDED = "ended"


class CallState(Enum):
    """Where the call as a whole stands."""

    ROUTING = "routing"
    QUEUED = "queued"  # answered by the CMS, waiting in a queue (or menu) with hold audio
    RINGING = "ringing"  # a callee (agent or direct target) is being rung
    CONNECTED = "connected"
    ENDED = "ended"


@dataclass(eq=False)
class SipLeg:
    """One side of the B2BUA: a dialog with a phone and the RTP leg that serves it."""

    role: str  # "caller", "agent" or "callee"
    peer: Peer
    media: MediaLeg
    invite: Request | None = None
    server_tx: InviteServerTransaction | None = None
    client_tx: ClientTransaction | None = None
    dialog: Dialog | None = None
    negotiated: Negotiated | None = None
    local_sdp: SessionDescription | None = None
    state: LegState = LegState.CALLING
    user: str = ""  # the agent or callee account, for agent/callee legs
    device: str = ""
    held: bool = False  # this phone put the call on hold (sendonly / inactive)
    cms_held: bool = False  # the CMS holds this party (CTI hold or consult): it hears hold audio
    remote_answer: str = ""  # how a ringing device says it can be answered ("message"), if so
    reinvites: int = 0  # re-INVITEs the CMS sent on this leg (a 491 retry only if still newest)


@dataclass(eq=False)
class Call:
    """A call through the CMS: a caller leg and, once routed, the leg to an agent or callee."""

    id: str
    caller: SipLeg
    caller_number: str
    target: str
    kind: str  # "queue", "menu", "direct", "click_to_dial" or "consult"
    attached_data: dict[str, Any] = field(default_factory=dict)
    state: CallState = CallState.ROUTING
    queue: str = ""
    agent: str = ""
    offers: dict[str, SipLeg] = field(default_factory=dict)  # ringing agent legs by agent
    other: SipLeg | None = None  # the connected agent or callee leg
    created: float = field(default_factory=time.time)
    queued_at: float | None = None
    offered_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    outcome: str = ""
    ended_by: str = ""
    direction: str = "inbound"  # "inbound", "outbound" or "internal"
    related: str = ""  # the consult call of this call, or the call a consult belongs to
    shares_caller: bool = False  # a consult: `caller` is the agent's leg of the related call
    members: list[SipLeg] = field(default_factory=list)  # conference legs besides the two
    conference: Conference | None = None  # the media mix while the call is a conference
    # The ACD's call ids for each CMS user on the call (busy while it lasts): the call's id for
    # the agent the ACD connected, "<id>:<user>" for anyone else (one id per ACD call).
    acd_keys: dict[str, str] = field(default_factory=dict)

    def legs(self) -> list[SipLeg]:
        """Every live SIP leg the call owns (a consult does not own the agent's leg)."""
        legs = [] if self.shares_caller else [self.caller]
        legs += self.offers.values()
        for leg in (self.other, *self.members):
            if leg is not None and leg not in legs:
                legs.append(leg)
        return legs


@dataclass(frozen=True, slots=True)
class LegHandler:
    """The endpoint's handler of one leg's dialog: passes its requests to the manager.

    Keyed by the dialog, it is also how a Replaces header finds its leg without a scan.
    """

    manager: CallManager
    call: Call
    leg: SipLeg

    def __call__(self, tx: ServerTransaction | None, request: Request,
                 peer: Peer | None) -> None:
        self.manager.in_dialog(self.call, self.leg, tx, request)
