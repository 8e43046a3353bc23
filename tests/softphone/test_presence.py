"""Colleagues' presence (issue 5): with `[cms_api]` the soft phone follows the CMS's CTI API
and shows who is available on its own API (`GET /presence`, `presence.changed` events)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from cms_process import free_port, user_password
from softphone_process import EventRecorder, StartSoftphone, wait_until

pytestmark = pytest.mark.integration


def presence_of(phone: Any, user: str) -> str | None:
    return next((p["presence"] for p in phone.get("/presence") if p["user"] == user), None)


def test_a_colleague_who_registers_shows_as_available(
    start_cms: Callable[..., Any], start_softphone: StartSoftphone,
) -> None:
    cms = start_cms()
    account = {"name": "cms", "user": "agent0001", "password": user_password("agent0001"),
               "registrar": cms.sip_target}
    a = start_softphone("a", accounts=[account], cms_api={"url": cms.base_url})
    a.wait_for_registration("registered")
    # the snapshot arrived: every configured agent is listed, agent0002 not yet logged on
    assert wait_until(lambda: presence_of(a, "agent0002") is not None, 5.0), a.log_text()
    assert presence_of(a, "agent0002") != "available"
    events = EventRecorder(a)
    try:
        b = start_softphone("b", accounts=[{
            "name": "cms", "user": "agent0002", "password": user_password("agent0002"),
            "registrar": cms.sip_target}])
        b.wait_for_registration("registered")

        assert wait_until(lambda: presence_of(a, "agent0002") == "available", 5.0), (
            a.get("/presence"))
        event = events.wait_for(lambda e: e["type"] == "presence.changed"
                                and e["user"] == "agent0002")
        assert event["presence"] == "available"
        assert isinstance(event["seq"], int) and event["time"]
    finally:
        events.close()


def test_an_unreachable_cms_api_does_not_stop_the_phone(
    start_softphone: StartSoftphone,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    phone = start_softphone("a", cms_api={"url": url, "user": "agent0001", "password": "x"})

    assert phone.get("/presence") == []
    assert wait_until(lambda: "CMS presence" in phone.log_text(), 5.0), phone.log_text()
    assert phone.status()["version"]
