"""RFC 3261 §17 transactions (and RFC 6026's Accepted state), time stepped by hand."""

from __future__ import annotations

from enum import Enum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cms.sip.errors import LocalProtocolError
from cms.sip.headers import parse_name_addr
from cms.sip.message import Headers, Request, Response
from cms.sip.parser import parse_message
from cms.sip.transaction import (
    MAGIC_COOKIE,
    AckReceived,
    CancelReceived,
    Event,
    InviteClientState,
    InviteServerState,
    InviteServerTransaction,
    NonInviteClientState,
    NonInviteServerState,
    NonInviteServerTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayResponse,
    TimedOut,
    TimerConfig,
    Transaction,
    TransactionManager,
    TransactionTerminated,
    new_branch,
)

PEER = ("192.0.2.1", 5060)
T1 = 0.5

# -- helpers -------------------------------------------------------------------


def make_request(
    method: str = "OPTIONS",
    *,
    branch: str | None = "z9hG4bKdefault",
    transport: str = "UDP",
    sent_by: str = "192.0.2.1:5060",
    cseq: int = 1,
    cseq_method: str | None = None,
    call_id: str = "call-1@192.0.2.1",
    from_tag: str = "caller1",
    to_tag: str | None = None,
    uri: str = "sip:bob@example.com",
    extra: str = "",
) -> Request:
    """A request parsed from literal text, like the transport layer hands it over."""
    via = f"SIP/2.0/{transport} {sent_by}" + ("" if branch is None else f";branch={branch}")
    to = "<sip:bob@example.com>" + ("" if to_tag is None else f";tag={to_tag}")
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@example.com>;tag={from_tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    )
    message = parse_message(text.encode())
    assert isinstance(message, Request)
    return message


def make_response(request: Request, status: int, to_tag: str | None = "callee1") -> Response:
    """The response a UAS builds for a request (RFC 3261 §8.2.6.2)."""
    headers = Headers()
    for name in ("via", "from", "to", "call-id", "cseq"):
        headers[name] = list(request.headers[name])
    if to_tag is not None and status > 100 and ";tag=" not in headers["to"][0]:
        headers["to"] = [f"{headers['to'][0]};tag={to_tag}"]
    return Response(status, headers=headers)


def sent(mgr: TransactionManager) -> list[bytes]:
    """Data queued for the transport since the last call, all of it to PEER."""
    out = mgr.datagrams_to_send()
    assert all(peer == PEER for _, peer in out)
    return [data for data, _ in out]


def advance(mgr: TransactionManager, until: float) -> tuple[list[Event], list[tuple[float, bytes]]]:
    """Fire every timer due up to `until`, in order; events and (time, data) sent."""
    events: list[Event] = []
    sends: list[tuple[float, bytes]] = []
    while (deadline := mgr.next_deadline()) is not None and deadline <= until:
        events += mgr.handle_timer(deadline)
        sends += [(deadline, data) for data in sent(mgr)]
    return events, sends


def state_of(tx: Transaction) -> Enum:
    """The state, read through a call so that mypy does not narrow it between steps."""
    return tx.state


def start_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode()


def receive_new(mgr: TransactionManager, request: Request, now: float = 0.0) -> ServerTransaction:
    """Feed a request that must start a server transaction; return it."""
    events = mgr.receive_request(request, PEER, now)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    return events[0].transaction


# -- non-INVITE client (RFC 3261 §17.1.2) ----------------------------------------


def test_non_invite_client_retransmits_with_doubling_until_t2() -> None:
    mgr = TransactionManager()
    mgr.send_request(make_request("REGISTER"), PEER, 0.0)
    assert len(sent(mgr)) == 1
    _, sends = advance(mgr, 31.9)
    times = [t for t, _ in sends]
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]


def test_non_invite_client_times_out_with_timer_f_after_64_t1() -> None:
    mgr = TransactionManager()
    tx = mgr.send_request(make_request("REGISTER"), PEER, 0.0)
    events, _ = advance(mgr, 31.99)
    assert events == []
    assert mgr.next_deadline() == 64 * T1
    events, _ = advance(mgr, 64 * T1)
    assert events == [TimedOut(tx), TransactionTerminated(tx)]
    assert tx.terminated and len(mgr) == 0 and mgr.next_deadline() is None


def test_non_invite_client_retransmits_every_t2_once_proceeding() -> None:
    mgr = TransactionManager()
    request = make_request("OPTIONS")
    tx = mgr.send_request(request, PEER, 0.0)
    advance(mgr, 0.5)  # first retransmission; the next is due at 1.5
    events = mgr.receive_response(make_response(request, 100), 0.6)
    assert [type(e) for e in events] == [ResponseReceived]
    assert tx.state is NonInviteClientState.PROCEEDING
    _, sends = advance(mgr, 14.0)
    assert [t for t, _ in sends] == [1.5, 5.5, 9.5, 13.5]


def test_non_invite_client_absorbs_response_retransmissions_until_timer_k() -> None:
    mgr = TransactionManager()
    request = make_request("OPTIONS")
    tx = mgr.send_request(request, PEER, 0.0)
    sent(mgr)
    ok = make_response(request, 200)
    assert mgr.receive_response(ok, 0.1) == [ResponseReceived(tx, ok)]
    assert tx.state is NonInviteClientState.COMPLETED
    assert mgr.receive_response(ok, 0.2) == []
    events, sends = advance(mgr, 10.0)
    assert sends == []  # no retransmission once completed
    assert events == [TransactionTerminated(tx)]
    assert mgr.next_deadline() is None


def test_non_invite_client_over_reliable_transport_never_retransmits() -> None:
    mgr = TransactionManager()
    request = make_request("REGISTER", transport="TCP")
    tx = mgr.send_request(request, PEER, 0.0)
    assert tx.reliable
    assert len(sent(mgr)) == 1
    events, sends = advance(mgr, 31.0)
    assert sends == [] and events == []
    ok = make_response(request, 200)
    # Timer K is zero: the final response ends the transaction at once.
    assert mgr.receive_response(ok, 31.0) == [ResponseReceived(tx, ok), TransactionTerminated(tx)]
    assert mgr.next_deadline() is None


def test_reliable_flag_overrides_the_via_transport() -> None:
    mgr = TransactionManager()
    tx = mgr.send_request(make_request("OPTIONS"), PEER, 0.0, reliable=True)
    assert tx.reliable and len(sent(mgr)) == 1
    _, sends = advance(mgr, 10.0)
    assert len(sends) == 0


def test_retransmissions_resend_the_same_encoded_bytes() -> None:
    mgr = TransactionManager()
    mgr.send_request(make_request("OPTIONS"), PEER, 0.0)
    first = sent(mgr)[0]
    _, sends = advance(mgr, 4.0)
    assert all(data is first for _, data in sends)


def test_timer_values_follow_a_configured_t1() -> None:
    mgr = TransactionManager(TimerConfig(t1=0.1, t2=0.4))
    tx = mgr.send_request(make_request("OPTIONS"), PEER, 0.0)
    assert len(sent(mgr)) == 1
    events, sends = advance(mgr, 6.4)
    assert [t for t, _ in sends][:4] == pytest.approx([0.1, 0.3, 0.7, 1.1])
    assert events == [TimedOut(tx), TransactionTerminated(tx)]


def test_timer_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TimerConfig(t1=4.0, t2=1.0)


# -- INVITE client (RFC 3261 §17.1.1, RFC 6026) ----------------------------------


def test_invite_client_retransmits_with_timer_a_doubling_and_times_out_with_timer_b() -> None:
    mgr = TransactionManager()
    tx = mgr.send_request(make_request("INVITE"), PEER, 0.0)
    assert tx.state is InviteClientState.CALLING
    assert len(sent(mgr)) == 1
    events, sends = advance(mgr, 40.0)
    # Timer A doubles with no T2 cap; Timer B (64*T1) ends it.
    assert [t for t, _ in sends] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert events == [TimedOut(tx), TransactionTerminated(tx)]


def test_invite_client_stops_retransmitting_after_a_provisional_response() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE")
    tx = mgr.send_request(invite, PEER, 0.0)
    ringing = make_response(invite, 180)
    assert mgr.receive_response(ringing, 0.2) == [ResponseReceived(tx, ringing)]
    assert tx.state is InviteClientState.PROCEEDING
    # No Timer A, and Timer B only guards Calling: the TU decides when to give up.
    assert mgr.next_deadline() is None
    events = mgr.receive_response(make_response(invite, 183), 5.0)
    assert [type(e) for e in events] == [ResponseReceived]


def test_invite_client_acks_a_non_2xx_final_itself() -> None:
    mgr = TransactionManager()
    invite = make_request(
        "INVITE",
        branch="z9hG4bKack1",
        cseq=7,
        extra=(
            "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
            "Route: <sip:p3.example.com;lr>\r\n"
            "Contact: <sip:alice@192.0.2.1>\r\n"
        ),
    )
    # A second Via entry (as if we were a proxy): the ACK keeps only the top one.
    invite.headers["via"].append("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bKlower")
    tx = mgr.send_request(invite, PEER, 0.0)
    sent(mgr)
    busy = make_response(invite, 486, to_tag="bobtag")
    assert mgr.receive_response(busy, 0.1) == [ResponseReceived(tx, busy)]
    assert tx.state is InviteClientState.COMPLETED
    [data] = sent(mgr)
    ack = parse_message(data)
    assert isinstance(ack, Request)
    assert ack.method == "ACK" and ack.uri == invite.uri
    assert ack.headers["via"] == ["SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKack1"]
    assert ack.headers["call-id"] == invite.headers["call-id"]
    assert ack.headers["from"] == invite.headers["from"]
    assert ack.headers["cseq"] == ["7 ACK"]
    assert parse_name_addr(ack.headers["to"][0]).tag == "bobtag"
    assert ack.headers["route"] == invite.headers["route"]
    assert "contact" not in ack.headers and ack.body == b""


def test_invite_client_resends_the_ack_for_each_final_retransmission_until_timer_d() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE")
    tx = mgr.send_request(invite, PEER, 0.0)
    sent(mgr)
    busy = make_response(invite, 486)
    mgr.receive_response(busy, 0.1)
    [ack] = sent(mgr)
    for now in (0.6, 1.6):
        assert mgr.receive_response(busy, now) == []  # not passed up again
        assert sent(mgr) == [ack]
    events, sends = advance(mgr, 31.0)
    assert events == [] and sends == []  # no INVITE retransmission after the final
    events, _ = advance(mgr, 0.1 + 32.0)
    assert events == [TransactionTerminated(tx)]  # Timer D: no TimedOut


def test_invite_client_over_reliable_transport_terminates_right_after_acking() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE", transport="TCP")
    tx = mgr.send_request(invite, PEER, 0.0)
    sent(mgr)
    assert advance(mgr, 31.0) == ([], [])  # no Timer A
    busy = make_response(invite, 486)
    events = mgr.receive_response(busy, 31.0)
    assert events == [ResponseReceived(tx, busy), TransactionTerminated(tx)]
    assert start_line(sent(mgr)[0]).startswith("ACK ")


def test_invite_client_passes_every_2xx_up_in_accepted_until_timer_m() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE")
    tx = mgr.send_request(invite, PEER, 0.0)
    sent(mgr)
    ok = make_response(invite, 200)
    assert mgr.receive_response(ok, 1.0) == [ResponseReceived(tx, ok)]
    assert tx.state is InviteClientState.ACCEPTED
    assert sent(mgr) == []  # the ACK of a 2xx is the TU's (dialog's) job
    forked = make_response(invite, 200, to_tag="other-fork")
    assert mgr.receive_response(ok, 1.5) == [ResponseReceived(tx, ok)]
    assert mgr.receive_response(forked, 2.0) == [ResponseReceived(tx, forked)]
    assert mgr.receive_response(make_response(invite, 180), 2.1) == []
    assert mgr.next_deadline() == 1.0 + 64 * T1
    events, sends = advance(mgr, 100.0)
    assert sends == [] and events == [TransactionTerminated(tx)]


# -- INVITE server (RFC 3261 §17.2.1, RFC 6026) ----------------------------------


def test_invite_server_sends_100_trying_when_the_tu_is_silent_for_200_ms() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE", extra="Timestamp: 54\r\n")
    tx = receive_new(mgr, invite)
    assert mgr.next_deadline() == pytest.approx(0.2)
    events, sends = advance(mgr, 0.2)
    assert events == []
    [(_, data)] = sends
    trying = parse_message(data)
    assert isinstance(trying, Response) and trying.status == 100
    for name in ("via", "from", "to", "call-id", "cseq", "timestamp"):
        assert trying.headers[name] == invite.headers[name]
    # A retransmitted INVITE gets the 100 again.
    assert mgr.receive_request(invite, PEER, 0.3) == []
    assert sent(mgr) == [data]
    assert tx.state is InviteServerState.PROCEEDING


def test_invite_server_sends_no_100_trying_when_the_tu_answers_in_time() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE")
    tx = receive_new(mgr, invite)
    mgr.send_response(tx, make_response(invite, 180), 0.1)
    [ringing] = sent(mgr)
    assert advance(mgr, 10.0) == ([], [])
    assert mgr.receive_request(invite, PEER, 10.0) == []
    assert sent(mgr) == [ringing]


def test_invite_server_leaves_100_trying_to_the_tu_when_configured() -> None:
    mgr = TransactionManager(TimerConfig(trying=None))
    receive_new(mgr, make_request("INVITE"))
    assert mgr.next_deadline() is None


def test_invite_server_retransmits_a_non_2xx_final_with_timer_g_until_timer_h() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE")
    tx = receive_new(mgr, invite)
    mgr.send_response(tx, make_response(invite, 486), 0.0)
    [busy] = sent(mgr)
    assert tx.state is InviteServerState.COMPLETED
    events, sends = advance(mgr, 40.0)
    assert [t for t, _ in sends] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(data is busy for _, data in sends)
    assert events == [TimedOut(tx), TransactionTerminated(tx)]  # Timer H: no ACK came
    assert len(mgr) == 0


def test_invite_server_resends_its_final_response_for_an_invite_retransmission() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE")
    tx = receive_new(mgr, invite)
    mgr.send_response(tx, make_response(invite, 404), 0.0)
    [final] = sent(mgr)
    assert mgr.receive_request(invite, PEER, 0.2) == []
    assert sent(mgr) == [final]


def test_invite_server_confirms_on_ack_and_terminates_after_timer_i() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE")
    tx = receive_new(mgr, invite)
    assert isinstance(tx, InviteServerTransaction)
    mgr.send_response(tx, make_response(invite, 486), 0.0)
    sent(mgr)
    ack = make_request("ACK", to_tag="callee1")
    assert mgr.receive_request(ack, PEER, 1.0) == [AckReceived(tx, ack)]
    assert tx.state is InviteServerState.CONFIRMED
    assert mgr.receive_request(ack, PEER, 2.0) == []  # a retransmitted ACK is absorbed
    events, sends = advance(mgr, 100.0)
    assert sends == []  # Timer G stopped
    assert events == [TransactionTerminated(tx)]
    assert mgr.next_deadline() is None


def test_invite_server_over_reliable_transport_terminates_on_ack() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE", transport="TCP")
    tx = receive_new(mgr, invite)
    assert isinstance(tx, InviteServerTransaction)
    mgr.send_response(tx, make_response(invite, 486), 0.0)
    assert len(sent(mgr)) == 1
    assert advance(mgr, 10.0) == ([], [])  # no Timer G
    ack = make_request("ACK", transport="TCP", to_tag="callee1")
    # Timer I is zero: the ACK ends the transaction at once.
    assert mgr.receive_request(ack, PEER, 11.0) == [AckReceived(tx, ack), TransactionTerminated(tx)]


def test_invite_server_after_2xx_is_accepted_and_leaves_retransmission_to_the_tu() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE")
    tx = receive_new(mgr, invite)
    assert isinstance(tx, InviteServerTransaction)
    ok = make_response(invite, 200)
    assert mgr.send_response(tx, ok, 0.1) == []
    [ok_data] = sent(mgr)
    assert tx.state is InviteServerState.ACCEPTED
    # INVITE retransmissions are absorbed: the TU's own 2xx retransmissions answer them.
    assert mgr.receive_request(invite, PEER, 0.5) == []
    assert sent(mgr) == []
    mgr.send_response(tx, ok, 0.6)
    assert sent(mgr) == [ok_data]
    # The end-to-end ACK carries a new branch: it belongs to the dialog.
    ack = make_request("ACK", branch=new_branch(), to_tag="callee1")
    assert mgr.receive_request(ack, PEER, 0.7) == [AckReceived(None, ack)]
    # An ACK that does match is passed up too (RFC 6026).
    same_branch_ack = make_request("ACK", to_tag="callee1")
    assert mgr.receive_request(same_branch_ack, PEER, 0.8) == [AckReceived(tx, same_branch_ack)]
    with pytest.raises(LocalProtocolError):
        mgr.send_response(tx, make_response(invite, 500), 0.9)
    events, sends = advance(mgr, 100.0)
    assert sends == []  # nothing retransmitted on its own
    assert events == [TransactionTerminated(tx)]  # Timer L
    assert mgr.next_deadline() is None


def test_invite_server_refuses_a_second_final_response() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE")
    tx = receive_new(mgr, invite)
    mgr.send_response(tx, make_response(invite, 486), 0.0)
    with pytest.raises(LocalProtocolError):
        mgr.send_response(tx, make_response(invite, 200), 0.1)


# -- non-INVITE server (RFC 3261 §17.2.2) ----------------------------------------


def test_non_invite_server_resends_the_last_response_for_a_retransmission() -> None:
    mgr = TransactionManager()
    request = make_request("REGISTER")
    tx = receive_new(mgr, request)
    assert mgr.receive_request(request, PEER, 0.1) == []
    assert sent(mgr) == []  # Trying: nothing to resend yet
    mgr.send_response(tx, make_response(request, 100), 0.2)
    [trying] = sent(mgr)
    assert state_of(tx) is NonInviteServerState.PROCEEDING
    assert mgr.receive_request(request, PEER, 0.3) == []
    assert sent(mgr) == [trying]
    mgr.send_response(tx, make_response(request, 200), 0.4)
    [ok] = sent(mgr)
    assert state_of(tx) is NonInviteServerState.COMPLETED
    assert mgr.receive_request(request, PEER, 5.0) == []
    assert sent(mgr) == [ok]


def test_non_invite_server_lingers_for_timer_j_then_terminates() -> None:
    mgr = TransactionManager()
    request = make_request("REGISTER")
    tx = receive_new(mgr, request)
    assert mgr.send_response(tx, make_response(request, 200), 1.0) == []
    assert mgr.next_deadline() == 1.0 + 64 * T1
    events, _ = advance(mgr, 1.0 + 64 * T1)
    assert events == [TransactionTerminated(tx)]
    # Once forgotten, the same request is new again.
    assert isinstance(mgr.receive_request(request, PEER, 40.0)[0], RequestReceived)


def test_non_invite_server_over_reliable_transport_terminates_on_its_final_response() -> None:
    mgr = TransactionManager()
    request = make_request("REGISTER", transport="TCP")
    tx = receive_new(mgr, request)
    ok = make_response(request, 200)
    assert mgr.send_response(tx, ok, 0.0) == [TransactionTerminated(tx)]
    assert len(mgr) == 0


def test_non_invite_server_releases_the_request_once_completed() -> None:
    mgr = TransactionManager()
    request = make_request("REGISTER")
    tx = receive_new(mgr, request)
    assert isinstance(tx, NonInviteServerTransaction)
    assert tx.request is request
    mgr.send_response(tx, make_response(request, 200), 0.0)
    assert tx.request is None


def test_non_invite_server_refuses_a_second_final_response() -> None:
    mgr = TransactionManager()
    request = make_request("REGISTER")
    tx = receive_new(mgr, request)
    mgr.send_response(tx, make_response(request, 200), 0.0)
    with pytest.raises(LocalProtocolError):
        mgr.send_response(tx, make_response(request, 500), 0.1)


def test_non_invite_server_gives_up_on_a_tu_that_never_answers() -> None:
    mgr = TransactionManager()
    request = make_request("OPTIONS")
    tx = receive_new(mgr, request)
    events, _ = advance(mgr, 64 * T1)
    assert events == [TransactionTerminated(tx)]
    # A late answer lost the race: it is dropped, not an error.
    assert mgr.send_response(tx, make_response(request, 200), 40.0) == []
    assert sent(mgr) == []


# -- matching (RFC 3261 §17.1.3, §17.2.3) ----------------------------------------


def test_stray_response_is_reported() -> None:
    mgr = TransactionManager()
    response = make_response(make_request("OPTIONS", branch="z9hG4bKnobody"), 200)
    assert mgr.receive_response(response, 0.0) == [StrayResponse(response)]


def test_response_without_via_is_stray() -> None:
    mgr = TransactionManager()
    response = make_response(make_request("OPTIONS"), 200)
    del response.headers["via"]
    assert mgr.receive_response(response, 0.0) == [StrayResponse(response)]


def test_client_matches_responses_by_branch_and_cseq_method() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE", branch="z9hG4bKshared")
    cancel = make_request("CANCEL", branch="z9hG4bKshared")
    invite_tx = mgr.send_request(invite, PEER, 0.0)
    cancel_tx = mgr.send_request(cancel, PEER, 0.0)
    ok_cancel = make_response(cancel, 200)
    terminated = make_response(invite, 487)
    assert mgr.receive_response(ok_cancel, 0.1) == [ResponseReceived(cancel_tx, ok_cancel)]
    assert mgr.receive_response(terminated, 0.2) == [ResponseReceived(invite_tx, terminated)]


def test_server_matches_on_sent_by_as_well_as_branch() -> None:
    mgr = TransactionManager()
    first = make_request("OPTIONS", branch="z9hG4bKsame", sent_by="192.0.2.1:5060")
    other = make_request("OPTIONS", branch="z9hG4bKsame", sent_by="192.0.2.99:5060")
    receive_new(mgr, first)
    receive_new(mgr, other)
    assert len(mgr) == 2


def test_server_matching_ignores_how_the_via_is_spelled() -> None:
    mgr = TransactionManager()
    request = make_request("OPTIONS", branch="z9hG4bKspelled", sent_by="Host.Example.COM:5060")
    tx = receive_new(mgr, request)
    mgr.send_response(tx, make_response(request, 200), 0.0)
    [ok] = sent(mgr)
    respelled = make_request("OPTIONS", branch="z9hG4bKspelled")
    respelled.headers["via"] = ["SIP / 2.0 / udp host.example.com : 5060 ; Branch = z9hG4bKspelled"]
    assert mgr.receive_request(respelled, PEER, 0.1) == []
    assert sent(mgr) == [ok]


def test_cancel_is_its_own_transaction_matched_to_the_invite() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE", branch="z9hG4bKcancelme")
    invite_tx = receive_new(mgr, invite)
    cancel = make_request("CANCEL", branch="z9hG4bKcancelme")
    events = mgr.receive_request(cancel, PEER, 1.0)
    assert len(events) == 1 and isinstance(events[0], CancelReceived)
    cancel_tx = events[0].transaction
    assert events[0].invite is invite_tx
    assert len(mgr) == 2  # the CANCEL is a transaction of its own
    mgr.send_response(cancel_tx, make_response(cancel, 200), 1.0)
    mgr.send_response(invite_tx, make_response(invite, 487), 1.0)
    assert [start_line(d) for d in sent(mgr)] == [
        "SIP/2.0 200 OK",
        "SIP/2.0 487 Request Terminated",
    ]
    # A retransmitted CANCEL hits the CANCEL transaction, not the INVITE one.
    assert mgr.receive_request(cancel, PEER, 1.5) == []
    assert [start_line(d) for d in sent(mgr)] == ["SIP/2.0 200 OK"]


def test_cancel_of_an_unknown_invite_reports_no_invite() -> None:
    mgr = TransactionManager()
    cancel = make_request("CANCEL", branch="z9hG4bKunknown")
    events = mgr.receive_request(cancel, PEER, 0.0)
    assert len(events) == 1 and isinstance(events[0], CancelReceived)
    assert events[0].invite is None


def test_rfc2543_request_without_magic_cookie_matches_on_dialog_fields() -> None:
    mgr = TransactionManager()
    request = make_request("OPTIONS", branch=None, cseq=5)
    tx = receive_new(mgr, request)
    mgr.send_response(tx, make_response(request, 200), 0.0)
    [ok] = sent(mgr)
    assert mgr.receive_request(make_request("OPTIONS", branch=None, cseq=5), PEER, 0.5) == []
    assert sent(mgr) == [ok]
    # Another CSeq, Call-ID or From tag is another transaction.
    receive_new(mgr, make_request("OPTIONS", branch=None, cseq=6))
    receive_new(mgr, make_request("OPTIONS", branch=None, cseq=5, call_id="other"))
    receive_new(mgr, make_request("OPTIONS", branch=None, cseq=5, from_tag="other"))
    receive_new(mgr, make_request("OPTIONS", branch="1234", cseq=5))  # old-style branch


def test_bare_magic_cookie_branch_is_matched_the_rfc2543_way() -> None:
    # RFC 4475 "badbranch": the branch is the magic cookie alone, so it identifies
    # nothing; falling back to RFC 2543 matching is one of the two answers it allows.
    text = (
        b"OPTIONS sip:user@example.com SIP/2.0\r\n"
        b"To: sip:user@example.com\r\n"
        b"From: sip:caller@example.org;tag=33242\r\n"
        b"Max-Forwards: 3\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK\r\n"
        b"Accept: application/sdp\r\n"
        b"Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n\r\n"
        b"CSeq: 8 OPTIONS\r\n"
        b"l: 0\r\n\r\n"
    )
    request, retransmission, other = (
        parse_message(data) for data in (text, text, text.replace(b"badbranch.", b"another."))
    )
    assert isinstance(request, Request) and isinstance(retransmission, Request)
    assert isinstance(other, Request)
    mgr = TransactionManager()
    tx = receive_new(mgr, request)
    assert mgr.receive_request(retransmission, PEER, 0.1) == []
    # Another request with the same bare cookie is not mistaken for a retransmission.
    assert receive_new(mgr, other) is not tx


def test_rfc2543_ack_matches_the_invite_by_to_tag() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE", branch=None, cseq=3)
    tx = receive_new(mgr, invite)
    mgr.send_response(tx, make_response(invite, 486, to_tag="ourtag"), 0.0)
    sent(mgr)
    wrong_tag = make_request("ACK", branch=None, cseq=3, to_tag="sometag")
    assert mgr.receive_request(wrong_tag, PEER, 0.1) == [AckReceived(None, wrong_tag)]
    ack = make_request("ACK", branch=None, cseq=3, to_tag="ourtag")
    assert isinstance(tx, InviteServerTransaction)
    assert mgr.receive_request(ack, PEER, 0.2) == [AckReceived(tx, ack)]
    assert tx.state is InviteServerState.CONFIRMED
    assert len(mgr) == 1
    advance(mgr, 100.0)
    assert len(mgr) == 0


def test_rfc2543_cancel_finds_its_invite() -> None:
    mgr = TransactionManager()
    invite = make_request("INVITE", branch=None, cseq=3)
    tx = receive_new(mgr, invite)
    events = mgr.receive_request(make_request("CANCEL", branch=None, cseq=3), PEER, 0.1)
    assert isinstance(events[0], CancelReceived) and events[0].invite is tx


# -- manager ---------------------------------------------------------------------


def test_next_deadline_reflects_the_earliest_pending_timer() -> None:
    mgr = TransactionManager()
    assert mgr.next_deadline() is None
    register = make_request("REGISTER", branch="z9hG4bKreg")
    server_tx = receive_new(mgr, register, 0.0)
    assert mgr.next_deadline() == 64 * T1  # the unanswered-request guard
    mgr.send_response(server_tx, make_response(register, 200), 2.0)
    assert mgr.next_deadline() == 2.0 + 64 * T1  # Timer J
    invite = make_request("INVITE", branch="z9hG4bKinv")
    client_tx = mgr.send_request(invite, PEER, 3.0)
    assert mgr.next_deadline() == 3.5  # Timer A
    mgr.receive_response(make_response(invite, 180), 3.2)
    assert mgr.next_deadline() == 2.0 + 64 * T1  # Timer A and B stopped
    mgr.receive_response(make_response(invite, 200), 4.0)
    assert mgr.next_deadline() == 2.0 + 64 * T1  # Timer M ends later
    events, _ = advance(mgr, 100.0)
    assert events == [TransactionTerminated(server_tx), TransactionTerminated(client_tx)]
    assert mgr.next_deadline() is None


def test_send_request_requires_an_rfc3261_branch() -> None:
    mgr = TransactionManager()
    for branch in (None, "1234", MAGIC_COOKIE):
        with pytest.raises(LocalProtocolError):
            mgr.send_request(make_request("OPTIONS", branch=branch), PEER, 0.0)


def test_send_request_refuses_a_branch_already_in_use() -> None:
    mgr = TransactionManager()
    mgr.send_request(make_request("OPTIONS", branch="z9hG4bKdup"), PEER, 0.0)
    with pytest.raises(LocalProtocolError):
        mgr.send_request(make_request("OPTIONS", branch="z9hG4bKdup"), PEER, 0.0)


def test_ack_is_sent_statelessly() -> None:
    mgr = TransactionManager()
    ack = make_request("ACK", to_tag="t")
    with pytest.raises(LocalProtocolError):
        mgr.send_request(ack, PEER, 0.0)
    mgr.send_stateless(ack, PEER)
    assert sent(mgr) == [ack.encode()]
    assert mgr.next_deadline() is None


def test_new_branch_has_the_magic_cookie_and_is_unique() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith(MAGIC_COOKIE) and len(b) > len(MAGIC_COOKIE) + 8 for b in branches)


# -- property: random interleavings ----------------------------------------------

SERVER_PEERS = [("198.51.100.1", 5060), ("198.51.100.2", 5062), "tcp-connection-7"]
CLIENT_PEERS = [("203.0.113.5", 5060), ("203.0.113.6", 5060)]
STRANGER = ("192.0.2.250", 5060)

_action = st.one_of(
    st.tuples(st.just("advance"), st.floats(min_value=0.0, max_value=40.0)),
    st.tuples(
        st.just("request"),
        st.sampled_from(["INVITE", "REGISTER", "OPTIONS", "CANCEL", "BYE"]),
        st.sampled_from(["UDP", "TCP"]),
        st.booleans(),  # RFC 3261 branch, or RFC 2543 matching
        st.integers(0, len(SERVER_PEERS) - 1),
    ),
    st.tuples(st.just("retransmit"), st.integers(0, 1000)),
    st.tuples(st.just("ack"), st.integers(0, 1000)),
    st.tuples(st.just("respond"), st.integers(0, 1000), st.sampled_from([100, 180, 200, 486])),
    st.tuples(
        st.just("send"),
        st.sampled_from(["INVITE", "OPTIONS", "CANCEL"]),
        st.sampled_from(["UDP", "TCP"]),
        st.integers(0, len(CLIENT_PEERS) - 1),
    ),
    st.tuples(st.just("reply"), st.integers(0, 1000), st.sampled_from([100, 180, 200, 404])),
    st.tuples(st.just("stray"), st.sampled_from([200, 481])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_action, max_size=60))
def test_random_interleavings_never_raise_or_send_to_unknown_peers(
    actions: list[tuple[object, ...]],
) -> None:
    server = TransactionManager()
    client = TransactionManager()
    now = 0.0
    received: list[Request] = []
    server_txs: list[tuple[ServerTransaction, Request]] = []
    answered: set[int] = set()
    sent_requests: list[Request] = []
    # Peers that started a server transaction: the only ones the server may answer.
    origins: set[object] = set()

    def step() -> None:
        for data, peer in server.datagrams_to_send():
            assert peer in origins
            parse_message(data)
        for data, peer in client.datagrams_to_send():
            assert peer in CLIENT_PEERS
            parse_message(data)
        for mgr in (server, client):
            deadline = mgr.next_deadline()
            assert deadline is None or deadline > now

    def track(events: list[Event], peer: object = None) -> None:
        for event in events:
            if isinstance(event, RequestReceived | CancelReceived):
                server_txs.append((event.transaction, event.request))
                origins.add(peer)

    for serial, action in enumerate(actions):
        kind = action[0]
        if kind == "advance":
            assert isinstance(action[1], float)
            now += action[1]
            for mgr in (server, client):
                while (deadline := mgr.next_deadline()) is not None and deadline <= now:
                    track(mgr.handle_timer(deadline))
        elif kind == "request":
            method, transport, cookie, peer_index = action[1:]
            assert isinstance(method, str) and isinstance(transport, str)
            assert isinstance(peer_index, int)
            request = make_request(
                method,
                branch=f"z9hG4bK{serial % 7}" if cookie else None,
                transport=transport,
                cseq=serial % 5,
                call_id=f"call-{serial % 3}",
            )
            received.append(request)
            peer = SERVER_PEERS[peer_index]
            track(server.receive_request(request, peer, now), peer)
        elif kind == "retransmit" and received:
            assert isinstance(action[1], int)
            request = received[action[1] % len(received)]
            # From elsewhere (a NAT rebinding, a spoofer): answers still go to the origin.
            track(server.receive_request(request, STRANGER, now), STRANGER)
        elif kind == "ack" and received:
            assert isinstance(action[1], int)
            invite = received[action[1] % len(received)]
            branch = invite.headers["via"][0].partition(";branch=")[2] or None
            cseq = int(invite.headers["cseq"][0].split()[0])
            ack = make_request(
                "ACK",
                branch=branch,
                transport=invite.headers["via"][0].split()[0][8:],
                cseq=cseq,
                call_id=invite.headers["call-id"][0],
                to_tag="callee1",
            )
            track(server.receive_request(ack, SERVER_PEERS[1], now))
        elif kind == "respond" and server_txs:
            assert isinstance(action[1], int) and isinstance(action[2], int)
            index = action[1] % len(server_txs)
            tx, request = server_txs[index]
            status = action[2]
            if index in answered and not (
                status == 200 and isinstance(tx, InviteServerTransaction)
            ):
                continue  # the TU never sends two finals
            if status >= 200:
                answered.add(index)
            try:
                track(server.send_response(tx, make_response(request, status), now))
            except LocalProtocolError:
                # Only a 2xx retransmission after a non-2xx final may be refused.
                assert isinstance(tx, InviteServerTransaction) and status == 200
        elif kind == "send":
            method, transport, peer_index = action[1:]
            assert isinstance(method, str) and isinstance(transport, str)
            assert isinstance(peer_index, int)
            request = make_request(method, branch=new_branch(), transport=transport)
            client.send_request(request, CLIENT_PEERS[peer_index], now)
            sent_requests.append(request)
        elif kind == "reply" and sent_requests:
            assert isinstance(action[1], int) and isinstance(action[2], int)
            request = sent_requests[action[1] % len(sent_requests)]
            client.receive_response(make_response(request, action[2]), now)
        elif kind == "stray":
            assert isinstance(action[1], int)
            response = make_response(make_request("OPTIONS", branch=new_branch()), action[1])
            assert client.receive_response(response, now) == [StrayResponse(response)]
        step()

    # Answer everything still open; then every server transaction must end.
    for index, (tx, request) in enumerate(server_txs):
        if index not in answered:
            server.send_response(tx, make_response(request, 500), now)
    now += 1000.0
    for mgr in (server, client):
        while (deadline := mgr.next_deadline()) is not None and deadline <= now:
            mgr.handle_timer(deadline)
    step()
    assert len(server) == 0 and server.next_deadline() is None
    # Only INVITE clients in Proceeding may wait forever (the TU's Timer C ends them).
    assert client.next_deadline() is None
