"""The Replaces header (RFC 3891) on its own and inside a Refer-To URI (RFC 5589)."""

from __future__ import annotations

import pytest

from cms.sip.errors import ParseError
from cms.sip.headers import parse_name_addr
from cms.sip.replaces import Replaces, parse_replaces, replaces_in_refer_to, uri_header


def test_replaces_header_names_call_id_and_both_tags() -> None:
    parsed = parse_replaces("98732@sip.example.com ; from-tag=r33th4x0r;to-tag=ff87ff")
    assert parsed == Replaces(call_id="98732@sip.example.com", to_tag="ff87ff",
                              from_tag="r33th4x0r")
    assert parsed.keys() == (("98732@sip.example.com", "ff87ff", "r33th4x0r"),
                             ("98732@sip.example.com", "r33th4x0r", "ff87ff"))
    assert parse_replaces("a@b;to-tag=1;from-tag=2;early-only").early_only


@pytest.mark.parametrize("value", ["", "a@b", "a@b;to-tag=1", "a@b;from-tag=2",
                                   ";to-tag=1;from-tag=2"])
def test_replaces_without_call_id_or_a_tag_is_malformed(value: str) -> None:
    with pytest.raises(ParseError):
        parse_replaces(value)


def test_refer_to_carries_an_escaped_replaces_as_pjsip_writes_it() -> None:
    uri = parse_name_addr("<sip:10002@cms.test:5060?Require=replaces&Replaces=abc%40h"
                          "%3Bto-tag%3DT1%3Bfrom-tag%3DF1>").uri
    assert uri.user_unescaped == "10002"
    assert uri_header(uri, "require") == "replaces"
    assert replaces_in_refer_to(uri) == Replaces(call_id="abc@h", to_tag="T1", from_tag="F1")


def test_refer_to_without_replaces_is_a_blind_transfer() -> None:
    assert replaces_in_refer_to(parse_name_addr("<sip:10002@cms.test>").uri) is None
    with pytest.raises(ParseError):
        replaces_in_refer_to(parse_name_addr("<sip:1@h?Replaces=x%3Bto-tag%3D1>").uri)
