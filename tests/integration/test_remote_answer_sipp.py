"""The CTI's `POST /calls/{id}/answer` on a desk phone that honours `NOTIFY Event: talk`.

The desk phone is SIPp (scenarios/uas_answer_on_notify_talk.xml): it rings, answers the
CMS's out-of-dialog NOTIFY with 200 and only then answers the INVITE, echoing RTP. The
caller is the project's UA, so an established call is proven by hearing its own tone
back through the CMS (FFT).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from call_setups import (
    CALLER_HZ,
    TIMEOUT,
    agent_api,
    assert_hears,
    call_queue,
    customer,
    run,
    three_agents,  # noqa: F401 (the `cms` fixture)
)
from cms_process import CmsProcess, user_name
from cti_client import SUPERVISOR, Api
from sipp_runner import SIPP, SippProcess, free_media_port, start_sipp
from test_calls import register_sipp_agent

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(SIPP is None, reason="sipp (sip-tester) is not installed")]


@pytest.fixture
def desk_phone(cms: CmsProcess, tmp_path: Path) -> Iterator[SippProcess]:
    """SIPp as agent 1's desk phone, answering on NOTIFY Event: talk (two SIPp "calls")."""
    phone = start_sipp(cms.sip_target, tmp_path, scenario="uas_answer_on_notify_talk.xml",
                       calls=2, timeout=20,
                       extra=["-rtp_echo", "-mp", str(free_media_port())])
    try:
        register_sipp_agent(cms, tmp_path, user_name(1), phone.port)
        yield phone
    finally:
        phone.stop()


def test_cti_answer_of_a_desk_phone_honouring_notify_talk_establishes_the_call(
        cms: CmsProcess, desk_phone: SippProcess) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            boss = await Api(cms, session).login(*SUPERVISOR)
            await boss.wait_event("agent.state_changed", user=user_name(1), state="ready")
            async with customer(cms) as caller:
                call = await call_queue(caller)
                offer = await boss.wait_event("call.offered", agent=user_name(1))
                api = await agent_api(cms, session, 1)
                view = await api.ok("GET", f"/calls/{offer['call_id']}")
                assert view["state"] == "ringing"

                status, body = await api.request("POST", f"/calls/{offer['call_id']}/answer")

                assert status == 200, body
                established = await api.wait_event("call.established",
                                                   call_id=offer["call_id"])
                assert established["agent"] == user_name(1)
                view = await api.ok("GET", f"/calls/{offer['call_id']}")
                assert view["state"] == "connected"
                await assert_hears(call.media, CALLER_HZ)  # SIPp echoes it back
                await call.hang_up()
                await api.wait_event("call.ended", call_id=offer["call_id"])

    run(cms, scenario)
    result = desk_phone.wait(10)
    # Both SIPp "calls" completed: the NOTIFY's (200, Event: talk) and the INVITE's.
    assert result.returncode == 0 and result.successful == 2, result.describe()
