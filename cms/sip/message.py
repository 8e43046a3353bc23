"""The SIP message model: requests, responses and their header fields.

Header values are kept as the raw strings the peer sent (folded lines joined);
structured views (Via, name-addr, CSeq, ...) are parsed on demand by
`cms.sip.headers`, so a server only pays for the headers it reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# RFC 3261 §7.3.3 and later RFCs: compact form -> full lowercase name.
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# Spellings whose canonical form is not simple Title-Case.
_SPECIAL_CASE: dict[str, str] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
    "p-asserted-identity": "P-Asserted-Identity",
    "x-cms-attached-data": "X-CMS-Attached-Data",
}

_canonical_cache: dict[str, str] = {}


def canonical_name(name: str) -> str:
    """Return the conventional spelling of a (lowercase, full-form) header name."""
    spelled = _canonical_cache.get(name)
    if spelled is None:
        spelled = _SPECIAL_CASE.get(name) or "-".join(p.capitalize() for p in name.split("-"))
        if len(_canonical_cache) < 4096:
            _canonical_cache[name] = spelled
    return spelled


def normalize_name(name: str) -> str:
    """Map any spelling of a header name (any case, compact form) to its lowercase full form."""
    lowered = name.strip().lower()
    return COMPACT_FORMS.get(lowered, lowered)


REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    """Return the standard reason phrase for a status code (or a class default)."""
    return REASON_PHRASES.get(status) or REASON_PHRASES.get(status // 100 * 100, "Unknown")


class Headers(dict[str, list[str]]):
    """Header fields by lowercase full name, each a list of raw values in arrival order.

    Values of one header line are kept whole: a comma-joined `Via: a, b` is one
    value here; `cms.sip.headers.split_list` splits list-valued headers.
    Different header names keep their first-appearance order, which RFC 3261
    §7.3.1 allows a proxy or UA to rely on no further.
    """

    __slots__ = ()

    def first(self, name: str) -> str | None:
        """The first value of a header (lowercase full name), or None."""
        values = dict.get(self, name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        """All values of a header (lowercase full name), possibly empty."""
        return dict.get(self, name) or []

    def add(self, name: str, value: str) -> None:
        """Append a value, keeping existing ones."""
        name = normalize_name(name)
        values = dict.get(self, name)
        if values is None:
            self[name] = [value]
        else:
            values.append(value)

    def set(self, name: str, value: str) -> None:
        """Replace every value of a header with one value."""
        self[normalize_name(name)] = [value]

    def remove(self, name: str) -> None:
        """Drop a header if present."""
        self.pop(normalize_name(name), None)

    def lines(self) -> Iterator[tuple[str, str]]:
        """(canonical name, value) pairs, one per header line, in order."""
        for name, values in self.items():
            spelled = canonical_name(name)
            for value in values:
                yield spelled, value

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> Headers:
        """Build from (name, value) pairs in any spelling."""
        headers = cls()
        for name, value in pairs:
            headers.add(name, value)
        return headers


@dataclass(slots=True, eq=True)
class Request:
    """A SIP request; `uri` is the Request-URI as sent."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"

    def encode(self) -> bytes:
        """Serialize to wire bytes, with Content-Length always present and correct."""
        return _encode(f"{self.method} {self.uri} {self.version}\r\n", self.headers, self.body)

    __bytes__ = encode


@dataclass(slots=True, eq=True)
class Response:
    """A SIP response."""

    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"

    def __post_init__(self) -> None:
        if not self.reason:
            self.reason = reason_phrase(self.status)

    def encode(self) -> bytes:
        """Serialize to wire bytes, with Content-Length always present and correct."""
        return _encode(f"{self.version} {self.status} {self.reason}\r\n", self.headers, self.body)

    __bytes__ = encode


Message = Request | Response


def _encode(start_line: str, headers: Headers, body: bytes) -> bytes:
    parts = [start_line]
    append = parts.append
    cache = _canonical_cache
    for name, values in headers.items():
        if name == "content-length":
            continue
        spelled = cache.get(name) or canonical_name(name)
        if len(values) == 1:
            append(f"{spelled}: {values[0]}\r\n")
        else:
            for value in values:
                append(f"{spelled}: {value}\r\n")
    append(f"Content-Length: {len(body)}\r\n\r\n")
    data = "".join(parts).encode()
    return data + body if body else data
