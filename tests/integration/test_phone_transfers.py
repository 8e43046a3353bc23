"""Transfers a desk phone does on its own, through a real `cms serve`: REFER with Replaces
(attended transfer, RFC 5589) and INVITE with Replaces (RFC 3891).

Phones are the project's own UA (`scripts.sip_ua`), each playing its own tone and recording
what it hears, so who talks to whom afterwards is judged by FFT. The CMS is a B2BUA: the
transferor's second call is a second call through the CMS, and its Replaces names the
phone's dialog with the CMS, which the CMS must resolve itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import pytest
from call_setups import (
    AGENT1_HZ,
    AGENT2_HZ,
    CALLER_HZ,
    answering,
    assert_caller_talks_to_agent2,
    assert_hears,
    customer,
    early_replaces_of,
    next_answered,
    phone_consult,
    phone_consult_ringing,
    queue_call,
    record_notifies,
    refer_with_replaces,
    replaces_of,
    run,
    setup,
    three_agents,  # noqa: F401 (the `cms` fixture)
    until,
)
from cms_process import CmsProcess, user_extension, user_name
from cti_client import SUPERVISOR, Api

from cms.media.sources import ToneSource
from cms.sip.message import Headers
from scripts.sip_ua import Call, UserAgent

pytestmark = pytest.mark.integration


class QueueCall(NamedTuple):
    """Agent 1's phone answered a caller's queue call; the supervisor watches."""

    boss: Api  # the supervisor's
    phones: list[UserAgent]  # agents 1's and 2's
    call: Call  # the caller's
    first: Call  # agent 1's phone's
    original: dict[str, Any]  # the call as the supervisor's /calls shows it


@asynccontextmanager
async def watched_queue_call(cms: CmsProcess, agent2_rings_for: float = 0.0
                             ) -> AsyncIterator[QueueCall]:
    """Agents 1 and 2 ready (agent 2 answering after `agent2_rings_for` s), and a caller's
    call into the queue answered by agent 1's phone."""
    async with setup(cms, (1, answering(AGENT1_HZ)),
                     (2, answering(AGENT2_HZ, ring_for=agent2_rings_for))) as (
            session, phones):
        boss = await Api(cms, session).login(*SUPERVISOR)
        async with customer(cms) as caller:
            call, first = await queue_call(caller, phones[0])
            (original,) = (await boss.ok("GET", "/calls"))["calls"]
            yield QueueCall(boss, phones, call, first, original)


@pytest.mark.parametrize("refer_in", ["held call", "consult call"])
def test_refer_with_replaces_joins_the_held_caller_with_the_consulted_phone(
        cms: CmsProcess, refer_in: str) -> None:
    async def scenario() -> None:
        async with watched_queue_call(cms) as (boss, (phone1, phone2), call, first, original):
            # The agent's phone holds the caller and calls agent 2 through the CMS.
            await first.reinvite("sendonly")
            await boss.wait_event("call.held", call_id=original["id"], by="agent")
            second, target = await phone_consult(phone1, phone2)
            await assert_hears(second.media, AGENT2_HZ)
            (consult,) = [c for c in (await boss.ok("GET", "/calls"))["calls"]
                          if c["id"] != original["id"]]
            # Phones REFER the held party (most do), or the consulted one: same outcome.
            refer_dialog, replaced = (first, second) if refer_in == "held call" else (
                second, first)
            notifies = record_notifies(refer_dialog)

            status = await refer_with_replaces(phone1, refer_dialog, replaces_of(replaced))

            assert status == 202
            await asyncio.wait_for(first.ended.wait(), 5)  # the CMS hangs up both
            await asyncio.wait_for(second.ended.wait(), 5)
            assert first.ended_by == second.ended_by == "remote"
            assert notifies == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
            await assert_caller_talks_to_agent2(call, target)
            assert call.reinvites == ["sendonly", "sendrecv"]  # held, then resumed
            assert not target.ended.is_set()
            moved = await boss.wait_event("call.transferred", call_id=original["id"])
            assert (moved["mode"], moved["via"], moved["consult_id"], moved["user"]) == (
                "consult", "refer", consult["id"], user_name(1))
            await boss.wait_event("call.ended", call_id=consult["id"], outcome="completed")
            view = await boss.ok("GET", f"/calls/{original['id']}")
            assert view["agent"] == user_name(2) and view["state"] == "connected"
            assert {p["user"] for p in view["parties"]} == {"", user_name(2)}
            await boss.wait_event("agent.state_changed", user=user_name(1),
                                  state="wrap_up")
            await call.hang_up()
            await asyncio.wait_for(target.ended.wait(), 5)
            await boss.wait_event("call.ended", call_id=original["id"],
                                  agent=user_name(2))
            record = await boss.ok("GET", f"/interactions/{original['id']}")
            assert record["agent"] == user_name(2) and record["ended"]

    run(cms, scenario)


def test_refer_with_replaces_of_a_call_still_ringing_sends_the_caller_there(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with watched_queue_call(cms, agent2_rings_for=1.5) as (
                boss, (phone1, phone2), call, first, original):
            await first.reinvite("sendonly")
            second, ringing = await phone_consult_ringing(phone1, phone2)
            notifies = record_notifies(first)

            status = await refer_with_replaces(phone1, first, early_replaces_of(second))

            assert status == 202
            await asyncio.wait_for(first.ended.wait(), 5)
            await asyncio.wait_for(second.ended.wait(), 5)
            assert second.status == 480
            await asyncio.wait_for(ringing.ended.wait(), 5)
            assert ringing.status == 487  # cancelled, and rung again for the caller
            target = await next_answered(phone2)
            assert notifies == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
            assert call.reinvites == ["sendonly", "sendrecv"]  # held, then resumed
            await assert_caller_talks_to_agent2(call, target)
            moved = await boss.wait_event("call.transferred", call_id=original["id"])
            assert (moved["mode"], moved["reason"], moved["to"]) == (
                "blind", "semi_attended", user_extension(2))
            await call.hang_up()
            await asyncio.wait_for(target.ended.wait(), 5)

    run(cms, scenario)


def test_refer_with_replaces_of_an_unknown_dialog_fails_and_keeps_the_call(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ)), (2, answering(AGENT2_HZ))) as (
                _session, (phone1, _phone2)):
            async with customer(cms) as caller:
                call, first = await queue_call(caller, phone1)
                await first.reinvite("sendonly")
                notifies = record_notifies(first)

                status = await refer_with_replaces(phone1, first,
                                                   "no-such-call@x;to-tag=a1;from-tag=b2")

                assert status == 202
                await until(lambda: len(notifies) == 2)
                assert notifies == ["SIP/2.0 100 Trying",
                                    "SIP/2.0 481 Call/Transaction Does Not Exist"]
                await asyncio.sleep(0.3)
                assert not first.ended.is_set() and not call.ended.is_set()
                await first.reinvite("sendrecv")  # the agent takes the caller back
                await assert_hears(call.media, AGENT1_HZ)
                await assert_hears(first.media, CALLER_HZ)
                await call.hang_up()
                await asyncio.wait_for(first.ended.wait(), 5)

    run(cms, scenario)


def test_refer_with_replaces_of_another_phones_call_is_forbidden(cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ)), (2, answering(AGENT2_HZ))) as (
                _session, (phone1, phone2)):
            async with customer(cms) as caller, customer(cms) as other_caller:
                call, first = await queue_call(caller, phone1)
                theirs = await other_caller.call(user_extension(2), ToneSource(CALLER_HZ))
                assert theirs.status == 200
                their_side = await phone2.next_incoming(5)
                notifies = record_notifies(first)

                status = await refer_with_replaces(phone1, first, replaces_of(their_side))

                assert status == 202
                await until(lambda: len(notifies) == 2)
                assert notifies == ["SIP/2.0 100 Trying", "SIP/2.0 403 Forbidden"]
                await asyncio.sleep(0.3)
                assert not any(c.ended.is_set() for c in (call, first, theirs, their_side))
                await assert_hears(call.media, AGENT1_HZ)
                await assert_hears(their_side.media, CALLER_HZ)
                await call.hang_up()
                await theirs.hang_up()

    run(cms, scenario)


def test_invite_with_replaces_takes_over_an_agent_leg(cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with watched_queue_call(cms) as (boss, (phone1, phone2), call, first, original):
            extra = Headers()
            extra["replaces"] = [replaces_of(first)]
            extra["require"] = ["replaces"]

            pickup = await phone2.call(user_extension(1), answering(AGENT2_HZ).source(),
                                       headers=extra)

            assert pickup.status == 200, pickup.reason
            await asyncio.wait_for(first.ended.wait(), 5)
            assert first.ended_by == "remote"
            await assert_caller_talks_to_agent2(call, pickup)
            moved = await boss.wait_event("call.transferred", call_id=original["id"])
            assert (moved["mode"], moved["user"], moved["to"]) == (
                "replaces", user_name(1), user_name(2))
            view = await boss.ok("GET", f"/calls/{original['id']}")
            assert view["agent"] == user_name(2)
            # A Replaces naming no dialog of the CMS is 481 (RFC 3891 §3).
            extra["replaces"] = ["gone@x;to-tag=1;from-tag=2"]
            stray = await phone2.call(user_extension(1), headers=extra)
            assert stray.status == 481
            await call.hang_up()
            await asyncio.wait_for(pickup.ended.wait(), 5)

    run(cms, scenario)
