"""Calls through a real `cms serve`: callers into the sales queue, agents registered by digest.

The phones are real: SIPp, baresip, and the project's own user agent
(`scripts.sip_ua`, the driver behind `scripts/place_calls.py`), which plays a
tone and records what it hears so each side's audio is judged by FFT. What the
ACD decided is read from the CMS's `acd <type> <json>` log lines; call records
from DATA_DIR/calls.sqlite3.

The CMS answers a queue call at once (200, then hold music), so a caller who
gives up while queued hangs up with BYE; a real CANCEL is tested on a direct
call to an extension that rings without answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from baresip_runner import Baresip
from baresip_runner import available as baresip_available
from baresip_runner import config_text as baresip_config
from call_setups import until
from cms_process import REPO, CmsProcess, StartCms, user_password
from sipp_runner import SIPP, SippProcess, free_media_port, start_sipp

from cms.media.formats import PCMU
from cms.media.rtp import RtpPacket
from cms.media.sources import ToneSource
from cms.sip.sdp import parse_sdp
from scripts.sip_ua import AnswerPolicy, Call, UserAgent
from scripts.ua_media import CallMedia, dominant_frequency, level_dbfs

pytestmark = pytest.mark.integration

needs_sipp = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")

CALLER_HZ = 440.0
AGENT_HZ = 1000.0
TONE_DBFS = -13.0  # RMS of ToneSource's default -10 dBFS peak sine
T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def run(scenario: Awaitable[T], cms: CmsProcess | None = None) -> T:
    """Run one async scenario (plain pytest: no pytest-asyncio); on failure print the CMS log."""
    async def main() -> T:
        return await scenario

    try:
        return asyncio.run(main())
    except BaseException:
        if cms is not None:
            print(f"--- cms log:\n{cms.log_text()[-20000:]}")
        raise


def acd_events(cms: CmsProcess, kind: str, **match: Any) -> list[dict[str, Any]]:
    """The journal's events of `kind` with these fields, oldest first, with "at" (epoch s).

    Read straight from the CMS's journal database (read-only): the ACD's events are no
    longer logged at INFO, and the journal is where a CRM gets them anyway.
    """
    path = cms.data_dir / "events.sqlite3"
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT body FROM events WHERE type = ? ORDER BY seq",
                          (kind,)).fetchall()
    events = []
    for (body,) in rows:
        event = json.loads(body)
        if all(event.get(key) == value for key, value in match.items()):
            event["at"] = datetime.fromisoformat(event["time"]).timestamp()
            events.append(event)
    return events


async def wait_event(cms: CmsProcess, kind: str, timeout: float = 5.0,
                     **match: Any) -> dict[str, Any]:
    """The first journal event of this type with these fields (waiting for it)."""
    deadline = time.monotonic() + timeout
    while True:
        events = acd_events(cms, kind, **match)
        if events:
            return events[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no {kind} event with {match} within {timeout} s; log:\n"
                                 + cms.log_text()[-6000:])
        await asyncio.sleep(0.02)


def call_records(cms: CmsProcess) -> list[dict[str, Any]]:
    """Every call record written so far, oldest first."""
    path = cms.data_dir / "calls.sqlite3"
    if not path.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT record FROM call_records ORDER BY created").fetchall()
    return [json.loads(row[0]) for row in rows]


async def wait_records(cms: CmsProcess, count: int, timeout: float = 5.0
                       ) -> list[dict[str, Any]]:
    """Wait until `count` call records are written; return them."""
    deadline = time.monotonic() + timeout
    while len(records := call_records(cms)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(records)} call records, expected {count}; log:\n"
                                 + cms.log_text()[-6000:])
        await asyncio.sleep(0.05)
    return records


async def wait_events(cms: CmsProcess, kind: str, count: int, timeout: float = 5.0,
                      **match: Any) -> list[dict[str, Any]]:
    """Wait until `count` such events are journalled (they trail the SIP that causes them)."""
    await until(lambda: len(acd_events(cms, kind, **match)) >= count, timeout)
    return acd_events(cms, kind, **match)


@contextlib.asynccontextmanager
async def phone(cms: CmsProcess, user: str = "caller", *, register: bool = False,
                answer: AnswerPolicy | None = None, host: str = "127.0.0.1",
                password: str | None = None) -> AsyncIterator[UserAgent]:
    """The project's UA at the CMS; with `register`, digest-registered and logged on (ready)."""
    ua = UserAgent(cms.sip_address, user=user, answer=answer, host=host,
                   password=password or (user_password(user) if register else None))
    await ua.start()
    try:
        if register:
            assert await ua.register() == 200
            await wait_event(cms, "agent.state_changed", user=user, state="ready")
        yield ua
    finally:
        await ua.close()


def agent_answering(tone: float = AGENT_HZ, ring_for: float | None = 0.0) -> AnswerPolicy:
    """An agent phone that answers after `ring_for` s (None: never), playing a tone."""
    return AnswerPolicy(ring_for=ring_for, source=lambda: ToneSource(tone))


def assert_hears(media: CallMedia, frequency: float, since: float, seconds: float = 1.0,
                 level: float | None = TONE_DBFS) -> None:
    """The audio received since `since` (monotonic) is `frequency`, at `level` dBFS ±3
    (None: any clearly audible level)."""
    audio = media.samples(since=since)
    assert audio.size >= seconds * 8000 * 0.8, f"only {audio.size} samples heard"
    assert dominant_frequency(audio) == pytest.approx(frequency, abs=20)
    if level is None:
        assert level_dbfs(audio) > -30
    else:
        assert level_dbfs(audio) == pytest.approx(level, abs=3)


async def connected_call(caller: UserAgent, agent: UserAgent) -> tuple[Call, Call]:
    """A caller's call into the queue, answered by `agent`: (caller's call, agent's call)."""
    call = await caller.call("600", ToneSource(CALLER_HZ))
    assert call.status == 200, call.reason
    incoming = await agent.next_incoming(5)
    await asyncio.wait_for(incoming.answered.wait(), 5)
    assert incoming.status == 200
    return call, incoming


def register_sipp_agent(cms: CmsProcess, tmp_path: Path, user: str, contact_port: int) -> None:
    """Register `user` by digest with SIPp, its Contact on another SIPp's port."""
    result = start_sipp(cms.sip_target, tmp_path, scenario="register_contact.xml",
                        users=[(user, user_password(user))],
                        extra=["-key", "contact_port", str(contact_port)]).wait(20)
    assert result.returncode == 0 and result.successful == 1, result.describe()


def sipp_agent(cms: CmsProcess, tmp_path: Path, sipp_phones: list[SippProcess], user: str,
               scenario: str, *, calls: int = 1, extra: Sequence[str] = ()) -> SippProcess:
    """A SIPp phone playing `scenario` (timeout 20 s), registered as `user`'s contact."""
    phone = start_sipp(cms.sip_target, tmp_path, scenario=scenario, calls=calls, timeout=20,
                       extra=extra)
    sipp_phones.append(phone)
    register_sipp_agent(cms, tmp_path, user, phone.port)
    return phone


@pytest.fixture
def sipp_phones() -> Iterator[list[SippProcess]]:
    """Start SIPp processes through this list; any still running are killed at teardown."""
    started: list[SippProcess] = []
    yield started
    for process in started:
        process.stop()


def non_loopback_address() -> str | None:
    """A local IPv4 address outside 127.0.0.0/8 (the CMS does not trust it), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = str(probe.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


# --------------------------------------------------------------------------- audio


def test_caller_and_agent_hear_each_others_tone_through_the_queue(start_cms: StartCms) -> None:
    cms = start_cms(users=5, wrap_up=0)

    async def scenario() -> None:
        async with phone(cms, "agent0001", register=True, answer=agent_answering()) as agent, \
                phone(cms) as caller:
            call, incoming = await connected_call(caller, agent)
            await asyncio.sleep(1.4)
            since = (incoming.answered_at or 0) + 0.2
            assert_hears(call.media, AGENT_HZ, since)
            assert_hears(incoming.media, CALLER_HZ, since)
            # DTMF from the caller is relayed to the agent as RFC 4733 events.
            call.send_dtmf("123")
            await until(lambda: incoming.media.leg.stats().digits == "123", 3)
            assert incoming.attached_data is not None
            assert incoming.attached_data["dialled"] == "600"
            assert incoming.attached_data["queue"] == "sales"
            assert await call.hang_up() == 200
            await asyncio.wait_for(incoming.ended.wait(), 5)
            assert incoming.ended_by == "remote"

        (record,) = await wait_records(cms, 1)
        assert record["outcome"] == "caller_hangup"
        assert record["agent"] == "agent0001" and record["queue"] == "sales"
        assert record["talk"] >= 1.4
        for side in ("caller", "agent"):
            assert record["quality"][side]["received"]["packets_lost"] == 0

    run(scenario(), cms)


def test_a_digit_in_the_entry_menu_sends_the_caller_to_the_chosen_queue(
    start_cms: StartCms,
) -> None:
    cms = start_cms(users=5, wrap_up=0)

    async def scenario() -> None:
        async with phone(cms, "agent0001", register=True, answer=agent_answering()) as agent, \
                phone(cms) as caller:
            call = await caller.call("500", ToneSource(CALLER_HZ))
            assert call.status == 200, call.reason
            await wait_event(cms, "menu.entered", menu="main")
            call.send_dtmf("1")
            incoming = await agent.next_incoming(5)
            await asyncio.wait_for(incoming.answered.wait(), 5)
            await wait_event(cms, "menu.left", digit="1")
            assert await call.hang_up() == 200

        (record,) = await wait_records(cms, 1)
        assert record["kind"] == "menu" and record["agent"] == "agent0001"

    run(scenario(), cms)


def test_an_rtp_packet_from_a_strangers_address_is_not_relayed_to_the_agent(
    start_cms: StartCms,
) -> None:
    cms = start_cms(users=5)
    stranger_hz = 3000.0

    async def scenario() -> None:
        async with phone(cms, "agent0001", register=True, answer=agent_answering()) as agent, \
                phone(cms) as caller:
            call, incoming = await connected_call(caller, agent)
            assert call.media.negotiated is not None
            cms_caller_side = call.media.negotiated.remote  # from the CMS's SDP answer
            tone = ToneSource(stranger_hz)
            sent_payloads = set()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
                stranger.bind(("127.0.0.1", 0))
                for n in range(50):
                    payload = PCMU.encode(tone.next_frame())
                    sent_payloads.add(payload)
                    packet = RtpPacket(payload_type=0, sequence=n, timestamp=160 * n,
                                       ssrc=0x5742A9E5, payload=payload)
                    stranger.sendto(packet.serialize(), cms_caller_side)
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            heard = incoming.media.recording.audio_packets(incoming.media.payload_type)
            assert heard, "the agent heard nothing at all"
            assert not sent_payloads & {p.payload for p in heard}
            audio = incoming.media.samples(since=(incoming.answered_at or 0) + 0.1)
            assert dominant_frequency(audio) == pytest.approx(CALLER_HZ, abs=20)
            spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size)))
            stranger_bin = int(stranger_hz * audio.size / 8000)
            assert spectrum[stranger_bin - 5:stranger_bin + 5].max() < 1e-2 * spectrum.max()
            await call.hang_up()

        (record,) = await wait_records(cms, 1)
        assert record["quality"]["caller"]["dropped_strangers"] >= 50

    run(scenario(), cms)


def test_hold_is_passed_to_the_agent_as_sendonly_and_resume_restores_two_way_audio(
    start_cms: StartCms,
) -> None:
    cms = start_cms(users=5)

    async def scenario() -> None:
        async with phone(cms, "agent0001", register=True, answer=agent_answering()) as agent, \
                phone(cms) as caller:
            call, incoming = await connected_call(caller, agent)
            await asyncio.sleep(0.5)

            held = await call.reinvite("sendonly")
            assert held is not None and held.status == 200
            answer = parse_sdp(held.body).audio
            assert answer is not None and answer.direction == "recvonly"
            await until(lambda: incoming.reinvites == ["sendonly"])
            agent_sdp = incoming.local_sdp.audio if incoming.local_sdp else None
            assert agent_sdp is not None and agent_sdp.direction == "recvonly"
            hold_started = time.monotonic()
            await asyncio.sleep(0.8)
            # The held agent's phone stops sending: the caller hears nothing of it.
            during_hold = call.media.recording.audio_packets(call.media.payload_type,
                                                             since=hold_started + 0.2)
            assert len(during_hold) <= 2

            resumed = await call.reinvite("sendrecv")
            assert resumed is not None and resumed.status == 200
            answer = parse_sdp(resumed.body).audio
            assert answer is not None and answer.direction == "sendrecv"
            await until(lambda: incoming.reinvites == ["sendonly", "sendrecv"])
            resumed_at = time.monotonic()
            await asyncio.sleep(1.2)
            assert_hears(call.media, AGENT_HZ, resumed_at + 0.2)
            assert_hears(incoming.media, CALLER_HZ, resumed_at + 0.2)
            await call.hang_up()
            await asyncio.wait_for(incoming.ended.wait(), 5)

        (record,) = await wait_records(cms, 1)
        assert record["outcome"] == "caller_hangup"

    run(scenario(), cms)


# --------------------------------------------------------------------------- routing


def test_the_agent_idle_longest_gets_the_next_call(start_cms: StartCms) -> None:
    cms = start_cms(users=5, wrap_up=0)

    async def scenario() -> None:
        async with phone(cms, "agent0001", register=True, answer=agent_answering()) as first, \
                phone(cms, "agent0002", register=True, answer=agent_answering()) as second, \
                phone(cms) as caller:
            # agent0001 has been ready longer: it takes the first call.
            call, incoming = await connected_call(caller, first)
            assert second.incoming.empty()
            await call.hang_up()
            await asyncio.wait_for(incoming.ended.wait(), 5)
            # Back to ready (no wrap-up) it is now the one idle the shortest.
            await until(lambda: len(acd_events(cms, "agent.state_changed", user="agent0001",
                                               state="ready")) == 2)
            call, incoming = await connected_call(caller, second)
            assert first.incoming.empty()
            await call.hang_up()
            offered = [event["agent"] for event in await wait_events(cms, "call.offered", 2)]
            assert offered == ["agent0001", "agent0002"]

    run(scenario(), cms)


@needs_sipp
def test_ring_no_answer_moves_the_call_on_and_repeated_misses_make_the_agent_not_ready(
    start_cms: StartCms, tmp_path: Path, sipp_phones: list[SippProcess],
) -> None:
    cms = start_cms(users=5, ring_timeout=1.5, max_no_answer=2, wrap_up=0)
    silent = sipp_agent(cms, tmp_path, sipp_phones, "agent0001", "uas_ring_no_answer.xml", calls=2)

    async def scenario() -> None:
        await wait_event(cms, "agent.state_changed", user="agent0001", state="ready")
        async with phone(cms, "agent0002", register=True, answer=agent_answering()) as agent, \
                phone(cms) as caller:
            first_call = await caller.call("600", ToneSource(CALLER_HZ))
            # agent0001 (idle longest) rings for the ring timeout, then agent0002 answers.
            incoming = await agent.next_incoming(5)
            await asyncio.wait_for(incoming.answered.wait(), 5)
            offers = await wait_events(cms, "call.offered", 2)
            assert offers[0]["call_id"] == offers[1]["call_id"]
            assert [e["agent"] for e in offers] == ["agent0001", "agent0002"]
            assert offers[1]["at"] - offers[0]["at"] == pytest.approx(1.5, abs=0.3)
            await wait_event(cms, "call.offer_ended", agent="agent0001", outcome="no_answer")
            # One miss is forgiven: agent0001 is ready again and rings for the second caller.
            second_call = await caller.call("600", ToneSource(CALLER_HZ))
            not_ready = await wait_event(cms, "agent.state_changed", timeout=5,
                                         user="agent0001", state="not_ready")
            assert not_ready["reason"] == "no_answer"
            misses = acd_events(cms, "call.offer_ended", agent="agent0001")
            assert [e["outcome"] for e in misses] == ["no_answer", "no_answer"]
            await second_call.hang_up()
            await first_call.hang_up()

    run(scenario(), cms)
    result = silent.wait(10)
    assert result.returncode == 0 and result.successful == 2, result.describe()
    records = run(wait_records(cms, 2))
    assert sorted(r["outcome"] for r in records) == ["abandoned", "caller_hangup"]
    assert [r["agent"] for r in records if r["outcome"] == "caller_hangup"] == ["agent0002"]


def test_a_caller_who_hangs_up_while_queued_is_recorded_as_abandoned(
    start_cms: StartCms,
) -> None:
    cms = start_cms(users=5)

    async def scenario() -> None:
        async with phone(cms) as caller:
            call = await caller.call("600", ToneSource(CALLER_HZ))
            assert call.status == 200  # the CMS answers at once and plays hold music
            await asyncio.sleep(1.0)
            assert await call.hang_up() == 200
        heard = call.media.samples()
        assert level_dbfs(heard) > -40, "no hold music heard"
        left = await wait_event(cms, "queue.caller_left", reason="abandoned")
        assert left["queue"] == "sales" and left["waited"] == pytest.approx(1.0, abs=0.3)
        (record,) = await wait_records(cms, 1)
        assert record["outcome"] == "abandoned" and record["agent"] == ""
        assert record["ended_by"] == "caller"

    run(scenario(), cms)


@needs_sipp
def test_cancel_of_a_ringing_direct_call_is_answered_487_and_cancels_the_callee(
    start_cms: StartCms, tmp_path: Path, sipp_phones: list[SippProcess],
) -> None:
    cms = start_cms(users=5)
    callee = sipp_agent(cms, tmp_path, sipp_phones, "agent0003", "uas_ring_no_answer.xml")

    async def scenario() -> None:
        async with phone(cms) as caller:
            call = await caller.call("10003", ToneSource(CALLER_HZ), wait=False)
            await asyncio.wait_for(call.ringing.wait(), 5)
            assert call.ringing_at is not None and call.status == 0
            assert await call.cancel() == 200
            assert call.status == 487
        (record,) = await wait_records(cms, 1)
        assert record["kind"] == "direct" and record["outcome"] == "abandoned"

    run(scenario(), cms)
    result = callee.wait(10)
    assert result.returncode == 0 and result.successful == 1, result.describe()


def test_a_direct_call_nobody_answers_is_cancelled_after_the_ring_timeout(
    start_cms: StartCms, tmp_path: Path, sipp_phones: list[SippProcess],
) -> None:
    cms = start_cms(users=5, cms_keys={"ring_timeout": 1.5})
    callee = sipp_agent(cms, tmp_path, sipp_phones, "agent0003", "uas_ring_no_answer.xml")

    async def scenario() -> None:
        async with phone(cms) as caller:
            call = await caller.call("10003", ToneSource(CALLER_HZ), wait=False)
            await asyncio.wait_for(call.ringing.wait(), 5)
            rang_at = time.monotonic()
            await until(lambda: call.status >= 300, 5)
            assert call.status == 408
            assert time.monotonic() - rang_at == pytest.approx(1.5, abs=0.5)
        (record,) = await wait_records(cms, 1)
        assert record["kind"] == "direct" and record["outcome"] == "failed"

    run(scenario(), cms)
    # The callee's phone saw the CMS's CANCEL (the scenario expects it).
    result = callee.wait(10)
    assert result.returncode == 0 and result.successful == 1, result.describe()


def test_an_agent_in_wrap_up_is_offered_no_call_until_the_wrap_up_ends(
    start_cms: StartCms,
) -> None:
    wrap_up = 2.0
    cms = start_cms(users=5, wrap_up=wrap_up)

    async def scenario() -> None:
        async with phone(cms, "agent0001", register=True, answer=agent_answering()) as agent, \
                phone(cms) as caller:
            call, incoming = await connected_call(caller, agent)
            await asyncio.sleep(0.3)
            await call.hang_up()
            wrapping = await wait_event(cms, "agent.state_changed", user="agent0001",
                                        state="wrap_up")
            waiting = await caller.call("600", ToneSource(CALLER_HZ))
            assert waiting.status == 200
            with pytest.raises(TimeoutError):
                await agent.next_incoming(wrap_up - 0.5)
            incoming = await agent.next_incoming(3)
            await asyncio.wait_for(incoming.answered.wait(), 5)
            ready = await wait_event(cms, "agent.state_changed", user="agent0001",
                                     state="ready", previous="wrap_up")
            assert ready["at"] - wrapping["at"] == pytest.approx(wrap_up, abs=0.3)
            offers = await wait_events(cms, "call.offered", 2, agent="agent0001")
            assert len(offers) == 2 and offers[1]["at"] >= ready["at"]
            await waiting.hang_up()

    run(scenario(), cms)


# --------------------------------------------------------------------------- real peers


@needs_sipp
def test_a_sipp_caller_reaches_a_sipp_agent_through_the_queue_and_the_call_is_recorded(
    start_cms: StartCms, tmp_path: Path, sipp_phones: list[SippProcess],
) -> None:
    cms = start_cms(users=5)
    agent = sipp_agent(cms, tmp_path, sipp_phones, "agent0001", "uas_answer.xml",
                       extra=["-rtp_echo", "-mp", str(free_media_port())])
    run(wait_event(cms, "agent.state_changed", user="agent0001", state="ready"))

    caller = start_sipp(cms.sip_target, tmp_path, builtin="uac", calls=1, timeout=20,
                        extra=["-s", "600", "-d", "1000", "-mp", str(free_media_port())])
    sipp_phones.append(caller)
    called = caller.wait(25)
    answered = agent.wait(10)

    assert called.returncode == 0 and called.successful == 1, called.describe()
    assert answered.returncode == 0 and answered.successful == 1, answered.describe()
    (record,) = run(wait_records(cms, 1))
    assert record["outcome"] == "caller_hangup" and record["agent"] == "agent0001"
    assert record["talk"] == pytest.approx(1.0, abs=0.5)


@needs_sipp
def test_a_sipp_agent_echoing_rtp_returns_the_callers_tone_through_the_cms(
    start_cms: StartCms, tmp_path: Path, sipp_phones: list[SippProcess],
) -> None:
    cms = start_cms(users=5)
    agent = sipp_agent(cms, tmp_path, sipp_phones, "agent0001", "uas_answer.xml",
                       extra=["-rtp_echo", "-mp", str(free_media_port())])

    async def scenario() -> None:
        await wait_event(cms, "agent.state_changed", user="agent0001", state="ready")
        async with phone(cms) as caller:
            call = await caller.call("600", ToneSource(CALLER_HZ))
            await wait_event(cms, "agent.state_changed", user="agent0001", state="on_call")
            connected = time.monotonic()
            await asyncio.sleep(1.3)
            assert_hears(call.media, CALLER_HZ, connected + 0.2)
            await call.hang_up()

    run(scenario(), cms)
    result = agent.wait(10)
    assert result.returncode == 0 and result.successful == 1, result.describe()


@pytest.mark.skipif(not baresip_available("g711", "ausine"),
                    reason="baresip with g711 and ausine is not installed")
def test_a_baresip_agent_registers_is_logged_on_and_answers_with_its_tone(
    start_cms: StartCms, tmp_path: Path,
) -> None:
    cms = start_cms(users=5)
    account = (f"<sip:agent0001@{cms.sip_target}>;auth_pass={user_password('agent0001')}"
               ";regint=60;answermode=auto")
    baresip = Baresip(tmp_path / "baresip", account, baresip_config(tone_hz=int(AGENT_HZ)))
    try:
        async def scenario() -> None:
            await wait_event(cms, "agent.logged_on", timeout=10, user="agent0001",
                             automatic=True)
            async with phone(cms) as caller:
                call = await caller.call("600", ToneSource(CALLER_HZ))
                await wait_event(cms, "agent.state_changed", user="agent0001", state="on_call")
                connected = time.monotonic()
                await asyncio.sleep(1.5)
                # baresip's ausine has its own level.
                assert_hears(call.media, AGENT_HZ, connected + 0.3, level=None)
                await call.hang_up()
            await wait_event(cms, "agent.state_changed", user="agent0001", state="wrap_up")

        run(scenario(), cms)
        assert baresip.wait_for("terminated", 5), baresip.output
    finally:
        assert baresip.terminate() == 0, baresip.output
    (record,) = run(wait_records(cms, 1))
    assert record["agent"] == "agent0001" and record["outcome"] == "caller_hangup"


def test_a_caller_from_an_untrusted_address_answers_the_407_challenge(
    start_cms: StartCms,
) -> None:
    address = non_loopback_address()
    if address is None:
        pytest.skip("no local address outside 127.0.0.0/8")
    cms = start_cms(users=5)

    async def scenario() -> None:
        async with phone(cms, host=address) as anonymous:
            call = await anonymous.call("600", ToneSource(CALLER_HZ))
            assert call.status == 407
        async with phone(cms, "agent0002", host=address,
                         password=user_password("agent0002")) as known:
            call = await known.call("600", ToneSource(CALLER_HZ))
            assert call.status == 200
            assert "proxy-authorization" in call.invite.headers
            assert await call.hang_up() == 200

    run(scenario(), cms)
    (record,) = run(wait_records(cms, 1))
    assert record["caller"] == "agent0002" and record["outcome"] == "abandoned"


# --------------------------------------------------------------------------- the driver


def test_place_calls_reports_setup_times_and_the_agents_tone_for_every_call(
    start_cms: StartCms, tmp_path: Path,
) -> None:
    cms = start_cms(users=5, wrap_up=0)
    command = [sys.executable, "-m", "scripts.place_calls", "--target", cms.sip_target]
    agents = subprocess.Popen(
        [*command, "--agent", f"agent0001:{user_password('agent0001')}",
         "--agent", f"agent0002:{user_password('agent0002')}", "--answer-tone", "1000",
         "--expect-tone", "440", "--run-for", "30", "--json", str(tmp_path / "agents.json")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        run(wait_event(cms, "agent.state_changed", timeout=15, user="agent0002",
                       state="ready"))
        report_path = tmp_path / "calls.json"
        callers = subprocess.run(
            [*command, "--number", "600", "--calls", "4", "--rate", "2", "--duration", "1.5",
             "--tone", "440", "--expect-tone", "1000", "--dtmf", "12", "--dtmf-at", "1",
             "--json", str(report_path)],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
        )
    finally:
        agents.terminate()
        agents_output, _ = agents.communicate(timeout=15)

    assert callers.returncode == 0, callers.stdout + callers.stderr
    assert "setup time INVITE->200 (ms): p50" in callers.stdout
    report = json.loads(report_path.read_text())
    summary = report["summary"]
    assert summary["answered"] == 4 and summary["failed"] == 0
    assert summary["tone_heard"] == 4 and summary["audio_heard"] == 4
    assert summary["setup_ms"]["p99"] < 1000
    assert all(c["heard_hz"] == pytest.approx(1000, abs=20) for c in report["calls"])
    assert agents.returncode == 0, agents_output
    agent_report = json.loads((tmp_path / "agents.json").read_text())
    assert agent_report["summary"]["answered"] == 4
    assert agent_report["summary"]["tone_heard"] == 4
    assert sorted(agent_report["summary"]["answered_by_agent"].values()) == [2, 2]
    assert {c["digits_received"] for c in agent_report["calls"]} == {"12"}
    assert len(run(wait_records(cms, 4))) == 4


def test_place_calls_has_help() -> None:
    result = subprocess.run([sys.executable, "-m", "scripts.place_calls", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0
    assert "--expect-tone" in result.stdout and "--agent" in result.stdout


def sipp_agent_refusing_holds(cms: CmsProcess, tmp_path: Path,
                              sipp_phones: list[SippProcess], scenario: str) -> SippProcess:
    """agent0001's phone: SIPp echoing RTP and answering the hold re-INVITE as `scenario`
    says."""
    return sipp_agent(cms, tmp_path, sipp_phones, "agent0001", scenario,
                      extra=["-mp", str(free_media_port()), "-rtp_echo"])


@contextlib.asynccontextmanager
async def queue_call_put_on_hold(cms: CmsProcess) -> AsyncIterator[Call]:
    """A call through the queue to agent0001, which the caller then puts on hold (the CMS
    answers the caller's re-INVITE 200 and sends its own to the agent's phone)."""
    await wait_event(cms, "agent.state_changed", user="agent0001", state="ready")
    async with phone(cms) as caller:
        call = await caller.call("600", ToneSource(CALLER_HZ))
        await wait_event(cms, "agent.state_changed", user="agent0001", state="on_call")
        held = await call.reinvite("sendonly")
        assert held is not None and held.status == 200
        yield call


@needs_sipp
def test_a_hold_refused_with_491_is_offered_again_after_the_rfc_wait(
    start_cms: StartCms, tmp_path: Path, sipp_phones: list[SippProcess],
) -> None:
    """The agent's phone answers the CMS's hold re-INVITE 491 (glare): the CMS, owner of
    that dialog's Call-ID, offers the hold again within RFC 3261's 2.1-4 s."""
    cms = start_cms(users=5)
    agent = sipp_agent_refusing_holds(cms, tmp_path, sipp_phones, "uas_reinvite_glare.xml")

    async def scenario() -> None:
        async with queue_call_put_on_hold(cms) as call:
            # The scenario fails on a BYE before the retry: give the retry its 4 s at most.
            await asyncio.sleep(4.5)
            await call.hang_up()
        result = await asyncio.to_thread(agent.wait, 10)
        assert result.returncode == 0 and result.successful == 1, result.describe()

    run(scenario(), cms)


@needs_sipp
def test_a_re_invite_answered_481_ends_the_call(
    start_cms: StartCms, tmp_path: Path, sipp_phones: list[SippProcess],
) -> None:
    """The agent's phone no longer knows the dialog (481 to the hold re-INVITE): the CMS
    ends the call, so the caller is not left talking to no one (RFC 3261 14.1)."""
    cms = start_cms(users=5)
    agent = sipp_agent_refusing_holds(cms, tmp_path, sipp_phones, "uas_reinvite_481.xml")

    async def scenario() -> None:
        async with queue_call_put_on_hold(cms) as call:
            await asyncio.wait_for(call.ended.wait(), 5)  # the CMS's BYE
        (record,) = await wait_records(cms, 1)
        assert record["outcome"] == "unreachable"
        result = await asyncio.to_thread(agent.wait, 10)
        assert result.returncode == 0 and result.successful == 1, result.describe()

    run(scenario(), cms)
