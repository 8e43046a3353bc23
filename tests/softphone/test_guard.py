"""Exceptions in pjsua2 callbacks are reported, never lost, never propagated into C++."""

from __future__ import annotations

from typing import Any

import pytest

from softphone.events import ErrorReported, Event
from softphone.sip.guard import guarded


class Callbacks:
    def __init__(self) -> None:
        self.errors: list[tuple[str, BaseException]] = []

    def report_error(self, where: str, exc: BaseException) -> None:
        self.errors.append((where, exc))

    @guarded
    def onCallState(self, prm: Any) -> None:  # noqa: N802 - pjsua2's name
        raise RuntimeError(f"boom {prm}")

    @guarded
    def onRegState(self, prm: Any) -> str:  # noqa: N802
        return f"ok {prm}"


def test_an_exception_in_a_callback_is_reported_with_its_place() -> None:
    callbacks = Callbacks()

    assert callbacks.onCallState(1) is None

    [(where, exc)] = callbacks.errors
    assert where == "Callbacks.onCallState"
    assert isinstance(exc, RuntimeError) and str(exc) == "boom 1"


def test_a_callback_that_works_returns_its_value() -> None:
    callbacks = Callbacks()

    assert callbacks.onRegState(2) == "ok 2"
    assert callbacks.errors == []


def test_the_user_agent_turns_a_reported_error_into_an_event() -> None:
    pytest.importorskip("pjsua2")
    from softphone.audio.engine import AudioEngine
    from softphone.audio.null import NullBackend
    from softphone.profile import PhoneProfile
    from softphone.sip.agent import UserAgent

    events: list[Event] = []
    agent = UserAgent(PhoneProfile(), AudioEngine(NullBackend()), events.append)

    agent.report_error("PhoneCall.onCallState", ValueError("bad state"))

    assert events == [ErrorReported(where="PhoneCall.onCallState",
                                    message="ValueError: bad state")]
