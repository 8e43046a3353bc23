"""The /crm page of a real `cms serve`, driven in headless Chromium (Playwright, /usr/bin/chromium).

It logs in, shows the agent's state and the live events from the CTI's
WebSocket, sets the state, and shows what others do (a supervisor's state
change and broadcast) as it happens.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import CHROMIUM, chromium
from cms_process import CmsProcess, config_text, user_name, user_password
from cti_client import SUPERVISOR, serve_with_supervisor

from cms.media.sources import ToneSource
from scripts.sip_ua import AnswerPolicy, UserAgent

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]


@pytest.fixture
def cms(tmp_path: Path) -> Iterator[CmsProcess]:
    with serve_with_supervisor(tmp_path, config_text(users=2)) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as instance:
        yield instance


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(5000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], errors


def api(cms: CmsProcess, method: str, path: str, body: dict[str, Any] | None = None,
        token: str | None = None) -> Any:
    """One JSON request to the CMS's /api/v1."""
    request = urllib.request.Request(
        cms.base_url + "/api/v1" + path, method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_an_agent_logs_in_sets_its_state_and_sees_events_live(cms: CmsProcess,
                                                               page: Any) -> None:
    expect = playwright.expect
    name = user_name(1)
    page.goto(cms.base_url + "/crm")
    expect(page.locator("#main")).to_be_hidden()
    page.fill("#user", name)
    page.fill("#password", "wrong")
    page.click("#login-button")
    expect(page.locator("#error")).to_contain_text("wrong password")
    page.fill("#password", user_password(name))
    page.click("#login-button")
    expect(page.locator("#whoami")).to_have_text(f"{name} (agent)")
    expect(page.locator("#connection")).to_have_text("connected")
    expect(page.locator("#agent-state")).to_have_text("logged_off")
    expect(page.locator("#agents tbody tr")).to_have_count(1)  # an agent sees only itself
    expect(page.locator("#broadcast")).to_be_hidden()

    page.click("#logon")
    expect(page.locator("#agent-state")).to_have_text("ready")
    expect(page.locator('#events li[data-type="agent.logged_on"]')).to_have_count(1)
    page.fill("#reason", "lunch")
    page.click("#not-ready")
    expect(page.locator("#agent-state")).to_have_text("not_ready")
    expect(page.locator("#agent-reason")).to_have_text("(lunch)")
    changed = page.locator('#events li[data-type="agent.state_changed"]')
    expect(changed.first).to_contain_text('"reason":"lunch"')

    # What a supervisor does elsewhere shows up live.
    boss = api(cms, "POST", "/sessions", {"user": SUPERVISOR[0], "password": SUPERVISOR[1]})
    api(cms, "PUT", f"/agents/{name}/state", {"state": "ready"}, boss["token"])
    expect(page.locator("#agent-state")).to_have_text("ready")
    expect(changed.first).to_contain_text('"state":"ready"')
    expect(page.locator("#queues tbody tr")).to_have_count(1)
    expect(page.locator("#queues tbody tr td").nth(3)).to_have_text("1")  # one ready
    api(cms, "POST", "/broadcasts", {"text": "Team meeting at 3", "to": "sales"}, boss["token"])
    expect(page.locator("#messages li")).to_have_text("Broadcast from boss: Team meeting at 3")
    api(cms, "POST", "/alerts", {"user": user_name(2), "text": "not for agent1"}, boss["token"])
    api(cms, "POST", "/alerts", {"user": name, "text": "Call me"}, boss["token"])
    expect(page.locator("#messages li").first).to_have_text("Alert from boss: Call me")
    expect(page.locator("#messages li")).to_have_count(2)

    # A reload keeps the session; logging out ends it.
    page.reload()
    expect(page.locator("#whoami")).to_have_text(f"{name} (agent)")
    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()


def test_a_supervisor_sees_every_agent_and_sends_a_broadcast(cms: CmsProcess,
                                                            page: Any) -> None:
    expect = playwright.expect
    page.goto(cms.base_url + "/crm")
    page.fill("#user", SUPERVISOR[0])
    page.fill("#password", SUPERVISOR[1])
    page.click("#login-button")
    expect(page.locator("#whoami")).to_have_text("boss (supervisor)")
    expect(page.locator("#agents tbody tr")).to_have_count(3)
    page.fill("#broadcast-text", "Lines are busy")
    page.click("#broadcast-send")
    expect(page.locator("#messages li")).to_have_text("Broadcast from boss: Lines are busy")
    expect(page.locator("#no-calls")).to_be_visible()


def test_an_agent_holds_retrieves_and_hangs_up_a_queue_call_from_the_page(
        cms: CmsProcess, page: Any) -> None:
    expect = playwright.expect
    name = user_name(1)
    page.goto(cms.base_url + "/crm")
    page.fill("#user", name)
    page.fill("#password", user_password(name))
    page.click("#login-button")
    expect(page.locator("#connection")).to_have_text("connected")

    # Playwright's sync API owns this thread's event loop: the phones run in another thread.
    connected = threading.Event()
    failures: list[BaseException] = []

    async def phones() -> None:
        answering = AnswerPolicy(ring_for=0.1, source=lambda: ToneSource(1000.0))
        phone = UserAgent(cms.sip_address, user=name, password=user_password(name),
                          answer=answering)
        caller = UserAgent(cms.sip_address, user="+4930555123")
        await phone.start()
        await caller.start()
        try:
            assert await phone.register() == 200
            await asyncio.sleep(0.5)  # auto logon: ready
            call = await caller.call("600", ToneSource(440.0))
            assert call.status == 200, call.reason
            incoming = await phone.next_incoming(5)
            await asyncio.wait_for(incoming.answered.wait(), 5)
            connected.set()
            await asyncio.wait_for(call.ended.wait(), 20)  # hung up from the page
        finally:
            await caller.close()
            await phone.close()

    def run_phones() -> None:
        try:
            asyncio.run(phones())
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)
            connected.set()

    thread = threading.Thread(target=run_phones, daemon=True)
    thread.start()
    assert connected.wait(15) and not failures, failures
    call = page.locator("#calls li")
    expect(call).to_have_count(1)
    expect(call.locator(".state")).to_have_text("connected")
    call.get_by_role("button", name="Hold").click()
    expect(call.locator(".state")).to_have_text("held")
    expect(page.locator('#events li[data-type="call.held"]')).to_have_count(1)
    call.get_by_role("button", name="Retrieve").click()
    expect(call.locator(".state")).to_have_text("connected")
    call.get_by_role("button", name="Hang up").click()
    expect(page.locator("#calls li")).to_have_count(0)
    expect(page.locator("#no-calls")).to_be_visible()
    expect(page.locator("#interactions tbody tr")).to_have_count(1)
    expect(page.locator("#interactions tbody tr td").nth(1)).to_have_text("+4930555123")
    thread.join(25)
    assert not thread.is_alive() and not failures, failures
