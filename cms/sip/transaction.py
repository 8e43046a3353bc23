"""RFC 3261 §17 client and server transactions, with RFC 6026's Accepted state, sans-IO.

A `TransactionManager` owns every transaction of one SIP endpoint. It never
touches a socket or reads a clock (the aioquic shape):

- feed it parsed messages with `receive_request(request, peer, now)` and
  `receive_response(response, now)`; every call returns the list of events the
  transaction user (TU) must handle, oldest first;
- the TU acts through `send_request(request, peer, now)` and
  `send_response(transaction, response, now)`;
- the transport drains `datagrams_to_send()`, a list of `(bytes, peer)` pairs,
  after every call, and calls `handle_timer(now)` once `now` reaches
  `next_deadline()`.

`peer` is opaque: whatever the transport layer passes in (an address, a
connection) comes back out with the bytes to send to it. `now` must not
decrease from one call to the next.

Timers: all timers of one kind have one duration, so their deadlines ascend in
the order they were started. Each kind therefore has a `deque` (append at the
tail, expire at the head) instead of a heap. The doubling retransmission timers
(A, E, G) get one deque per interval (T1, 2*T1, ... T2), which keeps that
property. A transaction remembers which queue holds its live timer; entries of
a transaction that has moved on are skipped when they reach the head. This
keeps a registrar's hundreds of thousands of lingering non-INVITE server
transactions (Timer J, 32 s) at O(1) cost each.

Beyond RFC 3261: a non-INVITE server transaction the TU never answers ends
after 64*T1 (the client gave up by then), so a TU bug cannot leak it; and an
INVITE client transaction in Completed passes a late 2xx (another fork) to the
TU instead of dropping it.
"""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeAlias, TypeVar

from .errors import LocalProtocolError, RemoteProtocolError
from .headers import parse_cseq, parse_name_addr, parse_via, top_via
from .message import Headers, Request, Response
from .randomness import random_bytes
from .timers import TimerConfig

__all__ = [
    "MAGIC_COOKIE",
    "AckReceived",
    "CancelReceived",
    "ClientTransaction",
    "Event",
    "InviteClientState",
    "InviteClientTransaction",
    "InviteServerState",
    "InviteServerTransaction",
    "NonInviteClientState",
    "NonInviteClientTransaction",
    "NonInviteServerState",
    "NonInviteServerTransaction",
    "Peer",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "StrayResponse",
    "TimedOut",
    "TimerConfig",
    "Transaction",
    "TransactionManager",
    "TransactionTerminated",
    "new_branch",
]

MAGIC_COOKIE = "z9hG4bK"

Peer: TypeAlias = object
"""Where a message came from or goes to, as the transport layer names it."""


def new_branch() -> str:
    """A fresh RFC 3261 Via branch: the magic cookie and a random url-safe token."""
    return MAGIC_COOKIE + base64.urlsafe_b64encode(random_bytes(12)).decode()


# ---------------------------------------------------------------------------
# States: one Enum per machine (RFC 3261 Figures 5-8, RFC 6026 Figures 5 and 7)


class InviteClientState(Enum):
    """States of an INVITE client transaction."""

    CALLING = "calling"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class NonInviteClientState(Enum):
    """States of a non-INVITE client transaction."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class InviteServerState(Enum):
    """States of an INVITE server transaction."""

    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class NonInviteServerState(Enum):
    """States of a non-INVITE server transaction."""

    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


# Module-level aliases: Enum member lookups through the class cost a metaclass
# __getattr__ each, and these sit on the per-message path.
_IC_CALLING = InviteClientState.CALLING
_IC_PROCEEDING = InviteClientState.PROCEEDING
_IC_COMPLETED = InviteClientState.COMPLETED
_IC_ACCEPTED = InviteClientState.ACCEPTED
_IC_TERMINATED = InviteClientState.TERMINATED
_NC_TRYING = NonInviteClientState.TRYING
_NC_PROCEEDING = NonInviteClientState.PROCEEDING
_NC_COMPLETED = NonInviteClientState.COMPLETED
_NC_TERMINATED = NonInviteClientState.TERMINATED
_IS_PROCEEDING = InviteServerState.PROCEEDING
_IS_COMPLETED = InviteServerState.COMPLETED
_IS_CONFIRMED = InviteServerState.CONFIRMED
_IS_ACCEPTED = InviteServerState.ACCEPTED
_IS_TERMINATED = InviteServerState.TERMINATED
_NS_TRYING = NonInviteServerState.TRYING
_NS_PROCEEDING = NonInviteServerState.PROCEEDING
_NS_COMPLETED = NonInviteServerState.COMPLETED
_NS_TERMINATED = NonInviteServerState.TERMINATED


# ---------------------------------------------------------------------------
# Events for the TU


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request started a new server transaction; the TU answers it with `send_response`."""

    transaction: ServerTransaction
    request: Request


@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL started its own server transaction, which the TU answers (200, or 481).

    `invite` is the live INVITE server transaction it cancels (same branch and
    sent-by, RFC 3261 §9.2), or None; if that INVITE is unanswered the TU
    answers it 487.
    """

    transaction: NonInviteServerTransaction
    request: Request
    invite: InviteServerTransaction | None


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK arrived.

    `transaction` is the INVITE server transaction it belongs to: the ACK of a
    non-2xx final (which confirms the transaction; reported for bookkeeping) or
    one matched in the Accepted state (RFC 6026). It is None for an ACK that
    matches no transaction: the ACK of a 2xx, which belongs to the dialog.
    """

    transaction: InviteServerTransaction | None
    ack: Request


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A client transaction passes a response up: provisional, first final, or a later 2xx."""

    transaction: ClientTransaction
    response: Response


@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response matched no client transaction; a UA drops it (RFC 3261 §18.1.2)."""

    response: Response


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer B, F or H fired: no (final) response, or no ACK, ever came."""

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """A transaction reached Terminated and was forgotten by the manager."""

    transaction: Transaction


Event: TypeAlias = (
    RequestReceived
    | CancelReceived
    | AckReceived
    | ResponseReceived
    | StrayResponse
    | TimedOut
    | TransactionTerminated
)


# ---------------------------------------------------------------------------
# Timer queues


_T = TypeVar("_T")


class _TimerQueue(Generic[_T]):
    """Transactions waiting on timers of one duration, so in deadline order."""

    __slots__ = ("duration", "entries")

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.entries: deque[_T] = deque()


def _fixed_queue(duration: float) -> _TimerQueue[Transaction]:
    return _TimerQueue(duration)


# ---------------------------------------------------------------------------
# Transactions


class Transaction:
    """What the four transaction machines share.

    `key` is the matching key in the manager; `peer` is where its messages go;
    `reliable` says whether the transport retransmits for us (no Timers A/E/G,
    zero D/I/J/K).
    """

    __slots__ = ("key", "method", "peer", "reliable", "_timer", "_timer_at", "_data")

    # Each machine narrows this to its own Enum (and owns the slot).
    state: InviteClientState | NonInviteClientState | InviteServerState | NonInviteServerState

    def __init__(self, key: str, method: str, peer: Peer, reliable: bool) -> None:
        self.key = key
        self.method = method
        self.peer = peer
        self.reliable = reliable
        # The queue holding this transaction's one live fixed-duration timer (no state
        # runs two of them); an entry in any other queue is stale.
        self._timer: _TimerQueue[Transaction] | None = None
        self._timer_at = 0.0
        # The last message sent, encoded once: a retransmission resends these bytes.
        self._data: bytes | None = None

    @property
    def terminated(self) -> bool:
        """True once the transaction reached Terminated."""
        return self.state.name == "TERMINATED"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.state.name} {self.key!r}>"

    def _on_timer(self, mgr: TransactionManager, now: float, events: list[Event]) -> None:
        raise NotImplementedError


class ClientTransaction(Transaction):
    """A request we sent, until its final response (RFC 3261 §17.1)."""

    __slots__ = ("request", "_retx", "_retx_at")

    def __init__(self, key: str, request: Request, peer: Peer, reliable: bool) -> None:
        super().__init__(key, request.method, peer, reliable)
        self.request = request
        # The retransmission queue (one per interval) holding this transaction, if any.
        self._retx: _TimerQueue[_Retransmitting] | None = None
        self._retx_at = 0.0

    def _on_response(
        self, mgr: TransactionManager, response: Response, now: float, events: list[Event]
    ) -> None:
        raise NotImplementedError

    def _on_retransmit(
        self, mgr: TransactionManager, interval: float, now: float, events: list[Event]
    ) -> None:
        raise NotImplementedError


class InviteClientTransaction(ClientTransaction):
    """An INVITE we sent (RFC 3261 Figure 5, RFC 6026 Figure 5)."""

    __slots__ = ("state",)

    state: InviteClientState

    def __init__(self, key: str, request: Request, peer: Peer, reliable: bool) -> None:
        super().__init__(key, request, peer, reliable)
        self.state = _IC_CALLING

    def _enter(
        self, mgr: TransactionManager, state: InviteClientState, now: float, events: list[Event]
    ) -> None:
        """Every state change of this machine, with the timers its new state runs."""
        self.state = state
        if state is _IC_CALLING:
            mgr._start(self, mgr._timer_b, now)
            if not self.reliable:
                mgr._start_retransmit(self, mgr.config.timer_a, now)
        elif state is _IC_PROCEEDING:
            # No more retransmissions, and Timer B only guards the Calling state.
            self._retx = None
            self._timer = None
        elif state is _IC_COMPLETED:
            self._retx = None
            if self.reliable:
                self._enter(mgr, _IC_TERMINATED, now, events)
            else:
                mgr._start(self, mgr._timer_d, now)
        elif state is _IC_ACCEPTED:
            self._retx = None
            self._data = None
            mgr._start(self, mgr._timer_m, now)
        else:
            self._retx = None
            self._timer = None
            self._data = None
            mgr._forget_client(self)
            events.append(TransactionTerminated(self))

    def _on_response(
        self, mgr: TransactionManager, response: Response, now: float, events: list[Event]
    ) -> None:
        status = response.status
        state = self.state
        if state is _IC_CALLING or state is _IC_PROCEEDING:
            events.append(ResponseReceived(self, response))
            if status < 200:
                if state is _IC_CALLING:
                    self._enter(mgr, _IC_PROCEEDING, now, events)
            elif status < 300:
                self._enter(mgr, _IC_ACCEPTED, now, events)
            else:
                # RFC 3261 §17.1.1.3: the transaction itself ACKs a non-2xx final.
                data = _build_ack(self.request, response).encode()
                self._data = data
                mgr._send(data, self.peer)
                self._enter(mgr, _IC_COMPLETED, now, events)
        elif state is _IC_COMPLETED:
            if status >= 300:
                # A retransmitted final: our ACK was lost; resend it, tell nobody.
                if self._data is not None:
                    mgr._send(self._data, self.peer)
            elif status >= 200:
                # A 2xx from another fork after a non-2xx final: the TU must ACK and
                # BYE it, or the callee retransmits it for 32 s and sees a dead call.
                events.append(ResponseReceived(self, response))
        elif state is _IC_ACCEPTED and 200 <= status < 300:
            # RFC 6026: every 2xx (retransmitted or forked) goes to the TU.
            events.append(ResponseReceived(self, response))

    def _on_timer(self, mgr: TransactionManager, now: float, events: list[Event]) -> None:
        if self.state is _IC_CALLING:
            events.append(TimedOut(self))  # Timer B
        self._enter(mgr, _IC_TERMINATED, now, events)  # Timer B, D or M

    def _on_retransmit(
        self, mgr: TransactionManager, interval: float, now: float, events: list[Event]
    ) -> None:
        # Timer A doubles without a cap: Timer B ends it after 64*T1.
        if self._data is not None:
            mgr._send(self._data, self.peer)
        mgr._start_retransmit(self, 2 * interval, now)


class NonInviteClientTransaction(ClientTransaction):
    """A non-INVITE request we sent (RFC 3261 Figure 6)."""

    __slots__ = ("state",)

    state: NonInviteClientState

    def __init__(self, key: str, request: Request, peer: Peer, reliable: bool) -> None:
        super().__init__(key, request, peer, reliable)
        self.state = _NC_TRYING

    def _enter(
        self,
        mgr: TransactionManager,
        state: NonInviteClientState,
        now: float,
        events: list[Event],
    ) -> None:
        """Every state change of this machine, with the timers its new state runs."""
        self.state = state
        if state is _NC_TRYING:
            mgr._start(self, mgr._timer_f, now)
            if not self.reliable:
                mgr._start_retransmit(self, mgr.config.timer_e, now)
        elif state is _NC_PROCEEDING:
            pass  # Timers E and F keep running; E's next interval becomes T2.
        elif state is _NC_COMPLETED:
            self._retx = None
            self._data = None
            if self.reliable:
                self._enter(mgr, _NC_TERMINATED, now, events)
            else:
                mgr._start(self, mgr._timer_k, now)
        else:
            self._retx = None
            self._timer = None
            self._data = None
            mgr._forget_client(self)
            events.append(TransactionTerminated(self))

    def _on_response(
        self, mgr: TransactionManager, response: Response, now: float, events: list[Event]
    ) -> None:
        state = self.state
        if state is _NC_TRYING or state is _NC_PROCEEDING:
            events.append(ResponseReceived(self, response))
            if response.status >= 200:
                self._enter(mgr, _NC_COMPLETED, now, events)
            elif state is _NC_TRYING:
                self._enter(mgr, _NC_PROCEEDING, now, events)
        # Completed: retransmitted responses are absorbed until Timer K.

    def _on_timer(self, mgr: TransactionManager, now: float, events: list[Event]) -> None:
        if self.state is not _NC_COMPLETED:
            events.append(TimedOut(self))  # Timer F
        self._enter(mgr, _NC_TERMINATED, now, events)  # Timer F or K

    def _on_retransmit(
        self, mgr: TransactionManager, interval: float, now: float, events: list[Event]
    ) -> None:
        if self._data is not None:
            mgr._send(self._data, self.peer)
        t2 = mgr.config.t2
        # Timer E doubles up to T2 in Trying and is reset to T2 in Proceeding.
        next_interval = t2 if self.state is _NC_PROCEEDING else min(2 * interval, t2)
        mgr._start_retransmit(self, next_interval, now)


class ServerTransaction(Transaction):
    """A request we received, until our final response settles (RFC 3261 §17.2)."""

    __slots__ = ()

    request: Request | None

    def _respond(
        self, mgr: TransactionManager, response: Response, now: float, events: list[Event]
    ) -> None:
        raise NotImplementedError

    def _on_retransmission(self, mgr: TransactionManager) -> None:
        raise NotImplementedError


class InviteServerTransaction(ServerTransaction):
    """An INVITE we received (RFC 3261 Figure 7, RFC 6026 Figure 7)."""

    __slots__ = ("state", "request", "_retx", "_retx_at", "_ack_key", "_to_tag")

    state: InviteServerState
    request: Request

    def __init__(self, key: str, request: Request, peer: Peer, reliable: bool) -> None:
        super().__init__(key, request.method, peer, reliable)
        self.state = _IS_PROCEEDING
        self.request = request
        self._retx: _TimerQueue[_Retransmitting] | None = None
        self._retx_at = 0.0
        # RFC 2543 peers only: the ACK's matching key and the To tag it must carry.
        self._ack_key: str | None = None
        self._to_tag: str | None = None

    def _enter(
        self, mgr: TransactionManager, state: InviteServerState, now: float, events: list[Event]
    ) -> None:
        """Every state change of this machine, with the timers its new state runs."""
        self.state = state
        if state is _IS_PROCEEDING:
            delay = mgr.config.trying
            if delay == 0:
                self._send_trying(mgr)
            elif delay is not None:
                mgr._start(self, mgr._timer_trying, now)
        elif state is _IS_COMPLETED:
            mgr._start(self, mgr._timer_h, now)
            if not self.reliable:
                mgr._start_retransmit(self, mgr.config.timer_g, now)
        elif state is _IS_CONFIRMED:
            self._retx = None
            self._data = None
            if self.reliable:
                self._enter(mgr, _IS_TERMINATED, now, events)
            else:
                mgr._start(self, mgr._timer_i, now)
        elif state is _IS_ACCEPTED:
            mgr._start(self, mgr._timer_l, now)
        else:
            self._retx = None
            self._timer = None
            self._data = None
            mgr._forget_server(self)
            events.append(TransactionTerminated(self))

    def _respond(
        self, mgr: TransactionManager, response: Response, now: float, events: list[Event]
    ) -> None:
        state = self.state
        status = response.status
        if state is _IS_PROCEEDING:
            data = response.encode()
            self._data = data
            mgr._send(data, self.peer)
            if status < 200:
                self._timer = None  # the TU spoke first: no automatic 100 Trying
                return
            if self._ack_key is not None:
                self._to_tag = _tag(response.headers.first("to"))
            self._enter(mgr, _IS_ACCEPTED if status < 300 else _IS_COMPLETED, now, events)
        elif state is _IS_ACCEPTED and 200 <= status < 300:
            # RFC 6026: the TU retransmits its 2xx through the transaction.
            data = response.encode()
            self._data = data
            mgr._send(data, self.peer)
        elif state is not _IS_TERMINATED:
            raise LocalProtocolError(f"cannot send {status} in INVITE state {state.value}")
        # Terminated: a late answer lost a race against a timer; dropping it is right.

    def _on_retransmission(self, mgr: TransactionManager) -> None:
        state = self.state
        # Accepted absorbs INVITE retransmissions: the TU retransmits the 2xx (RFC 6026).
        if (state is _IS_PROCEEDING or state is _IS_COMPLETED) and self._data is not None:
            mgr._send(self._data, self.peer)

    def _on_ack(
        self, mgr: TransactionManager, ack: Request, now: float, events: list[Event]
    ) -> None:
        state = self.state
        if state is _IS_COMPLETED:
            events.append(AckReceived(self, ack))
            self._enter(mgr, _IS_CONFIRMED, now, events)
        elif state is _IS_ACCEPTED:
            events.append(AckReceived(self, ack))
        # Proceeding (an ACK before any final) and Confirmed (a retransmitted ACK): absorbed.

    def _on_timer(self, mgr: TransactionManager, now: float, events: list[Event]) -> None:
        state = self.state
        if state is _IS_PROCEEDING:
            self._send_trying(mgr)
        else:
            if state is _IS_COMPLETED:
                events.append(TimedOut(self))  # Timer H: the ACK never came
            self._enter(mgr, _IS_TERMINATED, now, events)  # Timer H, I or L

    def _on_retransmit(
        self, mgr: TransactionManager, interval: float, now: float, events: list[Event]
    ) -> None:
        if self._data is not None:
            mgr._send(self._data, self.peer)
        mgr._start_retransmit(self, min(2 * interval, mgr.config.t2), now)  # Timer G

    def _send_trying(self, mgr: TransactionManager) -> None:
        data = _build_trying(self.request).encode()
        self._data = data
        mgr._send(data, self.peer)


class NonInviteServerTransaction(ServerTransaction):
    """A non-INVITE request we received (RFC 3261 Figure 8).

    `request` is released (set to None) once the final response is sent: a
    registrar keeps hundreds of thousands of these alive through Timer J, and
    only the encoded response is needed to answer retransmissions.
    """

    __slots__ = ("state", "request")

    state: NonInviteServerState

    def __init__(self, key: str, method: str, request: Request, peer: Peer, reliable: bool) -> None:
        super().__init__(key, method, peer, reliable)
        self.state = _NS_TRYING
        self.request = request

    def _enter(
        self,
        mgr: TransactionManager,
        state: NonInviteServerState,
        now: float,
        events: list[Event],
    ) -> None:
        """Every state change of this machine, with the timers its new state runs."""
        self.state = state
        if state is _NS_TRYING:
            # Not in RFC 3261: a TU that never answers would leak the transaction, and
            # after 64*T1 the client's Timer F has given up anyway.
            mgr._start(self, mgr._timer_unanswered, now)
        elif state is _NS_PROCEEDING:
            pass
        elif state is _NS_COMPLETED:
            self.request = None
            if self.reliable:
                self._enter(mgr, _NS_TERMINATED, now, events)
            else:
                mgr._start(self, mgr._timer_j, now)
        else:
            self._timer = None
            self._data = None
            mgr._forget_server(self)
            events.append(TransactionTerminated(self))

    def _respond(
        self, mgr: TransactionManager, response: Response, now: float, events: list[Event]
    ) -> None:
        state = self.state
        if state is _NS_TRYING or state is _NS_PROCEEDING:
            data = response.encode()
            self._data = data
            mgr._send(data, self.peer)
            if response.status >= 200:
                self._enter(mgr, _NS_COMPLETED, now, events)
            elif state is _NS_TRYING:
                self._enter(mgr, _NS_PROCEEDING, now, events)
        elif state is _NS_COMPLETED:
            raise LocalProtocolError(f"{self.method} transaction already sent its final response")
        # Terminated: a late answer lost a race against a timer; dropping it is right.

    def _on_retransmission(self, mgr: TransactionManager) -> None:
        # Trying has nothing to resend; Proceeding and Completed resend the last response.
        if self._data is not None:
            mgr._send(self._data, self.peer)

    def _on_timer(self, mgr: TransactionManager, now: float, events: list[Event]) -> None:
        self._enter(mgr, _NS_TERMINATED, now, events)  # Timer J, or never answered


_Retransmitting: TypeAlias = ClientTransaction | InviteServerTransaction


# ---------------------------------------------------------------------------
# The manager


class TransactionManager:
    """Every client and server transaction of one SIP endpoint, with their timers."""

    __slots__ = (
        "config",
        "_server",
        "_client",
        "_outbox",
        "_timer_b",
        "_timer_d",
        "_timer_f",
        "_timer_h",
        "_timer_i",
        "_timer_j",
        "_timer_k",
        "_timer_l",
        "_timer_m",
        "_timer_trying",
        "_timer_unanswered",
        "_fixed_queues",
        "_retransmit_queues",
        "_aliases",
    )

    def __init__(self, config: TimerConfig | None = None) -> None:
        cfg = self.config = config or TimerConfig()
        self._server: dict[str, ServerTransaction] = {}
        self._client: dict[str, ClientTransaction] = {}
        self._outbox: list[tuple[bytes, Peer]] = []
        # Timers of zero duration (D, I, J, K over reliable transports) never get here.
        self._timer_b = _fixed_queue(cfg.timer_b)
        self._timer_d = _fixed_queue(cfg.timer_d)
        self._timer_f = _fixed_queue(cfg.timer_f)
        self._timer_h = _fixed_queue(cfg.timer_h)
        self._timer_i = _fixed_queue(cfg.timer_i)
        self._timer_j = _fixed_queue(cfg.timer_j)
        self._timer_k = _fixed_queue(cfg.timer_k)
        self._timer_l = _fixed_queue(cfg.timer_l)
        self._timer_m = _fixed_queue(cfg.timer_m)
        self._timer_trying = _fixed_queue(cfg.trying or 0.0)
        self._timer_unanswered = _fixed_queue(64 * cfg.t1)
        self._fixed_queues = (
            self._timer_trying,
            self._timer_b,
            self._timer_d,
            self._timer_f,
            self._timer_h,
            self._timer_i,
            self._timer_j,
            self._timer_k,
            self._timer_l,
            self._timer_m,
            self._timer_unanswered,
        )
        # Timers A, E and G by interval; a handful of intervals between T1 and 32*T1.
        self._retransmit_queues: dict[float, _TimerQueue[_Retransmitting]] = {}
        # Second keys in _server (RFC 2543 INVITEs, for their ACK), so len() stays O(1).
        self._aliases = 0

    def __len__(self) -> int:
        """The number of live transactions."""
        return len(self._client) + len(self._server) - self._aliases

    def has_server_transaction(self, key: str) -> bool:
        """Whether a server transaction has this key (`branch NUL sent-by NUL method`)."""
        return key in self._server

    # -- input from the transport ------------------------------------------

    def receive_request(
        self, request: Request, peer: Peer, now: float, *, reliable: bool | None = None
    ) -> list[Event]:
        """Match a request to a server transaction or start one (RFC 3261 §17.2.3).

        A retransmission is absorbed (its transaction resends the last response);
        an ACK or CANCEL is matched to its INVITE. `reliable` defaults to "the top
        Via's transport is not UDP". Raises RemoteProtocolError when the Via or
        CSeq needed for matching cannot be parsed.
        """
        headers = request.headers
        top, branch, sent_by, transport = _top_via_fields(headers.get("via"))
        method = request.method
        # A branch that is the bare magic cookie (RFC 4475 "badbranch") identifies nothing:
        # match such a request the RFC 2543 way, like one without the cookie.
        rfc3261 = branch is not None and len(branch) > 7 and branch.startswith(MAGIC_COOKIE)
        if method == "ACK":
            return self._receive_ack(request, top, branch if rfc3261 else None, sent_by, now)
        if rfc3261:
            key = f"{branch}\x00{sent_by}\x00{method}"
        else:
            key = _rfc2543_key(request, top, method, _tag(headers.first("to")))
        server = self._server
        found = server.get(key)
        if found is not None:
            found._on_retransmission(self)
            return []
        if reliable is None:
            reliable = transport != "UDP"
        events: list[Event] = []
        if method == "INVITE":
            invite = InviteServerTransaction(key, request, peer, reliable)
            server[key] = invite
            if not rfc3261:
                invite._ack_key = _rfc2543_ack_key(request, top)
                server[invite._ack_key] = invite
                self._aliases += 1
            events.append(RequestReceived(invite, request))
            invite._enter(self, _IS_PROCEEDING, now, events)
            return events
        tx = NonInviteServerTransaction(key, method, request, peer, reliable)
        server[key] = tx
        if method == "CANCEL":
            # RFC 3261 §9.2: the INVITE this cancels matches like a request with method INVITE.
            if rfc3261:
                invite_key = f"{branch}\x00{sent_by}\x00INVITE"
            else:
                invite_key = _rfc2543_key(request, top, "INVITE", _tag(headers.first("to")))
            cancelled = server.get(invite_key)
            events.append(
                CancelReceived(
                    tx,
                    request,
                    cancelled if isinstance(cancelled, InviteServerTransaction) else None,
                )
            )
        else:
            events.append(RequestReceived(tx, request))
        tx._enter(self, _NS_TRYING, now, events)
        return events

    def receive_response(self, response: Response, now: float) -> list[Event]:
        """Route a response to its client transaction by top Via branch and CSeq method."""
        headers = response.headers
        cseq = headers.first("cseq")
        try:
            branch = _top_via_fields(headers.get("via"))[1]
            method = parse_cseq(cseq)[1] if cseq is not None else ""
        except RemoteProtocolError:
            return [StrayResponse(response)]
        tx = self._client.get(f"{branch}\x00{method}") if branch else None
        if tx is None:
            return [StrayResponse(response)]
        events: list[Event] = []
        tx._on_response(self, response, now, events)
        return events

    # -- input from the TU --------------------------------------------------

    def send_request(
        self, request: Request, peer: Peer, now: float, *, reliable: bool | None = None
    ) -> ClientTransaction:
        """Start a client transaction for a request whose top Via has an RFC 3261 branch.

        Nothing is added to the request. An ACK for a 2xx is not a transaction:
        send it with `send_stateless`.
        """
        method = request.method
        if method == "ACK":
            raise LocalProtocolError("ACK starts no transaction; use send_stateless")
        try:
            _, branch, _, transport = _top_via_fields(request.headers.get("via"))
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"cannot send {method}: {exc}") from exc
        if branch is None or len(branch) <= 7 or not branch.startswith(MAGIC_COOKIE):
            raise LocalProtocolError(f"Via branch {branch!r} lacks the magic cookie")
        key = f"{branch}\x00{method}"
        if key in self._client:
            raise LocalProtocolError(f"branch {branch} is already in use for {method}")
        if reliable is None:
            reliable = transport != "UDP"
        tx: InviteClientTransaction | NonInviteClientTransaction
        data = request.encode()
        events: list[Event] = []  # entering the first state reports nothing
        if method == "INVITE":
            tx = InviteClientTransaction(key, request, peer, reliable)
            tx._data = data
            tx._enter(self, _IC_CALLING, now, events)
        else:
            tx = NonInviteClientTransaction(key, request, peer, reliable)
            tx._data = data
            tx._enter(self, _NC_TRYING, now, events)
        self._client[key] = tx
        self._send(data, peer)
        return tx

    def send_response(
        self, transaction: ServerTransaction, response: Response, now: float
    ) -> list[Event]:
        """Send the TU's response through its server transaction.

        Raises LocalProtocolError for a response the state does not allow (a
        second final); one on a terminated transaction is dropped silently, as it
        only lost a race against a timer.
        """
        events: list[Event] = []
        transaction._respond(self, response, now, events)
        return events

    def send_stateless(self, message: Request | Response, peer: Peer) -> None:
        """Queue a message outside any transaction: the ACK of a 2xx, a stateless reply."""
        self._outbox.append((message.encode(), peer))

    # -- output and timers -------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        """Take the (data, peer) pairs queued since the last call, oldest first."""
        out = self._outbox
        self._outbox = []
        return out

    def next_deadline(self) -> float | None:
        """When `handle_timer` must next be called, or None when no timer runs."""
        best: float | None = None
        for queue in self._fixed_queues:
            entries = queue.entries
            while entries:
                tx = entries[0]
                if tx._timer is queue:
                    if best is None or tx._timer_at < best:
                        best = tx._timer_at
                    break
                entries.popleft()  # stale: its transaction moved on
        for rqueue in self._retransmit_queues.values():
            rentries = rqueue.entries
            while rentries:
                rtx = rentries[0]
                if rtx._retx is rqueue:
                    if best is None or rtx._retx_at < best:
                        best = rtx._retx_at
                    break
                rentries.popleft()
        return best

    def handle_timer(self, now: float) -> list[Event]:
        """Fire every timer due at `now`: retransmit, time out, terminate."""
        events: list[Event] = []
        # Fixed timers first, so a transaction that times out now does not also
        # retransmit now.
        for queue in self._fixed_queues:
            entries = queue.entries
            while entries:
                tx = entries[0]
                if tx._timer is not queue:
                    entries.popleft()
                elif tx._timer_at <= now:
                    entries.popleft()
                    tx._timer = None
                    tx._on_timer(self, now, events)
                else:
                    break
        # A firing re-arms into the next interval's queue, possibly a new one.
        for rqueue in tuple(self._retransmit_queues.values()):
            rentries = rqueue.entries
            interval = rqueue.duration
            while rentries:
                rtx = rentries[0]
                if rtx._retx is not rqueue:
                    rentries.popleft()
                elif rtx._retx_at <= now:
                    rentries.popleft()
                    rtx._retx = None
                    rtx._on_retransmit(self, interval, now, events)
                else:
                    break
        return events

    # -- internals used by the transactions ----------------------------------

    def _send(self, data: bytes, peer: Peer) -> None:
        self._outbox.append((data, peer))

    def _start(self, tx: Transaction, queue: _TimerQueue[Transaction], now: float) -> None:
        tx._timer = queue
        tx._timer_at = now + queue.duration
        queue.entries.append(tx)

    def _start_retransmit(self, tx: _Retransmitting, interval: float, now: float) -> None:
        queue = self._retransmit_queues.get(interval)
        if queue is None:
            queue = self._retransmit_queues[interval] = _TimerQueue(interval)
        tx._retx = queue
        tx._retx_at = now + interval
        queue.entries.append(tx)

    def _forget_server(self, tx: ServerTransaction) -> None:
        server = self._server
        if server.get(tx.key) is tx:
            del server[tx.key]
        if isinstance(tx, InviteServerTransaction) and tx._ack_key is not None:
            if server.get(tx._ack_key) is tx:
                del server[tx._ack_key]
                self._aliases -= 1

    def _forget_client(self, tx: ClientTransaction) -> None:
        if self._client.get(tx.key) is tx:
            del self._client[tx.key]

    def _receive_ack(
        self, ack: Request, top: str, branch: str | None, sent_by: str, now: float
    ) -> list[Event]:
        server = self._server
        if branch is not None:
            found = server.get(f"{branch}\x00{sent_by}\x00INVITE")
        else:
            found = server.get(_rfc2543_ack_key(ack, top))
            # RFC 3261 §17.2.3: an RFC 2543 ACK also carries the To tag of our response.
            if isinstance(found, InviteServerTransaction) and (
                found._to_tag is None or found._to_tag != _tag(ack.headers.first("to"))
            ):
                found = None
        if not isinstance(found, InviteServerTransaction):
            return [AckReceived(None, ack)]
        events: list[Event] = []
        found._on_ack(self, ack, now, events)
        return events


# ---------------------------------------------------------------------------
# Helpers


def _top_via_fields(vias: list[str] | None) -> tuple[str, str | None, str, str]:
    """(top Via text, branch, sent-by, transport) of a message's Via header values."""
    if not vias:
        raise RemoteProtocolError("no Via header field")
    top = vias[0]
    if "," in top:
        top = top_via(vias)
    # Fast path for the shape nearly every peer sends, "SIP/2.0/UDP host:port;...;branch=x":
    # this runs for every request and response, and parse_via costs several times more.
    semi = top.find(";")
    if semi > 8 and top.startswith("SIP/2.0/"):
        space = top.find(" ", 8)
        if 8 < space < semi:
            sent_by = top[space + 1 : semi].strip()
            if " " not in sent_by and "\t" not in sent_by:
                at = top.find(";branch=", semi)
                if at >= 0:
                    at += 8
                    end = top.find(";", at)
                    branch = (top[at:] if end < 0 else top[at:end]).strip()
                    return top, branch or None, sent_by.lower(), top[8:space].upper()
    via = parse_via(top)
    host = via.host.lower()
    sent_by = host if via.port is None else f"{host}:{via.port}"
    return top, via.branch, sent_by, via.transport


def _tag(value: str | None) -> str | None:
    """The tag parameter of a From or To value."""
    if value is None:
        return None
    return parse_name_addr(value).tag


def _cseq_number(request: Request) -> int:
    value = request.headers.first("cseq")
    if value is None:
        raise RemoteProtocolError("no CSeq header field")
    return parse_cseq(value)[0]


def _rfc2543_key(request: Request, top: str, method: str, to_tag: str | None) -> str:
    """RFC 3261 §17.2.3's fallback for branches without the magic cookie.

    Request-URI, To tag, From tag, Call-ID, CSeq number and the whole top Via;
    `method` separates a CANCEL from the INVITE it cancels.
    """
    headers = request.headers
    return "\x00".join(
        (
            "2543",
            request.uri,
            to_tag or "",
            _tag(headers.first("from")) or "",
            headers.first("call-id") or "",
            str(_cseq_number(request)),
            top,
            method,
        )
    )


def _rfc2543_ack_key(request: Request, top: str) -> str:
    """The key an RFC 2543 ACK shares with its INVITE: the To tag is checked apart."""
    headers = request.headers
    return "\x00".join(
        (
            "2543-ack",
            request.uri,
            _tag(headers.first("from")) or "",
            headers.first("call-id") or "",
            str(_cseq_number(request)),
            top,
        )
    )


def _build_ack(invite: Request, response: Response) -> Request:
    """The ACK of a non-2xx final response (RFC 3261 §17.1.1.3)."""
    old = invite.headers
    headers = Headers()
    headers["via"] = [top_via(old["via"])]
    headers["max-forwards"] = [old.first("max-forwards") or "70"]
    routes = old.get("route")
    if routes:
        headers["route"] = list(routes)
    for name in ("from", "to", "call-id"):
        source = response.headers if name == "to" else old
        value = source.first(name)
        if value is not None:
            headers[name] = [value]
    headers["cseq"] = [f"{_cseq_number(invite)} ACK"]
    return Request("ACK", invite.uri, headers)


def _build_trying(invite: Request) -> Response:
    """The 100 Trying a server transaction sends for a silent TU (RFC 3261 §8.2.6)."""
    old = invite.headers
    headers = Headers()
    # 100 Trying copies Timestamp too (RFC 3261 §8.2.6.1); its To gets no tag.
    for name in ("via", "from", "to", "call-id", "cseq", "timestamp"):
        values = old.get(name)
        if values:
            headers[name] = list(values)
    return Response(100, "Trying", headers)
