"""Attended transfer by a pjsua2 soft phone through the CMS (REFER with Replaces, RFC 5589).

Soft phone A (desk-12, in no queue) calls agent B (agent0001) through the CMS; B calls
agent C (agent0002), which holds A automatically, then transfers with pjsua2's
`Call.xferReplaces`. The CMS (a B2BUA: A never sees C's dialog) must join A and C, tell
B it worked (NOTIFY 200 sipfrag: B hangs up itself) and end B's two dialogs. Each phone
plays its own tone file; who hears whom is judged by FFT of what each played out.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from audio_analysis import TONE_A, TONE_B, TONE_C
from cms_process import DESK, user_password
from phone_factory import heard_level
from softphone_process import SoftphoneProcess, StartSoftphone, wait_until

pytestmark = pytest.mark.integration


def hears(phone: SoftphoneProcess, frequency: float) -> bool:
    return heard_level(phone, frequency) > -20.0


def cti_events(cms: Any, user: str) -> list[dict[str, Any]]:
    """Every journal event `user` (an agent) may see, from the CMS's CTI."""
    login = urllib.request.Request(
        f"{cms.base_url}/api/v1/sessions", method="POST",
        data=json.dumps({"user": user, "password": user_password(user)}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(login, timeout=5) as response:
        token = json.load(response)["token"]
    query = urllib.request.Request(f"{cms.base_url}/api/v1/events?after=0",
                                   headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(query, timeout=5) as response:
        return list(json.load(response)["events"])


def test_a_soft_phone_attended_transfer_joins_the_caller_and_the_consulted_agent(
    start_cms: Callable[..., Any], start_softphone: StartSoftphone,
) -> None:
    cms = start_cms()
    accounts = {"a": (DESK[0], DESK[2]), "b": ("agent0001", user_password("agent0001")),
                "c": ("agent0002", user_password("agent0002"))}
    phones = [start_softphone(name, audio="wav", ready=False, accounts=[{
        "name": "cms", "user": user, "password": password, "registrar": cms.sip_target}])
        for name, (user, password) in accounts.items()]
    a, b, c = (phone.wait_ready() for phone in phones)
    for phone in (a, b, c):
        phone.wait_for_registration("registered")

    a_call = a.post("/calls", {"to": "10001"})
    ringing = b.wait_for_call(lambda call: call["state"] == "incoming")
    b.post(f"/calls/{ringing['id']}/answer")
    b_first = b.wait_for_call(lambda call: call["state"] == "established")
    b_consult = b.post("/calls", {"to": "10002"})
    c_ringing = c.wait_for_call(lambda call: call["state"] == "incoming")
    c.post(f"/calls/{c_ringing['id']}/answer")
    b.wait_for_call(lambda call: call["id"] == b_consult["id"]
                    and call["state"] == "established")
    b.wait_for_call(lambda call: call["id"] == b_first["id"] and call["held"])  # auto-hold
    assert wait_until(lambda: hears(b, TONE_C) and hears(c, TONE_B), 5.0, 0.1)

    b.post(f"/calls/{b_first['id']}/transfer", {"consult_id": b_consult["id"]})

    assert wait_until(lambda: not b.calls(), 5.0), b.calls()
    # A keeps its one call (the CMS re-bridged it), now talking to C.
    assert wait_until(lambda: hears(a, TONE_C) and hears(c, TONE_A), 5.0, 0.1), (
        f"A hears C at {heard_level(a, TONE_C):.1f} dBFS, C hears A at "
        f"{heard_level(c, TONE_A):.1f}")
    assert [call["id"] for call in a.calls()] == [a_call["id"]]
    assert not a.calls()[0]["held"]
    history = {entry["id"]: entry for entry in b.get("/history")["calls"]}
    assert history[b_first["id"]]["transferred"] is True, history  # B saw the NOTIFY 200
    events = cti_events(cms, "agent0001")
    (moved,) = [e for e in events if e["type"] == "call.transferred"]
    assert (moved["mode"], moved["via"], moved["user"]) == ("consult", "refer", "agent0001")
    a.post(f"/calls/{a_call['id']}/hangup")
    assert wait_until(lambda: not c.calls(), 5.0), c.calls()
