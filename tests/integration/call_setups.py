"""Shared by the call-control and transfer tests: agents' phones, a caller, and the calls
they set up through a real `cms serve`.

The phones are the project's own UA (`scripts.sip_ua`): each registers by digest (and is
logged on), answers with its own tone, and records what it hears, so who hears whom is
judged by FFT. `cms` is the fixture (import `three_agents` to use it); `setup` gives the
agents' phones, `customer` the caller's; `answered`, `consulted` and `consult_in_progress`
set up a queue call with agent 1 and agent 1's CTI consult of agent 2; `phone_consult`,
`refer_with_replaces` and friends are what a desk phone does on its own for an attended
transfer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

import aiohttp
import numpy as np
import pytest
from cms_process import CmsProcess, config_text, user_extension, user_name, user_password
from cti_client import SUPERVISOR, Api, serve_with_supervisor

from cms.media.sources import ToneSource
from cms.sip.message import Headers, Request
from cms.sip.responses import make_response
from cms.sip.transaction import ServerTransaction
from scripts.sip_ua import AnswerPolicy, Call, UserAgent
from scripts.ua_media import CallMedia, dominant_frequency, level_dbfs

TIMEOUT = aiohttp.ClientTimeout(total=15)
CALLER_HZ = 440.0
AGENT1_HZ = 1000.0
AGENT2_HZ = 1600.0
T = TypeVar("T")


@pytest.fixture(name="cms")
def three_agents(tmp_path: Path) -> Iterator[CmsProcess]:
    """`cms`: agent0001..agent0003 (auto_logon, queue sales = 600) and supervisor boss."""
    with serve_with_supervisor(tmp_path, config_text(users=3, ring_timeout=20)) as server:
        yield server


def run(cms: CmsProcess, scenario: Callable[[], Awaitable[T]]) -> T:
    """Run one async scenario; on failure print the end of the CMS log."""
    try:
        return asyncio.run(scenario())  # type: ignore[arg-type]
    except BaseException:
        print(f"--- cms log:\n{cms.log_text()[-15000:]}")
        raise


# --------------------------------------------------------------------------- phones


@asynccontextmanager
async def setup(cms: CmsProcess, *agents: tuple[int, AnswerPolicy | None]
                ) -> AsyncIterator[tuple[aiohttp.ClientSession, list[UserAgent]]]:
    """Registered agent phones (logged on, ready) and an HTTP session."""
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession(timeout=TIMEOUT))
        boss = await Api(cms, session).login(*SUPERVISOR)
        phones = []
        for index, policy in agents:
            name = user_name(index)
            ua = UserAgent(cms.sip_address, user=name, answer=policy,
                           password=user_password(name))
            await ua.start()
            stack.push_async_callback(ua.close)
            assert await ua.register() == 200
            await boss.wait_event("agent.state_changed", user=name, state="ready")
            phones.append(ua)
        yield session, phones


@asynccontextmanager
async def customer(cms: CmsProcess) -> AsyncIterator[UserAgent]:
    """The caller's phone (not registered), closed afterwards."""
    caller = UserAgent(cms.sip_address, user="customer")
    await caller.start()
    try:
        yield caller
    finally:
        await caller.close()


def answering(tone: float, ring_for: float | None = 0.0) -> AnswerPolicy:
    return AnswerPolicy(ring_for=ring_for, source=lambda: ToneSource(tone))


async def agent_api(cms: CmsProcess, session: aiohttp.ClientSession, index: int) -> Api:
    name = user_name(index)
    return await Api(cms, session).login(name, user_password(name))


async def agent_states(api: Api, user: str, after: int = 0) -> list[str]:
    """The states `user` changed to in the journal's events after seq `after`, oldest first."""
    return [e["state"] for e in await api.all_events(after)
            if e["type"] == "agent.state_changed" and e["user"] == user]


# --------------------------------------------------------------------------- listening, waiting


async def heard(media: CallMedia, seconds: float = 0.8) -> np.ndarray:
    """What a phone hears over the next `seconds`."""
    since = time.monotonic()
    await asyncio.sleep(seconds)
    return media.samples(since=since)


async def assert_hears(media: CallMedia, frequency: float) -> None:
    audio = await heard(media)
    assert audio.size >= 4000, f"only {audio.size} samples heard"
    assert dominant_frequency(audio) == pytest.approx(frequency, abs=20)
    assert level_dbfs(audio) > -25


async def assert_hears_hold_music(media: CallMedia, seconds: float = 0.8) -> None:
    """Over the next `seconds` `media` hears hold music: not agent 1, and not silence."""
    music = await heard(media, seconds)
    assert dominant_frequency(music) != pytest.approx(AGENT1_HZ, abs=30)
    assert level_dbfs(music) > -40


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------- queue call, consult


async def next_answered(phone: UserAgent, ring_timeout: float = 5) -> Call:
    """The next call `phone` is rung with (within `ring_timeout`), once it has answered."""
    incoming = await phone.next_incoming(ring_timeout)
    await asyncio.wait_for(incoming.answered.wait(), 5)
    return incoming


async def assert_caller_talks_to_agent2(call: Call, agent2_side: Call) -> None:
    """The caller hears agent 2's tone and agent 2's phone hears the caller's."""
    await assert_hears(call.media, AGENT2_HZ)
    await assert_hears(agent2_side.media, CALLER_HZ)


async def call_queue(caller: UserAgent) -> Call:
    """`caller` calls queue 600 with its tone (the CMS answers it at once: 200)."""
    call = await caller.call("600", ToneSource(CALLER_HZ))
    assert call.status == 200, call.reason
    return call


async def queue_call(caller: UserAgent, agent: UserAgent) -> tuple[Call, Call]:
    """A caller's call into queue 600 answered by `agent`: (caller's, agent's)."""
    call = await call_queue(caller)
    incoming = await agent.next_incoming(8)
    await asyncio.wait_for(incoming.answered.wait(), 8)
    return call, incoming


async def answered(cms: CmsProcess, session: aiohttp.ClientSession, caller: UserAgent,
                   phone: UserAgent) -> tuple[Call, Call, Api, dict[str, Any]]:
    """A caller's call into queue 600 answered by agent 1's `phone`.

    (the caller's call, the phone's, agent 1's API, the call as its /calls shows it)
    """
    call, agent_side = await queue_call(caller, phone)
    api = await agent_api(cms, session, 1)
    (view,) = (await api.ok("GET", "/calls"))["calls"]
    return call, agent_side, api, view


class Consult(NamedTuple):
    """A queue call agent 1 took, and agent 1's CTI consult of agent 2 (answered)."""

    api: Api  # agent 1's
    call_id: str
    consult_id: str
    call: Call  # the caller's
    agent_side: Call  # agent 1's phone's
    target: Call  # agent 2's phone's


async def consulted(cms: CmsProcess, session: aiohttp.ClientSession, phone1: UserAgent,
                    phone2: UserAgent, caller: UserAgent) -> Consult:
    """Caller ↔ agent1, then agent1 consults agent2 (answered): ids and the three calls."""
    call, agent_side, api, view = await answered(cms, session, caller, phone1)
    consult = await api.ok("POST", f"/calls/{view['id']}/consult", {"to": user_name(2)})
    assert consult["kind"] == "consult" and consult["related"] == view["id"]
    target = await next_answered(phone2)
    await assert_hears(agent_side.media, AGENT2_HZ)  # agent1 talks to agent2 ...
    await assert_hears_hold_music(call.media)  # ... while the caller hears hold music
    return Consult(api, view["id"], consult["id"], call, agent_side, target)


@asynccontextmanager
async def consult_in_progress(cms: CmsProcess
                              ) -> AsyncIterator[tuple[aiohttp.ClientSession, Consult]]:
    """Agents 1 and 2 ready (answering at once), and `consulted` with a customer calling."""
    async with setup(cms, (1, answering(AGENT1_HZ)), (2, answering(AGENT2_HZ))) as (
            session, (phone1, phone2)):
        async with customer(cms) as caller:
            yield session, await consulted(cms, session, phone1, phone2, caller)


# --------------------------------------------------------------------------- a phone's transfers


async def phone_consult(phone1: UserAgent, phone2: UserAgent) -> tuple[Call, Call]:
    """Agent 1's phone calls agent 2's extension through the CMS, answered.

    (phone 1's second call, phone 2's side of it)
    """
    second = await phone1.call(user_extension(2), answering(AGENT1_HZ).source())
    assert second.status == 200, second.reason
    return second, await next_answered(phone2)


async def phone_consult_ringing(phone1: UserAgent, phone2: UserAgent) -> tuple[Call, Call]:
    """Agent 1's phone calls agent 2's extension, which rings (phone 1 hears it ringing).

    (phone 1's second call, phone 2's ringing offer)
    """
    second = await phone1.call(user_extension(2), wait=False)
    ringing = await phone2.next_incoming(5)
    await asyncio.wait_for(second.ringing.wait(), 5)
    return second, ringing


def record_notifies(call: Call) -> list[str]:
    """Answer NOTIFYs in `call`'s dialog with 200 (the UA says 501) and keep their sipfrags."""
    bodies: list[str] = []
    plain: Callable[[ServerTransaction | None, Request], None] = call._in_dialog

    def handle(tx: ServerTransaction | None, request: Request) -> None:
        if (tx is not None and request.method == "NOTIFY" and call.dialog is not None
                and call.dialog.receive_request(request)):
            assert request.headers.first("event") == "refer"
            bodies.append(request.body.decode().strip())
            call.ua.respond(tx, make_response(request, 200))
            return
        plain(tx, request)

    call._in_dialog = handle  # type: ignore[method-assign]
    return bodies


def replaces_of(call: Call) -> str:
    """The Replaces value naming `call`'s dialog as the CMS (its other end) sees it."""
    assert call.dialog is not None
    return (f"{call.dialog.call_id};to-tag={call.dialog.remote_tag}"
            f";from-tag={call.dialog.local_tag}")


def early_replaces_of(call: Call) -> str:
    """A Replaces value for an outgoing `call` still ringing: the CMS's early To tag is not
    known to match; Call-ID and From tag are."""
    return f"{call.call_id};to-tag=early;from-tag={call.local_tag}"


async def refer_with_replaces(phone: UserAgent, call: Call, replaces: str) -> int:
    """REFER in `call`'s dialog to agent 2's extension with this Replaces; the final status."""
    assert call.dialog is not None
    extra = Headers()
    extra["refer-to"] = [f"<sip:{user_extension(2)}@cms.test"
                         f"?Replaces={quote(replaces, safe='')}>"]
    extra["referred-by"] = [f"<sip:{phone.user}@cms.test>"]
    request = call.dialog.new_request("REFER", phone.sent_by, "UDP", extra)
    response = await phone.request(request, call.remote)
    assert response is not None
    return response.status
