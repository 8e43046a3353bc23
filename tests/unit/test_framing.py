"""Stream framing: messages split by Content-Length, keep-alives, limits."""

from __future__ import annotations

import pytest

from cms.sip.errors import ParseError
from cms.sip.framing import KeepAlive, StreamFramer

MESSAGE = (
    b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
    b"Content-Length: 5\r\n\r\nhello"
)


def test_two_messages_in_one_read_are_split() -> None:
    assert StreamFramer().feed(MESSAGE + MESSAGE) == [MESSAGE, MESSAGE]


def test_message_split_across_reads_is_joined() -> None:
    framer = StreamFramer()
    assert framer.feed(MESSAGE[:30]) == []
    assert framer.feed(MESSAGE[30:-2]) == []
    assert framer.feed(MESSAGE[-2:]) == [MESSAGE]
    assert framer.buffered == 0


def test_compact_content_length_is_understood() -> None:
    message = MESSAGE.replace(b"Content-Length", b"l")
    assert StreamFramer().feed(message + b"x") == [message]


def test_double_crlf_is_a_keepalive_ping() -> None:
    items = StreamFramer().feed(b"\r\n\r\n" + MESSAGE)
    assert isinstance(items[0], KeepAlive)
    assert items[1] == MESSAGE


def test_missing_content_length_means_no_body() -> None:
    message = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\r\n"
    assert StreamFramer().feed(message) == [message]


def test_oversized_message_is_refused() -> None:
    with pytest.raises(ParseError):
        StreamFramer(max_size=100).feed(MESSAGE.replace(b": 5", b": 500") + b"x" * 500)


def test_absurd_content_length_is_a_parse_error_not_a_crash() -> None:
    with pytest.raises(ParseError):
        StreamFramer().feed(MESSAGE.replace(b": 5", b": " + b"9" * 5000))


def test_endless_header_section_is_refused() -> None:
    with pytest.raises(ParseError):
        StreamFramer(max_size=1000).feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"y" * 2000)
