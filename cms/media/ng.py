"""A client for rtpengine's "ng" control protocol: bencoded dictionaries over UDP.

Each request is `<cookie> <bencoded dict>` in one datagram; the reply repeats the cookie.
Used by the relay benchmark to allocate calls in rtpengine (offer, answer, delete, query),
the same way a SIP proxy does.
"""

from __future__ import annotations

import itertools
import os
import re
import socket

Bencodable = int | str | bytes | list["Bencodable"] | dict[str, "Bencodable"]
Decoded = int | bytes | list["Decoded"] | dict[str, "Decoded"]


class NgError(Exception):
    """rtpengine answered with an error, or not at all."""


def bencode(value: Bencodable) -> bytes:
    """Encode `value` (int, str, bytes, list, dict with str keys) as bencode."""
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    if isinstance(value, dict):
        items = sorted((key.encode(), item) for key, item in value.items())
        return b"d" + b"".join(bencode(key) + bencode(item) for key, item in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Decoded:
    """Decode one bencoded value that spans all of `data`."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError(f"trailing bytes after bencoded value at {end}")
    return value


def _decode(data: bytes, at: int) -> tuple[Decoded, int]:
    kind = data[at:at + 1]
    if kind == b"i":
        end = data.index(b"e", at)
        return int(data[at + 1:end]), end + 1
    if kind == b"l":
        items: list[Decoded] = []
        at += 1
        while data[at:at + 1] != b"e":
            item, at = _decode(data, at)
            items.append(item)
        return items, at + 1
    if kind == b"d":
        result: dict[str, Decoded] = {}
        at += 1
        while data[at:at + 1] != b"e":
            key, at = _decode(data, at)
            if not isinstance(key, bytes):
                raise ValueError("bencoded dictionary key is not a string")
            result[key.decode()], at = _decode(data, at)
        return result, at + 1
    if kind.isdigit():
        colon = data.index(b":", at)
        start = colon + 1
        end = start + int(data[at:colon])
        if end > len(data):
            raise ValueError("bencoded string runs past the end")
        return data[start:end], end
    raise ValueError(f"not bencode at offset {at}: {data[at:at + 10]!r}")


def sdp_audio(host: str, port: int, session: int = 1) -> str:
    """A minimal SDP offering PCMU and telephone-event from host:port."""
    return (f"v=0\r\no=- {session} 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")


_MEDIA = re.compile(r"^m=audio (\d+) ", re.MULTILINE)
_CONNECTION = re.compile(r"^c=IN IP4 (\S+)", re.MULTILINE)


def sdp_address(sdp: str) -> tuple[str, int]:
    """The audio (host, port) in an SDP body."""
    media, connection = _MEDIA.search(sdp), _CONNECTION.search(sdp)
    if media is None or connection is None:
        raise NgError(f"no audio address in SDP: {sdp!r}")
    return connection.group(1), int(media.group(1))


class NgClient:
    """Blocking request/reply with one rtpengine over UDP (retried on timeout)."""

    def __init__(self, address: tuple[str, int], timeout: float = 1.0, tries: int = 3) -> None:
        self.address = address
        self.timeout = timeout
        self.tries = tries
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.settimeout(timeout)
        self._cookies = (f"{os.getpid()}_{n}".encode() for n in itertools.count())

    def request(self, command: str, **fields: Bencodable) -> dict[str, Decoded]:
        """Send one command; the reply dictionary (NgError if result is not ok)."""
        cookie = next(self._cookies)
        message = cookie + b" " + bencode({"command": command, **fields})
        for _ in range(self.tries):
            self._sock.sendto(message, self.address)
            try:
                while True:
                    data = self._sock.recv(65535)
                    head, _, body = data.partition(b" ")
                    if head == cookie:
                        break
            except TimeoutError:
                continue
            reply = bdecode(body)
            if not isinstance(reply, dict):
                raise NgError(f"{command}: reply is not a dictionary")
            if reply.get("result") not in (b"ok", b"pong"):
                reason = reply.get("error-reason", reply.get("result"))
                raise NgError(f"{command}: {reason!r}")
            return reply
        raise NgError(f"{command}: no reply from {self.address} in {self.tries} tries")

    def ping(self) -> bool:
        """True if rtpengine answers."""
        try:
            self.request("ping")
        except (NgError, OSError):
            return False
        return True

    def offer(self, call_id: str, from_tag: str, sdp: str) -> str:
        """Offer (caller's SDP); the SDP rtpengine gives the callee."""
        reply = self.request("offer", **{"call-id": call_id, "from-tag": from_tag, "sdp": sdp})
        return _sdp_of(reply)

    def answer(self, call_id: str, from_tag: str, to_tag: str, sdp: str) -> str:
        """Answer (callee's SDP); the SDP rtpengine gives the caller."""
        reply = self.request("answer", **{"call-id": call_id, "from-tag": from_tag,
                                          "to-tag": to_tag, "sdp": sdp})
        return _sdp_of(reply)

    def delete(self, call_id: str) -> None:
        """Tear the call down."""
        self.request("delete", **{"call-id": call_id})

    def query(self, call_id: str) -> dict[str, Decoded]:
        """rtpengine's view of the call (tags, streams, packet counters)."""
        return self.request("query", **{"call-id": call_id})

    def close(self) -> None:
        """Close the control socket."""
        self._sock.close()


def _sdp_of(reply: dict[str, Decoded]) -> str:
    sdp = reply.get("sdp")
    if not isinstance(sdp, bytes):
        raise NgError("reply without SDP")
    return sdp.decode()
