"""Dial strings become SIP request URIs."""

from __future__ import annotations

import pytest

from softphone.targets import BadTarget, dial_uri


@pytest.mark.parametrize(
    ("typed", "uri"),
    [
        ("1001", "sip:1001@cms.local"),  # an extension
        ("600", "sip:600@cms.local"),  # a queue number
        ("agent2", "sip:agent2@cms.local"),  # a user name
        ("+49 (30) 123-45", "sip:+493012345@cms.local"),  # a formatted phone number
        ("*97#", "sip:*97%23@cms.local"),  # a feature code
        ("bob@10.0.0.5:5062", "sip:bob@10.0.0.5:5062"),
        ("sip:bob@127.0.0.1:5070", "sip:bob@127.0.0.1:5070"),
        ("tel:+4930123", "sip:+4930123@cms.local"),
        ("  1002 ", "sip:1002@cms.local"),
    ],
)
def test_what_the_agent_types_becomes_a_sip_uri(typed: str, uri: str) -> None:
    assert dial_uri(typed, "cms.local") == uri


@pytest.mark.parametrize("typed", ["", "   ", "bob smith", "a<b", "sip:bob@host\r\nX: 1",
                                   "@host", "bob@", "sip:"])
def test_what_cannot_be_a_sip_uri_is_refused(typed: str) -> None:
    with pytest.raises(BadTarget):
        dial_uri(typed, "cms.local")


def test_without_a_registrar_only_full_addresses_can_be_dialled() -> None:
    with pytest.raises(BadTarget, match="no registrar"):
        dial_uri("1001", None)
    assert dial_uri("bob@127.0.0.1", None) == "sip:bob@127.0.0.1"
