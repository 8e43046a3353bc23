"""RTP packet parsing, serialization and header peeks (RFC 3550 §5.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cms.media.rtp import (
    RtpError,
    RtpPacket,
    is_plain,
    payload_bounds,
    peek_header,
    peek_marker,
    peek_payload_type,
    peek_sequence,
    peek_ssrc,
    peek_timestamp,
)

# V=2, M=1, PT=0, seq=0x1234, ts=0x0A0B0C0D, SSRC=0xDEADBEEF, payload "abc".
SIMPLE = bytes.fromhex("8080 1234 0a0b0c0d deadbeef") + b"abc"


def test_simple_packet_parses_field_by_field() -> None:
    packet = RtpPacket.parse(SIMPLE)
    assert packet == RtpPacket(payload_type=0, marker=True, sequence=0x1234,
                               timestamp=0x0A0B0C0D, ssrc=0xDEADBEEF, payload=b"abc")
    assert packet.serialize() == SIMPLE
    assert bytes(packet) == SIMPLE


def test_csrc_extension_and_padding_are_parsed_and_reproduced() -> None:
    data = (bytes.fromhex("b2 08 0001 00000002 00000003")  # V=2 P X CC=2, PT 8
            + bytes.fromhex("00000004 00000005")  # CSRCs
            + bytes.fromhex("bede 0001 11223344")  # extension: profile, 1 word
            + b"\xd5" * 4 + b"\x00\x00\x03")  # payload, 3 bytes of padding
    packet = RtpPacket.parse(data)
    assert packet.csrc == (4, 5)
    assert packet.extension == (0xBEDE, bytes.fromhex("11223344"))
    assert packet.payload == b"\xd5" * 4
    assert packet.padding == 3
    assert packet.payload_type == 8 and not packet.marker
    assert packet.serialize() == data


@pytest.mark.parametrize("data, why", [
    (b"\x80\x00\x00", "too short"),
    (bytes.fromhex("4000 0001 00000002 00000003"), "version 1"),
    (bytes.fromhex("8f00 0001 00000002 00000003"), "15 CSRCs announced, none present"),
    (bytes.fromhex("9000 0001 00000002 00000003 bede"), "truncated extension header"),
    (bytes.fromhex("9000 0001 00000002 00000003 bede0005"), "extension longer than packet"),
    (bytes.fromhex("a000 0001 00000002 00000003 00"), "zero pad count"),
    (bytes.fromhex("a000 0001 00000002 00000003 0020"), "padding longer than packet"),
    (bytes.fromhex("80c8 0001 00000002 00000003"), "RTCP sender report"),
])
def test_invalid_packets_are_rejected(data: bytes, why: str) -> None:
    with pytest.raises(RtpError):
        RtpPacket.parse(data)


def test_field_ranges_are_checked() -> None:
    with pytest.raises(ValueError):
        RtpPacket(payload_type=128, sequence=0, timestamp=0, ssrc=0)
    with pytest.raises(ValueError):
        RtpPacket(payload_type=0, sequence=65536, timestamp=0, ssrc=0)
    with pytest.raises(ValueError):
        RtpPacket(payload_type=0, sequence=0, timestamp=0, ssrc=0, extension=(1, b"abc"))


def test_peeks_read_the_header_without_parsing() -> None:
    assert peek_payload_type(SIMPLE) == 0
    assert peek_marker(SIMPLE)
    assert peek_sequence(SIMPLE) == 0x1234
    assert peek_timestamp(SIMPLE) == 0x0A0B0C0D
    assert peek_ssrc(SIMPLE) == 0xDEADBEEF
    assert peek_header(bytearray(SIMPLE)) == (0x1234, 0x0A0B0C0D, 0xDEADBEEF)
    assert is_plain(SIMPLE)
    assert payload_bounds(SIMPLE, len(SIMPLE)) == (12, 15)


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127).filter(lambda pt: pt not in (72, 73)),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none() | st.tuples(st.integers(0, 0xFFFF),
                                    st.binary(max_size=40).map(lambda b: b[:len(b) // 4 * 4])),
    padding=st.integers(0, 255),
)


@given(packets)
def test_serialize_then_parse_is_identity(packet: RtpPacket) -> None:
    data = packet.serialize()
    assert RtpPacket.parse(data) == packet
    assert RtpPacket.parse(data).serialize() == data


@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_raise_rtp_error(data: bytes) -> None:
    try:
        packet = RtpPacket.parse(data)
    except RtpError:
        return
    # Pad bytes other than the count are not kept, so compare what they mean.
    assert RtpPacket.parse(packet.serialize()) == packet
