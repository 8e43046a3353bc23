"""The SIP endpoint: transports in, sans-IO core in the middle, application handlers out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cms.registrar.service import Registrar
from cms.sip.errors import ParseError, RemoteProtocolError
from cms.sip.headers import header_values, parse_via, split_list
from cms.sip.message import Headers, Request, Response
from cms.sip.parser import DEFAULT_MAX_SIZE, parse_message
from cms.sip.responses import make_response
from cms.sip.transaction import RequestReceived, ServerTransaction, TransactionManager
from cms.sip.validate import can_answer, validate_request

from .peer import Peer, TcpPeer, UdpPeer
from .tcp import TcpConnection, TcpTransport
from .udp import Address, UdpTransport

log = logging.getLogger("cms.sip")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER"
SUPPORTED: frozenset[str] = frozenset()
URI_SCHEMES = frozenset({"sip", "sips", "tel"})

Handler = Callable[[ServerTransaction, Request, Peer], None]


class SipEndpoint:
    """Parses what transports receive, runs transactions and dispatches requests by method."""

    def __init__(self, registrar: Registrar, tcp_idle_timeout: float = 600.0,
                 max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.registrar = registrar
        self.tcp_idle_timeout = tcp_idle_timeout
        self.max_size = max_size
        self.transactions = TransactionManager()
        self.handlers: dict[str, Handler] = {
            "REGISTER": self._on_register,
            "OPTIONS": self._on_options,
        }
        self.udp: UdpTransport | None = None
        self.tcp: TcpTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.counters = {"requests": 0, "responses": 0, "malformed": 0, "dropped": 0}

    def attach(self, udp: UdpTransport, tcp: TcpTransport) -> None:
        """Use these transports for sending."""
        self.udp, self.tcp = udp, tcp

    def stats(self) -> dict[str, int]:
        """Counters for health and benchmarks."""
        return dict(self.counters, transactions=len(self.transactions))

    # -- receiving

    def on_udp(self, data: bytes, addr: Address) -> None:
        """A datagram arrived."""
        if len(data) <= 4 and not data.strip(b"\r\n\x00"):
            return  # RFC 5626 CRLF keep-alive over UDP: nothing to answer.
        assert self.udp is not None
        self._receive(data, addr, None, True)

    def on_tcp(self, data: bytes, conn: TcpConnection) -> None:
        """A framed message arrived on a TCP connection."""
        self._receive(data, conn.peer, conn, False)

    def _receive(self, data: bytes, addr: Address, conn: TcpConnection | None,
                 datagram: bool) -> None:
        now = time.monotonic()
        try:
            message = parse_message(data, datagram=datagram, max_size=self.max_size)
        except ParseError as exc:
            self._on_malformed(exc, addr, conn)
            return
        if isinstance(message, Response):
            self.counters["responses"] += 1
            self.transactions.receive_response(message, now)
            return
        self.counters["requests"] += 1
        peer = self._stamp_via(message, addr, conn)
        if peer is None:
            self.counters["malformed"] += 1
            self._log_drop("unusable top Via", addr)
            return
        try:
            # The registrar parses To itself, so REGISTER skips the full check's parse of it.
            validate_request(message, full=message.method != "REGISTER")
        except ParseError as exc:
            self._on_malformed(exc, addr, conn, message, peer)
            return
        try:
            events = self.transactions.receive_request(
                message, peer, now, reliable=conn is not None
            )
        except RemoteProtocolError as exc:
            self._on_malformed(ParseError(str(exc), exc.status, message), addr, conn)
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self._dispatch(event.transaction, event.request, peer)

    def _stamp_via(self, request: Request, addr: Address,
                   conn: TcpConnection | None) -> Peer | None:
        """Add received/rport to the top Via (RFC 3581) and choose the response peer."""
        values = request.headers.get("via")
        if not values:
            return None
        first = values[0]
        entries = split_list(first) if "," in first else [first]
        try:
            via = parse_via(entries[0])
        except ParseError:
            return None
        params = via.params
        changed = False
        if via.host != addr[0]:
            params["received"] = addr[0]
            changed = True
        rport = "rport" in params
        if rport:
            params["rport"] = str(addr[1])
            params["received"] = addr[0]
            changed = True
        if changed:
            entries[0] = str(via)
            values[0] = ", ".join(entries)
        if conn is not None:
            return TcpPeer(conn)
        assert self.udp is not None
        port = addr[1] if rport else (via.port or 5060)
        return UdpPeer(self.udp, (addr[0], port))

    def _on_malformed(self, exc: ParseError, addr: Address, conn: TcpConnection | None,
                      request: Request | None = None, peer: Peer | None = None) -> None:
        self.counters["malformed"] += 1
        request = request or exc.partial
        if exc.status == 0 or request is None or not can_answer(request):
            self.counters["dropped"] += 1
            self._log_drop(str(exc), addr)
            return
        if request.method == "ACK":
            self.counters["dropped"] += 1
            return
        if peer is None:
            peer = self._stamp_via(request, addr, conn)
        if peer is None:
            # The top Via is unusable (RFC 4475 badinv01): answer where the request came from.
            if conn is not None:
                peer = TcpPeer(conn)
            else:
                assert self.udp is not None
                peer = UdpPeer(self.udp, addr)
        if self.counters["malformed"] <= 20 or self.counters["malformed"] % 1000 == 0:
            log.info("rejecting malformed request from %s:%s: %s", *addr, exc,
                     extra={"malformed_total": self.counters["malformed"]})
        reason = exc.reason or ""
        peer.send(make_response(request, exc.status, reason[:120]).encode())

    def _log_drop(self, why: str, addr: Address) -> None:
        dropped = self.counters["dropped"] + self.counters["malformed"]
        if dropped <= 20 or dropped % 1000 == 0:
            log.warning("dropped a message from %s:%s: %s", *addr, why,
                        extra={"malformed_total": self.counters["malformed"]})

    # -- dispatching

    def _dispatch(self, tx: ServerTransaction, request: Request, peer: Peer) -> None:
        rejection = self._precheck(request)
        if rejection is not None:
            self.respond(tx, rejection)
            return
        handler = self.handlers.get(request.method)
        if handler is None:
            if request.method in ("INVITE", "BYE", "CANCEL"):
                # Known methods with no route yet: nothing here serves calls to this target.
                self.respond(tx, make_response(request, 480, "No Route to Target"))
            else:
                extra = Headers()
                extra["allow"] = [ALLOW]
                self.respond(tx, make_response(request, 501, headers=extra))
            return
        handler(tx, request, peer)

    def _precheck(self, request: Request) -> Response | None:
        """Checks every request passes before its method's handler (RFC 3261 §8.2.1-8.2.3)."""
        scheme = request.uri.split(":", 1)[0].lower()
        if scheme not in URI_SCHEMES:
            return make_response(request, 416)
        required = request.headers.get("require")
        if required and request.method not in ("ACK", "CANCEL"):
            unknown = [o for o in header_values(required, "require") if o not in SUPPORTED]
            if unknown:
                extra = Headers()
                extra["unsupported"] = [", ".join(unknown)]
                return make_response(request, 420, headers=extra)
        if request.body and request.method in ("INVITE", "OPTIONS"):
            content_type = (request.headers.first("content-type") or "").split(";")[0].strip()
            if content_type.lower() != "application/sdp":
                extra = Headers()
                extra["accept"] = ["application/sdp"]
                return make_response(request, 415, headers=extra)
        return None

    def respond(self, tx: ServerTransaction, response: Response) -> None:
        """Send a response through its server transaction."""
        self.transactions.send_response(tx, response, time.monotonic())

    def _on_register(self, tx: ServerTransaction, request: Request, peer: Peer) -> None:
        source = f"{peer.transport} {peer.addr[0]}:{peer.addr[1]}"
        self.respond(tx, self.registrar.handle(request, source))

    def _on_options(self, tx: ServerTransaction, request: Request, peer: Peer) -> None:
        extra = Headers()
        extra["allow"] = [ALLOW]
        extra["accept"] = ["application/sdp"]
        extra["accept-language"] = ["en"]
        self.respond(tx, make_response(request, 200, headers=extra))

    # -- sending and timers

    def flush(self) -> None:
        """Send what the transactions queued and re-arm the timer (once per batch)."""
        for data, peer in self.transactions.datagrams_to_send():
            peer.send(data)
        deadline = self.transactions.next_deadline()
        if deadline is None:
            return
        armed = self._timer_at
        # Re-arm only for an earlier deadline: a later one is picked up when the timer fires.
        if armed is not None and armed <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, deadline - time.monotonic())
        self._timer_at = deadline
        self._timer = loop.call_at(loop.time() + delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.transactions.handle_timer(time.monotonic())
        self.flush()

    def close(self) -> None:
        """Cancel the timer."""
        if self._timer is not None:
            self._timer.cancel()
