"""Structured views of header values: lists, parameters, URIs, name-addr, Via, CSeq.

Each parser takes one raw value (as kept by `Headers`) and either returns an
immutable-ish dataclass or raises `ParseError` (status 400).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote as _pct_unquote

from .errors import ParseError

MAX_CSEQ = 2**31 - 1

# Header names whose values may be comma-joined lists (RFC 3261 §7.3.1).
LIST_HEADERS = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
        "content-encoding",
        "in-reply-to",
        "alert-info",
        "call-info",
        "error-info",
        "path",
        "reply-to",
    }
)

_WS = " \t\r\n"


def split_list(value: str) -> list[str]:
    """Split a comma-joined header value at top-level commas (not in quotes or <>)."""
    if "," not in value:
        stripped = value.strip(_WS)
        return [stripped] if stripped else []
    items: list[str] = []
    start = 0
    quoted = False
    angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            item = value[start:i].strip(_WS)
            if item:
                items.append(item)
            start = i + 1
        i += 1
    if quoted:
        raise ParseError("unterminated quoted string")
    item = value[start:].strip(_WS)
    if item:
        items.append(item)
    return items


def header_values(values: list[str], name: str) -> list[str]:
    """Every element of a header over all its lines, splitting list headers at commas."""
    if name not in LIST_HEADERS:
        return list(values)
    out: list[str] = []
    for value in values:
        out.extend(split_list(value))
    return out


def unquote(text: str) -> str:
    """Strip the quotes of a quoted-string and resolve its backslash escapes."""
    text = text.strip(_WS)
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        if "\\" in inner:
            inner = re.sub(r"\\(.)", r"\1", inner, flags=re.S)
        return inner
    return text


def quote(text: str) -> str:
    """Make a quoted-string of arbitrary text."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _find_outside_quotes(text: str, chars: str, start: int = 0) -> int:
    quoted = False
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch in chars:
            return i
        i += 1
    if quoted:
        raise ParseError("unterminated quoted string")
    return -1


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    start = 0
    while True:
        end = _find_outside_quotes(text, sep, start)
        if end < 0:
            parts.append(text[start:])
            return parts
        parts.append(text[start:end])
        start = end + 1


def parse_params(text: str) -> dict[str, str | None]:
    """Parse `;name=value;flag` parameters (leading `;` optional); names are lowercased.

    Quoted values keep their quotes (use `unquote`); whitespace around `;` and `=`
    is allowed (RFC 3261 SEMI and EQUAL carry optional LWS).
    """
    params: dict[str, str | None] = {}
    text = text.strip(_WS)
    if not text:
        return params
    if text[0] == ";":
        text = text[1:]
    # Only a quoted value can hide a ';' that does not separate parameters.
    parts = _split_outside_quotes(text, ";") if '"' in text else text.split(";")
    last = len(parts) - 1
    for i, part in enumerate(parts):
        name, eq, value = part.partition("=")
        name = name.strip(_WS).lower()
        if eq:
            if not name:
                raise ParseError(f"parameter without a name in {text[:60]!r}")
            params[name] = value.strip(_WS)
        elif name:
            params[name] = None
        elif i != last:
            # An empty parameter (';;'); one trailing ';' is tolerated.
            raise ParseError(f"empty parameter in {text[:60]!r}")
    return params


def format_params(params: dict[str, str | None]) -> str:
    """Serialize parameters as `;name=value;flag`."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(slots=True)
class Uri:
    """A SIP/SIPS URI (user part kept escaped), or any other scheme as `opaque`."""

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""
    opaque: str = ""

    @property
    def is_sip(self) -> bool:
        """True for sip: and sips: URIs."""
        return self.scheme in ("sip", "sips")

    @property
    def user_unescaped(self) -> str | None:
        """The user part with %-escapes resolved."""
        return None if self.user is None else _pct_unquote(self.user, errors="surrogateescape")

    @property
    def hostport(self) -> str:
        """host[:port] as written in a URI."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def aor(self) -> str:
        """Address of record: scheme:user@host (lowercased host, no port or params)."""
        user = self.user_unescaped
        return f"{self.scheme}:{user}@{self.host.lower()}" if user else f"{self.scheme}:{self.host}"

    def __str__(self) -> str:
        if not self.is_sip:
            return f"{self.scheme}:{self.opaque}"
        userinfo = ""
        if self.user is not None:
            userinfo = self.user if self.password is None else f"{self.user}:{self.password}"
            userinfo += "@"
        headers = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{userinfo}{self.hostport}{format_params(self.params)}{headers}"


_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::([0-9]{1,5}))?\Z")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_NOT_IN_URI = re.compile(r"[ \t<>]")
_NOT_IN_SIP_URI = re.compile(r'[ \t<>"]')
_NOT_IN_ADDR_SPEC = re.compile(r"[ \t,?]")


def parse_uri(text: str) -> Uri:
    """Parse a URI (sip, sips or any other scheme)."""
    text = text.strip(_WS)
    colon = text.find(":")
    scheme = text[:colon].lower()
    rest = text[colon + 1 :]
    if scheme != "sip" and scheme != "sips":
        if colon <= 0 or not _SCHEME.match(scheme) or not rest or _NOT_IN_URI.search(rest):
            raise ParseError(f"bad URI {text[:60]!r}")
        return Uri(scheme, opaque=rest)
    if _NOT_IN_SIP_URI.search(rest):
        raise ParseError(f"bad SIP URI {text[:60]!r}")
    # '@' appears nowhere but after the userinfo, which may hold '?' and ';' (RFC 3261
    # user-unreserved; RFC 4475 intmeth): find the '@' before the headers' '?'.
    at = rest.find("@")
    user = password = None
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        pcolon = userinfo.find(":")
        if pcolon >= 0:
            user, password = userinfo[:pcolon], userinfo[pcolon + 1 :]
        else:
            user = userinfo
        if not user:
            raise ParseError(f"empty user in {text[:60]!r}")
    qmark = rest.find("?")
    headers = ""
    if qmark >= 0:
        rest, headers = rest[:qmark], rest[qmark + 1 :]
    semi = rest.find(";")
    hostport, params_text = (rest, "") if semi < 0 else (rest[:semi], rest[semi:])
    match = _HOST.match(hostport)
    if match is None:
        raise ParseError(f"bad host in {text[:60]!r}")
    host, port_text = match.groups()
    port = None
    if port_text:
        port = int(port_text)
        if port > 65535:
            raise ParseError(f"bad port in {text[:60]!r}")
    params = parse_params(params_text) if params_text else {}
    return Uri(scheme, user, password, host, port, params, headers)


@dataclass(slots=True)
class NameAddr:
    """A name-addr or addr-spec header value (From, To, Contact, Route, ...)."""

    uri: Uri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        """The tag parameter (From/To)."""
        return self.params.get("tag")

    def __str__(self) -> str:
        display = f"{quote(self.display)} " if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(value: str) -> NameAddr:
    """Parse `"Name" <uri>;params`, `Name <uri>;params` or `uri;params`."""
    value = value.strip(_WS)
    if not value:
        raise ParseError("empty address")
    display: str | None = None
    lt = _find_outside_quotes(value, "<") if '"' in value else value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        if gt < 0:
            raise ParseError(f"unterminated <uri> in {value[:60]!r}")
        name = value[:lt].strip(_WS)
        if name:
            if name[0] == '"':
                if len(name) < 2 or name[-1] != '"':
                    raise ParseError(f"bad display name in {value[:60]!r}")
                display = unquote(name)
            else:
                if '"' in name:
                    raise ParseError(f"bad display name in {value[:60]!r}")
                display = " ".join(name.split())
        uri = parse_uri(value[lt + 1 : gt])
        rest = value[gt + 1 :]
    else:
        # addr-spec: parameters after the URI belong to the header (RFC 3261 §20).
        semi = value.find(";")
        uri_text, rest = (value, "") if semi < 0 else (value[:semi], value[semi:])
        if _NOT_IN_ADDR_SPEC.search(uri_text.strip(_WS)):
            raise ParseError(f"addr-spec with reserved characters {value[:60]!r}")
        uri = parse_uri(uri_text)
    rest = rest.strip(_WS)
    if rest and rest[0] != ";":
        raise ParseError(f"junk after address in {value[:60]!r}")
    return NameAddr(uri, display, parse_params(rest) if rest else {})


@dataclass(slots=True)
class Via:
    """One Via entry."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        """The branch parameter: the transaction id when it starts with z9hG4bK."""
        return self.params.get("branch")

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


_VIA = re.compile(
    r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:\s*:\s*([0-9]{1,5}))?\s*(;.*)?\Z",
    re.S | re.I,
)


_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")


def parse_via(value: str) -> Via:
    """Parse one Via entry (not a comma-joined list: see `split_list`)."""
    match = None
    if value.startswith("SIP/2.0/"):
        # The usual spelling, without the optional LWS: no need for the full regex.
        space = value.find(" ", 8)
        if space > 8 and _TOKEN.match(value, 8, space):
            rest = value[space + 1 :]
            semi = rest.find(";")
            sent_by, params = (rest, "") if semi < 0 else (rest[:semi], rest[semi:])
            match = _HOST.match(sent_by)
            if match is not None:
                transport = value[8:space]
                host, port = match.groups()
    if match is None:
        match = _VIA.match(value)
        if match is None:
            raise ParseError(f"bad Via {value[:60]!r}")
        transport, host, port, params = match.groups()
    port_number = None
    if port:
        port_number = int(port)
        if port_number > 65535:
            raise ParseError(f"bad port in Via {value[:60]!r}")
    return Via(
        transport.upper(),
        host,
        port_number,
        parse_params(params) if params else {},
    )


def top_via(values: list[str]) -> str:
    """The first Via entry of a message's Via header values."""
    if not values:
        raise ParseError("no Via")
    first = values[0]
    if "," not in first:
        return first
    entries = split_list(first)
    if not entries:
        raise ParseError(f"empty Via {first[:60]!r}")
    return entries[0]


def parse_cseq(value: str) -> tuple[int, str]:
    """Parse `CSeq: number METHOD`; the number must fit in 31 bits."""
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii():
        raise ParseError(f"bad CSeq {value[:40]!r}")
    digits = parts[0]
    # Length first: int() refuses numbers of more than 4,300 digits.
    if len(digits) > 10 and len(digits.lstrip("0")) > 10:
        raise ParseError(f"CSeq number {digits[:20]}... too large")
    number = int(digits)
    if number > MAX_CSEQ:
        raise ParseError(f"CSeq number {number} too large")
    return number, parts[1]
