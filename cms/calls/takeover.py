"""INVITE with Replaces (RFC 3891): a phone takes over a leg of a call through the CMS.

E.g. a pick-up of an answered call on another phone, or a transferee sent elsewhere by a
phone's own attended transfer. The new phone is answered with the CMS's SDP and bridged
to the named leg's party; the old leg gets a BYE. Only confirmed dialogs are replaced
(an early one is 481, as RFC 3891 allows for dialogs the CMS did not initiate).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from cms.media.relay import bridge
from cms.net.peer import Peer
from cms.sip.errors import ParseError
from cms.sip.headers import parse_name_addr
from cms.sip.message import Request
from cms.sip.replaces import parse_replaces
from cms.sip.responses import make_response
from cms.sip.sdp import negotiate, parse_sdp
from cms.sip.transaction import InviteServerTransaction, ServerTransaction

from .attended import find_leg, other_side, resume
from .commands import forget_leg
from .model import LegState, SipLeg

if TYPE_CHECKING:
    from .manager import CallManager

log = logging.getLogger("cms.calls")


def on_invite_with_replaces(m: CallManager, tx: ServerTransaction, request: Request,
                            peer: Peer) -> None:
    """A phone takes over the leg the Replaces header names (RFC 3891 §3)."""
    assert isinstance(tx, InviteServerTransaction)
    try:
        replaces = parse_replaces(request.headers.first("replaces") or "")
        offer = parse_sdp(request.body) if request.body else None
    except ParseError as exc:
        m.endpoint.respond(tx, make_response(request, 400, f"Bad Request ({exc})"))
        return
    found = find_leg(m, replaces)
    if found is None:
        m.endpoint.respond(tx, make_response(request, 481))
        return
    call, old = found
    if replaces.early_only:  # only early dialogs may go, and the found one is confirmed
        m.endpoint.respond(tx, make_response(request, 486))
        return
    other = other_side(call, old)
    # During a CTI consult the agent's leg is the consult's too, and the held party's other
    # side talks to the consulted one: either takeover would break the consult.
    if (other is None or other.state is not LegState.UP or call.conference is not None
            or call.related in m.calls):
        m.endpoint.respond(tx, make_response(request, 603, "Cannot Replace Now"))
        return
    negotiated = negotiate(offer) if offer is not None else None
    if offer is None or negotiated is None:
        # A late offer would need the ACK's answer before media: not worth it here.
        m.endpoint.respond(tx, make_response(request, 488))
        return
    from_uri = parse_name_addr(request.headers.first("from") or "").uri
    account = m.registrar.directory.lookup(from_uri.user_unescaped or "")
    user = account.name if account is not None else ""
    new = SipLeg(old.role, peer, m.media.open_leg(name=f"{old.role} {user or 'replacing'}"),
                 invite=request, server_tx=tx, negotiated=negotiated, user=user, device=user)
    m.configure_media(new)
    m.answer_incoming(call, new, offer,
                      allow="INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY")
    call.answered_at = call.answered_at or time.time()
    # Busy on the call before the old leg's user is freed (free in between, the ACD could
    # offer the new user a waiting caller); the same user on another phone keeps its key:
    # it stays on the call, and its queue call's wrap-up comes when the call ends.
    m.acd_busy(call, user)
    kept = call.acd_keys.pop(user, None) if user and user == old.user else None
    forget_leg(m, call, old)
    if kept is not None:
        call.acd_keys[user] = kept
    m.bye(old)
    if old is call.caller:
        call.caller = new
        call.caller_number = user or call.caller_number
    else:
        call.other = new
    if not other.cms_held:
        bridge(new.media, other.media)
    resume(m, call, other)
    if old.user and old.user == call.agent:
        call.agent = m.agent_of(user)
    m.emit("call.transferred", call, user=old.user, agent=m.agent_of(old.user),
           to=user or (from_uri.user_unescaped or ""), mode="replaces", via="invite")
    log.info("call %s: %s replaced by %s", call.id, old.user or old.role, user or peer.addr)
