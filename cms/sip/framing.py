"""Splitting a byte stream (TCP, TLS) into SIP messages by Content-Length (RFC 3261 §18.3)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ParseError
from .parser import DEFAULT_MAX_SIZE

_CONTENT_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([0-9]+)[ \t]*\r\n", re.I)


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A CRLFCRLF ping (RFC 5626 §4.4.1): the peer expects a CRLF pong."""


class StreamFramer:
    """Accumulates stream bytes and yields whole messages (bytes) or KeepAlive pings."""

    __slots__ = ("_buffer", "_max_size")

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self._buffer = bytearray()
        self._max_size = max_size

    def feed(self, data: bytes) -> list[bytes | KeepAlive]:
        """Add received bytes; return every complete message now available.

        Raises ParseError when the stream can no longer be framed (then the
        connection must be closed: its framing is lost).
        """
        buffer = self._buffer
        buffer += data
        out: list[bytes | KeepAlive] = []
        while buffer:
            if buffer[0] in (13, 10):
                # Leading CRLFs between messages: a double CRLF is a keep-alive ping.
                stripped = len(buffer) - len(buffer.lstrip(b"\r\n"))
                if buffer.startswith(b"\r\n\r\n"):
                    out.append(KeepAlive())
                    del buffer[:4]
                    continue
                if stripped == len(buffer) and stripped < 4:
                    break
                del buffer[:stripped]
                continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > self._max_size:
                    raise ParseError("header section too large on stream", 513)
                break
            match = _CONTENT_LENGTH.search(buffer, 0, end + 2)
            digits = match.group(1) if match else b"0"
            if len(digits) > 9:
                raise ParseError(f"Content-Length of {len(digits)} digits", 513)
            length = int(digits)
            total = end + 4 + length
            if total > self._max_size:
                raise ParseError(f"message of {total} bytes exceeds {self._max_size}", 513)
            if len(buffer) < total:
                break
            out.append(bytes(buffer[:total]))
            del buffer[:total]
        return out

    @property
    def buffered(self) -> int:
        """Bytes received but not yet framed into a message."""
        return len(self._buffer)
