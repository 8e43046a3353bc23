"""ACD settings: built from cms.config (today's keys and future ones), and validated."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cms.acd import (
    Acd,
    AcdSettings,
    AgentSettings,
    AgentState,
    AgentStateChanged,
    CallerLeftQueue,
    EmptyRule,
    LeaveReason,
    MenuSettings,
    QueueSettings,
    Strategy,
    build_settings,
)
from cms.config import Config, ConfigError, Queue, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_default_profile_builds_with_defaults() -> None:
    settings = build_settings(load_config(ROOT / "sip_profiles" / "default.toml"))
    sales = next(q for q in settings.queues if q.name == "sales")
    assert sales.strategy is Strategy.LONGEST_IDLE
    assert (sales.max_wait, sales.when_empty, sales.max_no_answer) == (0.0, EmptyRule.WAIT, 3)
    assert {a.name for a in settings.agents} >= {"agent1", "agent2", "agent3"}
    acd = Acd(settings)
    assert acd.route("600") == acd.route("sales")


def test_config_keys_map_onto_settings() -> None:
    config = parse_config({
        "users": [{"name": "u1", "password": "p", "extension": "1001", "queues": ["q"],
                   "auto_logon": False}],
        "work_centres": [{"name": "desk", "extension": "2001"}],
        "queues": [{"name": "q", "number": "600", "strategy": "ring-all", "ring_timeout": 20,
                    "wrap_up": 0}],
    })
    settings = build_settings(config)
    assert settings.agents == (
        AgentSettings(name="u1", extension="1001", queues=("q",), auto_logon=False),)
    assert settings.work_centres[0].extension == "2001"
    q = settings.queues[0]
    assert (q.strategy, q.ring_timeout, q.wrap_up) == (Strategy.RING_ALL, 20.0, 0.0)


@dataclass(frozen=True, slots=True)
class FutureQueue(Queue):
    """Queue as cms.config may grow it."""

    max_wait: float = 45
    when_empty: str = "overflow"
    overflow: str = "other"
    overflow_announcement: str = "sorry"
    max_no_answer: int = 2
    priority: int = 4
    members: tuple[str, ...] = ("u2", "u1")
    penalties: dict[str, int] = field(default_factory=lambda: {"u2": 1})


@dataclass(frozen=True, slots=True)
class FutureConfig(Config):
    """Config with [acd] and [[menus]] tables."""

    acd: dict[str, Any] = field(default_factory=lambda: {"max_call_duration": 600})
    menus: tuple[dict[str, Any], ...] = (
        {"name": "main", "number": "500", "announcement": "hello",
         "choices": {"1": "q", "2": "other"}, "default": "q"},
    )


def test_future_config_keys_are_picked_up() -> None:
    base = parse_config({
        "users": [{"name": "u1", "password": "p"}, {"name": "u2", "password": "p"}],
        "queues": [{"name": "other"}],
    })
    config = FutureConfig(users=base.users, queues=(FutureQueue(name="q"), *base.queues))
    settings = build_settings(config)
    q = settings.queues[0]
    assert q == QueueSettings(
        name="q", max_wait=45.0, when_empty=EmptyRule.OVERFLOW, overflow="other",
        overflow_announcement="sorry", max_no_answer=2, priority=4, members=("u2", "u1"),
        penalties={"u2": 1})
    assert settings.max_call_duration == 600
    assert settings.menus == (MenuSettings(name="main", number="500", announcement="hello",
                                           choices={"1": "q", "2": "other"}, default="q"),)


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        (QueueSettings(name="q", ring_timeout=0), "ring_timeout"),
        (QueueSettings(name="q", wrap_up=-1), "negative"),
        (QueueSettings(name="q", members=("ghost",)), "unknown member"),
        (QueueSettings(name="q", penalties={"ghost": 1}), "unknown member"),
        (QueueSettings(name="q", number="500"), "also used"),
    ],
)
def test_bad_queue_settings_are_rejected(queue: QueueSettings, message: str) -> None:
    menu = MenuSettings(name="m", number="500")
    with pytest.raises(ConfigError, match=message):
        AcdSettings(queues=(queue,), menus=(menu,))


def test_menu_choices_must_be_digits_naming_queues() -> None:
    queue = QueueSettings(name="q")
    with pytest.raises(ConfigError, match="DTMF"):
        AcdSettings(queues=(queue,), menus=(MenuSettings(name="m", choices={"12": "q"}),))
    with pytest.raises(ConfigError, match="unknown queue"):
        AcdSettings(queues=(queue,), menus=(MenuSettings(name="m", choices={"1": "x"}),))
    with pytest.raises(ConfigError, match="default"):
        AcdSettings(queues=(queue,), menus=(MenuSettings(name="m", default="x"),))


def test_agent_in_unknown_queue_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown queue"):
        AcdSettings(agents=(AgentSettings(name="u", queues=("nope",)),))


def test_bad_future_values_are_config_errors() -> None:
    base = parse_config({"queues": [{"name": "q"}]})

    @dataclass(frozen=True, slots=True)
    class BadQueue(Queue):
        when_empty: str = "explode"

    with pytest.raises(ConfigError, match="explode"):
        build_settings(Config(queues=(BadQueue(name="q"),)))

    @dataclass(frozen=True, slots=True)
    class BadWait(Queue):
        max_wait: str = "long"

    with pytest.raises(ConfigError, match="max_wait"):
        build_settings(Config(queues=(BadWait(name="q"),)))
    assert build_settings(base).queues[0].name == "q"


def test_event_payload_is_json_ready() -> None:
    event = AgentStateChanged(time=1.0, user="a1", state=AgentState.NOT_READY,
                              previous=AgentState.READY, reason="lunch")
    assert event.TYPE == "agent.state_changed"
    assert json.loads(json.dumps(event.payload())) == {
        "user": "a1", "state": "not_ready", "previous": "ready", "reason": "lunch"}
    left = CallerLeftQueue(time=2.0, call_id="c", queue="q", reason=LeaveReason.TIMEOUT,
                           waited=3.0, target="other")
    assert left.TYPE == "queue.caller_left"
    assert left.payload()["reason"] == "timeout"
