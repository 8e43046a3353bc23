"""A SIP user agent for drivers and tests, built on the CMS's own sans-IO core.

Signalling is `cms.sip` as the CMS uses it, client and server side: the
`TransactionManager` (fed by one asyncio UDP socket, drained after every input,
one `call_at` re-armed on its next deadline), `Dialog` for in-dialog requests,
`DigestClient` for 401/407 challenges and `cms.sip.sdp` for offer/answer.
Media is `cms.media` (see `ua_media`): each call has a `Leg` that plays a
generated source and records what it receives, so a test can tell by FFT whose
tone it heard.

It does what a phone in a test needs: REGISTER (with refresh), outgoing INVITE
(with 407 answered, CANCEL, re-INVITE for hold and resume, BYE, DTMF) and
incoming INVITE (ring, answer after a delay, never answer, or reject), UDP only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from cms.media.endpoint import Address
from cms.media.service import MediaService
from cms.media.sources import AudioSource
from cms.sip.dialog import Dialog, dialog_key_of
from cms.sip.digest import DigestClient, pick_challenge
from cms.sip.errors import ParseError, RemoteProtocolError
from cms.sip.headers import parse_cseq, parse_name_addr, parse_uri
from cms.sip.message import Headers, Request, Response
from cms.sip.parser import parse_message
from cms.sip.responses import make_response, new_tag
from cms.sip.sdp import (
    Direction,
    SessionDescription,
    is_hold,
    make_answer,
    make_offer,
    negotiate,
    parse_sdp,
    with_direction,
)
from cms.sip.transaction import (
    AckReceived,
    CancelReceived,
    ClientTransaction,
    Event,
    InviteServerState,
    InviteServerTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TimedOut,
    Transaction,
    TransactionManager,
    TransactionTerminated,
    new_branch,
)

from .ua_media import CallMedia

log = logging.getLogger("scripts.sip_ua")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS"
# cms.calls.manager.ATTACHED_DATA_HEADER (a unit test checks they agree): importing that
# module costs a caller process ~0.1 s of CPU at start.
ATTACHED_DATA_HEADER = "x-cms-attached-data"

ResponseHandler = Callable[[ResponseReceived | TimedOut], None]


# --------------------------------------------------------------------------- calls


@dataclass
class AnswerPolicy:
    """How a UA treats incoming INVITEs: ring, then answer, never answer, or reject."""

    ring_for: float | None = 0.0  # seconds of 180 Ringing before 200; None: ring forever
    reject: int | None = None  # answer this final status (486, 603, ...) instead
    source: Callable[[], AudioSource | None] | None = None  # what to play on each call
    # Whether to record a call's audio (default: every call); a load generator judges some.
    record: Callable[[], bool] | None = None


@dataclass(eq=False)
class Call:
    """One call of a `UserAgent`, placed ("out") or received ("in")."""

    ua: UserAgent
    direction: str
    call_id: str
    local_tag: str
    media: CallMedia
    invite: Request
    remote: Address
    status: int = 0  # final status of the (last) INVITE: 200, 486, 487, 408 (timeout) ...
    reason: str = ""
    started: float = field(default_factory=time.monotonic)  # first INVITE sent / received
    ringing_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    ended_by: str = ""  # "local" or "remote"
    dialog: Dialog | None = None
    local_sdp: SessionDescription | None = None
    remote_sdp: SessionDescription | None = None
    attached_data: dict[str, Any] | None = None
    reinvites: list[str] = field(default_factory=list)  # directions offered by the peer
    server_tx: InviteServerTransaction | None = None
    client_tx: ClientTransaction | None = None
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    ringing: asyncio.Event = field(default_factory=asyncio.Event)
    _2xx_timer: asyncio.TimerHandle | None = None  # resends our 2xx until the ACK
    _answer_timer: asyncio.TimerHandle | None = None  # answers after the policy's ringing
    _invite_task: asyncio.Task[None] | None = None
    cancelled: bool = False
    _confirmed: bool = False  # the ACK of our 2xx arrived

    @property
    def setup_time(self) -> float | None:
        """Seconds from the first INVITE to its 2xx."""
        return None if self.answered_at is None else self.answered_at - self.started

    @property
    def is_up(self) -> bool:
        """True while the dialog is confirmed and not ended."""
        return self.answered_at is not None and self.ended_at is None

    # -- outgoing: cancel, re-INVITE, BYE

    async def cancel(self) -> int | None:
        """CANCEL the unanswered INVITE; returns the CANCEL's status (the INVITE gets 487)."""
        invite = self.invite
        headers = Headers()
        for name in ("via", "from", "to", "call-id"):
            headers[name] = list(invite.headers.all(name))[:1]
        headers["max-forwards"] = ["70"]
        number, _ = parse_cseq(invite.headers.first("cseq") or "1 INVITE")
        headers["cseq"] = [f"{number} CANCEL"]
        self.cancelled = True
        response = await self.ua.request(Request("CANCEL", invite.uri, headers), self.remote)
        if self._invite_task is not None:
            # The INVITE's own final response (487, or a 200 that crossed the CANCEL).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._invite_task), 5.0)
        return response.status if response is not None else None

    async def reinvite(self, direction: Direction) -> Response | None:
        """Re-offer our SDP with `direction` (sendonly / inactive: hold; sendrecv: resume)."""
        assert self.dialog is not None and self.local_sdp is not None
        sdp = with_direction(self.local_sdp, direction)
        extra = Headers()
        extra["content-type"] = ["application/sdp"]
        request = self.dialog.new_request("INVITE", self.ua.sent_by, "UDP", extra, sdp.encode())
        response = await self.ua.request(request, self.remote,
                                         on_2xx=lambda r: self._ack_2xx(request, r))
        if response is not None and 200 <= response.status < 300:
            self.local_sdp = sdp
            self._apply_answer(response)
        return response

    async def hang_up(self) -> int | None:
        """BYE an answered call (or CANCEL one still ringing); returns the final status."""
        if self.ended_at is not None:
            return None
        if self.dialog is None:
            if self.direction == "out":
                return await self.cancel()
            self._reject(480)
            return 480
        self._end("local")
        request = self.dialog.new_request("BYE", self.ua.sent_by, "UDP")
        response = await self.ua.request(request, self.remote)
        return response.status if response is not None else None

    def send_dtmf(self, digits: str) -> None:
        """Send RFC 4733 DTMF digits on the media stream."""
        self.media.send_dtmf(digits)

    # -- incoming: ring, answer, reject

    def ring(self) -> None:
        """Send 180 Ringing (with our To tag) for an incoming INVITE."""
        assert self.server_tx is not None
        response = make_response(self.invite, 180, to_tag=self.local_tag)
        response.headers["contact"] = [f"<{self.ua.contact}>"]
        self.ua.respond(self.server_tx, response)
        self.ringing_at = self.ringing_at or time.monotonic()
        self.ringing.set()

    def answer(self, source: AudioSource | None = None) -> None:
        """Answer an incoming INVITE with 200 and our SDP; retransmit it until the ACK."""
        assert self.server_tx is not None and self.remote_sdp is not None
        if self.server_tx.state is not InviteServerState.PROCEEDING or self.ended_at is not None:
            return
        negotiated = negotiate(self.remote_sdp)
        if negotiated is None:
            self._reject(488)
            return
        host, port = self.media.address
        self.local_sdp = make_answer(self.remote_sdp, negotiated, host, port)
        self.media.play(source)
        self.media.configure(negotiated)
        extra = Headers()
        extra["contact"] = [f"<{self.ua.contact}>"]
        extra["content-type"] = ["application/sdp"]
        extra["allow"] = [ALLOW]
        response = make_response(self.invite, 200, to_tag=self.local_tag, headers=extra,
                                 body=self.local_sdp.encode())
        self.dialog = Dialog.from_uas(self.invite, self.local_tag, self.ua.contact)
        self.ua.dialogs[self.dialog.key] = self
        self.ua.respond(self.server_tx, response)
        self.status = 200
        self.answered_at = time.monotonic()
        self.answered.set()
        self._retransmit_2xx(response, self.ua.transactions.config.t1, 0.0)

    def _reject(self, status: int) -> None:
        if self.server_tx is not None and self.server_tx.state is InviteServerState.PROCEEDING:
            self.ua.respond(self.server_tx, make_response(self.invite, status,
                                                          to_tag=self.local_tag))
        self.status = status
        self._end("local")

    def _retransmit_2xx(self, response: Response, interval: float, waited: float) -> None:
        """RFC 3261 §13.3.1.4: the UAS core resends its 2xx (T1 doubling to T2) until ACK.

        A timer, not a task per answered call: agents answer hundreds of calls a second."""
        self._2xx_timer = asyncio.get_running_loop().call_later(
            interval, self._resend_2xx, response, interval, waited + interval)

    def _resend_2xx(self, response: Response, interval: float, waited: float) -> None:
        self._2xx_timer = None
        if self._confirmed or self.server_tx is None or self.ended_at is not None:
            return
        self.ua.respond(self.server_tx, response)
        timers = self.ua.transactions.config
        if waited >= 64 * timers.t1:
            log.warning("call %s: no ACK for our 2xx", self.call_id)
            return
        self._retransmit_2xx(response, min(2 * interval, timers.t2), waited)

    # -- shared

    def _ack_2xx(self, invite: Request, response: Response) -> None:
        assert self.dialog is not None
        number, _ = parse_cseq(invite.headers.first("cseq") or "1 INVITE")
        self.ua.send_stateless(self.dialog.ack(number, self.ua.sent_by), self.remote)

    def _apply_answer(self, response: Response) -> None:
        try:
            answer = parse_sdp(response.body) if response.body else None
        except ParseError:
            answer = None
        negotiated = negotiate(answer) if answer is not None else None
        if answer is None or negotiated is None:
            return
        self.remote_sdp = answer
        # Our direction follows from the answer's: it answered recvonly to our sendonly, etc.
        ours = self.local_sdp.audio.direction if self.local_sdp and self.local_sdp.audio else None
        if ours in ("sendonly", "inactive"):
            negotiated = dataclasses.replace(negotiated, direction=ours)
        self.media.configure(negotiated)

    def _in_dialog(self, tx: ServerTransaction | None, request: Request) -> None:
        if tx is None:
            self._confirmed = True  # the ACK of our 2xx
            if self._2xx_timer is not None:
                self._2xx_timer.cancel()
                self._2xx_timer = None
            return
        assert self.dialog is not None
        if not self.dialog.receive_request(request):
            self.ua.respond(tx, make_response(request, 500, "Out of Order"))
            return
        method = request.method
        if method == "BYE":
            self.ua.respond(tx, make_response(request, 200))
            self._end("remote")
        elif method == "INVITE":
            self._on_reinvite(tx, request)
        elif method in ("OPTIONS", "INFO", "UPDATE"):
            self.ua.respond(tx, make_response(request, 200))
        else:
            self.ua.respond(tx, make_response(request, 501))

    def _on_reinvite(self, tx: ServerTransaction, request: Request) -> None:
        try:
            offer = parse_sdp(request.body) if request.body else None
        except ParseError:
            offer = None
        negotiated = negotiate(offer) if offer is not None else None
        if offer is None or negotiated is None or self.local_sdp is None:
            self.ua.respond(tx, make_response(request, 488))
            return
        audio = offer.audio
        offered = audio.direction if audio is not None else "inactive"
        # c=0.0.0.0 is RFC 2543 hold whatever the attribute says.
        self.reinvites.append(offered if offered != "sendrecv" or not is_hold(offer) else "hold")
        host, port = self.media.address
        answer = make_answer(offer, negotiated, host, port,
                             session_id=self.local_sdp.origin.session_id,
                             version=self.local_sdp.origin.session_version + 1)
        self.local_sdp, self.remote_sdp = answer, offer
        self.media.configure(negotiated)
        extra = Headers()
        extra["contact"] = [f"<{self.ua.contact}>"]
        extra["content-type"] = ["application/sdp"]
        self.ua.respond(tx, make_response(request, 200, headers=extra, body=answer.encode()))

    def _end(self, by: str) -> None:
        if self.ended_at is not None:
            return
        self.ended_at = time.monotonic()
        self.ended_by = by
        self.media.close()
        if self._answer_timer is not None:
            self._answer_timer.cancel()
        if self._2xx_timer is not None:
            self._2xx_timer.cancel()
            self._2xx_timer = None
        self.ended.set()
        self.answered.set()  # wake anyone waiting for an answer that will not come
        self.ringing.set()
        self.ua._call_ended(self)


# --------------------------------------------------------------------------- the UA


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.ua._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)


class UserAgent:
    """A SIP phone on one UDP socket: registers, places and receives calls with real RTP."""

    def __init__(self, server: Address, *, user: str = "caller", password: str | None = None,
                 host: str = "127.0.0.1", port: int = 0, domain: str | None = None,
                 media: MediaService | None = None, user_agent: str = "cms-sip-ua",
                 answer: AnswerPolicy | None = None,
                 on_ended: Callable[[Call], None] | None = None) -> None:
        self.server = server
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.domain = domain or server[0]
        self.user_agent = user_agent
        self.answer_policy = answer
        # Called when a call ends (a long-running agent judges it, then forgets it).
        self.on_ended = on_ended
        self.digest = DigestClient(user, password) if password is not None else None
        self.transactions = TransactionManager()
        self._own_media = media is None
        self.media = media if media is not None else MediaService(host, (0, 0))
        self.dialogs: dict[tuple[str, str, str], Call] = {}
        self.calls: list[Call] = []
        self.incoming: asyncio.Queue[Call] = asyncio.Queue()
        self._pending: dict[Transaction, Call] = {}
        self._client: dict[Transaction, ResponseHandler] = {}
        self._late_2xx: dict[Transaction, Callable[[Response], None]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._register_call_id = f"{secrets.token_hex(10)}@{host}"
        self._register_tag = new_tag()
        self._register_cseq = 0
        self._refresh: asyncio.Task[None] | None = None
        self.registered = False

    # -- life cycle

    async def start(self) -> UserAgent:
        """Bind the SIP socket (and start the media clock if this UA owns the service)."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, self.port))
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        if self._own_media:
            self.media.start()
        return self

    async def close(self, unregister: bool = True) -> None:
        """Hang up what is up, unregister if registered, close sockets."""
        for call in list(self.calls):
            if call.ended_at is None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(call.hang_up(), 2.0)
        if self._refresh is not None:
            self._refresh.cancel()
        if unregister and self.registered:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.register(expires=0), 2.0)
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
        if self._own_media:
            self.media.close()

    async def __aenter__(self) -> UserAgent:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def sent_by(self) -> str:
        """host:port for our Via."""
        return f"{self.host}:{self.port}"

    @property
    def contact(self) -> str:
        """Our Contact URI."""
        return f"sip:{self.user}@{self.host}:{self.port}"

    # -- sending

    def _flush(self) -> None:
        transport = self._transport
        for data, peer in self.transactions.datagrams_to_send():
            if transport is not None:
                transport.sendto(data, cast(Address, peer))
        deadline = self.transactions.next_deadline()
        if deadline is None or (self._timer_at is not None and self._timer_at <= deadline):
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = deadline
        self._timer = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()),
                                   self._on_timer)

    def _on_timer(self) -> None:
        armed = self._timer_at or 0.0
        self._timer = self._timer_at = None
        self._handle(self.transactions.handle_timer(max(time.monotonic(), armed)))
        self._flush()

    def respond(self, tx: ServerTransaction, response: Response) -> None:
        """Send a response through its server transaction."""
        if "user-agent" not in response.headers and "server" not in response.headers:
            response.headers["server"] = [self.user_agent]
        self._handle(self.transactions.send_response(tx, response, time.monotonic()))
        self._flush()

    def send_stateless(self, message: Request | Response, peer: Address) -> None:
        """Send outside any transaction (the ACK of a 2xx)."""
        self.transactions.send_stateless(message, peer)
        self._flush()

    def send(self, request: Request, peer: Address, handler: ResponseHandler,
             on_2xx: Callable[[Response], None] | None = None) -> ClientTransaction:
        """Start a client transaction; `handler` sees each response and the timeout."""
        tx = self.transactions.send_request(request, peer, time.monotonic())
        self._client[tx] = handler
        if on_2xx is not None:
            self._late_2xx[tx] = on_2xx
        self._flush()
        return tx

    async def request(self, request: Request, peer: Address | None = None, *,
                      on_2xx: Callable[[Response], None] | None = None) -> Response | None:
        """Send a request and wait for its final response (None: timed out).

        `on_2xx` is called for the 2xx and for every retransmission of it (an
        INVITE's ACK); a 401/407 is answered once when the UA has a password.
        """
        peer = peer or self.server
        response = await self._exchange(request, peer, on_2xx)
        if response is not None and response.status in (401, 407) and self.digest is not None:
            retry = self._authorized(request, response)
            if retry is not None:
                response = await self._exchange(retry, peer, on_2xx)
        return response

    async def _exchange(self, request: Request, peer: Address,
                        on_2xx: Callable[[Response], None] | None) -> Response | None:
        future: asyncio.Future[Response | None] = asyncio.get_running_loop().create_future()

        def handler(event: ResponseReceived | TimedOut) -> None:
            if isinstance(event, TimedOut):
                if not future.done():
                    future.set_result(None)
            elif event.response.status >= 200 and not future.done():
                future.set_result(event.response)

        self.send(request, peer, handler, on_2xx)
        return await future

    def _authorized(self, request: Request, challenge: Response) -> Request | None:
        """The request again, with credentials answering a 401/407, next CSeq, new branch."""
        assert self.digest is not None
        proxy = challenge.status == 407
        value = pick_challenge(challenge.headers.all(
            "proxy-authenticate" if proxy else "www-authenticate"))
        if value is None:
            return None
        headers = Headers({name: list(values) for name, values in request.headers.items()})
        number, method = parse_cseq(headers.first("cseq") or "1 INVITE")
        headers["cseq"] = [f"{number + 1} {method}"]
        via = headers.first("via") or ""
        headers["via"] = [via.split(";branch=")[0] + f";branch={new_branch()};rport"]
        credentials = self.digest.authorization(method, request.uri, value, request.body)
        headers["proxy-authorization" if proxy else "authorization"] = [credentials]
        return Request(request.method, request.uri, headers, request.body)

    def _headers(self, method: str, to_uri: str, call_id: str, from_tag: str, cseq: int,
                 from_uri: str | None = None) -> Headers:
        headers = Headers()
        headers["via"] = [f"SIP/2.0/UDP {self.sent_by};branch={new_branch()};rport"]
        headers["max-forwards"] = ["70"]
        headers["from"] = [f"<{from_uri or f'sip:{self.user}@{self.domain}'}>;tag={from_tag}"]
        headers["to"] = [f"<{to_uri}>"]
        headers["call-id"] = [call_id]
        headers["cseq"] = [f"{cseq} {method}"]
        headers["user-agent"] = [self.user_agent]
        return headers

    # -- registration

    async def register(self, expires: int = 300) -> int:
        """REGISTER our contact (digest answered); returns the final status (0: timeout).

        With `expires` > 0 the binding is refreshed before it runs out.
        """
        self._register_cseq += 1
        aor = f"sip:{self.user}@{self.domain}"
        headers = self._headers("REGISTER", aor, self._register_call_id, self._register_tag,
                                self._register_cseq, aor)
        headers["contact"] = [f"<{self.contact}>"]
        headers["expires"] = [str(expires)]
        uri = f"sip:{self.server[0]}:{self.server[1]}"
        response = await self.request(Request("REGISTER", uri, headers))
        if response is not None:
            number, _ = parse_cseq(response.headers.first("cseq") or "0 REGISTER")
            self._register_cseq = max(self._register_cseq, number)
        status = response.status if response is not None else 0
        self.registered = status == 200 and expires > 0
        if self.registered and self._refresh is None:
            self._refresh = asyncio.get_running_loop().create_task(self._keep_registered(expires))
        return status

    async def _keep_registered(self, expires: int) -> None:
        while self.registered:
            await asyncio.sleep(max(5.0, expires * 0.8))
            if self.registered:
                await self.register(expires)

    # -- placing calls

    async def call(self, target: str, source: AudioSource | None = None, *,
                   headers: Headers | None = None, direction: Direction = "sendrecv",
                   wait: bool = True, record: bool = True) -> Call:
        """INVITE `target` (a number or name at the server); play `source` once answered.

        With `wait` it returns after the final response (see `Call.status`);
        otherwise at once, and `Call.answered` / `Call.ended` tell what happens.
        Without `record` the call's media only counts the packets it receives.
        """
        call_id = f"{secrets.token_hex(10)}@{self.host}"
        media = CallMedia(self.media, f"{self.user} -> {target}", record=record)
        host, port = media.address
        offer = make_offer(host, port, direction=direction)
        uri = f"sip:{target}@{self.server[0]}:{self.server[1]}"
        request_headers = self._headers("INVITE", f"sip:{target}@{self.domain}", call_id,
                                        new_tag(), 1)
        request_headers["contact"] = [f"<{self.contact}>"]
        request_headers["allow"] = [ALLOW]
        request_headers["content-type"] = ["application/sdp"]
        for name, values in (headers or {}).items():
            request_headers[name] = list(values)
        invite = Request("INVITE", uri, request_headers, offer.encode())
        call = Call(self, "out", call_id, parse_name_addr(request_headers["from"][0]).tag or "",
                    media, invite, self.server, local_sdp=offer)
        media.play(source)
        self.calls.append(call)
        task = asyncio.get_running_loop().create_task(self._invite(call))
        call._invite_task = task
        if wait:
            await task
        return call

    async def _invite(self, call: Call) -> None:
        response = await self._send_invite(call)
        if (response is not None and response.status in (401, 407)
                and self.digest is not None):
            retry = self._authorized(call.invite, response)
            if retry is not None:
                call.invite = retry
                response = await self._send_invite(call)
        if response is None:
            call.status, call.reason = 408, "Request Timeout (no final response)"
            call._end("local")
        elif response.status >= 300:
            call.status, call.reason = response.status, response.reason
            call._end("local" if call.cancelled else "remote")

    async def _send_invite(self, call: Call) -> Response | None:
        loop = asyncio.get_running_loop()
        final: asyncio.Future[Response | None] = loop.create_future()
        invite = call.invite

        def handler(event: ResponseReceived | TimedOut) -> None:
            if isinstance(event, TimedOut):
                if not final.done():
                    final.set_result(None)
                return
            response = event.response
            if response.status < 200:
                if response.status in (180, 183) and call.ringing_at is None:
                    call.ringing_at = time.monotonic()
                    call.ringing.set()
                return
            if not final.done():
                final.set_result(response)

        def on_2xx(response: Response) -> None:
            # The 2xx, and each retransmission of it: ACK them all.
            first = call.dialog is None
            if first:
                call.dialog = Dialog.from_uac(invite, response, self.contact)
                self.dialogs[call.dialog.key] = call
            call._ack_2xx(invite, response)
            if first:
                call.status, call.reason = response.status, response.reason
                call.answered_at = time.monotonic()
                call._apply_answer(response)
                call.answered.set()
                if call.ended_at is not None:
                    # Answered after we gave up (CANCEL crossed the 200): hang up.
                    loop.create_task(self._bye_late(call))

        call.client_tx = self.send(invite, self.server, handler, on_2xx)
        return await final

    async def _bye_late(self, call: Call) -> None:
        assert call.dialog is not None
        await self.request(call.dialog.new_request("BYE", self.sent_by, "UDP"), call.remote)

    def _call_ended(self, call: Call) -> None:
        if self.on_ended is not None:
            self.on_ended(call)

    def forget(self, call: Call) -> None:
        """Drop an ended call and its recording (long runs would otherwise keep them all)."""
        if call in self.calls:
            self.calls.remove(call)
        if call.dialog is not None:
            self.dialogs.pop(call.dialog.key, None)
        call.media.recording.packets.clear()

    async def next_incoming(self, timeout: float = 10.0) -> Call:
        """The next incoming call (raises TimeoutError)."""
        return await asyncio.wait_for(self.incoming.get(), timeout)

    # -- receiving

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        if not data.strip(b"\r\n\x00"):
            return
        now = time.monotonic()
        try:
            message = parse_message(data)
        except ParseError as exc:
            log.info("dropped a malformed message from %s: %s", addr, exc)
            return
        try:
            if isinstance(message, Response):
                events = self.transactions.receive_response(message, now)
            else:
                events = self.transactions.receive_request(message, addr, now)
        except RemoteProtocolError as exc:
            log.info("dropped a message from %s: %s", addr, exc)
            return
        self._handle(events, addr)
        self._flush()

    def _handle(self, events: list[Event], addr: Address | None = None) -> None:
        for event in events:
            if isinstance(event, ResponseReceived | TimedOut):
                tx = event.transaction
                handler = self._client.get(tx)
                if (isinstance(event, ResponseReceived) and 200 <= event.response.status < 300
                        and tx in self._late_2xx):
                    self._late_2xx[tx](event.response)
                if handler is not None:
                    if isinstance(event, TimedOut) or event.response.status >= 200:
                        del self._client[tx]
                    handler(event)
            elif isinstance(event, RequestReceived):
                assert addr is not None
                self._on_request(event.transaction, event.request, addr)
            elif isinstance(event, AckReceived):
                if event.transaction is None:
                    self._route_in_dialog(None, event.ack)
            elif isinstance(event, CancelReceived):
                self._on_cancel(event)
            elif isinstance(event, TransactionTerminated):
                tx = event.transaction
                self._late_2xx.pop(tx, None)
                self._client.pop(tx, None)
                self._pending.pop(tx, None)

    def _route_in_dialog(self, tx: ServerTransaction | None, request: Request) -> None:
        key = dialog_key_of(request)
        call = self.dialogs.get(key) if key is not None else None
        if call is not None:
            call._in_dialog(tx, request)
        elif tx is not None:
            self.respond(tx, make_response(request, 481))

    def _on_request(self, tx: ServerTransaction, request: Request, addr: Address) -> None:
        to_header = request.headers.first("to") or ""
        try:
            has_tag = parse_name_addr(to_header).tag is not None
        except ParseError:
            self.respond(tx, make_response(request, 400))
            return
        if has_tag:
            self._route_in_dialog(tx, request)
        elif request.method == "INVITE":
            assert isinstance(tx, InviteServerTransaction)
            self._on_invite(tx, request, addr)
        elif request.method == "OPTIONS":
            extra = Headers()
            extra["allow"] = [ALLOW]
            self.respond(tx, make_response(request, 200, headers=extra))
        elif request.method == "BYE":
            self.respond(tx, make_response(request, 481))
        else:
            self.respond(tx, make_response(request, 501))

    def _on_invite(self, tx: InviteServerTransaction, request: Request, addr: Address) -> None:
        try:
            offer = parse_sdp(request.body) if request.body else None
        except ParseError:
            offer = None
        if offer is None or negotiate(offer) is None:
            self.respond(tx, make_response(request, 488))
            return
        policy = self.answer_policy
        record = policy is None or policy.record is None or policy.record()
        call = Call(self, "in", request.headers.first("call-id") or "", new_tag(),
                    CallMedia(self.media, f"{self.user} <- call", record=record), request,
                    addr, remote_sdp=offer, server_tx=tx)
        attached = request.headers.first(ATTACHED_DATA_HEADER)
        if attached:
            # Imported here: cms.calls.manager pulls in most of the CMS (~0.1 s per start).
            from cms.calls.manager import decode_attached_data

            try:
                call.attached_data = decode_attached_data(attached)
            except ValueError:
                call.attached_data = {"malformed": attached}
        self.calls.append(call)
        self._pending[tx] = call
        if policy is not None:
            if policy.reject is not None:
                call._reject(policy.reject)
            else:
                call.ring()
                if policy.ring_for is not None:
                    call._answer_timer = asyncio.get_running_loop().call_later(
                        policy.ring_for, self._answer_now, call, policy)
        self.incoming.put_nowait(call)

    def _answer_now(self, call: Call, policy: AnswerPolicy) -> None:
        call._answer_timer = None
        call.answer(policy.source() if policy.source is not None else None)

    def _on_cancel(self, event: CancelReceived) -> None:
        invite = event.invite
        if invite is None or invite.terminated:
            self.respond(event.transaction, make_response(event.request, 481))
            return
        self.respond(event.transaction, make_response(event.request, 200))
        call = self._pending.get(invite)
        if invite.state is InviteServerState.PROCEEDING:
            to_tag = call.local_tag if call is not None else None
            self.respond(invite, make_response(invite.request, 487, to_tag=to_tag))
            if call is not None:
                call.status, call.reason = 487, "Request Terminated"
                call._end("remote")


def target_of(text: str) -> Address:
    """HOST:PORT (port 5060 when omitted) as an address."""
    uri = parse_uri(f"sip:{text}") if not text.startswith("sip:") else parse_uri(text)
    return uri.host.strip("[]"), uri.port or 5060
