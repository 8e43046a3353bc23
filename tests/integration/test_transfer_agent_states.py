"""The consulted agent stays busy through a transfer that joins it to the caller, through a
real `cms serve` with the project's own UA.

When a consult becomes the transfer (a phone's REFER with Replaces, or the agent hanging
up during an answered CTI consult), the consulted agent moves from the consult call to the
transferred one. It must never look free in between: with a caller waiting in the queue,
the ACD would offer that caller to the agent's phone (an INVITE, cancelled at once).
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any

import pytest
from call_setups import (
    AGENT1_HZ,
    AGENT2_HZ,
    agent_states,
    answering,
    assert_hears,
    call_queue,
    consulted,
    customer,
    phone_consult,
    queue_call,
    record_notifies,
    refer_with_replaces,
    replaces_of,
    run,
    setup,
    three_agents,  # noqa: F401 (the `cms` fixture)
)
from cms_process import CmsProcess, user_extension, user_name, user_password
from cti_client import SUPERVISOR, Api

from cms.media.sources import ToneSource
from cms.sip.message import Headers
from scripts.sip_ua import UserAgent

pytestmark = pytest.mark.integration


async def waiting_caller(boss: Api, caller: UserAgent) -> None:
    """`caller` calls the queue while every agent is busy: it waits there."""
    await call_queue(caller)
    await boss.wait_event("queue.caller_joined")


async def assert_left_busy(boss: Api, phone: UserAgent, user: str, after: int) -> None:
    """`user` was never ready (nor rung) since event `after`, and its phone got no INVITE."""
    with suppress(TimeoutError):
        stray = await phone.next_incoming(1.0)
        raise AssertionError(f"{user}'s phone was rung for {stray.call_id} during the transfer")
    states = await agent_states(boss, user, after)
    assert not {"ready", "ringing"} & set(states), states
    (agent,) = [a for a in (await boss.ok("GET", "/agents"))["agents"] if a["user"] == user]
    assert agent["state"] == "on_call", agent


async def last_seq(boss: Api) -> int:
    events: list[dict[str, Any]] = await boss.all_events()
    return int(events[-1]["seq"]) if events else 0


def test_refer_with_replaces_keeps_the_consulted_agent_busy(cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ)), (2, answering(AGENT2_HZ))) as (
                session, (phone1, phone2)):
            boss = await Api(cms, session).login(*SUPERVISOR)
            async with customer(cms) as caller, customer(cms) as other_caller:
                call, first = await queue_call(caller, phone1)
                await first.reinvite("sendonly")
                second, target = await phone_consult(phone1, phone2)
                await waiting_caller(boss, other_caller)
                record_notifies(first)
                after = await last_seq(boss)

                assert await refer_with_replaces(phone1, first, replaces_of(second)) == 202

                await asyncio.wait_for(first.ended.wait(), 5)
                await assert_left_busy(boss, phone2, user_name(2), after)
                await assert_hears(call.media, AGENT2_HZ)
                await call.hang_up()
                await asyncio.wait_for(target.ended.wait(), 5)

    run(cms, scenario)


def test_agent_hanging_up_an_answered_consult_keeps_the_consulted_agent_busy(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ)), (2, answering(AGENT2_HZ))) as (
                session, (phone1, phone2)):
            boss = await Api(cms, session).login(*SUPERVISOR)
            async with customer(cms) as caller, customer(cms) as other_caller:
                _api, _call_id, _consult_id, call, agent_side, target = await consulted(
                    cms, session, phone1, phone2, caller)
                await waiting_caller(boss, other_caller)
                after = await last_seq(boss)

                assert await agent_side.hang_up() == 200

                await assert_left_busy(boss, phone2, user_name(2), after)
                await assert_hears(call.media, AGENT2_HZ)
                await call.hang_up()
                await asyncio.wait_for(target.ended.wait(), 5)

    run(cms, scenario)


def test_invite_with_replaces_of_an_agent_leg_shared_by_a_consult_is_refused(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ)), (2, answering(AGENT2_HZ)),
                         (3, answering(AGENT2_HZ))) as (session, (phone1, phone2, phone3)):
            boss = await Api(cms, session).login(*SUPERVISOR)
            async with customer(cms) as caller:
                api, call_id, consult_id, call, agent_side, target = await consulted(
                    cms, session, phone1, phone2, caller)
                extra = Headers()
                extra["replaces"] = [replaces_of(agent_side)]

                # The agent's leg is the consult's too: taking it over would leave the
                # consult with a dead leg (the consulted agent talking to no one).
                pickup = await phone3.call(user_extension(1), headers=extra)

                assert pickup.status == 603
                assert not agent_side.ended.is_set()
                await assert_hears(agent_side.media, AGENT2_HZ)
                assert {c["id"] for c in (await boss.ok("GET", "/calls"))["calls"]} == {
                    call_id, consult_id}
                await api.ok("POST", f"/calls/{call_id}/complete",
                             {"consult_id": consult_id, "as": "transfer"})
                await assert_hears(call.media, AGENT2_HZ)
                await call.hang_up()
                await asyncio.wait_for(target.ended.wait(), 5)

    run(cms, scenario)


def test_an_agent_taking_its_call_over_on_another_phone_stays_on_call_then_wraps_up(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ))) as (session, (phone1,)):
            boss = await Api(cms, session).login(*SUPERVISOR)
            name = user_name(1)
            async with customer(cms) as caller, customer(cms) as other_caller, UserAgent(
                    cms.sip_address, user=name, password=user_password(name)) as desk:
                call, first = await queue_call(caller, phone1)
                # The phone's 200 races the CMS's on_call event: take `after` past it.
                await boss.wait_event("agent.state_changed", user=name, state="on_call")
                await waiting_caller(boss, other_caller)
                after = await last_seq(boss)
                extra = Headers()
                extra["replaces"] = [replaces_of(first)]

                # The same agent pulls the call to its other phone (same account).
                pickup = await desk.call(user_extension(1), ToneSource(AGENT2_HZ),
                                         headers=extra)

                assert pickup.status == 200, pickup.reason
                await asyncio.wait_for(first.ended.wait(), 5)
                await assert_hears(call.media, AGENT2_HZ)
                states = await agent_states(boss, name, after)
                assert states == [], states  # on the call throughout, not wrapped up
                await call.hang_up()
                await asyncio.wait_for(pickup.ended.wait(), 5)
                # The queue call's wrap-up comes when the call really ends.
                await boss.wait_event("agent.state_changed", user=name, state="wrap_up")

    run(cms, scenario)
