"""Semantic checks a server runs on a parsed request before acting on it.

RFC 3261 §8.2 (UAS) and §16.3 (proxy) ask for "reasonable syntax" of the
header fields the server relies on; RFC 4475 gives verdicts on torture
messages. Everything here is the peer's fault, so it raises `ParseError`
with the status to answer and the request as `partial`.

Where RFC 4475 allows a liberal reading we accept: a Date with a bad time
zone, an unquoted display name with commas (baddn), spaces inside `< >`
(badaspec), a missing branch magic cookie (badbranch), RFC 2543 syntax
without Max-Forwards or From tag (inv2543), and non-SIP URIs in To, From and
Contact (unksm2). Content-Length framing is the parser's job.
"""

from __future__ import annotations

import re

from .errors import ParseError
from .headers import parse_cseq, parse_name_addr, parse_uri, parse_via, top_via
from .message import Request, Response, canonical_name
from .responses import make_response

MAX_FORWARDS_LIMIT = 255

# RFC 3261 §8.1.1: what every request carries (Max-Forwards is left out for RFC 2543 peers).
_MANDATORY = ("via", "to", "from", "call-id", "cseq")
# Single-valued fields where two lines make the request ambiguous (RFC 4475 multi01).
_SINGLE = ("to", "from", "call-id", "cseq", "max-forwards", "content-length", "content-type")
# The start of a Via entry up to its sent-by, for any SIP version (RFC 4475 badvers).
_SENT_BY = re.compile(
    r"\s*SIP\s*/\s*[0-9]+\.[0-9]+\s*/\s*[A-Za-z0-9\-.!%*_+`'~]+\s+"
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:\s*:\s*[0-9]{1,5})?\s*(?:;|\Z)",
    re.I,
)
# What a response copies from its request (RFC 3261 §8.2.6.2); Via is checked apart.
_ADDRESSING = ("from", "to", "call-id", "cseq")


def validate_request(request: Request, *, full: bool = True, check_via: bool = True) -> None:
    """Raise `ParseError` (with `status`, and `partial=request`) if the request is unusable.

    Always checks: the mandatory fields are present; single-valued fields appear
    once; CSeq is `number METHOD` with number < 2**31 and METHOD equal to the
    request method; Max-Forwards is 0-255; Expires is a number; the top Via parses.
    With `full` (the default) it also parses the Request-URI, To and From; a
    caller that parses those itself anyway (the registrar) passes `full=False`
    and must then treat their `ParseError` as a 400. `check_via=False` skips the
    top Via for a caller that has parsed it already (the transport, for rport).
    """
    headers = request.headers
    get = headers.get
    # Unrolled: this runs for every request, and the registrar sees thousands a second.
    via, to, from_, call_id, cseq = get("via"), get("to"), get("from"), get("call-id"), get("cseq")
    if not (via and to and from_ and call_id and cseq):
        missing = [canonical_name(name) for name in _MANDATORY if not get(name)]
        raise _bad(f"missing {', '.join(missing)}", request)
    max_forwards = get("max-forwards")
    if (
        len(to) != 1
        or len(from_) != 1
        or len(call_id) != 1
        or len(cseq) != 1
        or (max_forwards is not None and len(max_forwards) > 1)
        or ((content_type := get("content-type")) is not None and len(content_type) > 1)
        or ((content_length := get("content-length")) is not None and len(content_length) > 1)
    ):
        repeated = [canonical_name(name) for name in _SINGLE if len(get(name) or ()) > 1]
        raise _bad(f"repeated {', '.join(repeated)}", request)
    if not call_id[0]:
        raise _bad("empty Call-ID", request)

    try:
        _, method = parse_cseq(cseq[0])
    except ParseError as exc:
        raise _bad(str(exc), request) from exc
    if method != request.method:
        raise _bad(f"CSeq method {method[:20]!r} is not {request.method[:20]!r}", request)

    if max_forwards:
        value = max_forwards[0]
        # Leading zeros are fine (RFC 4475 wsinv has 0068); the length test keeps int() cheap.
        if (
            not value.isdigit()
            or not value.isascii()
            or (len(value) > 3 and len(value.lstrip("0")) > 3)
            or int(value) > MAX_FORWARDS_LIMIT
        ):
            raise _bad(f"bad Max-Forwards {value[:20]!r}", request)

    expires = get("expires")
    if expires:
        for value in expires:
            # Any length: RFC 4475 scalar02 says an overlarge value means the default.
            if not value.isdigit() or not value.isascii():
                raise _bad(f"bad Expires {value[:20]!r}", request)

    if check_via:
        try:
            parse_via(top_via(via))
        except ParseError as exc:
            raise _bad(f"bad top Via: {exc}", request) from exc

    if full:
        _check_full(request)


def _check_full(request: Request) -> None:
    try:
        parse_uri(request.uri)
    except ParseError as exc:
        raise _bad(f"bad Request-URI: {exc}", request) from exc
    headers = request.headers
    for name in ("to", "from"):
        try:
            parse_name_addr(headers[name][0])
        except ParseError as exc:
            raise _bad(f"bad {canonical_name(name)}: {exc}", request) from exc


def _bad(reason: str, request: Request) -> ParseError:
    return ParseError(reason, 400, request)


def can_answer(request: Request) -> bool:
    """True when a response to this request can be addressed (and is allowed: not an ACK).

    A response needs a top Via with a usable sent-by (broken parameters and another
    protocol version are tolerated, so a 400 or 505 can still report them) and
    From, To, Call-ID and CSeq to copy.
    """
    if request.method == "ACK":
        return False
    headers = request.headers
    for name in _ADDRESSING:
        if not headers.get(name):
            return False
    values = headers.get("via")
    if not values:
        return False
    try:
        top = top_via(values)
    except ParseError:
        return False
    return _SENT_BY.match(top) is not None


def build_error_response(request: Request, status: int, reason: str | None = None) -> Response:
    """An error response addressed from the request's Via, From, To (tagged), Call-ID, CSeq.

    `reason` defaults to the standard phrase; peer text in it is flattened to
    one line so it cannot inject header fields.
    """
    phrase = " ".join(reason.split())[:200] if reason else ""
    return make_response(request, status, phrase)
