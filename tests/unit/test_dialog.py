"""Dialogs (RFC 3261 §12): creation on both sides and in-dialog requests."""

from __future__ import annotations

from cms.sip.dialog import Dialog, dialog_key_of
from cms.sip.headers import parse_cseq, parse_name_addr
from cms.sip.message import Headers, Request, Response

INVITE = Request(
    "INVITE",
    "sip:600@cms.local",
    Headers.of([
        ("Via", "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKa1"),
        ("From", '"Caller" <sip:caller@192.0.2.1>;tag=from1'),
        ("To", "<sip:600@cms.local>"),
        ("Call-ID", "dlg-1"),
        ("CSeq", "7 INVITE"),
        ("Contact", "<sip:caller@192.0.2.1:5062>"),
        ("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"),
    ]),
)


def ok_response(request: Request, contact: str = "<sip:agent@192.0.2.9:5070>") -> Response:
    headers = Headers()
    for name in ("via", "from", "call-id", "cseq", "record-route"):
        headers[name] = list(request.headers.all(name))
    headers["to"] = [f"{request.headers.first('to')};tag=to9"]
    headers["contact"] = [contact]
    return Response(200, "OK", headers)


def test_uas_dialog_takes_remote_target_and_route_set_from_the_invite() -> None:
    dialog = Dialog.from_uas(INVITE, "local7", "sip:cms@192.0.2.5:5060")
    assert dialog.key == ("dlg-1", "local7", "from1")
    assert dialog.remote_target == "sip:caller@192.0.2.1:5062"
    assert dialog.route_set == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert dialog.remote_cseq == 7


def test_uac_dialog_reverses_the_record_route() -> None:
    dialog = Dialog.from_uac(INVITE, ok_response(INVITE), "sip:cms@192.0.2.5")
    assert dialog.key == ("dlg-1", "from1", "to9")
    assert dialog.route_set == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert dialog.remote_target == "sip:agent@192.0.2.9:5070"
    assert not dialog.early


def test_bye_goes_to_the_remote_target_with_tags_and_next_cseq() -> None:
    dialog = Dialog.from_uac(INVITE, ok_response(INVITE), "sip:cms@192.0.2.5")
    bye = dialog.new_request("BYE", "192.0.2.5:5060")
    assert bye.uri == "sip:agent@192.0.2.9:5070"
    assert parse_cseq(bye.headers.first("cseq") or "") == (8, "BYE")
    assert parse_name_addr(bye.headers.first("from") or "").tag == "from1"
    assert parse_name_addr(bye.headers.first("to") or "").tag == "to9"
    assert bye.headers.all("route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
    assert (bye.headers.first("via") or "").startswith("SIP/2.0/UDP 192.0.2.5:5060;branch=z9hG4bK")


def test_ack_reuses_the_invite_cseq_number() -> None:
    dialog = Dialog.from_uac(INVITE, ok_response(INVITE), "sip:cms@192.0.2.5")
    ack = dialog.ack(7, "192.0.2.5:5060")
    assert parse_cseq(ack.headers.first("cseq") or "") == (7, "ACK")
    assert dialog.local_cseq == 7


def test_strict_router_moves_into_the_request_uri() -> None:
    dialog = Dialog.from_uac(INVITE, ok_response(INVITE), "sip:cms@192.0.2.5")
    dialog.route_set = ["<sip:strict.example.com>"]
    bye = dialog.new_request("BYE", "192.0.2.5:5060")
    assert bye.uri == "sip:strict.example.com"
    assert bye.headers.all("route") == ["<sip:agent@192.0.2.9:5070>"]


def test_out_of_order_remote_cseq_is_refused_and_reinvite_refreshes_target() -> None:
    dialog = Dialog.from_uas(INVITE, "local7", "sip:cms@192.0.2.5:5060")
    reinvite = Request("INVITE", "sip:cms@192.0.2.5", Headers.of([
        ("CSeq", "8 INVITE"), ("Contact", "<sip:caller@192.0.2.77:5062>"),
    ]))
    assert dialog.receive_request(reinvite)
    assert dialog.remote_target == "sip:caller@192.0.2.77:5062"
    stale = Request("BYE", "sip:cms@192.0.2.5", Headers.of([("CSeq", "8 BYE")]))
    assert not dialog.receive_request(stale)


def test_dialog_key_of_an_incoming_request_is_from_our_side() -> None:
    bye = Request("BYE", "sip:cms@192.0.2.5", Headers.of([
        ("Call-ID", "dlg-1"), ("From", "<sip:caller@192.0.2.1>;tag=from1"),
        ("To", "<sip:600@cms.local>;tag=local7"),
    ]))
    assert dialog_key_of(bye) == ("dlg-1", "local7", "from1")
    bye.headers["to"] = ["<sip:600@cms.local>"]
    assert dialog_key_of(bye) is None
