"""Hanging up during a CTI consult, through a real `cms serve` with the project's own UA.

What a contact-centre user expects: the agent putting the receiver down hands the held
caller on (to the consulted party if it answered, else to where the consult was going:
"hang up to transfer"); the consulted party hanging up leaves the caller held for the
agent, who retrieves it (or consults again); the held caller hanging up ends its call but
not the agent's conversation with the consulted party. Who hears whom is judged by FFT.
"""

from __future__ import annotations

import asyncio

import pytest
from call_setups import (
    AGENT1_HZ,
    AGENT2_HZ,
    CALLER_HZ,
    agent_states,
    answered,
    answering,
    assert_caller_talks_to_agent2,
    assert_hears,
    assert_hears_hold_music,
    consult_in_progress,
    customer,
    next_answered,
    run,
    setup,
    three_agents,  # noqa: F401 (the `cms` fixture)
)
from cms_process import CmsProcess, user_name
from cti_client import SUPERVISOR, Api

pytestmark = pytest.mark.integration


def test_agent_hanging_up_an_answered_consult_transfers_the_caller(cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with consult_in_progress(cms) as (
                session, (api, call_id, consult_id, call, agent_side, target)):
            assert await agent_side.hang_up() == 200

            await assert_caller_talks_to_agent2(call, target)
            moved = await api.wait_event("call.transferred", call_id=call_id)
            assert (moved["mode"], moved["reason"], moved["consult_id"]) == (
                "consult", "agent_hangup", consult_id)
            await api.wait_event("call.ended", call_id=consult_id, outcome="completed")
            boss = await Api(cms, session).login(*SUPERVISOR)
            view = await boss.ok("GET", f"/calls/{call_id}")
            assert view["agent"] == user_name(2) and view["state"] == "connected"
            assert not call.ended.is_set() and not target.ended.is_set()
            await call.hang_up()
            await asyncio.wait_for(target.ended.wait(), 5)
            await boss.wait_event("call.ended", call_id=call_id, agent=user_name(2))

    run(cms, scenario)


def test_agent_hanging_up_a_ringing_consult_sends_the_caller_there(cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ)),
                         (2, answering(AGENT2_HZ, ring_for=1.5))) as (session, (phone1, phone2)):
            async with customer(cms) as caller:
                call, agent_side, api, view = await answered(cms, session, caller, phone1)
                consult = await api.ok("POST", f"/calls/{view['id']}/consult",
                                       {"to": user_name(2)})
                ringing = await phone2.next_incoming(5)  # rings 1.5 s before answering

                assert await agent_side.hang_up() == 200

                await asyncio.wait_for(ringing.ended.wait(), 5)
                assert ringing.status == 487  # the consult's INVITE is cancelled ...
                target = await next_answered(phone2)  # ... and the caller's rings instead
                assert target.status == 200
                await assert_caller_talks_to_agent2(call, target)
                moved = await api.wait_event("call.transferred", call_id=view["id"])
                assert (moved["mode"], moved["reason"], moved["to"]) == (
                    "blind", "agent_hangup", user_name(2))
                await api.wait_event("call.ended", call_id=consult["id"],
                                     outcome="agent_hangup")
                await call.hang_up()
                await asyncio.wait_for(target.ended.wait(), 5)

    run(cms, scenario)


def test_consulted_party_hanging_up_leaves_the_caller_held_for_the_agent(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with consult_in_progress(cms) as (
                _session, (api, call_id, consult_id, call, agent_side, target)):
            assert await target.hang_up() == 200

            await api.wait_event("call.ended", call_id=consult_id)
            await assert_hears_hold_music(call.media)  # still held: music, not the agent
            assert not agent_side.ended.is_set() and not call.ended.is_set()
            view = await api.ok("GET", f"/calls/{call_id}")
            assert view["state"] == "held" and not view["related"]
            await api.ok("POST", f"/calls/{call_id}/retrieve")
            await assert_hears(call.media, AGENT1_HZ)
            await assert_hears(agent_side.media, CALLER_HZ)
            await call.hang_up()
            await asyncio.wait_for(agent_side.ended.wait(), 5)

    run(cms, scenario)


def test_held_caller_hanging_up_leaves_agent_and_consulted_party_talking(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with consult_in_progress(cms) as (
                _session, (api, call_id, consult_id, call, agent_side, target)):
            assert await call.hang_up() == 200

            await api.wait_event("call.ended", call_id=call_id, outcome="caller_hangup")
            await assert_hears(agent_side.media, AGENT2_HZ)
            await assert_hears(target.media, AGENT1_HZ)
            assert not agent_side.ended.is_set() and not target.ended.is_set()
            view = await api.ok("GET", f"/calls/{consult_id}")
            assert view["state"] == "connected" and not view["related"]
            states = await agent_states(api, user_name(1))
            assert states[-1] == "on_call"  # still busy: no wrap-up yet
            assert await agent_side.hang_up() == 200
            await asyncio.wait_for(target.ended.wait(), 5)
            await api.wait_event("call.ended", call_id=consult_id)
            await api.wait_event("agent.state_changed", user=user_name(1),
                                 state="wrap_up")

    run(cms, scenario)
