"""Transfers and conferences: blind and consult transfer, the 3-party mix, phone REFER.

Media is anchored in the CMS: the party left behind hears hold audio while the CMS
rings the target, and completing a consult only re-bridges legs (or mixes them), so no
phone is re-INVITEd. Helpers shared with the other commands come from `commands`.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from cms.media.mixer import Conference
from cms.media.relay import bridge
from cms.media.sources import ToneSource
from cms.sip.errors import ParseError
from cms.sip.headers import parse_name_addr
from cms.sip.message import Request
from cms.sip.replaces import replaces_in_refer_to
from cms.sip.responses import make_response
from cms.sip.transaction import ServerTransaction

from . import attended
from .commands import (
    RINGBACK_HZ,
    adopt_leg,
    check_party,
    command_error,
    hold_party,
    live_call,
    release_leg,
    resolve,
    route_to,
    sides,
)
from .control import CallCommandError, CallView, CompleteAs, TransferMode
from .model import Call, CallState, LegState, SipLeg
from .views import call_view, party_view

if TYPE_CHECKING:
    from .manager import CallManager


# -- transfer, consult, conference

async def transfer(m: CallManager, call_id: str, user: str | None, to: str,
                   mode: TransferMode) -> CallView:
    """Blind: release the agent and send the other party to `to`. Consult: see `consult`."""
    if mode == "consult":
        return await consult(m, call_id, user, to)
    if mode != "blind":
        raise command_error(400, "bad_mode", "mode is blind or consult")
    call = live_call(m, call_id)
    mine, other = sides(m, call, user)
    kind, name = resolve(m, to)
    if call.related in m.calls:
        raise command_error(409, "consult_in_progress", "complete or hang up the consult first")
    if kind == "user" and name == other.user:
        raise command_error(409, "same_party", "the other party is already that user")
    blind_transfer(m, call, mine, other, to, kind, name)
    return call_view(call)


def blind_transfer(m: CallManager, call: Call, mine: SipLeg, other: SipLeg, to: str,
                   kind: str, name: str, **extra: str) -> None:
    """Release `mine` and route `other` (the call's party that stays) to `to`."""
    release_leg(m, call, mine)
    if other is not call.caller:
        # The party that stays becomes the call's caller: it is what gets routed on.
        call.caller, call.caller_number = other, other.device or other.user
    call.other = None
    call.agent = ""
    other.cms_held = False
    other.media.play(m.hold_audio(call))
    attended.resume(m, call, other)  # a phone often holds its party before REFERring it
    m.emit("call.transferred", call, user=mine.user, agent=m.agent_of(mine.user),
            to=to, mode="blind", **extra)
    route_to(m, call, kind, name)


async def consult(m: CallManager, call_id: str, user: str | None, to: str) -> CallView:
    """Hold the other party and call `to` on the agent's same leg; returns the consult."""
    call = live_call(m, call_id)
    mine, other = sides(m, call, user)
    if call.related in m.calls or call.shares_caller:
        raise command_error(409, "consult_in_progress", "this call already has a consult")
    kind, name = resolve(m, to)
    if kind == "user" and name in (mine.user, other.user):
        raise command_error(409, "same_party", "that user is already on the call")
    if not other.cms_held:
        hold_party(m, call, mine, other, by="consult")
    mine.media.play(ToneSource(RINGBACK_HZ, level_dbfs=-20.0))
    consult = Call(id=secrets.token_hex(8), caller=mine,
                   caller_number=mine.device or mine.user, target=to, kind="consult",
                   attached_data=dict(call.attached_data), direction="internal",
                   related=call.id, shares_caller=True, agent=call.agent)
    call.related = consult.id
    m.calls[consult.id] = consult
    m.started(consult)
    route_to(m, consult, kind, name)
    return call_view(consult)


async def complete(m: CallManager, call_id: str, user: str | None, consult_id: str,
                   as_: CompleteAs) -> CallView:
    """Join the held party with the consulted one (transfer) or make a 3-party mix."""
    call = live_call(m, call_id)
    consult = live_call(m, consult_id)
    check_party(m, call, user)
    if consult.related != call.id or call.related != consult.id:
        raise command_error(409, "not_a_consult", f"{consult_id} is not the consult of {call_id}")
    target = consult.other
    if (consult.state is not CallState.CONNECTED or target is None
            or target.state is not LegState.UP):
        raise command_error(409, "consult_not_connected", "the consulted party has not answered")
    if as_ not in ("transfer", "conference"):
        raise command_error(400, "bad_complete", "as is transfer or conference")
    agent_leg = consult.caller
    held = call.caller if call.other is agent_leg else call.other
    assert held is not None
    _join_consult(m, call, consult, agent_leg, held, target, as_)
    return call_view(call)


def _join_consult(m: CallManager, call: Call, consult: Call, agent_leg: SipLeg, held: SipLeg,
                  target: SipLeg, as_: CompleteAs, **extra: str) -> None:
    """The consulted leg moves over to the original call: transfer, or a 3-party mix."""
    consult.other = None
    call.related = ""
    adopt_leg(m, call, target)
    m.acd_free(consult, target.user)
    held.cms_held = target.cms_held = False
    attended.resume(m, call, held)  # held by the agent's phone too: it must talk again
    if as_ == "transfer":
        release_leg(m, call, agent_leg)
        call.caller, call.other = held, target
        call.caller_number = held.device or held.user or call.caller_number
        call.agent = m.agent_of(target.user)
        bridge(held.media, target.media)
        m.emit("call.transferred", call, user=agent_leg.user,
                agent=m.agent_of(agent_leg.user), to=consult.target, mode="consult",
                consult_id=consult.id, **extra)
    else:
        call.members.append(target)
        call.conference = Conference(m.media.clock,
                                     [held.media, agent_leg.media, target.media])
        m.emit("call.conferenced", call, user=agent_leg.user, agent=call.agent,
                users=sorted(call_view(call).users), consult_id=consult.id,
                parties=[party_view(call, leg).to_json()
                         for leg in (held, agent_leg, target)])
    m.finish(consult, "completed")


def left_during_consult(m: CallManager, call: Call, leg: SipLeg) -> bool:
    """`leg` hung up (BYE) while the call has a CTI consult: True when handled here.

    The agent's leg: see `agent_left_consult`. The held party's: the call ends, but the
    agent and the consulted party keep talking (the consult becomes a call of its own).
    """
    consult = m.calls.get(call.related) if call.related else None
    if consult is None or not consult.shares_caller or call.conference is not None:
        return False
    if leg is consult.caller:
        return agent_left_consult(m, call, consult, leg)
    if leg not in (call.caller, call.other):
        return False
    agent_leg = consult.caller
    # The consult takes the agent's leg over: the call's end must not hang it up.
    call.related = consult.related = ""
    consult.shares_caller = False
    call.caller, call.other = leg, None
    if agent_leg.dialog is not None:
        m.route_dialog(consult, agent_leg)
    # The agent stays busy in the ACD (its key moves along) rather than going to wrap-up.
    key = call.acd_keys.pop(agent_leg.user, None)
    if key is not None:
        consult.acd_keys[agent_leg.user] = key
    m.end(call, f"{leg.role}_hangup", by=leg)
    return True


def agent_left_consult(m: CallManager, call: Call, consult: Call, leg: SipLeg) -> bool:
    """The agent hung up (BYE on `leg`) while consulting: hand the held party on.

    What a contact-centre user expects, and what PBXs do on "hang up to transfer": the
    caller is not dropped because the agent put the receiver down. With the consulted
    party answered, the consult completes as a transfer (caller joined to it); while it
    still rings or queues, the caller is blind-transferred to the consult's destination
    (the ringing phone is cancelled and rung again for the caller, so it shows the
    caller's number). True when handled; False leaves the call to end as usual.
    (When the consulted party hangs up instead, the caller stays held for the agent to
    retrieve or consult again: see `CallManager.finish`.)
    """
    held = call.caller if call.other is leg else call.other
    if held is None or held.state is not LegState.UP:
        return False
    target = consult.other
    if (consult.state is CallState.CONNECTED and target is not None
            and target.state is LegState.UP):
        _join_consult(m, call, consult, leg, held, target, "transfer", reason="agent_hangup")
        return True
    try:
        kind, name = resolve(m, consult.target)
    except CallCommandError:
        return False
    call.related = ""  # unlink first: the consult's end must not touch the agent's leg
    m.end(consult, "agent_hangup")
    blind_transfer(m, call, leg, held, consult.target, kind, name, reason="agent_hangup")
    return True


# -- phone-initiated transfer (RFC 3515 REFER)

def on_refer(m: CallManager, call: Call, leg: SipLeg, tx: ServerTransaction,
              request: Request) -> None:
    """Blind transfer asked by a phone: 202, a sipfrag NOTIFY, then the same machinery.

    With Replaces in the Refer-To it is an attended transfer (see `attended`).
    """
    try:
        refer_to = parse_name_addr(request.headers.first("refer-to") or "")
        target = refer_to.uri.user_unescaped or ""
        replaces = replaces_in_refer_to(refer_to.uri)
    except ParseError:
        m.endpoint.respond(tx, make_response(request, 400, "Bad Refer-To"))
        return
    other = attended.other_side(call, leg)
    if (other is None or other.state is not LegState.UP or call.conference is not None
            or call.related in m.calls or call.shares_caller):
        m.endpoint.respond(tx, make_response(request, 403, "Cannot Transfer Now"))
        return
    if replaces is not None:
        attended.on_refer_with_replaces(m, call, leg, other, tx, request, replaces)
        return
    try:
        kind, name = resolve(m, target)
    except CallCommandError:
        m.endpoint.respond(tx, make_response(request, 404, "No Such Number"))
        return
    m.endpoint.respond(tx, make_response(request, 202))
    attended.notify_sipfrag(m, leg, attended.DONE)
    blind_transfer(m, call, leg, other, target, kind, name, via="refer")
