"""Call control through a real `cms serve`: the CTI's /calls routes driving the B2BUA.

The phones are the project's own UA (`scripts.sip_ua`): each registers by digest (and
is logged on), answers with its own tone, and records what it hears, so who hears
whom is judged by FFT after click-to-dial, hold, transfer, consult and conference.
The CTI is driven over HTTP as the agent (or a supervisor), and the journal's call
events are read back through `GET /events`.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from baresip_runner import Baresip
from baresip_runner import available as baresip_available
from baresip_runner import config_text as baresip_config
from call_setups import (
    AGENT1_HZ,
    AGENT2_HZ,
    CALLER_HZ,
    agent_api,
    answered,
    answering,
    assert_caller_talks_to_agent2,
    assert_hears,
    assert_hears_hold_music,
    call_queue,
    consult_in_progress,
    customer,
    heard,
    next_answered,
    queue_call,
    run,
    setup,
    three_agents,  # noqa: F401 (the `cms` fixture)
    until,
)
from cms_process import DESK, CmsProcess, user_extension, user_name, user_password
from cti_client import SUPERVISOR, Api
from sipp_runner import SIPP, free_media_port, start_sipp

from cms.sip.message import Headers
from scripts.sip_ua import AnswerPolicy, Call, UserAgent

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- helpers


def tone_strength(samples: np.ndarray, frequency: float) -> float:
    """Spectral peak near `frequency` relative to the median bin, in dB."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    bins = np.fft.rfftfreq(samples.size, 1 / 8000)
    near = spectrum[np.abs(bins - frequency) <= 15]
    return float(20 * np.log10(near.max() / (np.median(spectrum) + 1e-9)))


async def offered(cms: CmsProcess, session: aiohttp.ClientSession, caller: UserAgent,
                  phone: UserAgent) -> tuple[Call, Call, Api, dict[str, Any]]:
    """A caller's call into queue 600 offered to agent 1's `phone`, not answered.

    (the caller's call, the phone's offer, agent 1's API, the call as its /calls shows it)
    """
    call = await call_queue(caller)
    offer = await phone.next_incoming(5)
    api = await agent_api(cms, session, 1)
    (view,) = (await api.ok("GET", "/calls"))["calls"]
    return call, offer, api, view


# --------------------------------------------------------------------------- click-to-dial


def test_click_to_dial_rings_own_phone_with_auto_answer_then_bridges_both_ways(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ)), (2, answering(AGENT2_HZ))) as (
                session, (phone1, phone2)):
            api = await agent_api(cms, session, 1)
            view = await api.ok("POST", "/calls", {"to": user_extension(2),
                                                   "attached_data": {"ticket": 42}})
            assert view["kind"] == "click_to_dial" and view["agent"] == user_name(1)
            own = await phone1.next_incoming(5)
            assert "answer-after=0" in (own.invite.headers.first("call-info") or "")
            assert "alert-autoanswer" in (own.invite.headers.first("alert-info") or "")
            far = await phone2.next_incoming(5)
            assert far.attached_data is not None and far.attached_data["ticket"] == 42
            await asyncio.wait_for(far.answered.wait(), 5)
            await assert_hears(own.media, AGENT2_HZ)
            await assert_hears(far.media, AGENT1_HZ)
            calls = (await api.ok("GET", "/calls"))["calls"]
            assert [c["state"] for c in calls] == ["connected"]
            created = await api.wait_event("interaction.created", call_id=view["id"])
            assert created["kind"] == "click_to_dial" and created["attached_data"]["ticket"] == 42
            boss = await Api(cms, session).login(*SUPERVISOR)
            dialing = [e for e in await boss.all_events() if e["type"] == "call.dialing"]
            assert {(e["user"], e["role"]) for e in dialing} == {(user_name(1), "agent"),
                                                                 (user_name(2), "callee")}
            # An agent sees its own leg's events, not its colleague's.
            assert [e["user"] for e in await api.all_events()
                    if e["type"] == "call.dialing"] == [user_name(1)]
            await api.wait_event("call.established", call_id=view["id"], user=user_name(2))
            agent = (await api.ok("GET", f"/agents/{user_name(1)}"))
            assert agent["state"] == "on_call"
            await api.ok("POST", f"/calls/{view['id']}/hangup")
            await asyncio.wait_for(own.ended.wait(), 5)
            await asyncio.wait_for(far.ended.wait(), 5)
            await api.wait_event("call.ended", call_id=view["id"])

    run(cms, scenario)


def test_click_to_dial_of_an_agent_at_a_work_centre_rings_that_desk(cms: CmsProcess) -> None:
    async def scenario() -> None:
        desk_name, _, desk_password = DESK
        async with setup(cms, (1, answering(AGENT1_HZ))) as (session, (phone1,)):
            desk = UserAgent(cms.sip_address, user=desk_name, answer=answering(AGENT2_HZ),
                             password=desk_password)
            await desk.start()
            try:
                assert await desk.register() == 200
                api = await agent_api(cms, session, 3)  # agent 3's own phone is not on
                await api.ok("POST", f"/agents/{user_name(3)}/logon", {"device": desk_name})
                view = await api.ok("POST", "/calls", {"to": user_name(1)})
                own = await desk.next_incoming(5)
                far = await phone1.next_incoming(5)
                await asyncio.wait_for(far.answered.wait(), 5)
                await assert_hears(own.media, AGENT1_HZ)
                await assert_hears(far.media, AGENT2_HZ)
                assert {p["user"] for p in (await api.ok("GET", f"/calls/{view['id']}"))[
                    "parties"]} == {user_name(3), user_name(1)}
                await api.ok("POST", f"/calls/{view['id']}/hangup")
                await asyncio.wait_for(far.ended.wait(), 5)
            finally:
                await desk.close()

    run(cms, scenario)


def test_click_to_dial_to_an_outside_number_is_refused_without_a_trunk(cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ))) as (session, _phones):
            api = await agent_api(cms, session, 1)
            status, body = await api.request("POST", "/calls", {"to": "0049301234567"})
            assert status == 404 and body["error"]["code"] == "unknown_destination"
            status, body = await api.request("POST", "/calls", {"to": "<sip:x@y>"})
            assert status in (400, 422)
            assert (await api.ok("GET", "/calls"))["calls"] == []

    run(cms, scenario)


# --------------------------------------------------------------------------- hold, DTMF, blind


def test_hold_plays_music_retrieve_rebridges_dtmf_reaches_caller_and_blind_transfer(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ)), (2, answering(AGENT2_HZ))) as (
                session, (phone1, phone2)):
            async with customer(cms) as caller:
                call, agent_side, api, view = await answered(cms, session, caller, phone1)
                await assert_hears(call.media, AGENT1_HZ)
                # The phone's own hold (re-INVITE sendonly) is a call event too.
                await agent_side.reinvite("sendonly")
                await api.wait_event("call.held", call_id=view["id"], by="agent")
                await agent_side.reinvite("sendrecv")
                await api.wait_event("call.retrieved", call_id=view["id"], by="agent")
                held = await api.ok("POST", f"/calls/{view['id']}/hold")
                assert held["state"] == "held"
                await assert_hears_hold_music(call.media)
                await api.wait_event("call.held", call_id=view["id"], by="cti")
                await api.ok("POST", f"/calls/{view['id']}/retrieve")
                await assert_hears(call.media, AGENT1_HZ)
                await api.wait_event("call.retrieved", call_id=view["id"], by="cti")
                await api.ok("POST", f"/calls/{view['id']}/dtmf", {"digits": "42#"})
                await until(lambda: call.media.leg.stats().digits == "42#")
                status, body = await api.request("POST", f"/calls/{view['id']}/dtmf",
                                                 {"digits": "x"})
                assert status in (400, 422)
                await api.ok("POST", f"/calls/{view['id']}/transfer",
                             {"to": user_name(2), "mode": "blind"})
                await asyncio.wait_for(agent_side.ended.wait(), 5)
                target = await next_answered(phone2)
                await assert_caller_talks_to_agent2(call, target)
                await api.wait_event("call.transferred", call_id=view["id"], mode="blind")
                await call.hang_up()
                await asyncio.wait_for(target.ended.wait(), 5)

    run(cms, scenario)


def test_phone_initiated_refer_transfers_the_caller(cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ)), (2, answering(AGENT2_HZ))) as (
                session, (phone1, phone2)):
            async with customer(cms) as caller:
                call, agent_side = await queue_call(caller, phone1)
                assert agent_side.dialog is not None
                extra = Headers()
                extra["refer-to"] = [f"<sip:{user_extension(2)}@cms.test>"]
                refer = agent_side.dialog.new_request("REFER", phone1.sent_by, "UDP", extra)
                response = await phone1.request(refer, agent_side.remote)
                assert response is not None and response.status == 202
                await asyncio.wait_for(agent_side.ended.wait(), 5)
                target = await next_answered(phone2)
                await assert_caller_talks_to_agent2(call, target)
                api = await agent_api(cms, session, 1)
                await api.wait_event("call.transferred", mode="blind", via="refer",
                                     to=user_extension(2), user=user_name(1))
                await call.hang_up()

    run(cms, scenario)


def test_blind_transfer_to_the_queue_reaches_another_agent(cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ)), (2, answering(AGENT2_HZ))) as (
                session, (phone1, phone2)):
            async with customer(cms) as caller:
                call, agent_side, api, view = await answered(cms, session, caller, phone1)
                moved = await api.ok("POST", f"/calls/{view['id']}/transfer",
                                     {"to": "600", "mode": "blind"})
                assert moved["queue"] == "sales"
                await asyncio.wait_for(agent_side.ended.wait(), 5)
                # Agent 1 is in wrap-up now: the queue offers the caller to agent 2.
                target = await next_answered(phone2, 8)
                await assert_caller_talks_to_agent2(call, target)
                await call.hang_up()
                await asyncio.wait_for(target.ended.wait(), 5)

    run(cms, scenario)


def test_click_to_dial_a_queue_puts_the_agent_in_it_as_a_caller(cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ)), (2, answering(AGENT2_HZ))) as (
                session, (phone1, phone2)):
            api = await agent_api(cms, session, 1)
            view = await api.ok("POST", "/calls", {"to": "600"})
            own = await phone1.next_incoming(5)
            far = await phone2.next_incoming(8)  # agent 1 is on this call: agent 2 gets it
            await asyncio.wait_for(far.answered.wait(), 5)
            await assert_hears(own.media, AGENT2_HZ)
            await assert_hears(far.media, AGENT1_HZ)
            assert (await api.ok("GET", f"/calls/{view['id']}"))["queue"] == "sales"
            await own.hang_up()
            await asyncio.wait_for(far.ended.wait(), 5)

    run(cms, scenario)


def baresip_command(port: int, command: str, params: str) -> None:
    """One command to baresip's ctrl_tcp module (JSON in a netstring)."""
    payload = json.dumps({"command": command, "params": params, "token": "t1"}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(str(len(payload)).encode() + b":" + payload + b",")
        conn.recv(4096)  # its response: the command was taken


@pytest.mark.skipif(not baresip_available("g711", "ausine", "menu", "ctrl_tcp"),
                    reason="baresip with g711, ausine, menu and ctrl_tcp is not installed")
def test_a_baresip_agent_transfers_by_refer_and_the_caller_reaches_the_target(
        cms: CmsProcess, tmp_path: Path) -> None:
    name = user_name(1)
    control = free_media_port()  # any free TCP port will do
    config = baresip_config(tone_hz=int(AGENT1_HZ)) + "\n".join([
        "module\t\t\tmenu.so", "module\t\t\tctrl_tcp.so",
        f"ctrl_tcp_listen\t\t127.0.0.1:{control}", ""])
    account = (f"<sip:{name}@{cms.sip_target}>;auth_pass={user_password(name)}"
               ";regint=60;answermode=auto")
    baresip = Baresip(tmp_path / "baresip", account, config)

    async def scenario() -> None:
        async with setup(cms, (2, answering(AGENT2_HZ))) as (session, (phone2,)):
            boss = await Api(cms, session).login(*SUPERVISOR)
            await boss.wait_event("agent.state_changed", timeout=10, user=name, state="ready")
            # Agent 2 takes no queue calls (the queue must pick baresip); its extension rings.
            await boss.ok("PUT", f"/agents/{user_name(2)}/state", {"state": "not_ready"})
            async with customer(cms) as caller:
                call = await call_queue(caller)
                await boss.wait_event("call.established", timeout=15, user=name)
                await asyncio.to_thread(baresip_command, control, "transfer", user_extension(2))
                target = await next_answered(phone2, 8)
                await assert_caller_talks_to_agent2(call, target)
                await boss.wait_event("call.transferred", mode="blind", user=name)
                await call.hang_up()

    try:
        run(cms, scenario)
    except BaseException:
        print(f"--- baresip:\n{baresip.output[-6000:]}")
        raise
    finally:
        baresip.terminate()


# --------------------------------------------------------------------------- consult, complete


def test_consult_then_complete_as_transfer_joins_caller_and_consulted(cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with consult_in_progress(cms) as (
                _session, (api, call_id, consult_id, call, agent_side, target)):
            await api.ok("POST", f"/calls/{call_id}/complete",
                         {"consult_id": consult_id, "as": "transfer"})
            await asyncio.wait_for(agent_side.ended.wait(), 5)
            await assert_caller_talks_to_agent2(call, target)
            await api.wait_event("call.transferred", call_id=call_id, mode="consult")
            await call.hang_up()
            await asyncio.wait_for(target.ended.wait(), 5)

    run(cms, scenario)


def test_consult_then_complete_as_conference_lets_each_hear_the_other_two(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with consult_in_progress(cms) as (
                _session, (api, call_id, consult_id, call, agent_side, target)):
            done = await api.ok("POST", f"/calls/{call_id}/complete",
                                {"consult_id": consult_id, "as": "conference"})
            assert len(done["parties"]) == 3
            await asyncio.sleep(0.3)
            for media, hears, not_own in ((call.media, (AGENT1_HZ, AGENT2_HZ), CALLER_HZ),
                                          (agent_side.media, (CALLER_HZ, AGENT2_HZ),
                                           AGENT1_HZ),
                                          (target.media, (CALLER_HZ, AGENT1_HZ),
                                           AGENT2_HZ)):
                audio = await heard(media, 0.6)
                others = [tone_strength(audio, frequency) for frequency in hears]
                assert min(others) > 40
                # Not its own voice back (G.711 intermodulation of the others stays far
                # below them; its own voice mixed in would be as strong as they are).
                assert tone_strength(audio, not_own) < min(others) - 30
            await api.wait_event("call.conferenced", call_id=call_id)
            # Agent 2 leaves: caller and agent 1 keep talking, bridged again.
            await target.hang_up()
            await assert_hears(call.media, AGENT1_HZ)
            await assert_hears(agent_side.media, CALLER_HZ)
            await call.hang_up()
            await asyncio.wait_for(agent_side.ended.wait(), 5)

    run(cms, scenario)


def test_a_refused_consult_leaves_the_caller_held_until_retrieved(cms: CmsProcess) -> None:
    async def scenario() -> None:
        busy = AnswerPolicy(reject=486)
        async with setup(cms, (1, answering(AGENT1_HZ)), (2, busy)) as (
                session, (phone1, _phone2)):
            async with customer(cms) as caller:
                call, agent_side, api, view = await answered(cms, session, caller, phone1)
                consult = await api.ok("POST", f"/calls/{view['id']}/consult",
                                       {"to": user_name(2)})
                await api.wait_event("call.ended", call_id=consult["id"], outcome="busy")
                await assert_hears_hold_music(call.media)
                status, body = await api.request(
                    "POST", f"/calls/{view['id']}/complete",
                    {"consult_id": consult["id"], "as": "transfer"})
                assert status == 404 and body["error"]["code"] == "no_such_call"
                await api.ok("POST", f"/calls/{view['id']}/retrieve")
                await assert_hears(call.media, AGENT1_HZ)
                await assert_hears(agent_side.media, CALLER_HZ)
                await call.hang_up()

    run(cms, scenario)


# --------------------------------------------------------------------------- answer, reject


def test_remote_answer_refused_by_a_phone_without_it_and_reject_cancels_the_offer(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ, ring_for=None))) as (session, (phone1,)):
            async with customer(cms) as caller:
                call, offer, api, view = await offered(cms, session, caller, phone1)
                # Our UA answers an out-of-dialog NOTIFY with 501: no remote answer.
                status, body = await api.request("POST", f"/calls/{view['id']}/answer")
                assert status == 409 and body["error"]["code"] == "cannot_answer_remotely"
                await api.ok("POST", f"/calls/{view['id']}/reject")
                await asyncio.wait_for(offer.ended.wait(), 5)
                assert offer.status == 487
                await api.wait_event("call.offer_ended", agent=user_name(1), outcome="rejected")
                await call.hang_up()

    run(cms, scenario)


def test_hangup_by_an_agent_only_offered_the_call_declines_it_and_spares_the_caller(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ, ring_for=None))) as (session, (phone1,)):
            async with customer(cms) as caller:
                call, offer, api, view = await offered(cms, session, caller, phone1)
                await api.ok("POST", f"/calls/{view['id']}/hangup")
                await asyncio.wait_for(offer.ended.wait(), 5)
                assert offer.status == 487
                boss = await Api(cms, session).login(*SUPERVISOR)
                assert [c["id"] for c in (await boss.ok("GET", "/calls"))["calls"]] == [
                    view["id"]]
                assert call.is_up
                await call.hang_up()

    run(cms, scenario)


def test_attached_data_merge_patch_and_its_event(cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ)), (2, answering(AGENT2_HZ))) as (
                session, _phones):
            api = await agent_api(cms, session, 1)
            view = await api.ok("POST", "/calls", {"to": user_name(2),
                                                   "attached_data": {"a": 1, "b": {"c": 2}}})
            data = await api.ok("PATCH", f"/calls/{view['id']}/attached_data",
                                {"a": None, "b": {"d": 3}})
            assert data["b"] == {"c": 2, "d": 3} and "a" not in data
            assert (await api.ok("GET", f"/calls/{view['id']}/attached_data")) == data
            event = await api.wait_event("call.attached_data_changed", call_id=view["id"])
            assert event["attached_data"] == data
            await api.ok("POST", f"/calls/{view['id']}/hangup")

    run(cms, scenario)


# --------------------------------------------------------------------------- late offer


@pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")
def test_late_offer_invite_gets_the_offer_in_200_and_media_from_the_ack_answer(
        cms: CmsProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ))) as (_session, (phone1,)):
            # SIPp calls agent 1's extension with no SDP, answers our offer in its ACK and
            # echoes the RTP it gets: agent 1 hears its own tone back through the CMS.
            caller = start_sipp(cms.sip_target, tmp_path, scenario="uac_late_offer.xml",
                                calls=1, timeout=20,
                                extra=["-s", user_extension(1), "-d", "2500", "-rtp_echo",
                                       "-mp", str(free_media_port())])
            try:
                incoming = await phone1.next_incoming(8)
                await asyncio.wait_for(incoming.answered.wait(), 5)
                await asyncio.sleep(0.5)
                await assert_hears(incoming.media, AGENT1_HZ)
                result = await asyncio.to_thread(caller.wait, 20)
                assert result.returncode == 0 and result.successful == 1, result.describe()
                await asyncio.wait_for(incoming.ended.wait(), 5)
            finally:
                caller.stop()

    run(cms, scenario)
