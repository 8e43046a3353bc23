"""Reading what an incoming INVITE asks for: auto-answer and contact attached data."""

from __future__ import annotations

import base64
import json

import pytest

from softphone.sip.invite import attached_data, auto_answer_delay, headers


def invite(*extra: str) -> str:
    lines = [
        "INVITE sip:agent1@10.0.0.2:5070 SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1",
        "f: <sip:600@cms.local>;tag=1",
        "To: <sip:agent1@cms.local>",
        "Call-ID: abc",
        "CSeq: 1 INVITE",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines)


def test_header_names_are_case_insensitive_and_compact_forms_expanded() -> None:
    fields = headers(invite("X-Custom: one", "x-custom: two", " continued"))

    assert fields["from"] == ["<sip:600@cms.local>;tag=1"]
    assert fields["x-custom"] == ["one", "two continued"]


@pytest.mark.parametrize(
    ("header", "delay"),
    [
        ("Call-Info: <sip:cms.local>;answer-after=0", 0.0),
        ("Call-Info: <sip:cms.local>;Answer-After=2", 2.0),
        ("Alert-Info: <http://cms.local>;info=alert-autoanswer", 0.0),
        ("Alert-Info: info=auto answer", 0.0),
        ("Answer-Mode: Auto", 0.0),
        ("Answer-Mode: Manual", None),
        ("Alert-Info: <http://cms.local/ring.wav>", None),
    ],
)
def test_auto_answer_requests_in_their_usual_forms(header: str, delay: float | None) -> None:
    assert auto_answer_delay(headers(invite(header))) == delay


def test_no_request_means_no_auto_answer() -> None:
    assert auto_answer_delay(headers(invite())) is None


def test_attached_data_is_decoded_from_base64url_json() -> None:
    data = {"caller": "+4930123", "business_partner": "4711"}
    encoded = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    assert attached_data(headers(invite(f"X-CMS-Attached-Data: {encoded}"))) == data


@pytest.mark.parametrize("value", ["not base64!", "W10", "e30x"])
def test_broken_attached_data_is_ignored(value: str) -> None:
    assert attached_data(headers(invite(f"X-CMS-Attached-Data: {value}"))) in (None, {})
