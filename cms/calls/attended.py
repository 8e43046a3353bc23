"""Attended transfer asked by phones: REFER with Replaces (RFC 5589) and INVITE with Replaces.

A desk phone does an attended transfer on its own: it holds caller X, calls B through the
CMS (a second call here), then REFERs X to B with `Refer-To: <B?Replaces=its dialog with
the CMS toward B>`. X's phone never sees that dialog (the CMS is a B2BUA), so the CMS does
what X would: it takes the named dialog's far end (B) and joins it to X, exactly as a CTI
consult completes as a transfer (`transfers.complete`), then reports 100 and 200 as
sipfrag NOTIFYs and hangs up the transferor's two dialogs. Replaces of the phone's call
still ringing (semi-attended transfer) becomes a blind transfer to where it was ringing.
INVITE with Replaces is `takeover`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from cms.media.relay import bridge
from cms.sip.errors import ParseError
from cms.sip.headers import parse_name_addr
from cms.sip.message import Headers, Request
from cms.sip.replaces import Replaces
from cms.sip.responses import make_response
from cms.sip.transaction import ResponseReceived, ServerTransaction, TimedOut

from . import transfers
from .commands import adopt_leg, forget_leg, resolve
from .control import CallCommandError
from .model import Call, LegHandler, LegState, SipLeg

if TYPE_CHECKING:
    from .manager import CallManager

log = logging.getLogger("cms.calls")

TRYING = "SIP/2.0 100 Trying"
DONE = "SIP/2.0 200 OK"
NO_DIALOG = "SIP/2.0 481 Call/Transaction Does Not Exist"
FORBIDDEN = "SIP/2.0 403 Forbidden"


# -- finding legs

def find_leg(m: CallManager, replaces: Replaces) -> tuple[Call, SipLeg] | None:
    """The live call and leg whose dialog with the CMS `replaces` names."""
    for key in replaces.keys():
        handler = m.endpoint.dialog_handlers.get(key)
        if not isinstance(handler, LegHandler):
            continue
        call, leg = handler.call, handler.leg
        # A CTI consult's caller is the agent leg of another call: that call owns it.
        own = () if call.shares_caller else (call.caller,)
        if (leg.state is LegState.UP and m.calls.get(call.id) is call
                and leg in (*own, call.other, *call.members)):
            return call, leg
    return None


def other_side(call: Call, leg: SipLeg) -> SipLeg | None:
    """The party `leg` talks to in a two-party call."""
    if leg is call.caller:
        return call.other
    return call.caller if leg is call.other else None


def same_phone(m: CallManager, a: tuple[Call, SipLeg], b: tuple[Call, SipLeg]) -> bool:
    """Whether two legs (each with its call) reach the same phone.

    Same transport and host, and the same port or the same account: a phone may listen on
    one port (its Contact, where the CMS calls it) and send its own INVITEs from another.
    """
    (call_a, leg_a), (call_b, leg_b) = a, b
    if leg_a.peer.transport != leg_b.peer.transport or leg_a.peer.addr[0] != leg_b.peer.addr[0]:
        return False
    if tuple(leg_a.peer.addr) == tuple(leg_b.peer.addr):
        return True
    account_a, account_b = _account(m, call_a, leg_a), _account(m, call_b, leg_b)
    return bool(account_a) and account_a == account_b


def _account(m: CallManager, call: Call, leg: SipLeg) -> str:
    """The account behind a leg: its user, or for a caller leg the From's number."""
    number = leg.user or (call.caller_number if leg is call.caller else "")
    account = m.registrar.directory.lookup(number) if number else None
    return account.name if account is not None else ""


# -- REFER with Replaces

def on_refer_with_replaces(m: CallManager, call: Call, leg: SipLeg, transferee: SipLeg,
                           tx: ServerTransaction, request: Request, replaces: Replaces) -> None:
    """`leg`'s phone asks to join its party here (`transferee`, checked by
    `transfers.on_refer`) with the far end of the dialog named."""
    # RFC 3515: accept, then report the (here: instant) outcome of the triggered "INVITE".
    m.endpoint.respond(tx, make_response(request, 202))
    notify_sipfrag(m, leg, TRYING, final=False)
    found = find_leg(m, replaces)
    if found is None and _semi_attended(m, call, leg, transferee, replaces):
        return
    failure = _refusal(m, call, leg, found)
    if found is None or failure:  # (`_refusal` says NO_DIALOG when none was found)
        log.info("call %s: REFER with Replaces of %s refused (%s)", call.id,
                 replaces.call_id, failure)
        notify_sipfrag(m, leg, failure)  # the call stays as it was
        return
    consult, replaced = found
    target = other_side(consult, replaced)
    assert target is not None
    if consult.created < call.created:
        # REFERred in the consult call itself: the older call (the caller's interaction)
        # still survives, so the roles swap.
        _join(m, consult, replaced, target, call, leg, transferee)
    else:
        _join(m, call, leg, transferee, consult, replaced, target)

    def hang_up_transferor() -> None:
        # After the final NOTIFY's answer, so the phone learns the outcome before the BYEs.
        m.bye(leg)
        m.bye(replaced)

    notify_sipfrag(m, leg, DONE, then=hang_up_transferor)


def find_ringing(m: CallManager, replaces: Replaces) -> Call | None:
    """The call whose caller leg, still unanswered by the CMS, the Replaces names.

    Matched on Call-ID and the phone's own From tag: the To tag of the CMS's 180 is
    not kept (an early dialog of this kind ends at the CMS's 200 anyway).
    """
    for call in m.calls.values():
        leg = call.caller
        if (call.shares_caller or leg.invite is None or leg.server_tx is None
                or leg.state not in (LegState.CALLING, LegState.RINGING)
                or leg.invite.headers.first("call-id") != replaces.call_id):
            continue
        try:
            tag = parse_name_addr(leg.invite.headers.first("from") or "").tag
        except ParseError:
            continue
        if tag in (replaces.from_tag, replaces.to_tag):
            return call
    return None


def _semi_attended(m: CallManager, call: Call, leg: SipLeg, transferee: SipLeg,
                   replaces: Replaces) -> bool:
    """Replaces of the phone's own call still ringing through the CMS (transfer before
    the consulted party answers): becomes a blind transfer to that call's destination.

    The consult call ends (its ringing phone is cancelled) and the destination is rung
    again for the transferee, so it shows the transferee's number. False when the
    Replaces names no such call of this phone.
    """
    ringing = find_ringing(m, replaces)
    if ringing is None or not same_phone(m, (ringing, ringing.caller), (call, leg)):
        return False
    try:
        kind, name = resolve(m, ringing.target)
    except CallCommandError:
        return False
    m.end(ringing, "transferred")
    notify_sipfrag(m, leg, DONE)
    transfers.blind_transfer(m, call, leg, transferee, ringing.target, kind, name,
                             via="refer", reason="semi_attended")
    return True


def _refusal(m: CallManager, call: Call, leg: SipLeg, found: tuple[Call, SipLeg] | None
             ) -> str:
    """Why the dialog named cannot be joined (a sipfrag status line), or "" when it can."""
    if found is None:
        return NO_DIALOG
    consult, replaced = found
    if consult is call or replaced is leg:
        return FORBIDDEN
    # A phone may only hand over its own calls, not take over someone else's.
    if not same_phone(m, found, (call, leg)):
        return FORBIDDEN
    target = other_side(consult, replaced)
    if (target is None or target.state is not LegState.UP or consult.conference is not None
            or consult.shares_caller or consult.related):
        return NO_DIALOG
    return ""


def _join(m: CallManager, call: Call, leg: SipLeg, transferee: SipLeg, consult: Call,
          replaced: SipLeg, target: SipLeg) -> None:
    """Move `target` from `consult` into `call` in place of `leg`; `consult` ends."""
    adopt_leg(m, call, target)  # before its consult key is freed
    # The transferor's two legs leave (their BYEs follow the NOTIFY); the ACD frees its user.
    forget_leg(m, call, leg)
    forget_leg(m, consult, replaced)
    for user in list(consult.acd_keys):
        m.acd_free(consult, user)
    consult.caller, consult.other = replaced, None  # what the consult still owns
    if transferee is not call.caller:
        call.caller_number = transferee.device or transferee.user or call.caller_number
    call.caller, call.other = transferee, target
    call.agent = m.agent_of(target.user)
    transferee.cms_held = target.cms_held = False
    bridge(transferee.media, target.media)
    for party in (transferee, target):
        resume(m, call, party)  # the transferor's phone hold was passed on to them
    user = leg.user or replaced.user
    m.emit("call.transferred", call, user=user, agent=m.agent_of(user),
           to=target.device or target.user or consult.target, mode="consult",
           consult_id=consult.id, via="refer")
    m.finish(consult, "completed")


def resume(m: CallManager, call: Call, party: SipLeg) -> None:
    """Re-INVITE `party` to sendrecv if the CMS passed another phone's hold on to it.

    Not when the party holds the call itself (`held`): then its own resume comes later.
    Needed for the other direction only: the relay sends to a recvonly party at once after
    a re-bridge, but the party answered the CMS's sendonly with recvonly and sends nothing
    until offered sendrecv again (its new party would hear silence; test_rebridge_audio).
    """
    sdp = party.local_sdp
    audio = sdp.audio if sdp is not None else None
    if (audio is not None and audio.direction in ("sendonly", "inactive") and not party.held
            and party.dialog is not None and party.state is LegState.UP):
        m.offer_direction(call, party, "sendrecv")


# -- NOTIFY of a REFER's progress (RFC 3515 §2.4.5)

def notify_sipfrag(m: CallManager, leg: SipLeg, status_line: str, *, final: bool = True,
                   then: Callable[[], None] | None = None) -> None:
    """A NOTIFY (Event: refer) carrying `status_line`; `then` runs once it is answered."""
    assert leg.dialog is not None
    extra = Headers()
    extra["event"] = ["refer"]
    extra["subscription-state"] = ["terminated;reason=noresource" if final
                                   else "active;expires=60"]
    extra["content-type"] = ["message/sipfrag;version=2.0"]
    request = leg.dialog.new_request("NOTIFY", m.endpoint.sent_by(leg.peer),
                                     leg.peer.transport, extra,
                                     f"{status_line}\r\n".encode())

    def on_event(event: ResponseReceived | TimedOut) -> None:
        if then is not None and (isinstance(event, TimedOut) or event.response.status >= 200):
            then()

    m.endpoint.send_request(request, leg.peer, on_event)
