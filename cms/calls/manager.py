"""The B2BUA: answers callers, queues them with audio, rings agents and bridges the media.

Signalling comes from `cms.net.endpoint.SipEndpoint` (INVITE handler, dialog
handlers, client transactions); routing decisions come from the sans-IO ACD
(`cms.acd.Acd`), whose actions are executed here; media is `cms.media`.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import random
import secrets
import time
import wave
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cms.acd.engine import Acd
from cms.acd.events import (
    AcdEvent,
    AnnouncePosition,
    CancelOffer,
    ConnectAgent,
    EndCall,
    HangUpCaller,
    OfferCall,
    OfferFailure,
    PlayToCaller,
    SendToOverflow,
)
from cms.media.dtmf import DigitPressed
from cms.media.formats import CODECS, MediaFormat
from cms.media.prompts import SequenceSource, cached_wav, position_prompt
from cms.media.relay import bridge, disconnect
from cms.media.service import MediaService
from cms.media.sources import (
    AudioSource,
    HoldMusicSource,
    LoopSource,
    SilenceSource,
    ToneSource,
    WavSource,
)
from cms.net.endpoint import SipEndpoint
from cms.net.peer import Peer, UdpPeer
from cms.registrar.bindings import Binding
from cms.registrar.service import Registrar
from cms.sip.dialog import Dialog
from cms.sip.errors import ParseError
from cms.sip.headers import parse_name_addr, parse_uri
from cms.sip.message import Headers, Request, Response
from cms.sip.responses import make_response, new_tag
from cms.sip.sdp import (
    SessionDescription,
    is_hold,
    make_answer,
    make_offer,
    negotiate,
    parse_sdp,
    with_direction,
)
from cms.sip.transaction import (
    InviteServerTransaction,
    ResponseReceived,
    ServerTransaction,
    TimedOut,
    new_branch,
)

from . import commands, takeover, transfers
from .control import CallView, CompleteAs, TransferMode
from .model import Call, CallState, LegHandler, LegState, SipLeg
from .records import CallRecordStore, as_plain
from .views import call_info, party_view

log = logging.getLogger("cms.calls")

ATTACHED_DATA_HEADER = "x-cms-attached-data"
ACD_FAILURES = {486: OfferFailure.BUSY, 600: OfferFailure.BUSY, 603: OfferFailure.REJECTED,
                480: OfferFailure.NO_ANSWER, 408: OfferFailure.NO_ANSWER}

EventSink = Callable[[AcdEvent], None]
CallEventSink = Callable[[str, dict[str, Any], float], None]  # (type, data, time)
CallStartedSink = Callable[[str, float, dict[str, Any]], None]  # (call id, time, info)


def encode_attached_data(data: dict[str, Any]) -> str:
    """Attached data as it rides on the INVITE to the agent: JSON, base64url, no padding."""
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_attached_data(value: str) -> dict[str, Any]:
    """The inverse of `encode_attached_data`; raises ValueError on garbage."""
    padded = value + "=" * (-len(value) % 4)
    data = json.loads(base64.urlsafe_b64decode(padded))
    if not isinstance(data, dict):
        raise ValueError("attached data is not a JSON object")
    return data


class CallManager:
    """Every call through the CMS; the CTI's `CallControl` (carried out in `commands`)."""

    def __init__(self, endpoint: SipEndpoint, registrar: Registrar, acd: Acd,
                 media: MediaService, records: CallRecordStore | None = None, *,
                 trusted_sources: tuple[str, ...] = ("127.0.0.0/8", "::1/128"),
                 media_host: str = "127.0.0.1", on_event: EventSink | None = None,
                 on_record: Callable[[dict[str, Any]], None] | None = None,
                 on_call_event: CallEventSink | None = None,
                 on_call_started: CallStartedSink | None = None,
                 sounds: Path | None = None,
                 hold_music: Mapping[str, str] | None = None,
                 ring_timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.registrar = registrar
        self.acd = acd
        self.media = media
        self.records = records
        self.media_host = media_host
        self.on_event = on_event
        self.on_record = on_record
        self.on_call_event = on_call_event
        self.on_call_started = on_call_started
        self.sounds = sounds  # spoken prompts; announcements may be named by file stem
        self.hold_music = dict(hold_music or {})  # queue -> WAV; others get generated music
        self.ring_timeout = ring_timeout  # for legs the ACD does not time (not queue offers)
        self.trusted = [ipaddress.ip_network(net, strict=False) for net in trusted_sources]
        self._trusted_hosts: dict[str, bool] = {}
        self.calls: dict[str, Call] = {}
        self.counters = {"calls": 0, "answered": 0, "abandoned": 0, "failed": 0}
        self._acd_timer: asyncio.TimerHandle | None = None
        self._acd_timer_at: float | None = None
        endpoint.handlers["INVITE"] = self._on_invite

    # -- CallControl (cms.calls.control): what the CTI asks

    def list_calls(self) -> list[CallView]:
        """Every live call."""
        return commands.list_calls(self)

    def get_call(self, call_id: str) -> CallView | None:
        """One live call, or None."""
        return commands.get_call(self, call_id)

    def attached_data(self, call_id: str) -> dict[str, Any]:
        """The call's attached data."""
        return commands.attached_data(self, call_id)

    def update_attached_data(self, call_id: str, user: str | None,
                             changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merge `changes` (JSON merge patch: null deletes a key); returns the new data."""
        return commands.update_attached_data(self, call_id, user, changes)

    async def make_call(self, user: str, to: str,
                        attached_data: Mapping[str, Any] | None = None) -> CallView:
        """Click-to-dial: ring `user`'s device (auto-answer hints), then call `to`."""
        return await commands.make_call(self, user, to, attached_data)

    async def answer(self, call_id: str, user: str | None) -> CallView:
        """Ask a ringing device to answer (NOTIFY Event: talk)."""
        return await commands.answer(self, call_id, user)

    async def reject(self, call_id: str, user: str | None) -> CallView:
        """Decline a call ringing at `user`'s device."""
        return await commands.reject(self, call_id, user)

    async def hangup(self, call_id: str, user: str | None) -> CallView:
        """End the call (in a conference: `user`'s part of it)."""
        return await commands.hangup(self, call_id, user)

    async def hold(self, call_id: str, user: str | None) -> CallView:
        """Put the other party on hold (hold audio)."""
        return await commands.hold(self, call_id, user)

    async def retrieve(self, call_id: str, user: str | None) -> CallView:
        """Take the held party back."""
        return await commands.retrieve(self, call_id, user)

    async def send_dtmf(self, call_id: str, user: str | None, digits: str) -> CallView:
        """Send RFC 4733 digits to the other party."""
        return await commands.send_dtmf(self, call_id, user, digits)

    async def transfer(self, call_id: str, user: str | None, to: str,
                       mode: TransferMode) -> CallView:
        """Blind transfer, or (mode consult) start a consult call."""
        return await transfers.transfer(self, call_id, user, to, mode)

    async def consult(self, call_id: str, user: str | None, to: str) -> CallView:
        """Hold the other party and call `to` from the same device."""
        return await transfers.consult(self, call_id, user, to)

    async def complete(self, call_id: str, user: str | None, consult_id: str,
                       as_: CompleteAs) -> CallView:
        """Join the held and the consulted party (transfer) or all three (conference)."""
        return await transfers.complete(self, call_id, user, consult_id, as_)

    # -- call events (the journal's call.* types)

    def emit(self, kind: str, call: Call, **data: Any) -> None:
        if self.on_call_event is not None:
            self.on_call_event(kind, {"call_id": call.id, **data}, time.time())

    def started(self, call: Call) -> None:
        """The call exists: its interaction.created, with what is known of it."""
        if self.on_call_started is not None:
            self.on_call_started(call.id, call.created, call_info(call))

    def agent_of(self, user: str) -> str:
        """`user` when it is an agent (for the CTI's "agent sees its own events" rule)."""
        return user if user and self.acd.is_agent(user) else ""

    def call_info(self, call_id: str) -> dict[str, Any] | None:
        """What interaction.created tells about a live call (None when gone)."""
        call = self.calls.get(call_id)
        return call_info(call) if call is not None else None

    def acd_busy(self, call: Call, user: str) -> None:
        """Tell the ACD `user` is on this call (not from a queue), so it is offered nothing."""
        if not user or user in call.acd_keys or not self.acd.is_agent(user):
            return
        # The call's own id is the ACD's for a queue caller and for the agent it connects.
        plain = call.kind == "direct" and not call.acd_keys
        key = call.id if plain else f"{call.id}:{user}"
        call.acd_keys[user] = key
        self.run_acd(self.acd.direct_call_started(key, user, time.time()))

    def acd_free(self, call: Call, user: str) -> None:
        """`user` left the call: the ACD ends its part (wrap-up, ready again)."""
        key = call.acd_keys.pop(user, None)
        if key is not None:
            self.run_acd(self.acd.call_ended(key, time.time()))

    # -- incoming calls

    def _on_invite(self, tx: ServerTransaction, request: Request, peer: Peer) -> None:
        assert isinstance(tx, InviteServerTransaction)
        now = time.time()
        if not self._trusted(peer) and not self._authenticated(tx, request, now):
            return
        if request.headers.first("replaces") is not None:  # RFC 3891: take over a leg
            takeover.on_invite_with_replaces(self, tx, request, peer)
            return
        try:
            offer = parse_sdp(request.body) if request.body else None
        except ParseError as exc:
            self._reply(tx, request, 400, f"Bad SDP ({exc})")
            return
        # A late offer (INVITE without SDP): ours goes in the 200, the answer comes in the ACK.
        negotiated = negotiate(offer) if offer is not None else None
        if offer is not None and negotiated is None:
            self._reply(tx, request, 488, "No Common Codec")
            return
        uri = parse_uri(request.uri)
        target = uri.user_unescaped or ""
        destination = self.acd.route(target)
        account = self.registrar.directory.lookup(target)
        if destination is None and account is None:
            self._reply(tx, request, 404, "No Such Number")
            return
        from_header = parse_name_addr(request.headers.first("from") or "")
        caller_number = from_header.uri.user_unescaped or ""
        media = self.media.open_leg(name=f"caller {caller_number}")
        leg = SipLeg("caller", peer, media, invite=request, server_tx=tx, negotiated=negotiated)
        self.configure_media(leg)
        call = Call(
            id=secrets.token_hex(8), caller=leg, caller_number=caller_number, target=target,
            kind=destination.kind if destination is not None else "direct",
        )
        call.attached_data = {"caller": caller_number, "dialled": target}
        incoming = request.headers.first(ATTACHED_DATA_HEADER)
        if incoming:
            try:
                call.attached_data.update(decode_attached_data(incoming))
            except ValueError:
                log.info("ignoring malformed attached data on %s", call.id)
        self.calls[call.id] = call
        self.counters["calls"] += 1
        media.on_dtmf = lambda _leg, notice: self._caller_digit(call, notice)
        self.endpoint.cancel_handlers[tx] = lambda _tx, _cancel: self._caller_cancelled(call)
        if destination is not None:
            call.queue = destination.name if destination.kind == "queue" else ""
        else:
            call.direction = "internal" if self._trusted_user(caller_number) else "inbound"
        self.started(call)
        if destination is not None:
            self.answer_incoming(call, leg, offer)
            call.state = CallState.QUEUED
            call.queued_at = now
            leg.media.play(self.hold_audio(call))
            self.run_acd(self.acd.caller_arrived(call.id, target, now))
        else:
            assert account is not None
            self._ring_direct(call, account.name)

    def _trusted_user(self, number: str) -> bool:
        return bool(number) and self.registrar.directory.lookup(number) is not None

    def _caller_digit(self, call: Call, notice: object) -> None:
        """An RFC 4733 digit from the caller: the ACD uses it in an entry menu."""
        if not isinstance(notice, DigitPressed) or call.state is CallState.ENDED:
            return
        if call.state is CallState.QUEUED and call.kind == "menu":
            self.run_acd(self.acd.caller_digit(call.id, notice.digit, time.time()))

    def _trusted(self, peer: Peer) -> bool:
        host = peer.addr[0]
        known = self._trusted_hosts.get(host)
        if known is None:  # parsed once per source host, not for every INVITE
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                known = False
            else:
                known = any(address in net for net in self.trusted)
            if len(self._trusted_hosts) >= 4096:
                self._trusted_hosts.clear()
            self._trusted_hosts[host] = known
        return known

    def _authenticated(self, tx: ServerTransaction, request: Request, now: float) -> bool:
        """Digest-authenticate an INVITE from an untrusted source (407 challenge)."""
        verdict = self.registrar.authenticate(request, now, proxy=True)
        if isinstance(verdict, Response):
            self.endpoint.respond(tx, verdict)
            return False
        return True

    def answer_incoming(self, call: Call, leg: SipLeg, offer: SessionDescription | None = None,
                        allow: str = "INVITE, ACK, CANCEL, BYE, OPTIONS") -> None:
        """200 an incoming leg's INVITE with the CMS's SDP; the leg is UP from now on.

        `offer`: the INVITE's SDP when parsed already (not parsed twice).
        """
        assert leg.invite is not None and leg.server_tx is not None
        tag = new_tag()
        contact = self.contact(leg.peer)
        host, port = self.media_address(leg)
        if leg.negotiated is None:  # late offer: the ACK will carry the caller's answer
            answer = make_offer(host, port)
        else:
            answer = make_answer(offer or parse_sdp(leg.invite.body), leg.negotiated, host, port)
        leg.local_sdp = answer
        leg.dialog = Dialog.from_uas(leg.invite, tag, contact)
        self.route_dialog(call, leg)
        self.endpoint.cancel_handlers.pop(leg.server_tx, None)
        extra = Headers()
        extra["contact"] = [f"<{contact}>"]
        extra["content-type"] = ["application/sdp"]
        extra["allow"] = [allow]
        response = make_response(leg.invite, 200, to_tag=tag, headers=extra, body=answer.encode())
        self.endpoint.respond(leg.server_tx, response)
        leg.state = LegState.UP

    def _ring_direct(self, call: Call, user: str) -> None:
        """A call to a user's or desk's extension: ring its phone, answer the caller on answer."""
        call.state = CallState.RINGING
        leg = self.invite_device(call, user, user, role="callee")
        if leg is None:
            self.reply_caller(call, 480, "Temporarily Unavailable")
            self.finish(call, "unreachable")
            return
        call.other = leg
        call.offered_at = time.time()
        self.acd_busy(call, user)

    # -- outgoing INVITEs (to agents and callees)

    def invite_device(self, call: Call, user: str, device: str, role: str, *,
                       from_number: str | None = None, extra: Headers | None = None,
                       timed: bool = True) -> SipLeg | None:
        """INVITE a registered device with the CMS's own offer (media anchored here).

        `timed`: give up after `ring_timeout` without an answer (queue offers are timed by
        the ACD instead), so a phone that rings forever never holds a call or an agent.
        """
        bindings = self.registrar.lookup(device)
        if not bindings:
            return None
        peer = self.peer_of(bindings[0])
        if peer is None:
            return None
        media = self.media.open_leg(name=f"{role} {user}")
        leg = SipLeg(role, peer, media, user=user, device=device)
        host_media, port_media = self.media_address(leg)
        offer = make_offer(host_media, port_media)
        leg.local_sdp = offer
        sent_by = self.endpoint.sent_by(peer)
        contact = self.contact(peer)
        caller_from = parse_name_addr(call.caller.invite.headers.first("from") or "") \
            if getattr(call.caller, "server_tx", None) is not None and call.caller.invite \
            else None  # (no caller leg yet while click-to-dial rings the agent's own phone)
        display = caller_from.display if caller_from else None
        number = from_number if from_number is not None else call.caller_number
        from_uri = f"sip:{number or 'anonymous'}@{self.registrar.realm}"
        from_value = f'"{display}" <{from_uri}>' if display else f"<{from_uri}>"
        headers = Headers()
        headers["via"] = [f"SIP/2.0/{peer.transport} {sent_by};branch={new_branch()};rport"]
        headers["max-forwards"] = ["70"]
        headers["from"] = [f"{from_value};tag={new_tag()}"]
        headers["to"] = [f"<sip:{device}@{self.registrar.realm}>"]
        headers["call-id"] = [f"{secrets.token_hex(10)}@cms"]
        headers["cseq"] = ["1 INVITE"]
        headers["contact"] = [f"<{contact}>"]
        headers["allow"] = ["INVITE, ACK, CANCEL, BYE, OPTIONS"]
        headers["content-type"] = ["application/sdp"]
        headers[ATTACHED_DATA_HEADER] = [encode_attached_data(call.attached_data)]
        headers["x-cms-call-id"] = [call.id]
        for name, values in (extra or Headers()).items():
            headers[name] = list(values)
        request = Request("INVITE", bindings[0].contact, headers, offer.encode())
        leg.invite = request
        leg.client_tx = self.endpoint.send_request(
            request, peer, lambda event: self._on_outgoing_event(call, leg, event)
        )
        self.emit("call.dialing", call, user=user, agent=self.agent_of(user), device=device,
                   role=role)
        if timed and self.ring_timeout > 0:
            asyncio.get_running_loop().call_later(self.ring_timeout, self._ring_timed_out,
                                                  call, leg)
        return leg

    def _ring_timed_out(self, call: Call, leg: SipLeg) -> None:
        """Nobody answered in `ring_timeout`: CANCEL and treat it as a 408."""
        if leg.state not in (LegState.CALLING, LegState.RINGING):
            return
        self.abandon_outgoing(leg)
        self._outgoing_failed(call, leg, 408, time.time())

    def peer_of(self, binding: Binding) -> Peer | None:
        """Where requests to a registered contact go.

        Over TCP, the connection the phone registered on. Over UDP, the Contact's
        own address when it names the host the REGISTER came from (a phone that
        registers from one port and listens on another), else the REGISTER's
        source address (the phone is behind NAT: its Contact is unreachable).
        """
        transport, _, hostport = binding.source.partition(" ")
        host, _, port_text = hostport.rpartition(":")
        source = (host.strip("[]"), int(port_text or 5060))
        if transport.upper() == "TCP":
            return self.endpoint.peer_for("TCP", source)
        try:
            uri = parse_uri(binding.contact)
        except ParseError:
            return self.endpoint.peer_for("UDP", source)
        if uri.host.strip("[]") == source[0]:
            return self.endpoint.peer_for("UDP", (source[0], uri.port or 5060))
        return self.endpoint.peer_for("UDP", source)

    def _on_outgoing_event(self, call: Call, leg: SipLeg, event: ResponseReceived | TimedOut
                           ) -> None:
        now = time.time()
        if isinstance(event, TimedOut):
            if leg.state in (LegState.CALLING, LegState.RINGING):
                self._outgoing_failed(call, leg, 408, now)
            return
        response = event.response
        status = response.status
        if status < 200:
            if status in (180, 183) and leg.state is LegState.CALLING:
                leg.state = LegState.RINGING
                leg.remote_answer = (response.headers.first("x-remote-answer") or "").lower()
                if leg.role == "callee" and call.caller.state is not LegState.UP:
                    self._provisional_to_caller(call, 180)
            return
        if status >= 300:
            if leg.state is not LegState.ENDED:
                self._outgoing_failed(call, leg, status, now)
            return
        self._outgoing_answered(call, leg, response, now)

    def _outgoing_answered(self, call: Call, leg: SipLeg, response: Response, now: float) -> None:
        assert leg.invite is not None
        if leg.dialog is None:
            leg.dialog = Dialog.from_uac(leg.invite, response, self.contact(leg.peer))
            self.route_dialog(call, leg)
        # ACK every 2xx (retransmissions included): the callee retransmits until it gets one.
        self.endpoint.send_stateless(leg.dialog.ack(1, self.endpoint.sent_by(leg.peer),
                                                    leg.peer.transport), leg.peer)
        if leg.state is LegState.UP:
            return
        if leg.state is LegState.ENDED or call.state is CallState.ENDED:
            self.bye(leg)
            return
        leg.state = LegState.UP
        if response.body:
            try:
                leg.negotiated = negotiate(parse_sdp(response.body))
            except ParseError:
                leg.negotiated = None
        if leg.negotiated is None:
            log.warning("call %s: %s answered without usable SDP", call.id, leg.user)
            self.bye(leg)
            self._outgoing_failed(call, leg, 488, now)
            return
        self.configure_media(leg)
        if leg is call.caller:
            self._originator_answered(call, leg, now)
        elif leg.role == "agent":
            self.run_acd(self.acd.offer_answered(call.id, leg.user, now))
        else:
            if call.caller.state is not LegState.UP:
                self.answer_incoming(call, call.caller)
            self._connect(call, leg, now)

    def _outgoing_failed(self, call: Call, leg: SipLeg, status: int, now: float) -> None:
        leg.state = LegState.ENDED
        self.close_media(leg)
        if leg is call.caller:  # click-to-dial: the agent's own phone did not pick up
            self.end(call, "originator_unreachable", by=leg)
        elif leg.role == "agent" and leg in call.offers.values():
            call.offers.pop(leg.user, None)
            reason = ACD_FAILURES.get(status, OfferFailure.ERROR)
            self.run_acd(self.acd.offer_failed(call.id, leg.user, reason, now))
        elif call.state is not CallState.ENDED:
            if leg is call.other:
                call.other = None
            outcome = "busy" if status in (486, 600) else "failed"
            if call.caller.state is LegState.UP:
                # Click-to-dial, transfer or consult target: release what is left of it.
                self.end(call, outcome)
            else:
                self.reply_caller(call, status if 400 <= status < 700 else 480)
                self.finish(call, outcome)

    # -- ACD actions

    def run_acd(self, outputs: list[Any]) -> None:
        """Execute what an ACD input returned (actions, events) in order; re-arm its timer."""
        self._execute(outputs)
        self._arm_acd_timer()

    def _arm_acd_timer(self) -> None:
        deadline = self.acd.next_deadline()
        if deadline == self._acd_timer_at:
            return
        if self._acd_timer is not None:
            self._acd_timer.cancel()
            self._acd_timer = None
        self._acd_timer_at = deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            delay = max(0.0, deadline - time.time())
            self._acd_timer = loop.call_at(loop.time() + delay, self._on_acd_timer)

    def _on_acd_timer(self) -> None:
        self._acd_timer = None
        armed = self._acd_timer_at or 0.0
        self._acd_timer_at = None
        self.run_acd(self.acd.handle_timer(max(time.time(), armed)))

    def device_changed(self, device: str, registered: bool) -> None:
        """The registrar saw a device's first binding appear or its last one go."""
        now = time.time()
        if registered:
            self.run_acd(self.acd.device_registered(device, now))
        else:
            self.run_acd(self.acd.device_unregistered(device, now))

    def close(self) -> None:
        """Stop the ACD timer (calls are left to the phones' own timers)."""
        if self._acd_timer is not None:
            self._acd_timer.cancel()

    def _execute(self, outputs: list[Any]) -> None:
        for output in outputs:
            if isinstance(output, AcdEvent):
                if self.on_event is not None:
                    self.on_event(output)
                continue
            # "<id>:<user>" ids are the ACD's for users besides a call's first agent.
            call = self.calls.get(output.call_id.partition(":")[0])
            if call is None:
                continue
            if isinstance(output, OfferCall):
                self._offer(call, output)
            elif isinstance(output, CancelOffer):
                leg = call.offers.pop(output.agent, None)
                if leg is not None:
                    self.abandon_outgoing(leg)
            elif isinstance(output, ConnectAgent):
                leg = call.offers.pop(output.agent, None)
                if leg is not None:
                    call.agent = output.agent
                    call.acd_keys[output.agent] = call.id
                    self._connect(call, leg, time.time())
            elif isinstance(output, PlayToCaller):
                call.caller.media.play(self._announcement(output.announcement))
            elif isinstance(output, AnnouncePosition):
                if call.state is CallState.QUEUED:
                    pieces = position_prompt(output.position, self.sounds)
                    call.caller.media.play(SequenceSource(pieces, self.hold_audio(call)))
            elif isinstance(output, HangUpCaller):
                self._hang_up_after_announcement(call, output)
            elif isinstance(output, SendToOverflow):
                account = self.registrar.directory.lookup(output.target)
                if account is None:
                    self.end(call, "overflow_unreachable")
                else:
                    self._ring_direct(call, account.name)
            elif isinstance(output, EndCall):
                self.end(call, "reclaimed")

    def _offer(self, call: Call, action: OfferCall) -> None:
        call.state = CallState.RINGING if call.state is CallState.QUEUED else call.state
        call.offered_at = call.offered_at or time.time()
        call.attached_data["queue"] = action.queue
        leg = self.invite_device(call, action.agent, action.device, role="agent", timed=False)
        if leg is None:
            self.run_acd(self.acd.offer_failed(call.id, action.agent, OfferFailure.ERROR,
                                            time.time()))
            return
        call.offers[action.agent] = leg

    def _connect(self, call: Call, leg: SipLeg, now: float) -> None:
        call.other = leg
        call.state = CallState.CONNECTED
        call.answered_at = call.answered_at or now
        call.agent = call.agent or self.agent_of(leg.user)
        self.counters["answered"] += 1
        call.caller.media.stop_audio()
        if call.caller.media.format is not None:  # else: bridged when the late answer comes
            bridge(call.caller.media, leg.media)
        self.acd_busy(call, leg.user)
        self.emit("call.established", call, user=leg.user, agent=call.agent or leg.user,
                   role=leg.role, parties=[party_view(call, p).to_json()
                                           for p in (call.caller, leg)])

    def _originator_answered(self, call: Call, leg: SipLeg, now: float) -> None:
        """Click-to-dial: the agent's phone answered; it hears ringback while `to` is called."""
        leg.media.play(ToneSource(commands.RINGBACK_HZ, level_dbfs=-20.0))
        self.emit("call.established", call, user=leg.user, agent=self.agent_of(leg.user),
                   role=leg.role, parties=[party_view(call, leg).to_json()])
        commands.dial_target(self, call)

    def _hang_up_after_announcement(self, call: Call, action: HangUpCaller) -> None:
        """Play the goodbye announcement to its end (a tone for a second), then hang up."""
        reason = action.reason.value
        if not action.announcement or call.caller.state is not LegState.UP:
            self.end(call, reason)
            return
        source = self._announcement(action.announcement)
        seconds = float(getattr(source, "duration", 1.0))
        if isinstance(source, SilenceSource):
            seconds = 0.0
        call.caller.media.play(source)
        # One extra frame time so the last packet leaves before the BYE.
        asyncio.get_running_loop().call_later(seconds + 0.1, self.end, call, reason)

    def hold_audio(self, call: Call) -> AudioSource:
        """What a queued or held caller hears: the queue's WAV if configured, else music."""
        name = self.hold_music.get(call.queue, "")
        if name:
            path = self._sound_path(name)
            try:
                if path is not None:
                    # Read from disk once, not for every queued or held call.
                    return LoopSource(cached_wav(path), loop=True)
            except (ValueError, OSError, wave.Error) as exc:
                log.warning("hold music %r cannot be played: %s", name, exc)
            else:
                log.warning("hold music %r is not a WAV file", name)
        return HoldMusicSource()

    def _sound_path(self, name: str) -> Path | None:
        """A WAV file by path, or by stem in the sounds directory."""
        if Path(name).is_file():
            return Path(name)
        if self.sounds is not None and (self.sounds / f"{name}.wav").is_file():
            return self.sounds / f"{name}.wav"
        return None

    def _announcement(self, name: str) -> AudioSource:
        """What an announcement name plays: `tone:HZ`, a WAV file, else silence (logged)."""
        try:
            if name.startswith("tone:"):
                return ToneSource(float(name[5:]))
            path = self._sound_path(name) if name else None
            if path is not None:
                return WavSource(path, loop=False)
        except (ValueError, OSError, wave.Error) as exc:
            log.warning("announcement %r cannot be played: %s", name, exc)
            return SilenceSource()
        if name:
            log.warning("announcement %r is neither tone:HZ nor a WAV file", name)
        return SilenceSource()

    # -- in-dialog requests

    def route_dialog(self, call: Call, leg: SipLeg) -> None:
        """Requests in `leg`'s dialog go to `call` from now on (its `LegHandler` names both)."""
        assert leg.dialog is not None
        self.endpoint.dialog_handlers[leg.dialog.key] = LegHandler(self, call, leg)

    def in_dialog(self, call: Call, leg: SipLeg, tx: ServerTransaction | None,
                  request: Request) -> None:
        """A request (or, with no `tx`, the ACK of a 2xx) in `leg`'s dialog (via `LegHandler`)."""
        method = request.method
        if tx is None:  # the ACK of our 2xx
            if leg.negotiated is None and leg.state is LegState.UP:
                self._late_answer(call, leg, request)
            return
        assert leg.dialog is not None
        if not leg.dialog.receive_request(request):
            self.endpoint.respond(tx, make_response(request, 500, "Out of Order"))
            return
        if method == "BYE":
            self.endpoint.respond(tx, make_response(request, 200))
            leg.state = LegState.ENDED
            if not (commands.left_conference(self, call, leg)
                    or transfers.left_during_consult(self, call, leg)):
                self.end(call, f"{leg.role}_hangup", by=leg)
        elif method == "INVITE":
            self._reinvite(call, leg, tx, request)
        elif method == "REFER":
            transfers.on_refer(self, call, leg, tx, request)
        elif method in ("OPTIONS", "INFO", "UPDATE"):
            self.endpoint.respond(tx, make_response(request, 200))
        else:
            self.endpoint.respond(tx, make_response(request, 501))

    def _late_answer(self, call: Call, leg: SipLeg, ack: Request) -> None:
        """The caller's SDP answer in the ACK of a late-offer call: media can start."""
        try:
            answer = parse_sdp(ack.body) if ack.body else None
        except ParseError:
            answer = None
        leg.negotiated = negotiate(answer) if answer is not None else None
        if leg.negotiated is None:
            log.info("call %s: the ACK has no usable SDP answer; hanging up", call.id)
            self.end(call, "no_media")
            return
        self.configure_media(leg)
        other = call.other
        if (other is not None and other.state is LegState.UP and not other.cms_held
                and call.conference is None and other.media.format is not None):
            bridge(leg.media, other.media)

    def _reinvite(self, call: Call, leg: SipLeg, tx: ServerTransaction, request: Request
                  ) -> None:
        """Hold and resume: answer locally and pass the direction on to the other leg."""
        try:
            offer = parse_sdp(request.body) if request.body else None
        except ParseError:
            offer = None
        if offer is None:
            self.endpoint.respond(tx, make_response(request, 488))
            return
        negotiated = negotiate(offer)
        if negotiated is None:
            self.endpoint.respond(tx, make_response(request, 488))
            return
        leg.negotiated = negotiated
        was_held, leg.held = leg.held, is_hold(offer)
        self.configure_media(leg)
        assert leg.local_sdp is not None
        host, port = self.media_address(leg)
        answer = make_answer(offer, negotiated, host, port,
                             session_id=leg.local_sdp.origin.session_id,
                             version=leg.local_sdp.origin.session_version + 1)
        leg.local_sdp = answer
        extra = Headers()
        extra["contact"] = [f"<{self.contact(leg.peer)}>"]
        extra["content-type"] = ["application/sdp"]
        self.endpoint.respond(tx, make_response(request, 200, headers=extra,
                                                body=answer.encode()))
        if leg.held != was_held:
            self.emit("call.held" if leg.held else "call.retrieved", call, user=leg.user,
                       agent=call.agent, by=leg.role, party=leg.role)
        other = call.other if leg is call.caller else call.caller
        if (other is not None and other.state is LegState.UP and other.dialog is not None
                and call.conference is None and leg.held != was_held):
            self.offer_direction(call, other, "sendonly" if leg.held else "sendrecv")

    def offer_direction(self, call: Call, leg: SipLeg, direction: str) -> None:
        """Re-INVITE `leg` with the CMS's SDP in `direction` (sendonly: hold, sendrecv: resume)."""
        assert leg.dialog is not None and leg.local_sdp is not None
        sdp = with_direction(leg.local_sdp, direction)  # type: ignore[arg-type]
        leg.local_sdp = sdp
        extra = Headers()
        extra["content-type"] = ["application/sdp"]
        request = leg.dialog.new_request("INVITE", self.endpoint.sent_by(leg.peer),
                                         leg.peer.transport, extra, sdp.encode())
        dialog = leg.dialog
        leg.reinvites += 1
        sent = leg.reinvites

        def on_event(event: ResponseReceived | TimedOut) -> None:
            status = event.response.status if isinstance(event, ResponseReceived) else 408
            if 200 <= status < 300:
                number = int((request.headers.first("cseq") or "0").split()[0])
                self.endpoint.send_stateless(
                    dialog.ack(number, self.endpoint.sent_by(leg.peer), leg.peer.transport),
                    leg.peer,
                )
            elif status == 491:
                self._retry_reinvite(call, leg, sent)
            elif status in (408, 481) and leg.state is LegState.UP:
                # RFC 3261 14.1: the phone is gone (or forgot the dialog); end the call rather
                # than leave the other party talking to no one.
                log.info("call %s: re-INVITE to %s got %d; ending the call", call.id,
                         leg.user or leg.role, status)
                self.end(call, "unreachable", by=leg if status == 481 else None)

        self.endpoint.send_request(request, leg.peer, on_event)

    def _retry_reinvite(self, call: Call, leg: SipLeg, sent: int) -> None:
        """After 491 (the phone's own re-INVITE crossed ours), offer again after RFC 3261
        14.1's random wait: 2.1-4 s when the CMS chose the Call-ID (it called the phone),
        0-2 s otherwise. Skipped when a newer re-INVITE went out meanwhile or the leg ended.
        """
        wait = (2.1 + 1.9 * random.random()) if leg.server_tx is None else 2.0 * random.random()

        def retry() -> None:
            if (leg.reinvites == sent and leg.state is LegState.UP and leg.dialog is not None
                    and leg.local_sdp is not None and call.state is not CallState.ENDED):
                audio = leg.local_sdp.audio
                self.offer_direction(call, leg, audio.direction if audio else "sendrecv")

        asyncio.get_running_loop().call_later(wait, retry)

    # -- ending

    def _caller_cancelled(self, call: Call) -> None:
        """CANCEL of a caller's INVITE not yet answered (direct calls ringing)."""
        self.reply_caller(call, 487)
        self.end(call, "abandoned", by=call.caller)

    def end(self, call: Call, outcome: str, by: SipLeg | None = None) -> None:
        """End the call on every leg still up, tell the ACD, write the record."""
        if call.state is CallState.ENDED:
            return
        now = time.time()
        if call.conference is not None:
            call.conference.close()
            call.conference = None
        consult = self.calls.get(call.related) if call.related else None
        if consult is not None and consult.shares_caller:
            self.end(consult, outcome)  # the agent's leg goes: its consult goes with it
        for leg in call.legs():
            if leg is by or leg.state is LegState.ENDED:
                continue
            if leg.state is LegState.UP:
                self.bye(leg)
            elif leg.role != "caller":
                self.abandon_outgoing(leg)
            else:
                self.reply_caller(call, 480)
        call.offers.clear()
        if self.acd.caller(call.id) is not None:
            self.counters["abandoned"] += 1
            self.run_acd(self.acd.caller_abandoned(call.id, now))
            outcome = "abandoned" if by is call.caller else outcome
        for user in list(call.acd_keys):
            self.acd_free(call, user)
        self.finish(call, outcome, by)

    def finish(self, call: Call, outcome: str, by: SipLeg | None = None) -> None:
        call.state = CallState.ENDED
        call.ended_at = time.time()
        call.outcome = call.outcome or outcome
        call.ended_by = by.role if by is not None else "cms"
        record = self._record(call)
        if call.shares_caller:
            original = self.calls.get(call.related)
            if original is not None and original.related == call.id:
                original.related = ""
                call.caller.media.stop_audio()  # no more ringback from a failed consult
        for leg in call.legs():
            self.close_media(leg)
            leg.media.on_dtmf = None  # its closure holds the call: a cycle only the GC frees
            if leg.dialog is not None:
                self.endpoint.dialog_handlers.pop(leg.dialog.key, None)
        if call.caller.server_tx is not None:
            self.endpoint.cancel_handlers.pop(call.caller.server_tx, None)
        self.calls.pop(call.id, None)
        if self.records is not None:
            self.records.write(record)
        if self.on_record is not None:
            self.on_record(record)

    def bye(self, leg: SipLeg) -> None:
        if leg.dialog is None or leg.state is LegState.ENDED:
            return
        leg.state = LegState.ENDED
        request = leg.dialog.new_request("BYE", self.endpoint.sent_by(leg.peer),
                                         leg.peer.transport)
        self.endpoint.send_request(request, leg.peer, lambda event: None)
        self.close_media(leg)

    def abandon_outgoing(self, leg: SipLeg) -> None:
        """Stop ringing a leg: CANCEL before a final answer, BYE after a 2xx."""
        if leg.state is LegState.UP:
            self.bye(leg)
            return
        if leg.state is LegState.ENDED or leg.invite is None:
            return
        leg.state = LegState.ENDED
        invite = leg.invite
        headers = Headers()
        for name in ("via", "from", "to", "call-id"):
            headers[name] = list(invite.headers.all(name))[:1]
        headers["max-forwards"] = ["70"]
        headers["cseq"] = ["1 CANCEL"]
        cancel = Request("CANCEL", invite.uri, headers)
        self.endpoint.send_request(cancel, leg.peer, lambda event: None)
        self.close_media(leg)

    def reply_caller(self, call: Call, status: int, reason: str = "") -> None:
        leg = call.caller
        if leg.state is LegState.UP or leg.server_tx is None or leg.invite is None:
            return
        if leg.server_tx.terminated:
            return
        if status < 200:
            self._provisional_to_caller(call, status)
            return
        leg.state = LegState.ENDED
        self.endpoint.respond(leg.server_tx, make_response(leg.invite, status, reason))

    def _provisional_to_caller(self, call: Call, status: int) -> None:
        leg = call.caller
        if leg.server_tx is not None and leg.invite is not None:
            self.endpoint.respond(leg.server_tx, make_response(leg.invite, status))

    def _reply(self, tx: ServerTransaction, request: Request, status: int, reason: str) -> None:
        self.endpoint.respond(tx, make_response(request, status, reason))

    # -- media helpers

    def configure_media(self, leg: SipLeg) -> None:
        """Set a leg's RTP format and destination from its negotiated SDP."""
        negotiated = leg.negotiated
        if negotiated is None:
            return
        codec = CODECS.get(negotiated.codec.name.upper())
        if codec is None:
            return
        media_format = MediaFormat(
            codec=codec, payload_type=negotiated.codec.payload_type,
            dtmf_payload_type=negotiated.telephone_event_pt, ptime_ms=negotiated.ptime,
        )
        remote = negotiated.remote if negotiated.remote[1] else None
        leg.media.configure(media_format, remote)

    def media_address(self, leg: SipLeg) -> tuple[str, int]:
        """Where the leg's phone sends RTP (what the CMS's SDP names)."""
        host, port = leg.media.local_address
        if host in ("0.0.0.0", "::"):
            host = self.endpoint.sent_by(leg.peer).rpartition(":")[0] or self.media_host
        return host, port

    def close_media(self, leg: SipLeg) -> None:
        if not leg.media.endpoint.closed:
            disconnect(leg.media)
            self.media.close_leg(leg.media)

    def contact(self, peer: Peer) -> str:
        transport = "" if isinstance(peer, UdpPeer) else ";transport=tcp"
        return f"sip:cms@{self.endpoint.sent_by(peer)}{transport}"

    def _record(self, call: Call) -> dict[str, Any]:
        def span(start: float | None, end: float | None) -> float | None:
            return round(end - start, 3) if start is not None and end is not None else None

        quality = {}
        for leg in (call.caller, call.other):
            if leg is not None:
                quality[leg.role] = as_plain(leg.media.stats())
        return {
            "id": call.id,
            "kind": call.kind,
            "caller": call.caller_number,
            "target": call.target,
            "queue": call.queue,
            "agent": call.agent,
            "created": call.created,
            "wait": span(call.queued_at, call.answered_at or call.ended_at),
            "ring": span(call.offered_at, call.answered_at),
            "talk": span(call.answered_at, call.ended_at),
            "outcome": call.outcome,
            "ended_by": call.ended_by,
            "attached_data": call.attached_data,
            "quality": quality,
        }

