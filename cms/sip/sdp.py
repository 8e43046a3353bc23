"""SDP (RFC 8866) parsing and serialization, and RFC 3264 offer/answer for one audio stream.

`parse_sdp` turns a body into a `SessionDescription`; `SessionDescription.encode`
turns it back into CRLF-terminated bytes, so `parse_sdp(sd.encode()) == sd`.
The rtpmap/fmtp/ptime/direction attributes are structured fields; every other
attribute is kept in order as an `Attribute`. Parsing is strict about what an
answer depends on (v/o/s/t order, m= and c= syntax, ports) and lenient about the
rest: unknown line types are skipped and a malformed attribute of interest
(`a=rtpmap:31 LPC`) is kept as a plain attribute.

`make_offer`, `negotiate` and `make_answer` cover what a B2BUA needs: G.711 plus
RFC 4733 telephone-event, the offerer's codec preference, direction and hold.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Literal

from .errors import ParseError
from .randomness import random_bytes

__all__ = [
    "CN",
    "DEFAULT_PTIME",
    "G722",
    "G729",
    "PCMA",
    "PCMU",
    "STATIC_PAYLOAD_TYPES",
    "SUPPORTED_PROTOS",
    "TELEPHONE_EVENT",
    "Attribute",
    "Bandwidth",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "Negotiated",
    "Origin",
    "RtpMap",
    "SessionDescription",
    "Timing",
    "is_hold",
    "make_answer",
    "make_offer",
    "negotiate",
    "next_version",
    "parse_sdp",
    "with_direction",
]

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]

# A dict rather than a set so a lookup also narrows `str` to `Direction` for mypy.
_DIRECTION_OF: dict[str, Direction] = {
    "sendrecv": "sendrecv",
    "sendonly": "sendonly",
    "recvonly": "recvonly",
    "inactive": "inactive",
}
# (we send, we receive) for each direction, and back.
_BITS: dict[Direction, tuple[bool, bool]] = {
    "sendrecv": (True, True),
    "sendonly": (True, False),
    "recvonly": (False, True),
    "inactive": (False, False),
}
_FROM_BITS: dict[tuple[bool, bool], Direction] = {bits: d for d, bits in _BITS.items()}

# Only plain RTP: we do no SRTP (SAVP), and no RTCP feedback (AVPF).
SUPPORTED_PROTOS = frozenset({"RTP/AVP"})

# G.711's default packetization (RFC 3551 §4.5), assumed when an offer has no a=ptime.
DEFAULT_PTIME = 20

# RFC 2543 hold: a connection address of all zeros (RFC 3264 §8.4 still requires
# an answerer to understand it).
_HOLD_ADDRESS = "0.0.0.0"


# --------------------------------------------------------------------------- codecs


@dataclass(frozen=True, slots=True)
class Codec:
    """An RTP payload format as used in one session: encoding, clock and payload type."""

    name: str
    clock_rate: int
    payload_type: int
    channels: int = 1
    fmtp: str | None = None

    def same_format(self, other: Codec) -> bool:
        """True when both describe the same encoding (payload type and fmtp aside)."""
        return (
            self.name.casefold() == other.name.casefold()
            and self.clock_rate == other.clock_rate
            and self.channels == other.channels
        )


PCMU = Codec("PCMU", 8000, 0)
PCMA = Codec("PCMA", 8000, 8)
G722 = Codec("G722", 8000, 9)  # 8000 by RFC 3551's historical error; it samples at 16 kHz
CN = Codec("CN", 8000, 13)
G729 = Codec("G729", 8000, 18)  # known, so it is recognised, but we do not implement it
TELEPHONE_EVENT = Codec("telephone-event", 8000, 101, fmtp="0-16")

# RFC 3551 table 4: audio payload types usable without an a=rtpmap.
STATIC_PAYLOAD_TYPES: dict[int, Codec] = {
    codec.payload_type: codec
    for codec in (
        PCMU,
        Codec("GSM", 8000, 3),
        Codec("G723", 8000, 4),
        Codec("DVI4", 8000, 5),
        Codec("DVI4", 16000, 6),
        Codec("LPC", 8000, 7),
        PCMA,
        G722,
        Codec("L16", 44100, 10, channels=2),
        Codec("L16", 44100, 11),
        Codec("QCELP", 8000, 12),
        CN,
        Codec("MPA", 90000, 14),
        Codec("G728", 8000, 15),
        Codec("DVI4", 11025, 16),
        Codec("DVI4", 22050, 17),
        G729,
    )
}

# What a codec name must mean before we accept it (a "PCMU/16000" is not G.711).
_KNOWN_BY_NAME: dict[str, Codec] = {
    codec.name.casefold(): codec for codec in (PCMU, PCMA, G722, CN, G729)
}


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class Origin:
    """The o= line: who made the session and which version of it this is."""

    username: str
    session_id: int
    session_version: int
    net_type: str
    addr_type: str
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.net_type} {self.addr_type} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """A c= line; `ttl` and `count` only appear on multicast addresses."""

    net_type: str
    addr_type: str
    address: str
    ttl: int | None = None
    count: int | None = None

    @classmethod
    def of(cls, address: str) -> Connection:
        """An IN IP4 or IN IP6 connection, chosen by the address's syntax."""
        return cls("IN", _addr_type(address), address)

    def __str__(self) -> str:
        text = f"{self.net_type} {self.addr_type} {self.address}"
        if self.ttl is not None:
            text += f"/{self.ttl}"
        if self.count is not None:
            text += f"/{self.count}"
        return text


@dataclass(frozen=True, slots=True)
class Timing:
    """A t= line with the r= lines that follow it (kept as written)."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """A b= line: bandwidth type (AS, CT, TIAS, ...) and value."""

    type: str
    value: int


@dataclass(frozen=True, slots=True)
class Attribute:
    """An a= line not given a field of its own; `value` is None for a flag (`a=rtcp-mux`)."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class RtpMap:
    """An a=rtpmap value; `channels` is None when the line has no channel count."""

    encoding: str
    clock_rate: int
    channels: int | None = None

    def __str__(self) -> str:
        text = f"{self.encoding}/{self.clock_rate}"
        return text if self.channels is None else f"{text}/{self.channels}"


@dataclass(slots=True)
class MediaDescription:
    """One m= section; `direction` is already resolved against the session level."""

    kind: str
    port: int
    proto: str
    formats: list[str] = field(default_factory=list)
    port_count: int | None = None
    info: str | None = None
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    key: str | None = None
    rtpmap: dict[int, RtpMap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: Direction = "sendrecv"
    ptime: int | None = None
    attributes: list[Attribute] = field(default_factory=list)

    @property
    def proto_supported(self) -> bool:
        """True when we can carry this stream (plain RTP/AVP)."""
        return self.proto.upper() in SUPPORTED_PROTOS

    @property
    def payload_types(self) -> list[int]:
        """The formats that are RTP payload type numbers, in offer order."""
        return [int(fmt) for fmt in self.formats if _is_number(fmt)]

    def codec(self, payload_type: int) -> Codec | None:
        """What a payload type means here: its rtpmap, else the static table."""
        rtpmap = self.rtpmap.get(payload_type)
        fmtp = self.fmtp.get(payload_type)
        if rtpmap is not None:
            channels = 1 if rtpmap.channels is None else rtpmap.channels
            return Codec(rtpmap.encoding, rtpmap.clock_rate, payload_type, channels, fmtp)
        static = STATIC_PAYLOAD_TYPES.get(payload_type)
        if static is None or fmtp is None:
            return static
        return replace(static, fmtp=fmtp)

    def codecs(self) -> list[Codec]:
        """Every format this section lists that we can name, in preference order."""
        found = []
        for payload_type in self.payload_types:
            codec = self.codec(payload_type)
            if codec is not None:
                found.append(codec)
        return found

    def attribute(self, name: str) -> str | None:
        """The value of the first plain attribute called `name` ('' for a flag), or None."""
        for attribute in self.attributes:
            if attribute.name == name:
                return "" if attribute.value is None else attribute.value
        return None


@dataclass(slots=True)
class SessionDescription:
    """A whole SDP body; media-level fields live on each `MediaDescription`."""

    origin: Origin
    name: str = "-"
    info: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    times: list[Timing] = field(default_factory=lambda: [Timing()])
    time_zones: str | None = None
    key: str | None = None
    direction: Direction | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    @property
    def audio(self) -> MediaDescription | None:
        """The first audio stream that is not disabled (port 0), if any."""
        for media in self.media:
            if media.kind == "audio" and media.port != 0:
                return media
        return None

    def connection_for(self, media: MediaDescription) -> Connection | None:
        """Where a stream's media goes: its own c= line, else the session's."""
        return media.connection or self.connection

    def encode(self) -> bytes:
        """Serialize to wire bytes (CRLF line ends)."""
        return str(self).encode("utf-8", "surrogateescape")

    __bytes__ = encode

    def __str__(self) -> str:
        # RFC 8866 §5 fixes the order of line types; only attribute order is free.
        lines = ["v=0", f"o={self.origin}", f"s={self.name or ' '}"]
        append = lines.append
        if self.info is not None:
            append(f"i={self.info}")
        if self.uri is not None:
            append(f"u={self.uri}")
        # The `if`s spare a generator per empty list: this runs for every offer and answer.
        if self.emails:
            lines.extend(f"e={email}" for email in self.emails)
        if self.phones:
            lines.extend(f"p={phone}" for phone in self.phones)
        if self.connection is not None:
            append(f"c={self.connection}")
        if self.bandwidths:
            lines.extend(f"b={b.type}:{b.value}" for b in self.bandwidths)
        # t= is mandatory; an empty list still has to produce a valid body.
        for timing in self.times or [Timing()]:
            append(f"t={timing.start} {timing.stop}")
            if timing.repeats:
                lines.extend(f"r={repeat}" for repeat in timing.repeats)
        if self.time_zones is not None:
            append(f"z={self.time_zones}")
        if self.key is not None:
            append(f"k={self.key}")
        if self.attributes:
            lines.extend(f"a={attribute}" for attribute in self.attributes)
        if self.direction is not None:
            append(f"a={self.direction}")
        inherited = self.direction or "sendrecv"
        for media in self.media:
            _encode_media(media, inherited, lines)
        append("")
        return "\r\n".join(lines)


def _encode_media(media: MediaDescription, inherited: Direction, lines: list[str]) -> None:
    append = lines.append
    port = str(media.port) if media.port_count is None else f"{media.port}/{media.port_count}"
    append(" ".join([f"m={media.kind}", port, media.proto, *media.formats]))
    if media.info is not None:
        append(f"i={media.info}")
    if media.connection is not None:
        append(f"c={media.connection}")
    if media.bandwidths:
        lines.extend(f"b={b.type}:{b.value}" for b in media.bandwidths)
    if media.key is not None:
        append(f"k={media.key}")
    # rtpmap and fmtp next to each other in format order, as peers write them.
    done: set[int] = set()
    for payload_type in [*media.payload_types, *media.rtpmap, *media.fmtp]:
        if payload_type in done:
            continue
        done.add(payload_type)
        rtpmap = media.rtpmap.get(payload_type)
        if rtpmap is not None:
            append(f"a=rtpmap:{payload_type} {rtpmap}")
        fmtp = media.fmtp.get(payload_type)
        if fmtp is not None:
            append(f"a=fmtp:{payload_type} {fmtp}")
    if media.ptime is not None:
        append(f"a=ptime:{media.ptime}")
    if media.attributes:
        lines.extend(f"a={attribute}" for attribute in media.attributes)
    # A rejected stream needs no direction; parsing restores the inherited one.
    if media.port != 0 or media.direction != inherited:
        append(f"a={media.direction}")


# --------------------------------------------------------------------------- parsing


def _is_number(text: str) -> bool:
    # str.isdigit alone accepts '²' and other digits int() rejects; the length cap
    # keeps int() far from its 4300-digit limit.
    return text.isascii() and text.isdigit() and len(text) <= 40


def _number(text: str, what: str) -> int:
    if not _is_number(text):
        raise ParseError(f"bad {what} {text[:40]!r} in SDP", 400)
    return int(text)


def _addr_type(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise ParseError(f"o= needs 6 fields: {value[:80]!r}", 400)
    username, session_id, version, net_type, addr_type, address = parts
    return Origin(
        username,
        _number(session_id, "o= session id"),
        _number(version, "o= session version"),
        net_type,
        addr_type,
        address,
    )


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise ParseError(f"c= needs 3 fields: {value[:80]!r}", 400)
    net_type, addr_type, address = parts
    if "/" not in address:
        return Connection(net_type, addr_type, address)
    # Multicast: IP4 is address/ttl[/count], IP6 is address[/count] (RFC 8866 §5.7).
    pieces = address.split("/")
    host = pieces[0]
    if not host:
        raise ParseError(f"c= without an address: {value[:80]!r}", 400)
    if addr_type == "IP4" and len(pieces) in (2, 3):
        ttl = _number(pieces[1], "c= ttl")
        count = _number(pieces[2], "c= address count") if len(pieces) == 3 else None
        return Connection(net_type, addr_type, host, ttl, count)
    if addr_type == "IP6" and len(pieces) == 2:
        return Connection(net_type, addr_type, host, None, _number(pieces[1], "c= count"))
    raise ParseError(f"bad c= address {address[:80]!r}", 400)


def _parse_timing(value: str) -> Timing:
    parts = value.split()
    if len(parts) != 2:
        raise ParseError(f"t= needs 2 fields: {value[:80]!r}", 400)
    return Timing(_number(parts[0], "t= start time"), _number(parts[1], "t= stop time"))


def _parse_bandwidth(value: str) -> Bandwidth:
    kind, colon, amount = value.partition(":")
    if not colon or not kind:
        raise ParseError(f"bad b= line {value[:80]!r}", 400)
    return Bandwidth(kind, _number(amount, "b= bandwidth"))


def _parse_media(value: str, direction: Direction) -> MediaDescription:
    parts = value.split()
    # RFC 8866 requires at least one format; a peer's rejected stream without one
    # is still understandable, so we accept it.
    if len(parts) < 3:
        raise ParseError(f"m= needs media, port and proto: {value[:80]!r}", 400)
    port_text, slash, count_text = parts[1].partition("/")
    port = _number(port_text, "m= port")
    if port > 65535:
        raise ParseError(f"m= port {port} out of range", 400)
    count = _number(count_text, "m= port count") if slash else None
    return MediaDescription(
        kind=parts[0],
        port=port,
        proto=parts[2],
        formats=parts[3:],
        port_count=count,
        direction=direction,
    )


# a=rtpmap:<payload type> <encoding name>/<clock rate>[/<channels>] (RFC 8866 §6.6)
_RTPMAP_RE = re.compile(r"([0-9]{1,3}) +([^\s/]+)/([0-9]{1,10})(?:/([0-9]{1,3}))?\s*", re.ASCII)


def _media_attribute(media: MediaDescription, name: str, value: str | None) -> None:
    if value is None:
        direction = _DIRECTION_OF.get(name)
        if direction is not None:
            media.direction = direction
            return
    elif name == "rtpmap":
        match = _RTPMAP_RE.fullmatch(value)
        if match is not None:
            pt, encoding, clock, channels = match.groups()
            media.rtpmap[int(pt)] = RtpMap(
                encoding, int(clock), None if channels is None else int(channels)
            )
            return
    elif name == "fmtp":
        pt, _, params = value.partition(" ")
        params = params.strip()
        if _is_number(pt) and params:
            media.fmtp[int(pt)] = params
            return
    elif name == "ptime" and _is_number(value):
        media.ptime = int(value)
        return
    # Anything else, including a malformed rtpmap we cannot use, is kept as written.
    media.attributes.append(Attribute(name, value))


def _check_head(lines: list[str]) -> None:
    # RFC 8866 §5: v=, o= and s= come first, in this order.
    for index, expected in enumerate(("v=", "o=", "s=")):
        if index >= len(lines) or not lines[index].startswith(expected):
            got = repr(lines[index][:40]) if index < len(lines) else "nothing"
            raise ParseError(f"SDP line {index + 1} must be {expected}, got {got}", 400)
    if lines[0] != "v=0":
        raise ParseError(f"unsupported SDP version {lines[0][:20]!r}", 400)


def parse_sdp(text: str | bytes) -> SessionDescription:
    """Parse an SDP body; raise `ParseError` (status 400) when it is malformed."""
    if not isinstance(text, str):
        text = bytes(text).decode("utf-8", "surrogateescape")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            raise ParseError("bare CR in SDP", 400)

    # Blank lines (a trailing CRLF, an empty line) carry nothing.
    lines = [line for raw in text.split("\n") if (line := raw.rstrip(" \t"))]
    _check_head(lines)
    sd = SessionDescription(origin=_parse_origin(lines[1][2:]), name=lines[2][2:], times=[])
    media: MediaDescription | None = None
    session_direction: Direction | None = None
    for line in islice(lines, 3, None):
        if line[1:2] != "=":
            raise ParseError(f"malformed SDP line {line[:40]!r}", 400)
        kind = line[0]
        value = line[2:]
        if kind == "a":
            name, colon, attr_value = value.partition(":")
            if media is not None:
                _media_attribute(media, name, attr_value if colon else None)
            elif not colon and name in _DIRECTION_OF:
                session_direction = sd.direction = _DIRECTION_OF[name]
            else:
                sd.attributes.append(Attribute(name, attr_value if colon else None))
        elif kind == "m":
            if not sd.times:
                raise ParseError("SDP m= line before any t= line", 400)
            media = _parse_media(value, session_direction or "sendrecv")
            sd.media.append(media)
        elif kind == "c":
            connection = _parse_connection(value)
            if media is not None:
                # Several c= lines only serve layered multicast; the first is the one to use.
                if media.connection is None:
                    media.connection = connection
            elif sd.connection is None:
                sd.connection = connection
            else:
                raise ParseError("two session-level c= lines in SDP", 400)
        elif kind == "b":
            (media.bandwidths if media is not None else sd.bandwidths).append(
                _parse_bandwidth(value)
            )
        elif kind == "i":
            if media is not None:
                media.info = value
            else:
                sd.info = value
        elif kind == "k":
            if media is not None:
                media.key = value
            else:
                sd.key = value
        elif kind in "vostrzuep":
            if media is not None:
                raise ParseError(f"SDP {kind}= line inside a media section", 400)
            if kind == "t":
                sd.times.append(_parse_timing(value))
            elif kind == "r":
                if not sd.times:
                    raise ParseError("SDP r= line before any t= line", 400)
                last = sd.times[-1]
                sd.times[-1] = Timing(last.start, last.stop, (*last.repeats, value))
            elif kind == "z":
                sd.time_zones = value
            elif kind == "u":
                sd.uri = value
            elif kind == "e":
                sd.emails.append(value)
            elif kind == "p":
                sd.phones.append(value)
            else:
                raise ParseError(f"repeated SDP {kind}= line", 400)
        # Unknown line types are skipped rather than failing the body: a call is
        # better served by the lines we understand.

    if not sd.times:
        raise ParseError("SDP without a t= line", 400)
    for section in sd.media:
        if section.port != 0 and section.connection is None and sd.connection is None:
            raise ParseError(f"no c= line for the {section.kind} stream", 400)
    return sd


# --------------------------------------------------------------------------- offer/answer


@dataclass(frozen=True, slots=True)
class Negotiated:
    """The outcome of answering an offer's audio stream (RFC 3264 §6)."""

    codec: Codec
    """The codec to send, with the offerer's payload type number."""
    telephone_event_pt: int | None
    """The offerer's RFC 4733 payload type at the codec's clock rate, if it offered one."""
    remote: tuple[str, int]
    """Where to send RTP: (host, port) of the offered stream."""
    direction: Direction
    """The direction of our answer (ours, not the offerer's)."""
    ptime: int
    """Packetization in ms the offerer asked for, or G.711's usual 20."""
    media_index: int = 0
    """Which m= line of the offer was accepted."""


def _session_id() -> int:
    # 31 bits: some peers read the session id into a signed 32-bit integer.
    return int.from_bytes(random_bytes(4), "big") & 0x7FFFFFFF


def _audio_section(
    port: int,
    codecs: Sequence[Codec],
    telephone_event: Codec | None,
    direction: Direction,
    ptime: int | None,
) -> MediaDescription:
    media = MediaDescription(kind="audio", port=port, proto="RTP/AVP", direction=direction)
    for codec in [*codecs, *([telephone_event] if telephone_event else [])]:
        media.formats.append(str(codec.payload_type))
        channels = None if codec.channels == 1 else codec.channels
        # rtpmap even for static types: RFC 8866 §6.6 recommends it, and some peers need it.
        media.rtpmap[codec.payload_type] = RtpMap(codec.name, codec.clock_rate, channels)
        if codec.fmtp is not None:
            media.fmtp[codec.payload_type] = codec.fmtp
    media.ptime = ptime
    return media


def _session(
    address: str,
    session_id: int | None,
    version: int,
    username: str,
    session_name: str,
    media: list[MediaDescription],
) -> SessionDescription:
    connection = Connection.of(address)
    origin = Origin(
        username,
        _session_id() if session_id is None else session_id,
        version,
        "IN",
        connection.addr_type,
        address,
    )
    return SessionDescription(origin=origin, name=session_name, connection=connection, media=media)


def make_offer(
    address: str,
    port: int,
    codecs: Sequence[Codec] = (PCMU, PCMA),
    telephone_event_pt: int | None = 101,
    direction: Direction = "sendrecv",
    session_id: int | None = None,
    version: int = 1,
    *,
    ptime: int | None = DEFAULT_PTIME,
    username: str = "-",
    session_name: str = "-",
) -> SessionDescription:
    """An offer of one audio stream at address:port with `codecs` in preference order."""
    telephone_event = None
    if telephone_event_pt is not None:
        # RFC 4733 §2.1: events share the audio clock, so offer them at the first codec's.
        clock = codecs[0].clock_rate if codecs else 8000
        telephone_event = Codec(
            "telephone-event", clock, telephone_event_pt, fmtp=TELEPHONE_EVENT.fmtp
        )
    media = _audio_section(port, codecs, telephone_event, direction, ptime)
    return _session(address, session_id, version, username, session_name, [media])


def _answer_direction(offered: Direction, local: Direction, held: bool) -> Direction:
    offer_sends, offer_receives = _BITS[offered]
    if held:
        offer_receives = False  # c=0.0.0.0: the offerer wants no media sent to it
    we_send, we_receive = _BITS[local]
    return _FROM_BITS[(offer_receives and we_send, offer_sends and we_receive)]


def _first_common_codec(media: MediaDescription, wanted: set[str]) -> Codec | None:
    for payload_type in media.payload_types:
        codec = media.codec(payload_type)
        if codec is None or codec.name.casefold() not in wanted:
            continue
        known = _KNOWN_BY_NAME.get(codec.name.casefold())
        if known is None or known.same_format(codec):
            return codec
    return None


def _telephone_event_pt(media: MediaDescription, clock_rate: int) -> int | None:
    for payload_type in media.payload_types:
        rtpmap = media.rtpmap.get(payload_type)
        if (
            rtpmap is not None
            and rtpmap.encoding.casefold() == "telephone-event"
            and rtpmap.clock_rate == clock_rate
        ):
            return payload_type
    return None


def negotiate(
    offer: SessionDescription,
    supported: Sequence[str] = ("PCMU", "PCMA"),
    *,
    local_direction: Direction = "sendrecv",
) -> Negotiated | None:
    """Choose what to answer; None when no audio stream is acceptable (answer 488).

    The first audio stream (RTP/AVP, port not 0) with a codec we support wins; the
    codec is the offerer's most preferred among `supported`. `local_direction` is
    what we are willing to do (e.g. "sendonly" to hold), intersected with the offer.
    Applied to the answer to our own offer, it reads the agreed codec, the peer's
    address and the direction left to us.
    """
    wanted = {name.casefold() for name in supported}
    for index, media in enumerate(offer.media):
        if media.kind != "audio" or media.port == 0 or not media.proto_supported:
            continue
        connection = offer.connection_for(media)
        if connection is None:
            continue
        codec = _first_common_codec(media, wanted)
        if codec is None:
            continue
        held = connection.address == _HOLD_ADDRESS
        return Negotiated(
            codec=codec,
            telephone_event_pt=_telephone_event_pt(media, codec.clock_rate),
            remote=(connection.address, media.port),
            direction=_answer_direction(media.direction, local_direction, held),
            ptime=media.ptime or DEFAULT_PTIME,
            media_index=index,
        )
    return None


def make_answer(
    offer: SessionDescription,
    negotiated: Negotiated,
    address: str,
    port: int,
    *,
    session_id: int | None = None,
    version: int = 1,
    username: str = "-",
    session_name: str = "-",
    telephone_event_fmtp: str | None = TELEPHONE_EVENT.fmtp,
) -> SessionDescription:
    """The answer to `offer`: one m= line per offered one, all but the accepted one rejected."""
    media: list[MediaDescription] = []
    for index, offered in enumerate(offer.media):
        if index == negotiated.media_index:
            telephone_event = None
            if negotiated.telephone_event_pt is not None:
                telephone_event = Codec(
                    "telephone-event",
                    negotiated.codec.clock_rate,
                    negotiated.telephone_event_pt,
                    fmtp=telephone_event_fmtp,
                )
            media.append(
                _audio_section(
                    port,
                    [negotiated.codec],
                    telephone_event,
                    negotiated.direction,
                    negotiated.ptime,
                )
            )
        else:
            # RFC 3264 §6: port 0 rejects a stream; its formats are ignored but required.
            media.append(
                MediaDescription(
                    kind=offered.kind,
                    port=0,
                    proto=offered.proto,
                    formats=list(offered.formats),
                )
            )
    return _session(address, session_id, version, username, session_name, media)


# --------------------------------------------------------------------------- hold


def is_hold(sdp: SessionDescription) -> bool:
    """True when the audio stream is put on hold (sendonly, inactive, or c=0.0.0.0)."""
    media = sdp.audio
    if media is None:
        return False
    if media.direction in ("sendonly", "inactive"):
        return True
    connection = sdp.connection_for(media)
    return connection is not None and connection.address == _HOLD_ADDRESS


def next_version(sdp: SessionDescription) -> SessionDescription:
    """A copy of our SDP with the o= version incremented, as a re-offer needs (RFC 3264 §8)."""
    new = copy.deepcopy(sdp)
    new.origin = replace(new.origin, session_version=new.origin.session_version + 1)
    return new


def with_direction(sdp: SessionDescription, direction: Direction) -> SessionDescription:
    """A new version of our SDP with every active audio stream set to `direction`."""
    new = next_version(sdp)
    # Media-level directions say it all; a stale session-level one would only mislead.
    new.direction = None
    for media in new.media:
        if media.kind == "audio" and media.port != 0:
            media.direction = direction
    return new
