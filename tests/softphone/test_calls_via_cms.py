"""Soft phones registered to a real `cms serve` call each other through it (CMS issue 3:
direct calls to an extension, and calls into a queue distributed to a ready agent)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from audio_analysis import TONE_A, TONE_B, TONE_LEVEL
from cms_process import DESK
from phone_factory import heard_level, registered_pair
from softphone_process import StartSoftphone, wait_until

pytestmark = pytest.mark.integration

DESK_USER = DESK[0]  # work centre desk-12: a phone in no queue


def test_two_soft_phones_call_each_other_through_the_cms_and_hear_each_other(
    start_cms: Callable[..., Any], start_softphone: StartSoftphone,
) -> None:
    cms, a, b = registered_pair(start_cms, start_softphone)

    call = a.post("/calls", {"to": "10002"})

    assert call["remote"] == f"sip:10002@{cms.sip_target}"
    ringing = b.wait_for_call(lambda c: c["state"] == "incoming")
    assert "agent0001@" in ringing["remote"]
    b.post(f"/calls/{ringing['id']}/answer")
    a.wait_for_call(lambda c: c["id"] == call["id"] and c["state"] == "established")
    assert wait_until(lambda: heard_level(a, TONE_B) > TONE_LEVEL - 1.5
                      and heard_level(b, TONE_A) > TONE_LEVEL - 1.5, 5.0, 0.1), (
        f"A hears B at {heard_level(a, TONE_B):.1f} dBFS, "
        f"B hears A at {heard_level(b, TONE_A):.1f}")

    a.post(f"/calls/{call['id']}/hangup")
    assert wait_until(lambda: not a.calls() and not b.calls(), 5.0)


def test_a_call_to_the_sales_queue_rings_the_ready_agent_soft_phone(
    start_cms: Callable[..., Any], start_softphone: StartSoftphone,
) -> None:
    # A is a desk phone (work centre desk-12, in no queue): the caller; B the only agent
    cms, a, b = registered_pair(start_cms, start_softphone, a_user=DESK_USER)

    call = a.post("/calls", {"to": "600"})

    ringing = b.wait_for_call(lambda c: c["state"] == "incoming", timeout=10)
    b.post(f"/calls/{ringing['id']}/answer")

    b.wait_for_call(lambda c: c["state"] == "established")
    assert wait_until(lambda: heard_level(a, TONE_B) > TONE_LEVEL - 1.5, 5.0, 0.1), (
        f"the caller hears the agent at {heard_level(a, TONE_B):.1f} dBFS")
    a.post(f"/calls/{call['id']}/hangup")
    assert wait_until(lambda: not b.calls(), 5.0)
