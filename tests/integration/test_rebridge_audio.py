"""How soon both parties hear each other after the CMS re-bridges a call, through a real
`cms serve` with the project's own UA: CTI retrieve, consult completed as a transfer, a
blind transfer to the queue of a caller on hold music, and a phone's semi-attended
transfer of a caller its phone held (the CMS had offered the caller sendonly).

Each phone plays its own tone and records what arrives with its arrival time; the gap is
from the moment of the re-bridge (the CTI command sent, or the new party's 200) to the
first 20 ms packet dominated by the new party's tone. Anchored media is relayed as it
arrives, so this is a few ms; a party still offered sendonly would never be heard (it
answered recvonly and sends nothing), which the semi-attended case guards.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from call_setups import (
    AGENT1_HZ,
    AGENT2_HZ,
    CALLER_HZ,
    answered,
    answering,
    assert_hears_hold_music,
    consult_in_progress,
    customer,
    early_replaces_of,
    next_answered,
    phone_consult_ringing,
    queue_call,
    record_notifies,
    refer_with_replaces,
    run,
    setup,
    three_agents,  # noqa: F401 (the `cms` fixture)
)
from cms_process import CmsProcess

from scripts.sip_ua import Call
from scripts.ua_media import CallMedia, dominant_frequency, level_dbfs

pytestmark = pytest.mark.integration

MAX_GAP = 0.3  # seconds; relaying starts with the next packet (~20 ms), 300 ms is a clear fault
LISTEN = 1.0  # seconds of audio recorded after the re-bridge before judging


def first_heard(media: CallMedia, frequency: float, since: float) -> float | None:
    """Arrival of the first packet after `since` that carries `frequency` (per 20 ms packet:
    FFT bins of 50 Hz, so the tones used here, 440/1000/1600 Hz, are told apart)."""
    for packet in media.recording.audio_packets(media.payload_type, since):
        samples = media.codec.decode(packet.payload)
        if level_dbfs(samples) > -30 and abs(dominant_frequency(samples) - frequency) <= 60:
            return packet.arrival
    return None


def assert_prompt(media: CallMedia, frequency: float, since: float, who: str) -> float:
    """`media` heard `frequency` within MAX_GAP of `since`; returns the gap in seconds."""
    arrival = first_heard(media, frequency, since)
    assert arrival is not None, f"{who}: {frequency:.0f} Hz never heard after the re-bridge"
    gap = arrival - since
    assert gap <= MAX_GAP, f"{who}: first heard {gap * 1000:.0f} ms after the re-bridge"
    return gap


async def assert_both_hear_promptly(call: Call, hears: float, other: Call, who: str,
                                    since: float | None = None) -> None:
    """Over the next LISTEN s the caller (`call`) hears `hears` and `other` (`who`) the
    caller, each within MAX_GAP of `since` (by default: `other`'s answer)."""
    await asyncio.sleep(LISTEN)
    if since is None:
        assert other.answered_at is not None
        since = other.answered_at
    assert_prompt(call.media, hears, since, "caller")
    assert_prompt(other.media, CALLER_HZ, since, who)


def test_cti_retrieve_rebridges_both_parties_at_once(cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ))) as (session, (phone1,)):
            async with customer(cms) as caller:
                call, agent_side, api, view = await answered(cms, session, caller, phone1)
                await api.ok("POST", f"/calls/{view['id']}/hold")
                await assert_hears_hold_music(call.media, 1.0)

                since = time.monotonic()
                await api.ok("POST", f"/calls/{view['id']}/retrieve")

                await assert_both_hear_promptly(call, AGENT1_HZ, agent_side, "agent", since)
                await call.hang_up()

    run(cms, scenario)


def test_consult_completed_as_transfer_rebridges_both_parties_at_once(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with consult_in_progress(cms) as (
                _session, (api, call_id, consult_id, call, _agent_side, target)):
            since = time.monotonic()
            await api.ok("POST", f"/calls/{call_id}/complete",
                         {"consult_id": consult_id, "as": "transfer"})

            await assert_both_hear_promptly(call, AGENT2_HZ, target, "consulted agent", since)
            await call.hang_up()

    run(cms, scenario)


def test_blind_transfer_to_the_queue_after_hold_music_bridges_at_the_answer(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ)), (2, answering(AGENT2_HZ))) as (
                session, (phone1, phone2)):
            async with customer(cms) as caller:
                call, _agent_side, api, view = await answered(cms, session, caller, phone1)
                await api.ok("POST", f"/calls/{view['id']}/hold")
                await assert_hears_hold_music(call.media, 0.5)

                await api.ok("POST", f"/calls/{view['id']}/transfer",
                             {"to": "600", "mode": "blind"})
                target = await next_answered(phone2, 8)

                await assert_both_hear_promptly(call, AGENT2_HZ, target, "new agent")
                await call.hang_up()

    run(cms, scenario)


def test_semi_attended_transfer_of_a_phone_held_caller_talks_both_ways_at_the_answer(
        cms: CmsProcess) -> None:
    async def scenario() -> None:
        async with setup(cms, (1, answering(AGENT1_HZ)),
                         (2, answering(AGENT2_HZ, ring_for=1.0))) as (_session,
                                                                     (phone1, phone2)):
            async with customer(cms) as caller:
                call, first = await queue_call(caller, phone1)
                await first.reinvite("sendonly")  # the CMS offers the caller sendonly too
                second, _ringing = await phone_consult_ringing(phone1, phone2)
                record_notifies(first)

                assert await refer_with_replaces(phone1, first, early_replaces_of(second)) == 202
                target = await next_answered(phone2)

                # The caller answered the CMS's sendonly with recvonly and sends nothing
                # until the CMS offers sendrecv again: the new agent would hear silence.
                await assert_both_hear_promptly(call, AGENT2_HZ, target, "new agent")
                await call.hang_up()

    run(cms, scenario)
