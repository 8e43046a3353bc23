"""Bytes to SIP messages: start line, header fields, body framing.

This is the hot path of every SIP packet, so it does the least work that is
still correct: split lines, unfold, map compact names, frame the body.
Structured header parsing is left to `cms.sip.headers`, on demand.
"""

from __future__ import annotations

import re

from .errors import ParseError
from .message import COMPACT_FORMS, Headers, Message, Request, Response

DEFAULT_MAX_SIZE = 65_535

# Folded continuation lines (RFC 3261 §7.3.1): CRLF followed by SP / HTAB.
_FOLD = re.compile(r"\r?\n[ \t]+")
# The same, as a quick test: a literal first character lets `re` scan fast.
_HAS_FOLD = re.compile(r"\n[ \t]")
# The empty line ending the header section, tolerating bare LF line ends.
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")


def parse_message(
    data: bytes, *, datagram: bool = True, max_size: int = DEFAULT_MAX_SIZE
) -> Message:
    """Parse one complete SIP message.

    `datagram` selects RFC 3261 §18.3 framing: over UDP a missing Content-Length
    means "the rest of the datagram", a too-large one is an error and extra bytes
    are discarded; over a stream the caller has framed the message already.

    A request whose start line or a header line is malformed is still read to
    the end, so the `ParseError` carries a `partial` request a 400 can answer.
    Errors in responses have status 0: a response is never answered.
    """
    if len(data) > max_size:
        raise ParseError(f"message of {len(data)} bytes exceeds {max_size}", 513)
    if not data or data[0] in (13, 10):
        # RFC 3261 §7.5: ignore CRLFs before the start line (stream keep-alives).
        data = data.lstrip(b"\r\n")
        if not data:
            raise ParseError("empty message", 0)
    error: str | None = None
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head = _decode(data[:end])
        body = data[end + 4 :]
        if _HAS_FOLD.search(head) is not None:
            head = _FOLD.sub(" ", head)
        lines = head.split("\r\n")
        # Every CR and LF must be part of a CRLF line end; else take the slow path.
        count = len(lines) - 1
        if head.count("\n") != count or head.count("\r") != count:
            lines, body, error = _split_lenient(data)
    else:
        lines, body, error = _split_lenient(data)

    start = lines[0]
    message: Message
    partial: Request | None
    if start[3:4] == "/":
        # No method contains "/": this is a status line (or garbage, dropped alike).
        message = _parse_status_line(start)
        partial = None
    else:
        try:
            message = partial = _parse_request_line(start)
        except ParseError as exc:
            # Read the headers anyway: with Via, From, To, Call-ID, CSeq a 400 can be sent.
            parts = start.split()
            message = partial = Request(
                parts[0] if parts else "", parts[1] if len(parts) > 1 else "", Headers()
            )
            error = error or str(exc)
    headers = message.headers
    known = _NAMES
    for line in lines[1:]:
        raw, colon, value = line.partition(":")
        name = known.get(raw)
        if name is None:
            name = _normalize_name(raw)
        if not colon or not name:
            if error is None:
                error = f"header line without a name: {line[:40]!r}"
            continue
        value = value.strip(" \t")
        if name in headers:
            headers[name].append(value)
        else:
            headers[name] = [value]

    if error is not None:
        raise ParseError(error, 400 if partial is not None else 0, partial)
    if partial is not None and partial.version != "SIP/2.0":
        if partial.version.upper() != "SIP/2.0":
            raise ParseError(f"unsupported version {partial.version[:20]!r}", 505, partial)
        partial.version = "SIP/2.0"

    lengths = headers.get("content-length")
    if lengths is not None:
        text = lengths[0]
        if len(lengths) != 1 or not text.isdigit() or not text.isascii():
            raise ParseError(
                f"bad Content-Length {lengths!r:.60}", 400 if partial is not None else 0, partial
            )
        # Bounded before int(): a 5,000-digit length would exceed int()'s digit limit.
        length = int(text) if len(text) < 12 else int(text.lstrip("0")[:12] or "0")
        if length > len(body):
            raise ParseError(
                f"Content-Length {length} exceeds the {len(body)} body bytes",
                400 if partial is not None else 0,
                partial,
            )
        if length < len(body):
            body = body[:length]
    elif not datagram:
        body = b""
    message.body = body
    return message


# Header names as peers spell them -> lowercase full form; peers repeat their spellings.
_NAMES: dict[str, str] = {}
_MAX_NAMES = 4096


def _normalize_name(raw: str) -> str:
    name = raw.rstrip(" \t").lower()
    if len(name) == 1:
        name = COMPACT_FORMS.get(name, name)
    if len(_NAMES) < _MAX_NAMES:
        _NAMES[raw] = name
    return name


def _decode(head: bytes) -> str:
    try:
        return head.decode()
    except UnicodeDecodeError:
        return head.decode("latin-1")


def _split_lenient(data: bytes) -> tuple[list[str], bytes, str | None]:
    """Header lines and body of a message with bare LF line ends, or no empty line at all.

    The third item is an error to report once the headers are read (a bare CR).
    """
    match = _BLANK_LINE.search(data)
    if match is not None:
        head, body = _decode(data[: match.start()]), data[match.end() :]
    else:
        head, body = _decode(data.rstrip(b"\r\n")), b""
    head = _FOLD.sub(" ", head).replace("\r\n", "\n")
    error = None
    if "\r" in head:
        # A bare CR is no line end (RFC 3261 §7): keep it out of header values.
        error = "bare CR in the header section"
        head = head.replace("\r", "\n")
    return head.split("\n"), body, error


def _parse_request_line(line: str) -> Request:
    parts = line.split(" ")
    if len(parts) != 3:
        raise ParseError(f"malformed request line {line[:80]!r}")
    method, uri, version = parts
    if not _TOKEN.match(method):
        raise ParseError(f"bad method {method[:40]!r}")
    if not uri or ":" not in uri:
        raise ParseError(f"bad Request-URI {uri[:80]!r}")
    # A bad version is reported after the headers are read, so the 505 can be addressed.
    return Request(method, uri, Headers(), b"", version)


def _parse_status_line(line: str) -> Response:
    parts = line.split(" ", 2)
    if len(parts) < 2 or parts[0].upper() != "SIP/2.0":
        raise ParseError(f"malformed status line {line[:80]!r}", 0)
    code = parts[1]
    if len(code) != 3 or not code.isdigit() or not code.isascii() or code[0] not in "123456":
        raise ParseError(f"bad status code {code[:10]!r}", 0)
    return Response(int(code), parts[2] if len(parts) == 3 else "", Headers())
