"""CTI call control of a real `cms serve` with real phones (the project's sans-IO UA).

A caller reaches an agent through the sales queue; the agent's CRM sees the
call, holds and retrieves it, attaches data and hangs up through /api/v1, and
each step is a journal event. Another agent can neither see nor touch it, and
the interaction record carries the business partner attached on the way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from cms_process import StartCms, user_name, user_password
from cti_client import Api, ua

from cms.media.sources import ToneSource
from scripts.sip_ua import AnswerPolicy

pytestmark = pytest.mark.integration

TIMEOUT = aiohttp.ClientTimeout(total=15)


def test_an_agent_holds_retrieves_attaches_data_and_hangs_up_its_call_by_cti(
        start_cms: StartCms) -> None:
    cms = start_cms(users=2, wrap_up=1)
    name = user_name(1)

    async def scenario() -> None:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            api = await Api(cms, session).login(name)
            other = await Api(cms, session).login(user_name(2))
            answering = AnswerPolicy(ring_for=0.1, source=lambda: ToneSource(1000.0))
            async with ua(cms, name, password=user_password(name), answer=answering) as phone, \
                    ua(cms, "+4930555123") as caller:
                assert await phone.register() == 200
                await api.until_event(0, lambda e: e["type"] == "agent.state_changed"
                                      and e["state"] == "ready")
                call = await caller.call("600", ToneSource(440.0))
                assert call.status == 200, call.reason
                incoming = await phone.next_incoming(5)
                await asyncio.wait_for(incoming.answered.wait(), 5)
                status, listed = await api.request("GET", "/calls")
                assert status == 200 and len(listed["calls"]) == 1, listed
                call_id = listed["calls"][0]["id"]
                start = listed["seq"]
                assert name in listed["calls"][0]["users"]
                status, theirs = await other.request("GET", "/calls")
                assert (status, theirs["calls"]) == (200, [])
                status, body = await other.request("POST", f"/calls/{call_id}/hold")
                assert (status, body["error"]["code"]) == (403, "forbidden")

                status, view = await api.request("POST", f"/calls/{call_id}/hold")
                assert status == 200, view
                await api.until_event(start, lambda e: e["type"] == "call.held"
                                      and e["call_id"] == call_id)
                status, body = await api.request("POST", f"/calls/{call_id}/hold")
                assert status == 409, body  # already held: the B2BUA's refusal, as is
                status, view = await api.request("POST", f"/calls/{call_id}/retrieve")
                assert status == 200, view
                await api.until_event(start, lambda e: e["type"] == "call.retrieved"
                                      and e["call_id"] == call_id)
                status, data = await api.request("PATCH", f"/calls/{call_id}/attached_data",
                                                 json={"business_partner": "BP-4711"})
                assert (status, data["business_partner"]) == (200, "BP-4711"), data
                status, view = await api.request("POST", f"/calls/{call_id}/hangup")
                assert status == 200, view
                await api.until_event(start, lambda e: e["type"] == "call.ended"
                                      and e["call_id"] == call_id)
                status, body = await api.request("GET", f"/calls/{call_id}")
                assert (status, body["error"]["code"]) == (404, "unknown_call")
            status, record = await api.request("GET", f"/interactions/{call_id}")
            assert status == 200, record
            assert (record["business_partner"], record["caller_e164"], record["agent"]) == (
                "BP-4711", "+4930555123", name)
            assert record["answered"] and record["ended"]

    asyncio.run(scenario())


def test_a_click_to_dial_call_is_an_interaction_of_the_agent_who_placed_it(
        start_cms: StartCms) -> None:
    cms = start_cms(users=2)
    name, callee = user_name(1), user_name(2)

    async def scenario() -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            api = await Api(cms, session).login(name)
            answering = AnswerPolicy(ring_for=0.1, source=lambda: ToneSource(1000.0))
            async with ua(cms, name, password=user_password(name), answer=answering) as own, \
                    ua(cms, callee, password=user_password(callee), answer=answering) as far:
                assert await own.register() == 200
                assert await far.register() == 200
                status, view = await api.request("POST", "/calls", json={
                    "to": callee, "attached_data": {"bp": "BP-9"}})
                assert status == 201, view
                assert name in view["users"]
                incoming = await far.next_incoming(5)
                await asyncio.wait_for(incoming.answered.wait(), 5)
                await api.until_event(0, lambda e: e["type"] == "call.established"
                                      and e["call_id"] == view["id"] and e["user"] == callee)
                status, ended = await api.request("POST", f"/calls/{view['id']}/hangup")
                assert status == 200, ended
                await api.until_event(0, lambda e: e["type"] == "call.ended"
                                      and e["call_id"] == view["id"])
            status, page = await api.request("GET", "/interactions")
            assert status == 200, page
            return dict(page["interactions"][0])

    record = asyncio.run(scenario())
    assert (record["kind"], record["agent"], record["business_partner"]) == (
        "click_to_dial", name, "BP-9")
    assert record["target"] == callee and record["caller_e164"] is None  # internal: no E.164
    assert record["answered"] and record["ended"] and record["outcome"]
