"""RFC 4475 torture messages: each gets the verdict the RFC (and index.json) gives it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cms.sip.errors import ParseError
from cms.sip.headers import (
    header_values,
    parse_cseq,
    parse_name_addr,
    parse_uri,
    parse_via,
    top_via,
)
from cms.sip.message import Request, Response
from cms.sip.parser import parse_message
from cms.sip.validate import build_error_response, can_answer, validate_request

DATA = Path(__file__).resolve().parent.parent / "data" / "rfc4475"
MESSAGES: list[dict[str, Any]] = json.loads((DATA / "index.json").read_text())["messages"]


def entries(check: str) -> list[Any]:
    return [pytest.param(m, id=m["name"]) for m in MESSAGES if m["check"] == check]


def load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def accepted(name: str, *, full: bool = True) -> Request:
    message = parse_message(load(name))
    assert isinstance(message, Request)
    validate_request(message, full=full)
    return message


def status_allowed(status: int, allowed: list[str]) -> bool:
    return any(
        (a.endswith("xx") and status // 100 == int(a[0])) or str(status) == a for a in allowed
    )


def outcome(data: bytes, *, full: bool = True) -> int | None:
    """None when the request passes parse and validation, else the ParseError status."""
    try:
        message = parse_message(data)
        assert isinstance(message, Request)
        validate_request(message, full=full)
    except ParseError as exc:
        return exc.status
    return None


def test_every_indexed_message_file_is_present() -> None:
    assert len(MESSAGES) == 49
    for entry in MESSAGES:
        assert (DATA / entry["file"]).is_file()


# -- verdicts by kind


@pytest.mark.parametrize("full", [True, False], ids=["full", "fast"])
@pytest.mark.parametrize("entry", entries("accept"))
def test_valid_request_is_parsed_and_validated(entry: dict[str, Any], full: bool) -> None:
    request = accepted(entry["name"], full=full)
    assert can_answer(request) == (request.method != "ACK")


@pytest.mark.parametrize("full", [True, False], ids=["full", "fast"])
@pytest.mark.parametrize("entry", entries("reject"))
def test_invalid_request_is_rejected_with_an_allowed_status(
    entry: dict[str, Any], full: bool
) -> None:
    with pytest.raises(ParseError) as caught:
        message = parse_message(load(entry["name"]))
        assert isinstance(message, Request)
        validate_request(message, full=full)
    exc = caught.value
    assert status_allowed(exc.status, entry["allowed"]), (exc.status, str(exc))
    assert exc.partial is not None


@pytest.mark.parametrize("entry", entries("reject") + entries("lenient"))
def test_error_response_to_a_rejected_request_is_well_formed(entry: dict[str, Any]) -> None:
    try:
        accepted(entry["name"])
    except ParseError as exc:
        if exc.partial is None or not can_answer(exc.partial):
            return
        response = build_error_response(exc.partial, exc.status, exc.reason)
        parsed = parse_message(response.encode())
        assert isinstance(parsed, Response)
        assert parsed.status == exc.status
        assert parsed.headers["call-id"] == exc.partial.headers["call-id"]
        assert parsed.headers["via"] == exc.partial.headers["via"]
        assert "tag=" in parsed.headers["to"][0]


@pytest.mark.parametrize("entry", entries("drop"))
def test_response_is_never_answered(entry: dict[str, Any]) -> None:
    try:
        message = parse_message(load(entry["name"]))
    except ParseError as exc:
        assert exc.status == 0
        assert exc.partial is None
    else:
        assert isinstance(message, Response)


@pytest.mark.parametrize("full", [True, False], ids=["full", "fast"])
@pytest.mark.parametrize("entry", entries("lenient"))
def test_lenient_case_is_accepted_or_rejected_cleanly(entry: dict[str, Any], full: bool) -> None:
    status = outcome(load(entry["name"]), full=full)
    assert status is None or status == 400


# What we chose where RFC 4475 allows either (None: accepted). Full validation on the left,
# fast (full=False: Request-URI, To and From left to the caller) on the right.
LENIENT_VERDICTS: dict[str, tuple[int | None, int | None]] = {
    "quotbal": (400, None),  # unterminated quote in To
    "ltgtruri": (400, None),  # <sip:...> as Request-URI
    "lwsruri": (400, 400),  # "sip:user@example.com; lr" in the request line
    "lwsstart": (400, 400),  # several SP between request-line elements
    "trws": (400, 400),  # trailing SP after SIP/2.0
    "escruri": (None, None),  # escaped headers in the Request-URI
    "baddate": (None, None),  # Date with "EST"
    "regbadct": (None, None),  # Contact addr-spec with '?': left to the registrar
    "badaspec": (None, None),  # spaces inside < >
    "baddn": (None, None),  # display name with a comma, unquoted
    "badbranch": (None, None),  # branch without the magic cookie's tail
    "unksm2": (None, None),  # isbn: and http: in To/From: left to the registrar
    "inv2543": (None, None),  # RFC 2543: no Max-Forwards, no From tag, no Content-Length
}


def test_every_lenient_case_has_a_documented_verdict() -> None:
    assert sorted(LENIENT_VERDICTS) == sorted(
        m["name"] for m in MESSAGES if m["check"] == "lenient"
    )


@pytest.mark.parametrize("name", sorted(LENIENT_VERDICTS))
def test_lenient_case_gets_the_documented_verdict(name: str) -> None:
    full, fast = LENIENT_VERDICTS[name]
    assert outcome(load(name), full=True) == full
    assert outcome(load(name), full=False) == fast


# -- facts about specific messages


def test_wsinv_is_read_despite_its_whitespace_and_folding() -> None:
    request = accepted("wsinv")
    headers = request.headers
    assert request.method == "INVITE"
    assert parse_name_addr(headers["to"][0]).tag == "1918181833n"
    from_ = parse_name_addr(headers["from"][0])
    assert from_.display == 'J Rosenberg \\"'
    assert from_.tag == "98asjd8"
    assert headers["max-forwards"] == ["0068"]
    assert parse_cseq(headers["cseq"][0]) == (9, "INVITE")
    vias = header_values(headers["via"], "via")
    assert len(vias) == 3
    assert [parse_via(v).transport for v in vias] == ["UDP", "TCP", "UDP"]
    assert parse_via(vias[1]).branch == "z9hG4bK9ikj8"
    assert parse_via(vias[2]).host == "192.168.255.111"
    assert parse_via(vias[2]).branch == "z9hG4bK30239"
    assert headers["newfangledheader"] == ["newfangled value continued newfangled value"]
    assert headers["subject"] == [""]
    contact = parse_name_addr(headers["contact"][0])
    assert contact.display == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert len(request.body) == 150 == int(headers["content-length"][0])


def test_intmeth_keeps_its_unusual_but_legal_characters() -> None:
    request = accepted("intmeth")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert request.method == method
    assert parse_cseq(request.headers["cseq"][0]) == (139122385, method)
    uri = parse_uri(request.uri)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    assert parse_name_addr(request.headers["to"][0]).display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert parse_name_addr(request.headers["from"][0]).display == "token1~` token2'+_ token3*%!.-"


def test_esc01_escapes_resolve_in_user_parts() -> None:
    request = accepted("esc01")
    assert parse_uri(request.uri).user_unescaped == "sips:user@example.com"
    assert parse_name_addr(request.headers["to"][0]).uri.user_unescaped == "user"
    assert parse_name_addr(request.headers["from"][0]).uri.user_unescaped == "I have spaces"
    assert request.headers["content-type"] == ["application/sdp"]


def test_escnull_has_two_distinct_contacts() -> None:
    request = accepted("escnull")
    contacts = [
        parse_name_addr(v).uri for v in header_values(request.headers["contact"], "contact")
    ]
    assert [c.user_unescaped for c in contacts] == ["\x00", "\x00\x00"]
    assert contacts[0].aor != contacts[1].aor
    assert parse_name_addr(request.headers["to"][0]).uri.user_unescaped == "null-\x00-null"


def test_esc02_percent_in_method_and_header_name_is_literal() -> None:
    request = accepted("esc02")
    assert request.method == "RE%47IST%45R"
    assert len(request.headers["contact"]) == 2
    assert request.headers["c%6fntact"] == ["<sip:alias2@host2.example.com>"]
    assert parse_name_addr(request.headers["to"][0]).display == "%Z%45"


def test_lwsdisp_display_name_without_space_before_angle() -> None:
    from_ = parse_name_addr(accepted("lwsdisp").headers["from"][0])
    assert from_.display == "caller"
    assert from_.uri.user == "caller"
    assert from_.tag == "323"


def test_longreq_long_values_are_kept_whole() -> None:
    request = accepted("longreq")
    to = parse_name_addr(request.headers["to"][0])
    assert to.uri.port == 6000
    flag = "very" + "long" * 25 + "parameternamewithnovalue"
    assert to.uri.params[flag] is None
    assert to.uri.params["unknownparam1"] == "very" + "long" * 20 + "value"
    assert len(header_values(request.headers["via"], "via")) > 10


def test_dblreq_trailing_datagram_octets_are_ignored() -> None:
    request = accepted("dblreq")
    assert request.method == "REGISTER"
    assert request.body == b""
    assert request.headers["call-id"] == ["dblreq.0ha0isndaksdj99sdfafnl3lk233412"]


def test_semiuri_semicolon_belongs_to_the_user_part() -> None:
    uri = parse_uri(accepted("semiuri").uri)
    assert uri.user == "user;par=u%40example.net"
    assert uri.host == "example.com"
    assert uri.params == {}


def test_transports_unknown_transport_is_kept() -> None:
    vias = accepted("transports").headers["via"]
    assert [parse_via(v).transport for v in vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]


def test_mpart01_binary_body_has_its_declared_length() -> None:
    request = accepted("mpart01")
    assert len(request.body) == int(request.headers["content-length"][0]) == 553
    assert b"\x00" in request.body


def test_unknown_and_novel_schemes_are_kept_opaque() -> None:
    assert parse_uri(accepted("unkscm").uri).scheme == "nobodyknowsthisscheme"
    novel = parse_uri(accepted("novelsc").uri)
    assert (novel.scheme, novel.opaque) == ("soap.beep", "//192.0.2.103:3002")


def test_regescrt_contact_keeps_its_escaped_header() -> None:
    contact = parse_name_addr(accepted("regescrt").headers["contact"][0])
    assert contact.uri.headers == "Route=%3Csip:sip.example.com%3E"


def test_cparam01_addr_spec_parameter_belongs_to_the_contact() -> None:
    contact = parse_name_addr(accepted("cparam01").headers["contact"][0])
    assert contact.params == {"unknownparam": None}
    assert contact.uri.params == {}


def test_cparam02_name_addr_parameter_belongs_to_the_uri() -> None:
    contact = parse_name_addr(accepted("cparam02").headers["contact"][0])
    assert contact.uri.params == {"unknownparam": None}
    assert contact.params == {}


def test_zeromf_max_forwards_zero_is_valid() -> None:
    assert accepted("zeromf").headers["max-forwards"] == ["0"]


def test_badinv01_empty_via_parameters_are_the_fault() -> None:
    request = parse_message(load("badinv01"))
    assert isinstance(request, Request)
    with pytest.raises(ParseError, match="Via") as caught:
        validate_request(request)
    assert caught.value.status == 400
    assert can_answer(request)
    with pytest.raises(ParseError):
        parse_via(top_via(request.headers["via"]))


def test_scalar02_overlarge_cseq_is_rejected_but_overlarge_expires_is_not() -> None:
    request = parse_message(load("scalar02"))
    assert isinstance(request, Request)
    with pytest.raises(ParseError, match="CSeq") as caught:
        validate_request(request)
    assert caught.value.status == 400
    request.headers["cseq"] = ["1 REGISTER"]
    with pytest.raises(ParseError, match="Max-Forwards"):
        validate_request(request)
    request.headers["max-forwards"] = ["70"]
    validate_request(request)


def test_insuf_cannot_be_answered() -> None:
    request = parse_message(load("insuf"))
    assert isinstance(request, Request)
    with pytest.raises(ParseError, match="missing"):
        validate_request(request)
    assert not can_answer(request)


def test_badvers_is_answerable_with_505() -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(load("badvers"))
    assert caught.value.status == 505
    assert caught.value.partial is not None
    assert can_answer(caught.value.partial)


# -- validation rules beyond the corpus

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5061;branch=z9hG4bK-1, SIP/2.0/UDP 192.0.2.9\r\n"
    b"Via: SIP/2.0/TCP 192.0.2.10\r\n"
    b"From: <sip:1001@example.com>;tag=abc\r\n"
    b"To: <sip:1001@example.com>\r\n"
    b"Call-ID: 1-2@192.0.2.1\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b"Max-Forwards: 70\r\n"
    b"Expires: 3600\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def register(**changes: list[str] | None) -> Request:
    request = parse_message(REGISTER)
    assert isinstance(request, Request)
    for name, values in changes.items():
        name = name.replace("_", "-")
        if values is None:
            del request.headers[name]
        else:
            request.headers[name] = values
    return request


def rejected(request: Request, *, full: bool = True) -> str:
    with pytest.raises(ParseError) as caught:
        validate_request(request, full=full)
    assert caught.value.status == 400
    assert caught.value.partial is request
    return str(caught.value)


def test_plain_register_is_valid_in_both_modes() -> None:
    validate_request(register())
    validate_request(register(), full=False)


@pytest.mark.parametrize("name", ["via", "to", "from", "call_id", "cseq"])
def test_missing_mandatory_header_is_400(name: str) -> None:
    assert "missing" in rejected(register(**{name: None}), full=False)


def test_missing_max_forwards_is_tolerated_for_rfc_2543_peers() -> None:
    validate_request(register(max_forwards=None))


@pytest.mark.parametrize(
    "name", ["to", "from", "call_id", "cseq", "max_forwards", "content_type", "content_length"]
)
def test_single_valued_header_repeated_is_400(name: str) -> None:
    assert "repeated" in rejected(register(**{name: ["1 REGISTER", "1 REGISTER"]}), full=False)


def test_empty_call_id_is_400() -> None:
    rejected(register(call_id=[""]), full=False)


@pytest.mark.parametrize("method", ["ACK", "CANCEL", "INVITE"])
def test_cseq_method_must_equal_the_request_method(method: str) -> None:
    request = register(cseq=["1 INVITE"])
    request.method = method
    if method == "INVITE":
        validate_request(request)
    else:
        assert "CSeq method" in rejected(request)


@pytest.mark.parametrize("value", ["2147483648", "1.5", "x", "", "-1", "١"])
def test_bad_cseq_number_is_400(value: str) -> None:
    rejected(register(cseq=[f"{value} REGISTER"]), full=False)


@pytest.mark.parametrize("value", ["0", "70", "0068", "255", "000000000000255"])
def test_max_forwards_from_0_to_255_is_valid(value: str) -> None:
    validate_request(register(max_forwards=[value]))


@pytest.mark.parametrize("value", ["256", "-1", "7O", "", "1 2", "9" * 5000, "٧"])
def test_bad_max_forwards_is_400(value: str) -> None:
    assert "Max-Forwards" in rejected(register(max_forwards=[value]), full=False)


@pytest.mark.parametrize("value", ["0", "3600", "0060", "1" * 100])
def test_expires_digits_of_any_size_are_valid(value: str) -> None:
    validate_request(register(expires=[value]))


@pytest.mark.parametrize("value", ["soon", "-1", "", "Thu, 01 Dec 1994 16:00:00 GMT"])
def test_non_numeric_expires_is_400(value: str) -> None:
    assert "Expires" in rejected(register(expires=[value]), full=False)


def test_unparsable_top_via_is_400_in_both_modes() -> None:
    for full in (True, False):
        assert "Via" in rejected(register(via=["SIP/2.0/UDP"]), full=full)


def test_full_validation_parses_request_uri_to_and_from() -> None:
    for change in ({"to": ['"open <sip:a@b>']}, {"from": ["<sip:a@b"]}):
        request = register(**change)
        rejected(request)
        validate_request(request, full=False)
    request = register()
    request.uri = "<sip:example.com>"
    assert "Request-URI" in rejected(request)


def test_can_answer_needs_a_sent_by_and_the_addressing_headers() -> None:
    assert can_answer(register())
    assert can_answer(register(via=["SIP/2.0/UDP host;;;"]))
    assert can_answer(register(via=["SIP/3.0/UDP host:5060"]))
    assert not can_answer(register(via=["garbage"]))
    assert not can_answer(register(via=[]))
    assert not can_answer(register(via=['"unterminated, x']))
    for name in ("to", "from", "call_id", "cseq"):
        assert not can_answer(register(**{name: None}))


def test_ack_is_never_answered() -> None:
    request = register(cseq=["1 ACK"])
    request.method = "ACK"
    assert not can_answer(request)


def test_error_response_copies_every_via_and_tags_the_to() -> None:
    request = register()
    response = build_error_response(request, 400)
    assert response.reason == "Bad Request"
    assert response.headers["via"] == request.headers["via"]
    for name in ("from", "call-id", "cseq"):
        assert response.headers[name] == request.headers[name]
    to = parse_name_addr(response.headers["to"][0])
    assert to.uri == parse_name_addr(request.headers["to"][0]).uri
    assert to.tag
    assert "tag" not in request.headers["to"][0]
    assert build_error_response(request, 400).headers["to"] != response.headers["to"]


def test_error_response_keeps_an_existing_to_tag() -> None:
    request = register(to=["<sip:1001@example.com>;tag=mine"])
    assert build_error_response(request, 481).headers["to"] == ["<sip:1001@example.com>;tag=mine"]


def test_error_response_reason_cannot_inject_header_lines() -> None:
    response = build_error_response(register(), 400, "Bad Request (x)\r\nEvil: 1\n")
    assert response.reason == "Bad Request (x) Evil: 1"
    parsed = parse_message(response.encode())
    assert isinstance(parsed, Response)
    assert "evil" not in parsed.headers
