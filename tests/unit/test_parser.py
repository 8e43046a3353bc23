"""The SIP parser and header-value parsers, specified by example."""

from __future__ import annotations

import pytest

from cms.sip.errors import ParseError
from cms.sip.headers import (
    header_values,
    parse_cseq,
    parse_name_addr,
    parse_params,
    parse_uri,
    parse_via,
    quote,
    split_list,
    top_via,
    unquote,
)
from cms.sip.message import COMPACT_FORMS, Headers, Request, Response
from cms.sip.parser import parse_message

HEADERS = (
    "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
    "Max-Forwards: 70\r\n"
    "To: <sip:bob@example.com>\r\n"
    "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    "Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    "CSeq: 314159 OPTIONS\r\n"
)


def request_bytes(extra: str = "", body: bytes = b"", start: str = "") -> bytes:
    start = start or "OPTIONS sip:bob@example.com SIP/2.0"
    return f"{start}\r\n{HEADERS}{extra}\r\n".encode() + body


def parse_request(data: bytes, *, datagram: bool = True, max_size: int = 65_535) -> Request:
    message = parse_message(data, datagram=datagram, max_size=max_size)
    assert isinstance(message, Request)
    return message


def parse_response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


# -- start lines


def test_request_line_gives_method_uri_and_version() -> None:
    request = parse_request(request_bytes())
    assert (request.method, request.uri, request.version) == (
        "OPTIONS",
        "sip:bob@example.com",
        "SIP/2.0",
    )


def test_status_line_gives_status_and_reason_with_spaces() -> None:
    response = parse_response(b"SIP/2.0 486 Busy Here Right Now\r\nContent-Length: 0\r\n\r\n")
    assert (response.status, response.reason) == (486, "Busy Here Right Now")


def test_status_line_without_reason_gets_the_standard_phrase() -> None:
    assert parse_response(b"SIP/2.0 404\r\nl: 0\r\n\r\n").reason == "Not Found"


def test_lowercase_sip_version_in_a_status_line_is_still_a_response() -> None:
    assert parse_response(b"sip/2.0 200 OK\r\nl: 0\r\n\r\n").status == 200


def test_lowercase_sip_version_in_a_request_line_is_normalized() -> None:
    assert parse_request(request_bytes(start="OPTIONS sip:b@example.com sip/2.0")).version == (
        "SIP/2.0"
    )


def test_bad_version_is_505_with_the_request_read_so_far() -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(request_bytes(start="OPTIONS sip:bob@example.com SIP/3.0"))
    assert caught.value.status == 505
    assert caught.value.partial is not None
    assert caught.value.partial.headers["call-id"] == ["a84b4c76e66710@pc33.example.com"]


@pytest.mark.parametrize("code", ["2000", "20", "700", "099", "abc", "1²3", "٢٠٠", "4294967301"])
def test_response_with_bad_status_code_is_dropped_with_status_0(code: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(f"SIP/2.0 {code} Weird\r\nl: 0\r\n\r\n".encode())
    assert caught.value.status == 0
    assert caught.value.partial is None


def test_errors_in_a_response_are_never_answered() -> None:
    for data in (
        b"SIP/2.0 200 OK\r\nContent-Length: 99\r\n\r\nshort",
        b"SIP/2.0 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"SIP/2.0 200 OK\r\nno colon here\r\n\r\n",
    ):
        with pytest.raises(ParseError) as caught:
            parse_message(data)
        assert caught.value.status == 0


@pytest.mark.parametrize(
    "start",
    [
        "OPTIONS  sip:bob@example.com SIP/2.0",
        "OPTIONS sip:bob@example.com SIP/2.0 ",
        "OPTIONS sip:bob@example.com; lr SIP/2.0",
        "OPTIONS bob SIP/2.0",
        "OPT(ONS sip:bob@example.com SIP/2.0",
    ],
)
def test_malformed_request_line_is_400_with_the_headers_still_read(start: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(request_bytes(start=start))
    assert caught.value.status == 400
    partial = caught.value.partial
    assert partial is not None
    assert partial.headers["cseq"] == ["314159 OPTIONS"]


def test_crlfs_before_the_start_line_are_ignored() -> None:
    assert parse_request(b"\r\n\r\n" + request_bytes()).method == "OPTIONS"


@pytest.mark.parametrize("data", [b"", b"\r\n", b"\r\n\r\n"])
def test_empty_message_is_dropped(data: bytes) -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(data)
    assert caught.value.status == 0


# -- header fields


@pytest.mark.parametrize("compact", sorted(COMPACT_FORMS))
def test_compact_form_maps_to_the_full_name(compact: str) -> None:
    for spelled in (compact, compact.upper()):
        request = parse_request(request_bytes(f"{spelled}: 0\r\n"))
        assert COMPACT_FORMS[compact] in request.headers
        assert compact not in request.headers


def test_unknown_single_letter_header_keeps_its_name() -> None:
    assert parse_request(request_bytes("Q: x\r\n")).headers["q"] == ["x"]


def test_header_names_are_case_insensitive_and_whitespace_before_colon_is_allowed() -> None:
    request = parse_request(request_bytes("X-FOO : 1\r\nx-foo:2\r\nCONTACT\t: <sip:a@b>\r\n"))
    assert request.headers["x-foo"] == ["1", "2"]
    assert request.headers["contact"] == ["<sip:a@b>"]


def test_folded_lines_are_joined_with_a_space() -> None:
    request = parse_request(
        request_bytes("Subject: I know you're there,\r\n  pick up\r\n\tthe phone\r\n")
    )
    assert request.headers["subject"] == ["I know you're there, pick up the phone"]


def test_repeated_headers_keep_their_order() -> None:
    request = parse_request(request_bytes("Route: <sip:p1>\r\nRoute: <sip:p2>, <sip:p3>\r\n"))
    assert request.headers["route"] == ["<sip:p1>", "<sip:p2>, <sip:p3>"]
    assert header_values(request.headers["route"], "route") == ["<sip:p1>", "<sip:p2>", "<sip:p3>"]


def test_comma_joined_values_of_non_list_headers_are_not_split() -> None:
    assert header_values(["a, b"], "subject") == ["a, b"]


def test_split_list_ignores_commas_in_quotes_and_angle_brackets() -> None:
    value = '"Doe, John" <sip:j@x;a=1,2>;q=0.5 , <sip:k@y>,sip:z@w, "a\\",b" <sip:v@u>'
    assert split_list(value) == [
        '"Doe, John" <sip:j@x;a=1,2>;q=0.5',
        "<sip:k@y>",
        "sip:z@w",
        '"a\\",b" <sip:v@u>',
    ]


def test_split_list_drops_empty_items_and_rejects_open_quotes() -> None:
    assert split_list(" a ,, b ,") == ["a", "b"]
    assert split_list("  ") == []
    with pytest.raises(ParseError):
        split_list('"open, <sip:a@b>')


def test_empty_header_value_is_kept() -> None:
    assert parse_request(request_bytes("Subject:\r\n")).headers["subject"] == [""]


def test_header_line_without_a_name_is_400_with_every_other_header_read() -> None:
    data = request_bytes("this line has no colon\r\nX-After: 1\r\n")
    with pytest.raises(ParseError) as caught:
        parse_message(data)
    assert caught.value.status == 400
    assert caught.value.partial is not None
    assert caught.value.partial.headers["x-after"] == ["1"]


def test_bare_lf_line_ends_are_accepted() -> None:
    request = parse_request(request_bytes().replace(b"\r\n", b"\n"))
    assert request.headers["cseq"] == ["314159 OPTIONS"]


def test_bare_lf_head_with_a_crlf_body_splits_at_the_first_empty_line() -> None:
    body = b"v=0\r\n\r\nx\r\n"
    head = request_bytes(f"Content-Length: {len(body)}\r\n").replace(b"\r\n", b"\n")
    request = parse_request(head + body)
    assert request.body == body


def test_mixed_line_ends_never_leave_a_line_break_in_a_value() -> None:
    data = request_bytes("X-A: 1\nX-B: 2\r\n")
    request = parse_request(data)
    assert request.headers["x-a"] == ["1"]
    assert request.headers["x-b"] == ["2"]


def test_bare_cr_in_the_header_section_is_400() -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(request_bytes("X-A: 1\rX-B: 2\r\n"))
    assert caught.value.status == 400
    assert caught.value.partial is not None
    for values in caught.value.partial.headers.values():
        assert all("\r" not in v and "\n" not in v for v in values)


def test_non_utf8_header_bytes_are_read_as_latin1() -> None:
    request = parse_request(
        request_bytes("Subject: caf\xe9\r\n").replace(b"caf\xc3\xa9", b"caf\xe9")
    )
    assert request.headers["subject"] == ["caf\xe9"]


# -- body framing


def test_content_length_frames_the_body_and_extra_datagram_bytes_are_discarded() -> None:
    request = parse_request(request_bytes("Content-Length: 4\r\n", b"abcdEXTRA"))
    assert request.body == b"abcd"


def test_content_length_larger_than_the_datagram_is_400() -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(request_bytes("Content-Length: 10\r\n", b"abcd"))
    assert caught.value.status == 400
    assert caught.value.partial is not None


def test_missing_content_length_over_a_datagram_means_the_rest_of_it() -> None:
    assert parse_request(request_bytes(body=b"rest")).body == b"rest"


def test_missing_content_length_over_a_stream_means_no_body() -> None:
    assert parse_request(request_bytes(body=b"rest"), datagram=False).body == b""


@pytest.mark.parametrize("value", ["-1", "abc", "1 2", "١"])
def test_malformed_content_length_is_400(value: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_message(request_bytes(f"Content-Length: {value}\r\n"))
    assert caught.value.status == 400


def test_content_length_with_thousands_of_digits_is_a_parse_error() -> None:
    with pytest.raises(ParseError):
        parse_message(request_bytes("Content-Length: " + "9" * 5000 + "\r\n"))
    assert parse_request(request_bytes("Content-Length: " + "0" * 5000 + "2\r\n", b"ab")).body == (
        b"ab"
    )


def test_message_over_the_maximum_size_is_513() -> None:
    data = request_bytes(body=b"x" * 2000)
    with pytest.raises(ParseError) as caught:
        parse_message(data, max_size=1000)
    assert caught.value.status == 513
    assert parse_request(data, max_size=len(data)).body == b"x" * 2000


# -- encoding


def test_request_encode_writes_a_correct_content_length() -> None:
    request = Request("MESSAGE", "sip:a@b", Headers.of([("Content-Length", "999")]), b"hello")
    data = request.encode()
    assert data.count(b"Content-Length") == 1
    assert b"Content-Length: 5\r\n\r\nhello" in data
    assert parse_request(data).body == b"hello"


def test_response_encode_writes_a_correct_content_length_even_without_a_body() -> None:
    response = Response(200, headers=Headers.of([("l", "7")]))
    data = response.encode()
    assert data == b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert bytes(response) == data


def test_encode_uses_canonical_header_names() -> None:
    headers = Headers.of([("call-id", "x"), ("CSEQ", "1 A"), ("v", "SIP/2.0/UDP h"), ("x-y", "z")])
    data = Request("A", "sip:h", headers).encode()
    assert b"Call-ID: x\r\nCSeq: 1 A\r\nVia: SIP/2.0/UDP h\r\nX-Y: z\r\n" in data


# -- URIs


def test_sip_uri_parts() -> None:
    uri = parse_uri("sips:alice:secret@Example.COM:5061;transport=tcp;lr?subject=hi&x=y")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips",
        "alice",
        "secret",
        "Example.COM",
        5061,
    )
    assert uri.params == {"transport": "tcp", "lr": None}
    assert uri.headers == "subject=hi&x=y"
    assert uri.aor == "sips:alice@example.com"


def test_ipv6_reference_host_with_port() -> None:
    uri = parse_uri("sip:bob@[2001:db8::10]:5070;transport=udp")
    assert (uri.host, uri.port, uri.hostport) == ("[2001:db8::10]", 5070, "[2001:db8::10]:5070")
    assert str(uri) == "sip:bob@[2001:db8::10]:5070;transport=udp"


def test_uri_escapes_are_kept_raw_and_resolved_on_demand() -> None:
    uri = parse_uri("sip:%61lice%20smith@example.com")
    assert uri.user == "%61lice%20smith"
    assert uri.user_unescaped == "alice smith"


def test_question_mark_may_appear_in_the_user_part() -> None:
    uri = parse_uri("sip:who?me@example.com?h=v")
    assert (uri.user, uri.host, uri.headers) == ("who?me", "example.com", "h=v")


def test_non_sip_uri_is_opaque() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert (uri.scheme, uri.opaque, uri.is_sip) == (
        "tel",
        "+1-201-555-0123;phone-context=example.com",
        False,
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip:",
        "sip:@host",
        "sip:user@",
        "sip:a b@c",
        "sip:a@b:99999",
        "sip:a@b:x",
        "1sip:a@b",
        "<sip:a@b>",
        "sip:a@b;;x",
    ],
)
def test_bad_uri_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_uri(text)


# -- parameters


def test_parameters_with_and_without_values_and_around_whitespace() -> None:
    assert parse_params(" ; Tag = abc ;lr; Q=0.5;empty=") == {
        "tag": "abc",
        "lr": None,
        "q": "0.5",
        "empty": "",
    }


def test_quoted_parameter_value_keeps_its_quotes_and_may_hold_semicolons() -> None:
    params = parse_params(';reason="a;b=c";x=1')
    assert params == {"reason": '"a;b=c"', "x": "1"}
    assert unquote(params["reason"] or "") == "a;b=c"


def test_empty_parameter_is_a_parse_error_but_one_trailing_semicolon_is_not() -> None:
    assert parse_params("a=1;") == {"a": "1"}
    for bad in (";;", "a;;b", "=x", 'a="open'):
        with pytest.raises(ParseError):
            parse_params(bad)


def test_quote_and_unquote_are_inverse() -> None:
    for text in ("", "plain", 'with "quotes"', "back\\slash", 'both \\"'):
        assert unquote(quote(text)) == text


# -- name-addr


def test_name_addr_with_quoted_display_name_and_escapes() -> None:
    address = parse_name_addr('"Doe, \\"JD\\" John" <sip:jd@example.com;transport=tcp>;tag=7')
    assert address.display == 'Doe, "JD" John'
    assert address.uri.params == {"transport": "tcp"}
    assert address.params == {"tag": "7"}
    assert address.tag == "7"


def test_name_addr_with_token_display_name_collapses_whitespace() -> None:
    address = parse_name_addr("Alice   Smith\t<sip:alice@example.com>")
    assert address.display == "Alice Smith"


def test_addr_spec_parameters_belong_to_the_header() -> None:
    address = parse_name_addr("sip:alice@example.com;tag=88;user=phone")
    assert address.uri.params == {}
    assert address.params == {"tag": "88", "user": "phone"}


def test_addr_spec_with_a_comma_or_question_mark_is_rejected() -> None:
    for value in ("sip:a@b?x=y", "sip:a@b,c"):
        with pytest.raises(ParseError):
            parse_name_addr(value)


def test_name_addr_with_ipv6_host() -> None:
    address = parse_name_addr("<sip:[2001:db8::10]:5070>;expires=60")
    assert (address.uri.host, address.uri.port) == ("[2001:db8::10]", 5070)
    assert address.params == {"expires": "60"}


@pytest.mark.parametrize(
    "value", ["", '"open <sip:a@b>', "<sip:a@b", "<sip:a@b> junk", 'Bad"Name <sip:a@b>']
)
def test_bad_name_addr_is_a_parse_error(value: str) -> None:
    with pytest.raises(ParseError):
        parse_name_addr(value)


# -- Via and CSeq


def test_via_with_ipv6_sent_by_and_parameters() -> None:
    via = parse_via("SIP/2.0/tls [2001:db8::10]:5070;branch=z9hG4bKx;rport;received=192.0.2.1")
    assert (via.transport, via.host, via.port, via.branch) == (
        "TLS",
        "[2001:db8::10]",
        5070,
        "z9hG4bKx",
    )
    assert via.params["rport"] is None


def test_via_with_whitespace_everywhere_allowed() -> None:
    via = parse_via("SIP / 2.0 / UDP   host.example.com : 5062 ; branch = z9hG4bKy")
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP",
        "host.example.com",
        5062,
        "z9hG4bKy",
    )


@pytest.mark.parametrize(
    "value",
    ["SIP/2.0/UDP", "SIP/3.0/UDP h", "SIP/2.0/UDP h:99999", "SIP/2.0/UDP h;;", "HTTP/1.1 h"],
)
def test_bad_via_is_a_parse_error(value: str) -> None:
    with pytest.raises(ParseError):
        parse_via(value)


def test_top_via_is_the_first_entry_of_the_first_line() -> None:
    assert top_via(["SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b", "SIP/2.0/UDP c"]) == (
        "SIP/2.0/UDP a;branch=1"
    )
    for values in ([], [" , "]):
        with pytest.raises(ParseError):
            top_via(values)


def test_cseq_number_and_method() -> None:
    assert parse_cseq("0009  INVITE") == (9, "INVITE")
    assert parse_cseq(f"{2**31 - 1} ACK") == (2**31 - 1, "ACK")


@pytest.mark.parametrize(
    "value",
    ["", "1", "INVITE", "1 2 3", f"{2**31} INVITE", "-1 INVITE", "١ INVITE", "9" * 5000 + " A"],
)
def test_bad_cseq_is_a_parse_error(value: str) -> None:
    with pytest.raises(ParseError):
        parse_cseq(value)
