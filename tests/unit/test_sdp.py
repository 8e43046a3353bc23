"""SDP parsing/serialization and RFC 3264 offer/answer, as the B2BUA uses them."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cms.sip.errors import ParseError
from cms.sip.sdp import (
    G729,
    PCMA,
    PCMU,
    Attribute,
    Bandwidth,
    Codec,
    Connection,
    Direction,
    MediaDescription,
    Negotiated,
    Origin,
    RtpMap,
    SessionDescription,
    Timing,
    is_hold,
    make_answer,
    make_offer,
    negotiate,
    next_version,
    parse_sdp,
    with_direction,
)

RFC4475 = Path(__file__).resolve().parent.parent / "data" / "rfc4475"


def sdp(text: str) -> bytes:
    """A test body written with LF line ends, sent as peers do with CRLF."""
    return text.strip("\n").replace("\n", "\r\n").encode() + b"\r\n"


# SIPp's built-in uac scenario, with its [local_ip]/[media_port] keywords filled in.
SIPP_UAC = sdp("""
v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
""")

# Shaped like baresip 1.0 with its default G.711 set.
BARESIP = sdp("""
v=0
o=- 2890844526 2890844527 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=audio 10002 RTP/AVP 0 8 101
b=AS:64
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=rtcp:10003
a=sendrecv
a=label:1
a=ssrc:2788356127 cname:sip:alice@example.com
a=rtcp-rsize
a=minptime:20
a=ptime:20
""")

# Shaped like pjsua 2.x with every codec it builds in: c= at media level only.
PJSUA = sdp("""
v=0
o=- 3898163617 3898163617 IN IP4 192.0.2.20
s=pjmedia
b=AS:117
t=0 0
a=X-nat:0
m=audio 4000 RTP/AVP 96 97 98 99 3 0 8 9 111 120 121 122
c=IN IP4 192.0.2.20
b=TIAS:96000
a=rtcp:4001 IN IP4 192.0.2.20
a=sendrecv
a=rtpmap:96 speex/16000
a=rtpmap:97 speex/8000
a=rtpmap:98 speex/32000
a=rtpmap:99 iLBC/8000
a=fmtp:99 mode=30
a=rtpmap:3 GSM/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:9 G722/8000
a=rtpmap:111 opus/48000/2
a=fmtp:111 useinbandfec=1
a=rtpmap:120 telephone-event/16000
a=fmtp:120 0-16
a=rtpmap:121 telephone-event/8000
a=fmtp:121 0-16
a=rtpmap:122 telephone-event/48000
a=fmtp:122 0-16
a=ssrc:1103264452 cname:4f5a1b2c3d4e5f60
a=rtcp-fb:111 nack
""")

# Shaped like linphone: PCMA before PCMU, G.729 with annexb, and a video stream.
LINPHONE = sdp("""
v=0
o=bob 1016 678 IN IP4 192.0.2.30
s=Talk
c=IN IP4 192.0.2.30
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
a=record:off
m=audio 7078 RTP/AVP 96 97 98 8 0 18 101 99 100
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 speex/16000
a=fmtp:97 vbr=on
a=rtpmap:98 speex/8000
a=fmtp:98 vbr=on
a=fmtp:18 annexb=yes
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 telephone-event/8000
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
m=video 9078 RTP/AVP 96 97
a=rtpmap:96 VP8/90000
a=rtpmap:97 H264/90000
a=fmtp:97 profile-level-id=42801F
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:96 nack pli
""")

PEERS = {"sipp": SIPP_UAC, "baresip": BARESIP, "pjsua": PJSUA, "linphone": LINPHONE}


def offer_with(media: str, *, session: str = "c=IN IP4 192.0.2.1\n") -> SessionDescription:
    return parse_sdp(sdp(f"v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\n{session}t=0 0\n{media}"))


# --------------------------------------------------------------------------- parsing


def test_sipp_default_uac_offer_parses() -> None:
    offer = parse_sdp(SIPP_UAC)
    assert offer.origin == Origin("user1", 53655765, 2353687637, "IN", "IP4", "127.0.0.1")
    assert offer.name == "-"
    assert offer.connection == Connection("IN", "IP4", "127.0.0.1")
    assert offer.times == [Timing(0, 0)]
    [audio] = offer.media
    assert (audio.kind, audio.port, audio.proto, audio.formats) == (
        "audio",
        6000,
        "RTP/AVP",
        ["0"],
    )
    assert audio.rtpmap == {0: RtpMap("PCMU", 8000)}
    assert audio.direction == "sendrecv"
    assert audio.ptime is None
    assert audio.connection is None


def test_baresip_offer_keeps_rtcp_ssrc_and_other_attributes_in_order() -> None:
    audio = parse_sdp(BARESIP).media[0]
    assert audio.payload_types == [0, 8, 101]
    assert audio.fmtp == {101: "0-15"}
    assert audio.ptime == 20
    assert audio.bandwidths == [Bandwidth("AS", 64)]
    assert [a.name for a in audio.attributes] == [
        "rtcp",
        "label",
        "ssrc",
        "rtcp-rsize",
        "minptime",
    ]
    assert audio.attribute("rtcp") == "10003"
    assert audio.attribute("rtcp-rsize") == ""
    assert audio.attribute("rtcp-mux") is None


def test_pjsua_offer_with_many_codecs_parses_every_rtpmap() -> None:
    offer = parse_sdp(PJSUA)
    assert offer.name == "pjmedia"
    assert offer.connection is None
    assert offer.bandwidths == [Bandwidth("AS", 117)]
    assert offer.attributes == [Attribute("X-nat", "0")]
    [audio] = offer.media
    assert audio.connection == Connection("IN", "IP4", "192.0.2.20")
    assert audio.bandwidths == [Bandwidth("TIAS", 96000)]
    assert audio.rtpmap[111] == RtpMap("opus", 48000, 2)
    assert audio.rtpmap[120] == RtpMap("telephone-event", 16000)
    assert audio.codec(111) == Codec("opus", 48000, 111, 2, "useinbandfec=1")
    assert [c.name for c in audio.codecs()] == [
        "speex",
        "speex",
        "speex",
        "iLBC",
        "GSM",
        "PCMU",
        "PCMA",
        "G722",
        "opus",
        "telephone-event",
        "telephone-event",
        "telephone-event",
    ]
    assert Attribute("rtcp-fb", "111 nack") in audio.attributes
    assert Attribute("ssrc", "1103264452 cname:4f5a1b2c3d4e5f60") in audio.attributes


def test_linphone_offer_parses_audio_and_video_sections() -> None:
    offer = parse_sdp(LINPHONE)
    assert [m.kind for m in offer.media] == ["audio", "video"]
    assert offer.attributes[0] == Attribute(
        "rtcp-xr", "rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics"
    )
    audio, video = offer.media
    # G.729 is static: no rtpmap needed, and its fmtp still attaches.
    g729 = audio.codec(18)
    assert g729 == Codec("G729", 8000, 18, fmtp="annexb=yes")
    assert g729.same_format(G729)
    assert video.rtpmap == {96: RtpMap("VP8", 90000), 97: RtpMap("H264", 90000)}
    assert video.fmtp == {97: "profile-level-id=42801F"}


@pytest.mark.parametrize("body", PEERS.values(), ids=PEERS.keys())
def test_real_offers_survive_encode_and_parse(body: bytes) -> None:
    offer = parse_sdp(body)
    encoded = offer.encode()
    assert parse_sdp(encoded) == offer
    assert parse_sdp(encoded).encode() == encoded


def test_lf_line_ends_parse_like_crlf() -> None:
    assert parse_sdp(BARESIP.replace(b"\r\n", b"\n")) == parse_sdp(BARESIP)


def test_str_input_parses_like_bytes() -> None:
    assert parse_sdp(PJSUA.decode()) == parse_sdp(PJSUA)


def test_encode_writes_crlf_lines_and_str_is_the_same_text() -> None:
    offer = parse_sdp(SIPP_UAC.replace(b"\r\n", b"\n"))
    assert offer.encode() == SIPP_UAC + b"a=sendrecv\r\n"
    assert str(offer) == offer.encode().decode()
    assert bytes(offer) == offer.encode()


def test_unknown_line_types_and_trailing_blanks_are_ignored() -> None:
    offer = parse_sdp(SIPP_UAC.replace(b"t=0 0\r\n", b"t=0 0\r\nx=whatever\r\n") + b"\r\n\r\n")
    assert offer == parse_sdp(SIPP_UAC)


def test_malformed_interesting_attributes_are_kept_as_plain_attributes() -> None:
    offer = offer_with(
        "m=audio 4000 RTP/AVP 0 96\n"
        "a=rtpmap:96 weird\n"
        "a=fmtp:96\n"
        "a=ptime:twenty\n"
        "a=sendonly:please\n"
    )
    audio = offer.media[0]
    assert audio.rtpmap == {}
    assert audio.fmtp == {}
    assert audio.ptime is None
    assert audio.direction == "sendrecv"
    assert audio.attributes == [
        Attribute("rtpmap", "96 weird"),
        Attribute("fmtp", "96"),
        Attribute("ptime", "twenty"),
        Attribute("sendonly", "please"),
    ]
    assert audio.codec(96) is None
    assert parse_sdp(offer.encode()) == offer


def test_session_level_direction_is_inherited_unless_the_stream_overrides_it() -> None:
    offer = offer_with(
        "m=audio 4000 RTP/AVP 0\nm=audio 4002 RTP/AVP 0\na=inactive\nm=audio 0 RTP/AVP 0\n",
        session="c=IN IP4 192.0.2.1\na=sendonly\n",
    )
    assert offer.direction == "sendonly"
    assert [m.direction for m in offer.media] == ["sendonly", "inactive", "sendonly"]
    assert parse_sdp(offer.encode()) == offer


def test_ipv6_connection_and_origin_are_parsed() -> None:
    offer = parse_sdp(
        sdp("""
v=0
o=- 7 7 IN IP6 2001:db8::1
s=-
c=IN IP6 2001:db8::1
t=0 0
m=audio 5004 RTP/AVP 8
""")
    )
    assert offer.origin.addr_type == "IP6"
    assert offer.connection == Connection("IN", "IP6", "2001:db8::1")
    negotiated = negotiate(offer)
    assert negotiated is not None and negotiated.remote == ("2001:db8::1", 5004)


def test_multicast_connection_and_port_count_are_parsed() -> None:
    offer = offer_with(
        "m=audio 49170/2 RTP/AVP 0\nc=IN IP4 233.252.0.1/127/3\n"
        "m=audio 49180 RTP/AVP 0\nc=IN IP6 ff15::101/3\n",
        session="",
    )
    first, second = offer.media
    assert first.port_count == 2
    assert first.connection == Connection("IN", "IP4", "233.252.0.1", ttl=127, count=3)
    assert second.connection == Connection("IN", "IP6", "ff15::101", count=3)
    assert parse_sdp(offer.encode()) == offer


def test_repeat_times_attach_to_their_t_line() -> None:
    offer = offer_with("m=audio 4000 RTP/AVP 0\n", session="c=IN IP4 192.0.2.1\n")
    text = offer.encode().replace(b"t=0 0\r\n", b"t=3034423619 3042462419\r\nr=7d 1h 0 25h\r\n")
    assert parse_sdp(text).times == [Timing(3034423619, 3042462419, ("7d 1h 0 25h",))]


def test_non_utf8_bytes_survive_a_round_trip() -> None:
    body = SIPP_UAC.replace(b"s=-", b"s=caf\xe9")
    offer = parse_sdp(body)
    assert offer.encode().startswith(body[: body.index(b"c=")])


def test_rfc4475_sdp01_body_is_parsed_and_answered() -> None:
    message = (RFC4475 / "sdp01.dat").read_bytes()
    body = message.split(b"\r\n\r\n", 1)[1]
    offer = parse_sdp(body)
    audio, video = offer.media
    assert audio.formats == ["0", "12"]
    assert [c.name for c in audio.codecs()] == ["PCMU", "QCELP"]
    # "a=rtpmap:31 LPC" lacks a clock rate: kept, not trusted.
    assert video.rtpmap == {}
    assert video.attributes == [Attribute("rtpmap", "31 LPC")]
    negotiated = negotiate(offer)
    assert negotiated is not None
    assert negotiated.codec == PCMU
    assert negotiated.remote == ("192.0.2.5", 49217)
    answer = make_answer(offer, negotiated, "192.0.2.99", 30000, session_id=5)
    assert [(m.kind, m.port, m.formats) for m in answer.media] == [
        ("audio", 30000, ["0"]),
        ("video", 0, ["31"]),
    ]


MALFORMED = {
    "empty": "",
    "no v line": "o=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n",
    "v not first": "o=- 1 1 IN IP4 192.0.2.1\nv=0\ns=-\nt=0 0\n",
    "wrong version": "v=1\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n",
    "no o line": "v=0\ns=-\nt=0 0\n",
    "no s line": "v=0\no=- 1 1 IN IP4 192.0.2.1\nt=0 0\n",
    "only v and o": "v=0\no=- 1 1 IN IP4 192.0.2.1\n",
    "short o line": "v=0\no=- 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n",
    "non-numeric session id": "v=0\no=- abc 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n",
    "no t line": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\n",
    "m before t": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\n"
    "m=audio 4000 RTP/AVP 0\nt=0 0\n",
    "t inside media": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
    "m=audio 4000 RTP/AVP 0\nt=0 0\n",
    "repeated v": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nv=0\nt=0 0\n",
    "bad port": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
    "m=audio port RTP/AVP 0\n",
    "port out of range": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
    "m=audio 65536 RTP/AVP 0\n",
    "negative port": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
    "m=audio -1 RTP/AVP 0\n",
    "m without proto": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
    "m=audio 4000\n",
    "short c line": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4\nt=0 0\n",
    "bad multicast ttl": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 233.252.0.1/x\nt=0 0\n",
    "two session c lines": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\n"
    "c=IN IP4 192.0.2.2\nt=0 0\n",
    "no address for media": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 4000 RTP/AVP 0\n",
    "bad bandwidth": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nb=AS\nt=0 0\n",
    "bad time": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=now\n",
    "line without equals": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nhello\n",
    "space before equals": "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt =0 0\n",
    "bare CR": "v=0\ro=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\n",
    "HTML instead of SDP": "<html><body>hello</body></html>",
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_sdp_raises_parse_error_with_status_400(text: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_sdp(text.encode())
    assert caught.value.status == 400


def test_rejected_stream_may_omit_its_connection_address() -> None:
    offer = offer_with("m=audio 0 RTP/AVP 0\n", session="")
    assert offer.media[0].port == 0


# --------------------------------------------------------------------------- negotiation


@pytest.mark.parametrize(
    ("formats", "expected"),
    [("0 8", PCMU), ("8 0", PCMA), ("18 8 0", PCMA), ("96 0 8", PCMU)],
)
def test_negotiate_picks_the_offerers_preferred_supported_codec(
    formats: str, expected: Codec
) -> None:
    offer = offer_with(f"m=audio 4000 RTP/AVP {formats}\na=rtpmap:96 opus/48000/2\n")
    negotiated = negotiate(offer)
    assert negotiated is not None
    assert negotiated.codec == expected


def test_our_supported_order_does_not_override_the_offerers_preference() -> None:
    offer = offer_with("m=audio 4000 RTP/AVP 0 8\n")
    negotiated = negotiate(offer, supported=("PCMA", "PCMU"))
    assert negotiated is not None and negotiated.codec == PCMU


def test_negotiate_with_only_pcma_supported_skips_pcmu() -> None:
    negotiated = negotiate(parse_sdp(BARESIP), supported=("PCMA",))
    assert negotiated is not None and negotiated.codec == PCMA


@pytest.mark.parametrize(
    "media",
    [
        "m=audio 4000 RTP/AVP 18\n",
        "m=audio 4000 RTP/AVP 96 101\na=rtpmap:96 opus/48000/2\n"
        "a=rtpmap:101 telephone-event/8000\n",
        "m=audio 4000 RTP/AVP 96\n",  # dynamic type without rtpmap: unknown
        "m=audio 4000 RTP/AVP 96\na=rtpmap:96 PCMU/16000\n",  # not G.711 whatever its name
        "m=video 4000 RTP/AVP 0\n",
        "m=audio 4000 RTP/SAVP 0 8\n",
    ],
    ids=["g729 only", "opus only", "unknown dynamic", "pcmu at 16k", "video", "srtp"],
)
def test_no_common_codec_means_no_negotiation(media: str) -> None:
    assert negotiate(offer_with(media)) is None


def test_offer_without_media_cannot_be_negotiated() -> None:
    assert negotiate(offer_with("")) is None


def test_static_payload_types_are_matched_without_rtpmap_case_insensitively() -> None:
    offer = offer_with("m=audio 4000 RTP/AVP 97 8\na=rtpmap:97 pcmu/8000\n")
    negotiated = negotiate(offer)
    assert negotiated is not None
    assert negotiated.codec == Codec("pcmu", 8000, 97)


def test_negotiate_with_pjsua_picks_pcmu_and_telephone_event_at_8000() -> None:
    negotiated = negotiate(parse_sdp(PJSUA))
    assert negotiated == Negotiated(
        codec=Codec("PCMU", 8000, 0),
        telephone_event_pt=121,
        remote=("192.0.2.20", 4000),
        direction="sendrecv",
        ptime=20,
        media_index=0,
    )


def test_negotiate_with_linphone_picks_pcma_and_telephone_event_100() -> None:
    negotiated = negotiate(parse_sdp(LINPHONE))
    assert negotiated is not None
    assert negotiated.codec == PCMA
    assert negotiated.telephone_event_pt == 100


def test_negotiate_without_telephone_event_offered() -> None:
    negotiated = negotiate(parse_sdp(SIPP_UAC))
    assert negotiated is not None
    assert negotiated.telephone_event_pt is None
    assert negotiated.remote == ("127.0.0.1", 6000)


def test_offered_ptime_is_kept_and_defaults_to_20() -> None:
    with_ptime = negotiate(offer_with("m=audio 4000 RTP/AVP 0\na=ptime:30\n"))
    without = negotiate(offer_with("m=audio 4000 RTP/AVP 0\n"))
    assert with_ptime is not None and with_ptime.ptime == 30
    assert without is not None and without.ptime == 20


@pytest.mark.parametrize(
    ("offered", "answered"),
    [
        ("sendrecv", "sendrecv"),
        ("sendonly", "recvonly"),
        ("recvonly", "sendonly"),
        ("inactive", "inactive"),
    ],
)
def test_answer_direction_mirrors_the_offer(offered: Direction, answered: Direction) -> None:
    negotiated = negotiate(offer_with(f"m=audio 4000 RTP/AVP 0\na={offered}\n"))
    assert negotiated is not None
    assert negotiated.direction == answered
    answer = make_answer(offer_with("m=audio 4000 RTP/AVP 0\n"), negotiated, "192.0.2.9", 2000)
    assert parse_sdp(answer.encode()).media[0].direction == answered


@pytest.mark.parametrize(
    ("offered", "local", "answered"),
    [
        ("sendrecv", "sendonly", "sendonly"),
        ("sendrecv", "inactive", "inactive"),
        ("sendonly", "sendonly", "inactive"),
        ("recvonly", "recvonly", "inactive"),
    ],
)
def test_local_direction_policy_limits_the_answer(
    offered: Direction, local: Direction, answered: Direction
) -> None:
    offer = offer_with(f"m=audio 4000 RTP/AVP 0\na={offered}\n")
    negotiated = negotiate(offer, local_direction=local)
    assert negotiated is not None and negotiated.direction == answered


def test_legacy_hold_address_makes_the_answer_recvonly() -> None:
    offer = offer_with("m=audio 4000 RTP/AVP 0\n", session="c=IN IP4 0.0.0.0\n")
    negotiated = negotiate(offer)
    assert negotiated is not None
    assert negotiated.direction == "recvonly"


def test_media_level_connection_overrides_session_level() -> None:
    offer = offer_with(
        "m=audio 4000 RTP/AVP 0\nc=IN IP4 198.51.100.7\n", session="c=IN IP4 192.0.2.1\n"
    )
    negotiated = negotiate(offer)
    assert negotiated is not None and negotiated.remote == ("198.51.100.7", 4000)


def test_session_level_connection_applies_to_streams_without_their_own() -> None:
    offer = offer_with(
        "m=video 5000 RTP/AVP 31\nc=IN IP4 198.51.100.7\nm=audio 4000 RTP/AVP 0\n",
        session="c=IN IP4 192.0.2.1\n",
    )
    negotiated = negotiate(offer)
    assert negotiated is not None
    assert negotiated.remote == ("192.0.2.1", 4000)
    assert negotiated.media_index == 1


def test_port_zero_audio_stream_is_skipped_and_answered_rejected() -> None:
    offer = offer_with("m=audio 0 RTP/AVP 0\nm=audio 4000 RTP/AVP 8 0\n")
    negotiated = negotiate(offer)
    assert negotiated is not None
    assert negotiated.media_index == 1
    assert negotiated.codec == PCMA
    answer = parse_sdp(make_answer(offer, negotiated, "192.0.2.9", 2000).encode())
    assert [(m.port, m.formats) for m in answer.media] == [(0, ["0"]), (2000, ["8"])]


def test_unsupported_streams_are_answered_with_port_zero_and_their_formats() -> None:
    offer = parse_sdp(LINPHONE)
    negotiated = negotiate(offer)
    assert negotiated is not None
    answer = make_answer(offer, negotiated, "192.0.2.9", 2000)
    audio, video = answer.media
    assert (video.kind, video.port, video.proto, video.formats) == (
        "video",
        0,
        "RTP/AVP",
        ["96", "97"],
    )
    assert b"m=video 0 RTP/AVP 96 97\r\n" in answer.encode()
    assert audio.formats == ["8", "100"]


def test_srtp_stream_is_marked_unsupported_and_rejected() -> None:
    offer = offer_with("m=audio 4000 RTP/SAVP 0\nm=audio 4002 RTP/AVP 0\n")
    assert [m.proto_supported for m in offer.media] == [False, True]
    negotiated = negotiate(offer)
    assert negotiated is not None and negotiated.media_index == 1


def test_answer_uses_the_offerers_payload_type_numbers() -> None:
    offer = offer_with(
        "m=audio 4000 RTP/AVP 0 96\na=rtpmap:96 telephone-event/8000\na=fmtp:96 0-15\n"
    )
    negotiated = negotiate(offer)
    assert negotiated is not None
    answer = make_answer(offer, negotiated, "192.0.2.9", 2000, session_id=42, version=3)
    assert answer.encode() == sdp("""
v=0
o=- 42 3 IN IP4 192.0.2.9
s=-
c=IN IP4 192.0.2.9
t=0 0
m=audio 2000 RTP/AVP 0 96
a=rtpmap:0 PCMU/8000
a=rtpmap:96 telephone-event/8000
a=fmtp:96 0-16
a=ptime:20
a=sendrecv
""")


def test_make_offer_lists_codecs_then_telephone_event() -> None:
    offer = make_offer("192.0.2.9", 2000, session_id=1234, version=1)
    assert offer.encode() == sdp("""
v=0
o=- 1234 1 IN IP4 192.0.2.9
s=-
c=IN IP4 192.0.2.9
t=0 0
m=audio 2000 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
""")


def test_make_offer_over_ipv6_with_other_options() -> None:
    offer = make_offer(
        "2001:db8::9", 2000, codecs=(PCMA,), telephone_event_pt=None, direction="sendonly"
    )
    assert offer.connection == Connection("IN", "IP6", "2001:db8::9")
    assert offer.origin.addr_type == "IP6"
    assert offer.media[0].formats == ["8"]
    assert offer.media[0].direction == "sendonly"
    assert 0 <= offer.origin.session_id < 2**31
    assert parse_sdp(offer.encode()) == offer


def test_fresh_offers_get_distinct_session_ids() -> None:
    ids = {make_offer("192.0.2.9", 2000).origin.session_id for _ in range(20)}
    assert len(ids) > 1


def test_our_offer_negotiates_with_our_answer() -> None:
    offer = parse_sdp(make_offer("192.0.2.9", 2000, codecs=(PCMA, PCMU)).encode())
    negotiated = negotiate(offer)
    assert negotiated is not None
    answer = parse_sdp(make_answer(offer, negotiated, "192.0.2.10", 3000).encode())
    back = negotiate(answer)
    assert back is not None
    assert back.codec == PCMA
    assert back.telephone_event_pt == 101
    assert back.remote == ("192.0.2.10", 3000)


# --------------------------------------------------------------------------- hold


@pytest.mark.parametrize(
    ("media", "session", "held"),
    [
        ("a=sendonly\n", "c=IN IP4 192.0.2.1\n", True),
        ("a=inactive\n", "c=IN IP4 192.0.2.1\n", True),
        ("", "c=IN IP4 0.0.0.0\n", True),
        ("c=IN IP4 0.0.0.0\n", "c=IN IP4 192.0.2.1\n", True),
        ("", "c=IN IP4 192.0.2.1\n", False),
        ("a=recvonly\n", "c=IN IP4 192.0.2.1\n", False),
        ("a=sendrecv\n", "c=IN IP4 192.0.2.1\na=sendonly\n", False),
    ],
    ids=["sendonly", "inactive", "rfc2543", "rfc2543 media", "sendrecv", "recvonly", "override"],
)
def test_is_hold(media: str, session: str, held: bool) -> None:
    assert is_hold(offer_with(f"m=audio 4000 RTP/AVP 0\n{media}", session=session)) is held


def test_sdp_without_active_audio_is_not_hold() -> None:
    assert not is_hold(offer_with("m=audio 0 RTP/AVP 0\na=sendonly\n"))


def test_with_direction_makes_a_new_version_and_leaves_the_original_alone() -> None:
    offer = make_offer("192.0.2.9", 2000, session_id=77, version=4)
    held = with_direction(offer, "sendonly")
    assert held.origin.session_id == 77
    assert held.origin.session_version == 5
    assert held.media[0].direction == "sendonly"
    assert is_hold(parse_sdp(held.encode()))
    assert offer.media[0].direction == "sendrecv"
    assert offer.origin.session_version == 4
    resumed = with_direction(held, "sendrecv")
    assert resumed.origin.session_version == 6
    assert not is_hold(resumed)


def test_next_version_only_changes_the_version() -> None:
    offer = make_offer("192.0.2.9", 2000, session_id=77, version=4)
    bumped = next_version(offer)
    assert bumped.origin.session_version == 5
    bumped.origin = offer.origin
    assert bumped == offer


# --------------------------------------------------------------------------- round trip

_TOKEN = st.text(string.ascii_letters + string.digits + "-_.!~*'+", min_size=1, max_size=10)
# Free text: no control characters (so no line breaks), no trailing blanks (a parser
# strips them), and encodable (no lone surrogates).
_TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=16).filter(
    lambda s: s == s.rstrip(" \t")
)
_STRIPPED = _TEXT.filter(lambda s: s != "" and s == s.strip())
_DIRECTION = st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive"])
_STRUCTURED = {"rtpmap", "fmtp", "ptime", "sendrecv", "sendonly", "recvonly", "inactive"}
_ATTRIBUTE = st.builds(Attribute, _TOKEN.filter(lambda n: n not in _STRUCTURED), st.none() | _TEXT)
_PT = st.integers(0, 127)


@st.composite
def _connections(draw: st.DrawFn) -> Connection:
    address = str(draw(st.ip_addresses()))
    if ":" in address:
        return Connection("IN", "IP6", address, None, draw(st.none() | st.integers(1, 9)))
    ttl = draw(st.none() | st.integers(0, 255))
    count = None if ttl is None else draw(st.none() | st.integers(1, 9))
    return Connection("IN", "IP4", address, ttl, count)


_BANDWIDTHS = st.lists(st.builds(Bandwidth, _TOKEN, st.integers(0, 10**9)), max_size=2)

_MEDIA = st.builds(
    MediaDescription,
    kind=st.sampled_from(["audio", "video", "application"]) | _TOKEN,
    port=st.integers(0, 65535),
    proto=st.sampled_from(["RTP/AVP", "RTP/SAVP", "RTP/AVPF", "UDP/TLS/RTP/SAVPF", "udptl"]),
    formats=st.lists(_PT.map(str) | _TOKEN, max_size=5),
    port_count=st.none() | st.integers(1, 4),
    info=st.none() | _TEXT,
    connection=st.none() | _connections(),
    bandwidths=_BANDWIDTHS,
    key=st.none() | _TEXT,
    rtpmap=st.dictionaries(
        _PT,
        st.builds(RtpMap, _TOKEN, st.integers(1, 96000), st.none() | st.integers(1, 8)),
        max_size=4,
    ),
    fmtp=st.dictionaries(_PT, _STRIPPED, max_size=3),
    direction=_DIRECTION,
    ptime=st.none() | st.integers(1, 200),
    attributes=st.lists(_ATTRIBUTE, max_size=4),
)


@st.composite
def _descriptions(draw: st.DrawFn) -> SessionDescription:
    sd = draw(
        st.builds(
            SessionDescription,
            origin=st.builds(
                Origin,
                _TOKEN,
                st.integers(0, 2**64),
                st.integers(0, 2**64),
                st.just("IN"),
                st.sampled_from(["IP4", "IP6"]),
                _TOKEN,
            ),
            name=_TEXT,
            info=st.none() | _TEXT,
            uri=st.none() | _TEXT,
            emails=st.lists(_TEXT, max_size=2),
            phones=st.lists(_TEXT, max_size=2),
            connection=st.none() | _connections(),
            bandwidths=_BANDWIDTHS,
            times=st.lists(
                st.builds(
                    Timing,
                    st.integers(0, 2**40),
                    st.integers(0, 2**40),
                    st.lists(_TEXT, max_size=2).map(tuple),
                ),
                min_size=1,
                max_size=2,
            ),
            time_zones=st.none() | _TEXT,
            key=st.none() | _TEXT,
            direction=st.none() | _DIRECTION,
            attributes=st.lists(_ATTRIBUTE, max_size=4),
            media=st.lists(_MEDIA, max_size=3),
        )
    )
    # RFC 8866 §5.7: every active stream needs an address, from c= at one level or the other.
    for media in sd.media:
        if media.port != 0 and media.connection is None and sd.connection is None:
            media.connection = draw(_connections())
    return sd


@settings(max_examples=300, deadline=None)
@given(_descriptions())
def test_parse_of_encode_is_the_identity(description: SessionDescription) -> None:
    encoded = description.encode()
    assert parse_sdp(encoded) == description
    assert parse_sdp(encoded).encode() == encoded
    assert parse_sdp(encoded.replace(b"\r\n", b"\n")) == description
