"""The web UI at `/`, driven in headless Chromium (Playwright with /usr/bin/chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from browser import CHROMIUM, chromium
from softphone_process import StartSoftphone

playwright = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as instance:
        yield instance


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(5000)
    yield page
    context.close()


def test_dial_see_it_ring_and_hang_up_from_the_page(
    start_softphone: StartSoftphone, page: Any
) -> None:
    a, b = start_softphone.start_many("a", "b")
    page.goto(a.base_url + "/")
    expect = playwright.expect
    expect(page.locator("#connection")).to_have_text("connected")
    expect(page.locator("#accounts li")).to_have_text("local: disabled")

    page.fill("#number", f"sip:b@{b.sip_uri_host}")
    page.click("#dial")

    call = page.locator("#calls li")
    expect(call).to_have_count(1)
    expect(call.locator(".state")).to_have_text("ringing")
    expect(call.get_by_role("button", name="Hold")).to_be_disabled()
    b.wait_for_call(lambda c: c["state"] == "incoming")

    call.get_by_role("button", name="Hang up").click()

    expect(page.locator("#calls li")).to_have_count(0)
    expect(page.locator("#no-calls")).to_be_visible()
    expect(page.locator("#history li")).to_have_count(1)


def test_a_ringing_call_flashes_accept_and_reject_and_accept_answers(
    start_softphone: StartSoftphone, page: Any
) -> None:
    a, b = start_softphone.start_many("a", "b")
    page.goto(b.base_url + "/")
    expect = playwright.expect
    expect(page.locator("#connection")).to_have_text("connected")
    expect(page.locator("#incoming")).to_be_hidden()

    a_call = a.post("/calls", {"to": f"sip:b@{b.sip_uri_host}"})

    expect(page.locator("#incoming")).to_be_visible()
    expect(page.locator("#accept")).to_have_class("accept flash")
    expect(page.locator("#reject")).to_have_class("reject flash")
    page.click("#accept")

    expect(page.locator("#incoming")).to_be_hidden()
    expect(page.locator("#calls li .state")).to_have_text("established")
    a.wait_for_call(lambda c: c["id"] == a_call["id"] and c["state"] == "established")
    page.locator("#calls li").get_by_role("button", name="Hold").click()
    expect(page.locator("#calls li .state")).to_have_text("on hold")


def test_sliders_and_mute_change_the_phones_audio_settings(
    start_softphone: StartSoftphone, page: Any
) -> None:
    a = start_softphone("a")
    page.goto(a.base_url + "/")
    expect = playwright.expect
    expect(page.locator("#connection")).to_have_text("connected")

    page.locator("#speaker-volume").fill("50")
    page.click("#mute")

    expect(page.locator("#mute")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#speaker-volume-value")).to_have_text("50%")
    audio = a.get("/audio")
    assert audio["speaker_volume"] == 0.5 and audio["mute"] is True


def test_the_dial_pad_and_keyboard_type_the_number(
    start_softphone: StartSoftphone, page: Any
) -> None:
    a = start_softphone("a")
    page.goto(a.base_url + "/")
    playwright.expect(page.locator("#connection")).to_have_text("connected")

    page.click("#keypad button[data-key='1']")
    page.click("#keypad button[data-key='0']")
    page.locator("body").press("0")
    page.locator("body").press("#")

    playwright.expect(page.locator("#number")).to_have_value("100#")
