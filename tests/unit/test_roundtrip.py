"""Property tests: what we encode we parse back, and no input makes the parser crash."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cms.sip.errors import ParseError
from cms.sip.headers import (
    NameAddr,
    Uri,
    Via,
    parse_name_addr,
    parse_uri,
    parse_via,
    quote,
)
from cms.sip.message import Headers, Request, Response, normalize_name
from cms.sip.parser import parse_message
from cms.sip.validate import build_error_response, can_answer, validate_request

TOKEN_CHARS = string.ascii_letters + string.digits + "-.!%*_+`'~"
ALNUM = string.ascii_letters + string.digits

tokens = st.text(TOKEN_CHARS, min_size=1, max_size=16)
lower_tokens = tokens.map(str.lower)

# Printable text (no controls, no surrogates): what a header value or reason phrase may hold.
printable = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")),
    max_size=40,
)
header_values = printable.filter(lambda v: v == v.strip(" \t"))


def escaped(chars: str) -> st.SearchStrategy[str]:
    """Text of `chars` and %-escapes."""
    piece = st.one_of(
        st.sampled_from(list(chars)),
        st.integers(0, 255).map(lambda b: f"%{b:02X}"),
    )
    return st.lists(piece, min_size=1, max_size=12).map("".join)


UNRESERVED = ALNUM + "-_.!~*'()"
users = escaped(UNRESERVED + "&=+$,;?/")
passwords = escaped(UNRESERVED + "&=+$,")

labels = st.text(ALNUM + "-", min_size=1, max_size=10).filter(
    lambda s: s[0] != "-" and s[-1] != "-"
)
domains = st.lists(labels, min_size=1, max_size=4).map(".".join)
hosts = st.one_of(
    domains,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)
ports = st.none() | st.integers(0, 65535)

param_values = st.text(TOKEN_CHARS + "[]/:&+$", max_size=12)
uri_params = st.dictionaries(lower_tokens, st.none() | param_values, max_size=4)
uri_headers = st.lists(
    st.tuples(tokens, st.text(TOKEN_CHARS + "[]/?:+$", max_size=8)), max_size=3
).map(lambda pairs: "&".join(f"{n}={v}" for n, v in pairs))


@st.composite
def sip_uris(draw: st.DrawFn) -> Uri:
    user = draw(st.none() | users)
    password = draw(passwords) if user is not None and draw(st.booleans()) else None
    return Uri(
        draw(st.sampled_from(["sip", "sips"])),
        user,
        password,
        draw(hosts),
        draw(ports),
        draw(uri_params),
        draw(uri_headers),
    )


other_uris = st.builds(
    lambda scheme, opaque: Uri(scheme, opaque=opaque),
    st.from_regex(r"[a-z][a-z0-9+.\-]{0,8}", fullmatch=True).filter(
        lambda s: s not in ("sip", "sips")
    ),
    st.text(
        st.characters(
            blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters="<>"
        ),
        min_size=1,
        max_size=20,
    ),
)
uris = st.one_of(sip_uris(), other_uris)

# Header parameters: tokens, or quoted strings that may hold ';', ',' and '"'.
header_param_values = st.one_of(st.none(), st.text(TOKEN_CHARS, max_size=12), printable.map(quote))
header_params = st.dictionaries(lower_tokens, header_param_values, max_size=4)

name_addrs = st.builds(
    NameAddr, uris, st.none() | printable.filter(lambda s: s.strip() != ""), header_params
)
vias = st.builds(
    Via,
    tokens.map(str.upper),
    hosts,
    ports,
    header_params,
)


@given(uris)
def test_uri_survives_str_and_parse(uri: Uri) -> None:
    assert str(parse_uri(str(uri))) == str(uri)
    assert parse_uri(str(uri)) == uri


@given(name_addrs)
def test_name_addr_survives_str_and_parse(address: NameAddr) -> None:
    parsed = parse_name_addr(str(address))
    assert str(parsed) == str(address)
    assert parsed.uri == address.uri
    assert parsed.params == address.params
    assert parsed.display == address.display


@given(vias)
def test_via_survives_str_and_parse(via: Via) -> None:
    assert parse_via(str(via)) == via


# -- whole messages


def expected_headers(pairs: list[tuple[str, str]], body: bytes) -> Headers:
    headers = Headers.of(pairs)
    headers["content-length"] = [str(len(body))]
    return headers


header_names = tokens.filter(lambda n: normalize_name(n) != "content-length")
header_lists = st.lists(st.tuples(header_names, header_values), max_size=12)
bodies = st.binary(max_size=200)


@given(tokens, sip_uris(), header_lists, bodies)
def test_request_survives_encode_and_parse(
    method: str, uri: Uri, pairs: list[tuple[str, str]], body: bytes
) -> None:
    request = Request(method, str(uri), Headers.of(pairs), body)
    parsed = parse_message(request.encode())
    assert isinstance(parsed, Request)
    assert (parsed.method, parsed.uri, parsed.version) == (method, str(uri), "SIP/2.0")
    expected = expected_headers(pairs, body)
    assert dict(parsed.headers) == dict(expected)
    assert list(parsed.headers) == list(expected)
    assert parsed.body == body


@given(st.integers(100, 699), printable, header_lists, bodies)
def test_response_survives_encode_and_parse(
    status: int, reason: str, pairs: list[tuple[str, str]], body: bytes
) -> None:
    response = Response(status, reason, Headers.of(pairs), body)
    parsed = parse_message(response.encode())
    assert isinstance(parsed, Response)
    assert (parsed.status, parsed.reason) == (status, response.reason)
    assert dict(parsed.headers) == dict(expected_headers(pairs, body))
    assert parsed.body == body


@given(tokens, sip_uris(), header_lists, bodies)
def test_stream_framed_request_survives_encode_and_parse(
    method: str, uri: Uri, pairs: list[tuple[str, str]], body: bytes
) -> None:
    request = Request(method, str(uri), Headers.of(pairs), body)
    parsed = parse_message(request.encode(), datagram=False)
    assert isinstance(parsed, Request)
    assert parsed.body == body


# -- robustness: anything in, ParseError or a message out

SEED = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds, SIP/2.0/TCP [2001:db8::1]\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@example.com>\r\n'
    b"f: <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Expires: 60\r\n"
    b"Subject: folded\r\n  line\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)
SPECIAL = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b'"',
    b"<",
    b">",
    b"\\",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"SIP/2.0",
    b"0",
    b"9" * 12,
    b"\r\n\r\n",
    b"%",
]


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    data = bytearray(SEED)
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = draw(st.one_of(st.sampled_from(SPECIAL), st.binary(min_size=1, max_size=4)))
        if action == "insert":
            data[pos:pos] = chunk
        elif action == "delete":
            del data[pos : pos + draw(st.integers(1, 20))]
        else:
            data[pos : pos + len(chunk)] = chunk
    return bytes(data)


random_inputs = st.one_of(
    st.binary(max_size=300),
    mutated_messages(),
    st.lists(st.sampled_from(SPECIAL + [b"Via", b"To", b"l", b"INVITE"]), max_size=40).map(
        b"".join
    ),
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_inputs)
def test_parser_and_validator_raise_nothing_but_parse_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except ParseError as exc:
        assert exc.status in (0, 400, 505, 513)
        request = exc.partial
        if request is None:
            return
    else:
        for values in message.headers.values():
            for value in values:
                assert "\r" not in value and "\n" not in value
        if isinstance(message, Response):
            return
        request = message
        try:
            validate_request(request)
        except ParseError as exc:
            assert exc.status == 400
            assert exc.partial is request
    if can_answer(request):
        response = parse_message(build_error_response(request, 400, "Bad Request").encode())
        assert isinstance(response, Response)
        assert response.status == 400
