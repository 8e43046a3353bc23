"""The CMS's CTI answers a call ringing at the project's soft phone (POST /calls/{id}/answer).

pjsua2 never hands an application an out-of-dialog NOTIFY (`Event: talk`, the desk
phones' remote-answer convention), so the soft phone advertises `X-Remote-Answer:
message` in its 180 and picks up when a MESSAGE names the ringing INVITE's Call-ID.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from audio_analysis import TONE_B, TONE_LEVEL
from cms_process import DESK, user_password
from phone_factory import heard_level, registered_pair
from softphone_process import StartSoftphone, wait_until

pytestmark = pytest.mark.integration

DESK_USER = DESK[0]  # work centre desk-12: a phone in no queue: the caller
AGENT = "agent0002"  # B of registered_pair


def cti(cms: Any, method: str, path: str, token: str = "", body: Any = None
        ) -> tuple[int, Any]:
    """One CTI request: (status, JSON body)."""
    request = urllib.request.Request(
        f"{cms.base_url}/api/v1{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_the_cti_answers_a_queue_call_ringing_at_the_soft_phone(
    start_cms: Callable[..., Any], start_softphone: StartSoftphone,
) -> None:
    cms, caller, agent = registered_pair(start_cms, start_softphone, a_user=DESK_USER)
    status, session = cti(cms, "POST", "/sessions", body={"user": AGENT,
                                                          "password": user_password(AGENT)})
    assert status in (200, 201), session
    token = session["token"]

    dialled = caller.post("/calls", {"to": "600"})
    agent.wait_for_call(lambda c: c["state"] == "incoming", timeout=10)
    assert wait_until(lambda: len(cti(cms, "GET", "/calls", token)[1]["calls"]) == 1, 5.0)
    (call,) = cti(cms, "GET", "/calls", token)[1]["calls"]
    assert wait_until(lambda: any(p["state"] == "ringing" for p in
                                  cti(cms, "GET", f"/calls/{call['id']}", token)[1]["parties"]),
                      5.0)

    status, body = cti(cms, "POST", f"/calls/{call['id']}/answer", token)

    assert status == 200, body
    agent.wait_for_call(lambda c: c["state"] == "established", timeout=5)
    assert wait_until(lambda: heard_level(caller, TONE_B) > TONE_LEVEL - 1.5, 5.0, 0.1), (
        f"the caller hears the agent at {heard_level(caller, TONE_B):.1f} dBFS")
    caller.post(f"/calls/{dialled['id']}/hangup")
    assert wait_until(lambda: not agent.calls(), 5.0)
