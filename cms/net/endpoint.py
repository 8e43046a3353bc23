"""The SIP endpoint: transports in, sans-IO core in the middle, application handlers out."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import cast

from cms.registrar.service import Registrar
from cms.sip.dialog import dialog_key_of
from cms.sip.errors import ParseError, RemoteProtocolError
from cms.sip.headers import header_values, parse_via, split_list
from cms.sip.message import Headers, Request, Response
from cms.sip.parser import DEFAULT_MAX_SIZE, parse_message
from cms.sip.responses import make_response, new_tag
from cms.sip.transaction import (
    MAGIC_COOKIE,
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
)
from cms.sip.validate import can_answer, validate_request

from .peer import Peer, TcpPeer, UdpPeer
from .tcp import TcpConnection, TcpTransport
from .udp import Address, UdpTransport

log = logging.getLogger("cms.sip")

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER"
SUPPORTED: frozenset[str] = frozenset({"replaces"})  # RFC 3891: cms.calls.attended
URI_SCHEMES = frozenset({"sip", "sips", "tel"})

Handler = Callable[[ServerTransaction, Request, Peer], None]
# tx is None for the ACK of a 2xx (no transaction); peer is None for requests from timers.
DialogHandler = Callable[[ServerTransaction | None, Request, Peer | None], None]
CancelHandler = Callable[[InviteServerTransaction, Request], None]
ClientHandler = Callable[[ResponseReceived | TimedOut], None]
TIMER_SLACK = 0.01
# A top Via as phones send it: SIP/2.0/UDP host[:port] then ;name[=value] parameters.
_SIMPLE_VIA = re.compile(
    r"SIP/2\.0/[A-Za-z]+ ([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-_.!~*'+%]+(?:=[A-Za-z0-9\-_.!~*'+%:\[\]]*)?)*)\Z"
)
_TO_TAG = re.compile(r";\s*tag\s*=", re.I)

# REGISTER's fast path (`SipEndpoint._fast_register`) reads only these header fields, as
# phones spell them; a request with any other field (Require, Route, ...) takes the full path.
_FAST_FIELDS: dict[str, str] = {}
for _name, _compact in (
    ("Via", "v"), ("From", "f"), ("To", "t"), ("Call-ID", "i"), ("CSeq", ""),
    ("Contact", "m"), ("Authorization", ""), ("Expires", ""), ("Max-Forwards", ""),
    ("User-Agent", ""), ("Content-Length", "l"), ("Allow", ""), ("Supported", "k"),
    ("Allow-Events", "u"), ("Accept", ""),
):  # fmt: skip
    for _spelling in (_name, _name.lower(), _name.upper(), _compact):
        if _spelling:
            _FAST_FIELDS[_spelling] = _name.lower()
_FAST_FIELDS["Call-Id"] = "call-id"
_FAST_FIELDS["Cseq"] = "cseq"
_MAX_CSEQ = 2**31 - 1


@functools.lru_cache(maxsize=1024)
def local_ip_towards(host: str) -> str:
    """The local address the kernel would use to reach `host` (no packet is sent).

    Cached: every call setup asks it several times (Via, Contact, SDP), and each
    answer costs a socket and a connect().
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"


class SipEndpoint:
    """Parses what transports receive, runs transactions and dispatches requests by method."""

    def __init__(self, registrar: Registrar, tcp_idle_timeout: float = 600.0,
                 max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.registrar = registrar
        self.tcp_idle_timeout = tcp_idle_timeout
        self.max_size = max_size
        self.transactions = TransactionManager()
        timers = self.transactions.config
        # The shortest delay a new transaction's first timer can have (100 Trying or T1).
        self._min_new_timer = min(timers.t1, timers.trying or timers.t1) / 2
        self.handlers: dict[str, Handler] = {
            "REGISTER": self._on_register,
            "OPTIONS": self._on_options,
        }
        self.udp: UdpTransport | None = None
        self.tcp: TcpTransport | None = None
        self._receiving = False  # inside on_udp / on_tcp: the transport sends afterwards
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.counters = {
            "requests": 0, "responses": 0, "malformed": 0, "dropped": 0, "stateless": 0,
        }
        # In-dialog requests by (Call-ID, our tag, their tag); the owner registers its dialogs.
        self.dialog_handlers: dict[tuple[str, str, str], DialogHandler] = {}
        # CANCELs of INVITEs still being handled, by INVITE server transaction.
        self.cancel_handlers: dict[InviteServerTransaction, CancelHandler] = {}
        self._client_handlers: dict[Transaction, ClientHandler] = {}
        self._late_invite_handlers: dict[Transaction, ClientHandler] = {}
        # Timer H (no ACK for our final response to an INVITE), by transaction.
        self._server_timeout_handlers: dict[Transaction, ClientHandler] = {}
        # REGISTERs answered 200 by the fast path: what a non-INVITE server transaction
        # keeps in Completed (the response, for retransmissions, until Timer J), as bytes.
        self._answered: dict[str, tuple[bytes, Address]] = {}
        self._answered_order: deque[tuple[float, str]] = deque()
        self._answered_ttl = timers.timer_j
        self.fast_register = True  # False: every REGISTER takes the full path
        # The fast path stands in for this handler only: one set in its place (to see
        # every REGISTER) turns the fast path off.
        self._register_handler = self.handlers["REGISTER"]

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
        if self.fast_register and data.startswith(b"REGISTER ") and \
                self.handlers.get("REGISTER") is self._register_handler and \
                self._fast_register(data, addr):
            return
        self._receiving = True
        try:
            self._receive(data, addr, None, True)
        finally:
            self._receiving = False

    def on_tcp(self, data: bytes, conn: TcpConnection) -> None:
        """A framed message arrived on a TCP connection."""
        self._receiving = True
        try:
            self._receive(data, conn.peer, conn, False)
        finally:
            self._receiving = False

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
            self._handle_events(self.transactions.receive_response(message, now), None)
            return
        self.counters["requests"] += 1
        peer = self._stamp_via(message, addr, conn)
        if peer is None:
            self.counters["malformed"] += 1
            self.counters["dropped"] += 1
            self._log_drop("unusable top Via", addr)
            return
        try:
            # The registrar parses To itself, so REGISTER skips the full check's parse of it.
            validate_request(message, full=message.method != "REGISTER", check_via=False)
        except ParseError as exc:
            self._on_malformed(exc, addr, conn, message, peer)
            return
        if message.method == "REGISTER" and "authorization" not in message.headers:
            # Challenges are answered statelessly (RFC 3261 §8.2.7), as Kamailio's sl does:
            # a retransmission just gets a fresh challenge, and half of all REGISTERs then
            # cost no transaction and no Timer J state.
            self.counters["stateless"] += 1
            response = self._precheck(message) or self.registrar.handle(message, "")
            peer.send(response.encode())
            return
        try:
            events = self.transactions.receive_request(
                message, peer, now, reliable=conn is not None
            )
        except RemoteProtocolError as exc:
            self._on_malformed(ParseError(str(exc), exc.status, message), addr, conn)
            return
        self._handle_events(events, peer)
        # Answer now rather than at the end of the read batch: a batch of hundreds of
        # responses at once overflows the peer's socket buffer (SIPp's, at 5000/s).
        self.send_pending()

    def _handle_events(self, events: list[Event], peer: Peer | None) -> None:
        """Route what the transaction layer reports to the handler that owns it."""
        for event in events:
            if isinstance(event, RequestReceived):
                assert peer is not None
                self._dispatch(event.transaction, event.request, peer)
            elif isinstance(event, ResponseReceived | TimedOut):
                tx = event.transaction
                client = self._client_handlers.get(tx)
                if client is not None:
                    if isinstance(event, TimedOut) or event.response.status >= 200:
                        del self._client_handlers[tx]
                        # A later 2xx of a forked INVITE still reaches the dialog layer.
                        if isinstance(event, ResponseReceived) and tx.method == "INVITE":
                            self._late_invite_handlers[tx] = client
                    client(event)
                else:
                    late = self._late_invite_handlers.get(tx)
                    if late is not None:
                        late(event)
                    elif isinstance(event, TimedOut):
                        handler = self._server_timeout_handlers.pop(tx, None)
                        if handler is not None:
                            handler(event)
            elif isinstance(event, AckReceived):
                if event.transaction is None:
                    self._route_in_dialog(None, event.ack, peer)
            elif isinstance(event, CancelReceived):
                self._on_cancel(event)
            elif isinstance(event, TransactionTerminated):
                tx = event.transaction
                self._late_invite_handlers.pop(tx, None)
                self._server_timeout_handlers.pop(tx, None)

    def _stamp_via(self, request: Request, addr: Address,
                   conn: TcpConnection | None) -> Peer | None:
        """Add received/rport to the top Via (RFC 3581) and choose the response peer."""
        values = request.headers.get("via")
        if not values:
            return None
        first = values[0]
        simple = _SIMPLE_VIA.match(first) if "," not in first else None
        if simple is not None:
            # The shape nearly every phone sends: rewrite the text, no full parse.
            values[0], rport, via_port = _stamp_simple_via(first, simple, addr)
        else:
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
            via_port = via.port
        if conn is not None:
            return TcpPeer(conn)
        assert self.udp is not None
        port = addr[1] if rport else (via_port or 5060)
        return UdpPeer(self.udp, (addr[0], port))

    def _fast_register(self, data: bytes, addr: Address) -> bool:
        """Answer a plain UDP REGISTER (a challenge or a 200) without the general machinery.

        Half of a registrar's load is phones refreshing: one Via, one Contact, known
        credentials. For exactly that shape this reads the few fields it needs, runs
        the registrar's own checks (`Registrar.challenges`, `Registrar.refresh`) and
        writes the response bytes directly, with the same fields in the same order
        as the full path would. Whatever else (another field, a second Via, a body,
        an error to answer, an unknown To) returns False having changed nothing,
        and the full path handles the request. A 200 is remembered for Timer J, as
        the server transaction would, to answer retransmissions with the same bytes.
        """
        end = data.find(b"\r\n\r\n")
        if end < 0 or end + 4 != len(data):
            return False  # a body, garbage after the headers or no end of headers
        try:
            head = data[:end].decode()
        except UnicodeDecodeError:
            return False
        lines = head.split("\r\n")
        count = len(lines) - 1
        if head.count("\n") != count or head.count("\r") != count or "\n " in head \
                or "\n\t" in head:
            return False  # bare CR or LF, or folded lines
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[2] != "SIP/2.0" or not parts[1].startswith(("sip:", "sips:")):
            return False
        fields: dict[str, str] = {}
        known = _FAST_FIELDS
        for line in lines[1:]:
            raw, _, value = line.partition(":")
            name = known.get(raw)
            if name is None:
                return False  # another field (Require, ...) or no name
            fields[name] = value.strip(" \t")
        if len(fields) != count:
            return False  # a repeated field (two Via lines, Via and v, ...)
        via = fields.get("via")
        from_ = fields.get("from")
        to = fields.get("to")
        call_id = fields.get("call-id")
        cseq = fields.get("cseq")
        if not (via and from_ and to and call_id and cseq) or "," in via \
                or (";" in to and _TO_TAG.search(to) is not None):
            return False
        number_text, _, method = cseq.partition(" ")
        if method != "REGISTER" or not number_text.isdigit() or not number_text.isascii() \
                or len(number_text) > 10 or int(number_text) > _MAX_CSEQ:
            return False
        # Numbers as validate_request checks them; a long one takes the full path.
        for name, digits in (("max-forwards", 3), ("expires", 10), ("content-length", 3)):
            number = fields.get(name)
            if number is not None and not (
                number.isdigit() and number.isascii() and len(number) <= digits
            ):
                return False
        max_forwards = fields.get("max-forwards")
        if max_forwards is not None and int(max_forwards) > 255:
            return False
        length = fields.get("content-length")
        if length is not None and int(length) != 0:
            return False
        simple = _SIMPLE_VIA.match(via)
        if simple is None:
            return False
        via, rport, via_port = _stamp_simple_via(via, simple, addr)
        semi = via.find(";branch=")
        if semi < 0:
            return False
        branch_end = via.find(";", semi + 8)
        branch = via[semi + 8 :] if branch_end < 0 else via[semi + 8 : branch_end]
        if len(branch) <= 7 or not branch.startswith(MAGIC_COOKIE):
            return False
        assert self.udp is not None
        dest = (addr[0], addr[1] if rport else (via_port or 5060))
        registrar = self.registrar
        now = time.time()
        authorization = fields.get("authorization")
        if authorization is None:
            # The challenge, stateless as in the full path (see _receive).
            challenges = registrar.challenges(fields.get("user-agent"), now)
            out = [
                f"SIP/2.0 401 Unauthorized\r\nVia: {via}\r\nFrom: {from_}\r\n"
                f"To: {to};tag={new_tag()}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\n"
            ]
            out += [f"WWW-Authenticate: {value}\r\n" for value in challenges]
            out.append("Content-Length: 0\r\n\r\n")
            counters = self.counters
            counters["requests"] += 1
            counters["stateless"] += 1
            self.udp.send("".join(out).encode(), dest)
            return True
        # RFC 3261 §17.2.3 matching, as the transaction layer keys a non-INVITE request.
        sent_by = via[simple.start(1) : simple.start(3)].lower()
        key = f"{branch}\x00{sent_by}\x00REGISTER"
        answered = self._answered.get(key)
        if answered is not None:
            self.counters["requests"] += 1
            self.udp.send(answered[0], answered[1])
            return True
        if self.transactions.has_server_transaction(key):
            return False
        contact = fields.get("contact")
        if contact is None or "," in contact:
            return False
        expires = fields.get("expires")
        aor = registrar.refresh(
            to, authorization, call_id, int(number_text), expires, contact,
            fields.get("user-agent") or "", f"UDP {dest[0]}:{dest[1]}", now,
        )  # fmt: skip
        if aor is None:
            return False
        out = [
            f"SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: {from_}\r\nTo: {to};tag={new_tag()}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq}\r\n"
        ]
        out += [f"Contact: {value}\r\n" for value in registrar.contact_values(aor, now)]
        out.append(f"Date: {registrar.date(now)}\r\nContent-Length: 0\r\n\r\n")
        response = "".join(out).encode()
        self.counters["requests"] += 1
        self._remember_answer(key, response, dest)
        self.udp.send(response, dest)
        return True

    def _remember_answer(self, key: str, response: bytes, dest: Address) -> None:
        """Keep a fast-path 200 for retransmissions until Timer J; forget expired ones."""
        clock = time.monotonic()
        order = self._answered_order
        answered = self._answered
        while order and order[0][0] <= clock:
            answered.pop(order.popleft()[1], None)
        answered[key] = (response, dest)
        order.append((clock + self._answered_ttl, key))

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
        dropped = self.counters["dropped"]
        if dropped <= 20 or dropped % 1000 == 0:
            log.warning("dropped a message from %s:%s: %s", *addr, why,
                        extra={"dropped_total": dropped})

    # -- dispatching

    def _dispatch(self, tx: ServerTransaction, request: Request, peer: Peer) -> None:
        rejection = self._precheck(request)
        if rejection is not None:
            self.respond(tx, rejection)
            return
        if _TO_TAG.search(request.headers.first("to") or ""):
            self._route_in_dialog(tx, request, peer)
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

    def _route_in_dialog(self, tx: ServerTransaction | None, request: Request,
                         peer: Peer | None) -> None:
        """Hand a request with a To tag (or a 2xx ACK, `tx` None) to its dialog's handler."""
        key = dialog_key_of(request)
        handler = self.dialog_handlers.get(key) if key is not None else None
        if handler is not None:
            handler(tx, request, peer)
        elif tx is not None:
            self.respond(tx, make_response(request, 481))

    def _on_cancel(self, event: CancelReceived) -> None:
        invite = event.invite
        handler = self.cancel_handlers.pop(invite, None) if invite is not None else None
        if invite is None or invite.terminated:
            self.respond(event.transaction, make_response(event.request, 481))
            return
        self.respond(event.transaction, make_response(event.request, 200))
        if handler is not None:
            handler(invite, event.request)
        elif invite.state is InviteServerState.PROCEEDING:
            self.respond(invite, make_response(invite.request, 487))

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
        self._send_unless_receiving()

    def _send_unless_receiving(self) -> None:
        """Send at once what was queued from a timer, the media or the CTI.

        While a message is being handled, the transport sends after it and re-arms
        the timer once per read batch; anything else must flush itself.
        """
        if not self._receiving:
            self.flush()

    def _on_register(self, tx: ServerTransaction, request: Request, peer: Peer) -> None:
        source = f"{peer.transport} {peer.addr[0]}:{peer.addr[1]}"
        self.respond(tx, self.registrar.handle(request, source))

    def _on_options(self, tx: ServerTransaction, request: Request, peer: Peer) -> None:
        extra = Headers()
        extra["allow"] = [ALLOW]
        extra["accept"] = ["application/sdp"]
        extra["accept-language"] = ["en"]
        self.respond(tx, make_response(request, 200, headers=extra))

    # -- client side

    def send_request(self, request: Request, peer: Peer,
                     on_event: ClientHandler) -> ClientTransaction:
        """Start a client transaction; `on_event` gets its responses and its timeout."""
        tx = self.transactions.send_request(
            request, peer, time.monotonic(), reliable=isinstance(peer, TcpPeer)
        )
        self._client_handlers[tx] = on_event
        self._send_unless_receiving()
        return tx

    def send_stateless(self, message: Request | Response, peer: Peer) -> None:
        """Send outside any transaction (the ACK of a 2xx, a 2xx retransmission)."""
        self.transactions.send_stateless(message, peer)
        self._send_unless_receiving()

    def peer_for(self, transport: str, addr: Address) -> Peer | None:
        """Where to send a request: UDP to addr, or a live TCP connection from addr."""
        if transport.upper() == "TCP":
            conn = self.tcp.connections.get(addr) if self.tcp is not None else None
            return TcpPeer(conn) if conn is not None and not conn.closed else None
        assert self.udp is not None
        return UdpPeer(self.udp, addr)

    def sent_by(self, peer: Peer) -> str:
        """Our host:port as the peer should see it (for Via and Contact)."""
        if isinstance(peer, TcpPeer) and peer.conn.transport is not None:
            host, port = peer.conn.transport.get_extra_info("sockname")[:2]
            return f"{host}:{port}"
        assert self.udp is not None
        host, port = self.udp.local_address
        if host in ("0.0.0.0", "::"):
            host = local_ip_towards(peer.addr[0])
        return f"{host}:{port}"

    # -- sending and timers

    def send_pending(self) -> None:
        """Send what the transactions have queued."""
        for data, peer in self.transactions.datagrams_to_send():
            cast(Peer, peer).send(data)

    def flush(self) -> None:
        """Send what the transactions queued and re-arm the timer (once per batch)."""
        self.send_pending()
        armed = self._timer_at
        if armed is not None and armed <= time.monotonic() + self._min_new_timer:
            # No transaction can start a timer due sooner than the one already armed:
            # skip the scan of the timer queues (it ran once per datagram batch).
            return
        deadline = self.transactions.next_deadline()
        if deadline is None:
            return
        # Coalesce: SIP timers are hundreds of ms, so firing up to TIMER_SLACK late is
        # harmless and turns thousands of per-transaction deadlines into a few wake-ups.
        deadline += TIMER_SLACK
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
        # The loop's clock is coarser than time.monotonic() (libuv: 1 ms) and may fire a
        # little early: run as of the armed time at least, or nothing would be due yet.
        armed = self._timer_at or 0.0
        self._timer = None
        self._timer_at = None
        now = max(time.monotonic(), armed)
        self._handle_events(self.transactions.handle_timer(now), None)
        self.flush()

    def close(self) -> None:
        """Cancel the timer."""
        if self._timer is not None:
            self._timer.cancel()


def _stamp_simple_via(first: str, simple: re.Match[str], addr: Address
                      ) -> tuple[str, bool, int | None]:
    """RFC 3581 on a top Via `_SIMPLE_VIA` matched: (new value, rport asked, sent-by port)."""
    host, port_text, params_text = simple.groups()
    kept = []
    rport = False
    for param in params_text.split(";")[1:]:
        name = param.partition("=")[0].lower()
        if name == "rport":
            rport = True
        elif name != "received":
            kept.append(param)
    if rport:
        kept.append(f"rport={addr[1]}")
    if rport or host != addr[0]:
        kept.append(f"received={addr[0]}")
        first = first[: simple.start(3)] + ";" + ";".join(kept)
    return first, rport, int(port_text) if port_text else None
