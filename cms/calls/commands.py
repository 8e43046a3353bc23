"""The CTI's commands on calls (`cms.calls.control.CallControl`), for `CallManager`.

Media is anchored in the CMS, so hold, consult and transfer never re-INVITE a phone: the
CMS stops relaying and plays hold audio, or re-bridges legs. Signalling and the ACD are
the manager's (`cms.calls.manager`, passed in as `m`); this module decides what each
command does with them. `CallManager`'s public command methods are one-line delegations here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from cms.acd.errors import AcdError
from cms.acd.events import OfferFailure
from cms.media.dtmf import DIGITS
from cms.media.relay import bridge, disconnect
from cms.sip.message import Headers, Request
from cms.sip.responses import new_tag
from cms.sip.transaction import ResponseReceived, TimedOut, new_branch

from .control import CallCommandError, CallView
from .model import Call, CallState, LegState, SipLeg
from .views import MAX_ATTACHED_BYTES, call_view, merge_patch

if TYPE_CHECKING:
    from .manager import CallManager

log = logging.getLogger("cms.calls")

REMOTE_ANSWER_TIMEOUT = 4.0  # seconds a phone has to accept a remote answer
REMOTE_ANSWER_TYPE = "application/x-cms-remote-answer"  # see softphone/sip/invite.py
MAX_DIGITS = 32
RINGBACK_HZ = 425.0  # what an agent hears while the CMS rings a party for it


def command_error(status: int, code: str, message: str) -> CallCommandError:
    return CallCommandError(status, code, message)


# -- views

def list_calls(m: CallManager) -> list[CallView]:
    """Every live call."""
    return [call_view(call) for call in m.calls.values()]


def get_call(m: CallManager, call_id: str) -> CallView | None:
    """One live call, or None."""
    call = m.calls.get(call_id)
    return call_view(call) if call is not None else None


def attached_data(m: CallManager, call_id: str) -> dict[str, Any]:
    """The call's attached data."""
    return dict(live_call(m, call_id).attached_data)


def update_attached_data(m: CallManager, call_id: str, user: str | None,
                         changes: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `changes` (JSON merge patch: null deletes); returns the new data."""
    call = live_call(m, call_id)
    check_party(m, call, user)
    if not isinstance(changes, Mapping):
        raise command_error(400, "bad_attached_data", "attached data changes must be a JSON object")
    data = merge_patch(call.attached_data, changes)
    if len(json.dumps(data, default=str)) > MAX_ATTACHED_BYTES:
        raise command_error(400, "attached_data_too_large",
                     f"attached data is limited to {MAX_ATTACHED_BYTES} bytes of JSON")
    call.attached_data = data
    m.emit("call.attached_data_changed", call, user=user or "", agent=call.agent,
            attached_data=dict(data), changes=dict(changes))
    return dict(data)


# -- click-to-dial

async def make_call(m: CallManager, user: str, to: str,
                    attached_data: Mapping[str, Any] | None = None) -> CallView:
    """Ring `user`'s device with auto-answer hints; once it answers, call `to`."""
    account = m.registrar.directory.lookup(user)
    if account is None:
        raise command_error(404, "unknown_user", f"no user {user!r}")
    agent = m.acd.agent(account.name)
    # An agent logged on at a work centre is reached on that desk's phone.
    device = agent.device if agent is not None and agent.device else account.name
    kind, name = resolve(m, to)
    if kind == "user" and name in (account.name, device):
        raise command_error(409, "own_device", "a user cannot click-to-dial its own device")
    if not m.registrar.lookup(device):
        raise command_error(409, "device_not_registered",
                     f"{device!r} has no registered phone to call from")
    data = {"caller": account.extension or account.name, "dialled": to,
            **dict(attached_data or {})}
    if len(json.dumps(data, default=str)) > MAX_ATTACHED_BYTES:
        raise command_error(400, "attached_data_too_large", "attached data is too large")
    # The caller leg is the agent's own phone, made by the INVITE below (which needs the call).
    call = Call(id=secrets.token_hex(8), caller=cast(SipLeg, None),
                caller_number=account.extension or account.name, target=to,
                kind="click_to_dial", attached_data=data, direction="internal",
                agent=m.agent_of(account.name))
    call.queue = name if kind != "user" else ""
    m.calls[call.id] = call
    m.counters["calls"] += 1
    m.started(call)
    extra = Headers()
    extra["call-info"] = [f"<sip:{m.registrar.realm}>;answer-after=0"]
    extra["alert-info"] = ["<http://127.0.0.1>;info=alert-autoanswer"]
    leg = m.invite_device(call, account.name, device, role="agent", from_number=to,
                           extra=extra)
    if leg is None:
        m.calls.pop(call.id, None)
        raise command_error(409, "device_not_reachable", f"{device!r} cannot be reached")
    call.caller = leg
    m.acd_busy(call, account.name)
    return call_view(call)


def dial_target(m: CallManager, call: Call) -> None:
    """Click-to-dial: the agent's phone is up; now call what it asked for."""
    try:
        kind, name = resolve(m, call.target)
    except CallCommandError:
        m.end(call, "unknown_destination")
        return
    route_to(m, call, kind, name)


def route_to(m: CallManager, call: Call, kind: str, name: str) -> None:
    """Send the call's (answered) caller leg on: ring a user, or queue it with the ACD."""
    now = time.time()
    if kind == "user":
        call.state = CallState.RINGING
        call.offered_at = now
        leg = m.invite_device(call, name, name, role="callee")
        if leg is None:
            m.end(call, "unreachable")
            return
        call.other = leg
        return
    call.state = CallState.QUEUED
    call.queued_at = now
    call.queue = name if kind == "queue" else ""
    call.kind = kind if call.kind in ("queue", "menu", "direct") else call.kind
    call.caller.media.play(m.hold_audio(call))
    try:
        outputs = m.acd.caller_arrived(call.id, name, now)
    except AcdError as exc:
        # Only if the ACD still knows this call id (a bug): end it rather than strand it.
        log.error("call %s cannot be queued at %s: %s", call.id, name, exc)
        m.end(call, "routing_failed")
        return
    m.run_acd(outputs)


# -- answering and declining a ringing device

async def answer(m: CallManager, call_id: str, user: str | None) -> CallView:
    """Ask a ringing device to answer; 409 when it will not (then only its user can)."""
    call = live_call(m, call_id)
    leg = _ringing_leg(m, call, user)
    if leg.remote_answer == "message":
        # The project's soft phone (pjsua2 shows apps no out-of-dialog NOTIFY): a MESSAGE
        # naming the INVITE's Call-ID; success is the INVITE's 200, not the MESSAGE's.
        status = await _send_out_of_dialog(m, leg, "MESSAGE", REMOTE_ANSWER_TYPE,
                                           (leg.invite.headers.first("call-id") or "")
                                           if leg.invite is not None else "")
        if 200 <= status < 300 and await _answered(leg):
            return call_view(call)
        how = f"MESSAGE got {status}" if not 200 <= status < 300 else "it did not pick up"
    else:
        # Desk phones (BroadSoft/Yealink/Polycom): an out-of-dialog NOTIFY with Event: talk.
        status = await _send_out_of_dialog(m, leg, "NOTIFY")
        if 200 <= status < 300:
            return call_view(call)
        how = f"NOTIFY Event: talk got {status}"
    raise command_error(409, "cannot_answer_remotely",
                 f"the phone at {leg.device!r} cannot be answered remotely ({how}); "
                 "answer it on the phone")


async def _answered(leg: SipLeg) -> bool:
    """Whether a ringing leg gets its 2xx within the remote-answer time."""
    deadline = time.monotonic() + REMOTE_ANSWER_TIMEOUT
    while leg.state is not LegState.UP:
        if leg.state is LegState.ENDED or time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def reject(m: CallManager, call_id: str, user: str | None) -> CallView:
    """Stop a device ringing (CANCEL); a queue offer counts as rejected in the ACD."""
    call = live_call(m, call_id)
    leg = _ringing_leg(m, call, user)
    now = time.time()
    if call.offers.get(leg.user) is leg:
        del call.offers[leg.user]
        m.abandon_outgoing(leg)
        m.run_acd(m.acd.offer_failed(call.id, leg.user, OfferFailure.REJECTED, now))
    else:
        m.abandon_outgoing(leg)
        if leg is call.other:
            call.other = None
            m.reply_caller(call, 603, "Decline")
        m.end(call, "rejected", by=leg)
    return call_view(call)


def _ringing_leg(m: CallManager, call: Call, user: str | None) -> SipLeg:
    ringing = [leg for leg in (call.caller, *call.offers.values(), call.other)
               if leg is not None and leg.client_tx is not None
               and leg.state in (LegState.CALLING, LegState.RINGING)
               and (user is None or leg.user == user)]
    if not ringing:
        raise command_error(409, "not_ringing", "no device of this call is ringing"
                     + (f" for {user!r}" if user else ""))
    if len(ringing) > 1 and user is None:
        raise command_error(409, "ambiguous", "several devices ring; act as one of their users")
    return ringing[0]


async def _send_out_of_dialog(m: CallManager, leg: SipLeg, method: str,
                              content_type: str = "", body: str = "") -> int:
    """An out-of-dialog NOTIFY (`Event: talk`) or MESSAGE to a ringing device: final status."""
    assert leg.invite is not None
    loop = asyncio.get_running_loop()
    result: asyncio.Future[int] = loop.create_future()
    headers = Headers()
    headers["via"] = [f"SIP/2.0/{leg.peer.transport} {m.endpoint.sent_by(leg.peer)}"
                      f";branch={new_branch()};rport"]
    headers["max-forwards"] = ["70"]
    headers["from"] = [f"<sip:cms@{m.registrar.realm}>;tag={new_tag()}"]
    headers["to"] = [leg.invite.headers.first("to") or f"<{leg.invite.uri}>"]
    headers["call-id"] = [f"{secrets.token_hex(10)}@cms"]
    headers["cseq"] = [f"1 {method}"]
    headers["contact"] = [f"<{m.contact(leg.peer)}>"]
    if method == "NOTIFY":
        headers["event"] = ["talk"]
        headers["subscription-state"] = ["terminated;reason=noresource"]
    if content_type:
        headers["content-type"] = [content_type]
    request = Request(method, leg.invite.uri, headers, body.encode())

    def on_event(event: ResponseReceived | TimedOut) -> None:
        if result.done():
            return
        if isinstance(event, TimedOut):
            result.set_result(408)
        elif event.response.status >= 200:
            result.set_result(event.response.status)

    m.endpoint.send_request(request, leg.peer, on_event)
    try:
        return await asyncio.wait_for(result, REMOTE_ANSWER_TIMEOUT)
    except TimeoutError:
        return 408


# -- ending

async def hangup(m: CallManager, call_id: str, user: str | None) -> CallView:
    """End the call (BYE / CANCEL each leg); in a conference, only `user`'s leg."""
    call = live_call(m, call_id)
    check_party(m, call, user)
    if user is not None and user in call.offers:
        return await reject(m, call_id, user)  # only offered it: hanging up declines it
    view = call_view(call)
    if call.conference is not None and user is not None:
        leg = _leg_of(m, call, user)
        if leg is not None:
            m.bye(leg)
            if left_conference(m, call, leg):
                return call_view(call)
    m.end(call, "hangup")
    return view


# -- hold, retrieve, DTMF

async def hold(m: CallManager, call_id: str, user: str | None) -> CallView:
    """The other party hears hold audio; nothing is relayed either way."""
    call = live_call(m, call_id)
    mine, other = sides(m, call, user)
    if other.cms_held:
        raise command_error(409, "already_held", "the other party is already on hold")
    hold_party(m, call, mine, other, by="cti")
    return call_view(call)


async def retrieve(m: CallManager, call_id: str, user: str | None) -> CallView:
    """Bridge the held party back."""
    call = live_call(m, call_id)
    mine, other = sides(m, call, user)
    if not other.cms_held:
        raise command_error(409, "not_held", "the other party is not on hold")
    if call.related in m.calls:
        raise command_error(409, "consult_in_progress",
                     "complete or hang up the consult call first")
    other.cms_held = False
    mine.media.stop_audio()
    bridge(mine.media, other.media)
    m.emit("call.retrieved", call, user=mine.user, agent=call.agent, party=other.role,
            by="cti")
    return call_view(call)


def hold_party(m: CallManager, call: Call, mine: SipLeg, other: SipLeg, by: str
                ) -> None:
    disconnect(other.media)
    other.media.play(m.hold_audio(call))
    mine.media.stop_audio()
    other.cms_held = True
    m.emit("call.held", call, user=mine.user, agent=call.agent, party=other.role, by=by)


async def send_dtmf(m: CallManager, call_id: str, user: str | None, digits: str
                    ) -> CallView:
    """RFC 4733 digits to the other party."""
    call = live_call(m, call_id)
    if (not isinstance(digits, str) or not digits or len(digits) > MAX_DIGITS
            or any(d not in DIGITS for d in digits.upper())):
        raise command_error(400, "bad_digits", f"digits: 1 to {MAX_DIGITS} of {DIGITS}")
    _mine, other = sides(m, call, user)
    try:
        other.media.send_dtmf(digits.upper())
    except ValueError as exc:
        raise command_error(409, "no_dtmf", "the other party did not negotiate RFC 4733 "
                     "telephone-events") from exc
    return call_view(call)


def left_conference(m: CallManager, call: Call, leg: SipLeg) -> bool:
    """A conference member left: keep the others talking (True), or False to end it."""
    conference = call.conference
    if conference is None:
        return False
    staying = [p for p in (call.caller, call.other, *call.members)
               if p is not None and p is not leg and p.state is LegState.UP]
    if len(staying) < 2:
        return False
    conference.remove(leg.media)
    forget_leg(m, call, leg)
    call.caller, call.other, call.members = staying[0], staying[1], staying[2:]
    if not call.members:
        conference.close()
        call.conference = None
        bridge(staying[0].media, staying[1].media)
    if leg.user == call.agent:
        call.agent = next((m.agent_of(p.user) for p in staying
                           if m.agent_of(p.user)), "")
    return True


# -- helpers

def live_call(m: CallManager, call_id: str) -> Call:
    call = m.calls.get(call_id)
    if call is None or call.state is CallState.ENDED:
        raise command_error(404, "no_such_call", f"no live call {call_id!r}")
    return call


def check_party(m: CallManager, call: Call, user: str | None) -> None:
    if user is not None and user not in call_view(call).users:
        raise command_error(403, "not_your_call", f"{user!r} is not on call {call.id}")


def _leg_of(m: CallManager, call: Call, user: str) -> SipLeg | None:
    for leg in (call.caller, call.other, *call.members):
        if leg is not None and leg.user == user and leg.state is LegState.UP:
            return leg
    return None


def sides(m: CallManager, call: Call, user: str | None) -> tuple[SipLeg, SipLeg]:
    """(the acting user's leg, the other party's) of a connected two-party call."""
    check_party(m, call, user)
    if call.conference is not None:
        raise command_error(409, "conference", "not possible in a conference")
    legs = [leg for leg in (call.caller, call.other)
            if leg is not None and leg.state is LegState.UP]
    if call.state is not CallState.CONNECTED or len(legs) != 2:
        raise command_error(409, "not_connected", "the call is not connected")
    first, second = legs
    acting = user or call.agent
    if acting and second.user == acting:
        return second, first
    if acting and first.user == acting:
        return first, second
    if user is not None:
        raise command_error(403, "not_your_call", f"{user!r} has no leg on call {call.id}")
    return second, first  # a supervisor on a call without agent: act for the called side


def release_leg(m: CallManager, call: Call, leg: SipLeg) -> None:
    """Hang up one leg (BYE) and forget it (see `forget_leg`)."""
    m.bye(leg)
    forget_leg(m, call, leg)


def adopt_leg(m: CallManager, call: Call, leg: SipLeg) -> None:
    """`leg` moves into `call`: its in-dialog requests come here, its user is busy here.

    Busy here before the caller frees the user's key on the call it leaves: free in
    between, the ACD would offer the user a waiting caller.
    """
    m.acd_busy(call, leg.user)
    if leg.dialog is not None:
        m.route_dialog(call, leg)


def forget_leg(m: CallManager, call: Call, leg: SipLeg) -> None:
    """Close an ended leg's media and forget its dialog; the ACD frees its user."""
    m.close_media(leg)
    if leg.dialog is not None:
        m.endpoint.dialog_handlers.pop(leg.dialog.key, None)
    m.acd_free(call, leg.user)


def resolve(m: CallManager, to: str) -> tuple[str, str]:
    """What `to` names: ("queue"|"menu", name) or ("user", account name)."""
    to = to.strip() if isinstance(to, str) else ""
    if not to or len(to) > 64 or any(c in to for c in " <>\"@;:,\r\n\t"):
        raise command_error(400, "bad_destination", "to: an extension, user, queue or number")
    destination = m.acd.route(to)
    if destination is not None:
        return destination.kind, destination.name
    account = m.registrar.directory.lookup(to)
    if account is not None:
        return "user", account.name
    raise command_error(404, "unknown_destination",
                 f"{to!r} is no extension, user or queue here, and no trunk is "
                 "configured for outside numbers")
