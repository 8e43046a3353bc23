"""The ACD, in memory: agents, routing strategies, overflow, menus; time stepped by hand."""

from __future__ import annotations

from typing import TypeVar

import pytest

from cms.acd import (
    Acd,
    AcdError,
    AcdSettings,
    AgentLoggedOff,
    AgentLoggedOn,
    AgentSettings,
    AgentState,
    AgentStateChanged,
    CallerJoinedQueue,
    CallerLeftQueue,
    CallerState,
    CallOffered,
    CancelOffer,
    CancelReason,
    ConnectAgent,
    EmptyRule,
    EndCall,
    HangUpCaller,
    HangUpReason,
    LeaveReason,
    MenuEntered,
    MenuExit,
    MenuLeft,
    MenuSettings,
    OfferCall,
    OfferEnded,
    OfferFailure,
    OfferOutcome,
    Output,
    PlayToCaller,
    Presence,
    PresenceChanged,
    QueueSettings,
    SendToOverflow,
    Strategy,
    WorkCentreSettings,
)

T0 = 1_000.0
OutT = TypeVar("OutT")

READY = AgentState.READY
NOT_READY = AgentState.NOT_READY
RINGING = AgentState.RINGING
ON_CALL = AgentState.ON_CALL
WRAP_UP = AgentState.WRAP_UP
LOGGED_OFF = AgentState.LOGGED_OFF


def only(outputs: list[Output], kind: type[OutT]) -> list[OutT]:
    """The outputs of one class, in order."""
    return [o for o in outputs if isinstance(o, kind)]


class Rig:
    """An ACD with a hand-driven clock; every output is also kept in `log`."""

    def __init__(
        self,
        *queues: QueueSettings,
        agents: tuple[AgentSettings, ...] | None = None,
        menus: tuple[MenuSettings, ...] = (),
        max_call_duration: float = 4 * 3600.0,
    ) -> None:
        if not queues:
            queues = (QueueSettings(name="sales", number="600"),)
        if agents is None:
            agents = tuple(
                AgentSettings(name=f"a{i}", extension=f"100{i}", queues=(queues[0].name,))
                for i in (1, 2, 3)
            )
        self.acd = Acd(AcdSettings(
            agents=agents,
            work_centres=(WorkCentreSettings(name="desk-12", extension="2012"),),
            queues=queues,
            menus=menus,
            max_call_duration=max_call_duration,
        ))
        self.now = T0
        self.log: list[Output] = []

    def record(self, outputs: list[Output]) -> list[Output]:
        self.log.extend(outputs)
        return outputs

    def tick(self, seconds: float) -> list[Output]:
        """Advance the clock and fire what is due."""
        self.now += seconds
        return self.record(self.acd.handle_timer(self.now))

    def online(self, *devices: str) -> list[Output]:
        """Register devices (auto-logon users become ready), one second apart."""
        out: list[Output] = []
        for device in devices:
            self.now += 1
            out += self.acd.device_registered(device, self.now)
        return self.record(out)

    def call(self, call_id: str, target: str = "600", priority: int | None = None) -> list[Output]:
        return self.record(self.acd.caller_arrived(call_id, target, self.now, priority=priority))

    def answer(self, call_id: str, agent: str) -> list[Output]:
        return self.record(self.acd.offer_answered(call_id, agent, self.now))

    def fail(self, call_id: str, agent: str, reason: OfferFailure) -> list[Output]:
        return self.record(self.acd.offer_failed(call_id, agent, reason, self.now))

    def hang_up(self, call_id: str) -> list[Output]:
        return self.record(self.acd.call_ended(call_id, self.now))

    def abandon(self, call_id: str) -> list[Output]:
        return self.record(self.acd.caller_abandoned(call_id, self.now))

    def set(self, user: str, state: AgentState, reason: str = "") -> list[Output]:
        return self.record(self.acd.set_state(user, state, reason, self.now))

    def state(self, user: str) -> AgentState:
        view = self.acd.agent(user)
        assert view is not None
        return view.state

    def offers(self, outputs: list[Output]) -> list[tuple[str, str]]:
        """(call id, agent) of every OfferCall."""
        return [(o.call_id, o.agent) for o in only(outputs, OfferCall)]


# -- agents: log on, log off, free seating -------------------------------------


def test_auto_logon_on_device_registration() -> None:
    rig = Rig()
    out = rig.online("1001")
    assert only(out, AgentLoggedOn) == [
        AgentLoggedOn(time=rig.now, user="a1", device="a1", automatic=True)
    ]
    assert only(out, AgentStateChanged)[0].state is READY
    assert only(out, PresenceChanged)[0].presence is Presence.AVAILABLE
    assert rig.state("a1") is READY


def test_manual_user_stays_logged_off_until_logon() -> None:
    agents = (AgentSettings(name="m1", extension="1001", queues=("sales",), auto_logon=False),)
    rig = Rig(agents=agents)
    assert rig.online("m1") == []
    assert rig.state("m1") is LOGGED_OFF
    out = rig.acd.logon("m1", None, rig.now)
    assert only(out, AgentLoggedOn)[0].automatic is False
    assert rig.state("m1") is READY


def test_logon_may_start_not_ready_with_a_reason() -> None:
    agents = (AgentSettings(name="m1", queues=("sales",), auto_logon=False),)
    rig = Rig(agents=agents)
    rig.acd.logon("m1", None, rig.now, state=NOT_READY, reason="meeting")
    view = rig.acd.agent("m1")
    assert view is not None and (view.state, view.reason) == (NOT_READY, "meeting")


def test_free_seating_offers_ring_the_work_centre_device() -> None:
    agents = (AgentSettings(name="m1", extension="1001", queues=("sales",), auto_logon=False),)
    rig = Rig(agents=agents)
    rig.online("2012")
    out = rig.acd.logon("m1", "2012", rig.now)
    assert only(out, AgentLoggedOn)[0].device == "desk-12"
    out = rig.call("c1")
    assert only(out, OfferCall) == [
        OfferCall(call_id="c1", agent="m1", device="desk-12", queue="sales", timeout=15.0)
    ]


def test_work_centre_in_use_refuses_a_second_agent() -> None:
    rig = Rig()
    rig.acd.logon("a1", "desk-12", rig.now)
    with pytest.raises(AcdError, match="in use"):
        rig.acd.logon("a2", "2012", rig.now)


def test_agent_cannot_log_on_at_another_users_phone() -> None:
    rig = Rig()
    with pytest.raises(AcdError, match="own phone"):
        rig.acd.logon("a1", "1002", rig.now)


def test_logon_twice_at_the_same_device_is_harmless() -> None:
    rig = Rig()
    rig.online("1001")
    assert rig.acd.logon("a1", "1001", rig.now) == []
    with pytest.raises(AcdError, match="log off first"):
        rig.acd.logon("a1", "desk-12", rig.now)


def test_unknown_agent_and_device_are_errors() -> None:
    rig = Rig()
    with pytest.raises(AcdError):
        rig.acd.logon("nobody", None, rig.now)
    with pytest.raises(AcdError):
        rig.acd.logon("a1", "9999", rig.now)
    with pytest.raises(AcdError):
        rig.acd.set_state("a1", READY, "", rig.now)  # logged off


def test_agent_at_unregistered_device_gets_no_offer_until_it_registers() -> None:
    rig = Rig()
    rig.acd.logon("a1", "desk-12", rig.now)
    assert rig.offers(rig.call("c1")) == []
    assert rig.offers(rig.online("desk-12")) == [("c1", "a1")]


def test_device_unregistration_logs_the_agent_off() -> None:
    rig = Rig()
    rig.online("1001")
    out = rig.acd.device_unregistered("1001", rig.now)
    assert only(out, AgentLoggedOff) == [
        AgentLoggedOff(time=rig.now, user="a1", device="a1", reason="device_unregistered")
    ]
    assert rig.state("a1") is LOGGED_OFF


def test_unregistration_while_ringing_moves_the_caller_on() -> None:
    rig = Rig()
    rig.online("1001", "1002")
    rig.call("c1")  # a1 has been idle longest
    out = rig.record(rig.acd.device_unregistered("1001", rig.now))
    assert only(out, CancelOffer)[0].agent == "a1"
    assert rig.offers(out) == [("c1", "a2")]


def test_logoff_during_call_takes_effect_when_call_ends() -> None:
    rig = Rig()
    rig.online("1001")
    rig.call("c1")
    rig.answer("c1", "a1")
    assert rig.acd.logoff("a1", rig.now) == []
    assert rig.state("a1") is ON_CALL
    out = rig.hang_up("c1")
    assert [e.state for e in only(out, AgentStateChanged)] == [LOGGED_OFF]
    assert only(out, AgentLoggedOff)[0].reason == "logoff"


def test_reregistration_during_call_cancels_the_pending_logoff() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", wrap_up=0))
    rig.online("1001")
    rig.call("c1")
    rig.answer("c1", "a1")
    rig.acd.device_unregistered("1001", rig.now)
    rig.acd.device_registered("1001", rig.now)
    rig.hang_up("c1")
    assert rig.state("a1") is READY


# -- agent states ------------------------------------------------------------


def test_not_ready_with_reason_and_back_to_ready() -> None:
    rig = Rig()
    rig.online("1001")
    out = rig.set("a1", NOT_READY, "lunch")
    assert only(out, AgentStateChanged) == [AgentStateChanged(
        time=rig.now, user="a1", state=NOT_READY, previous=READY, reason="lunch")]
    out = rig.set("a1", NOT_READY, "meeting")
    assert only(out, AgentStateChanged)[0].reason == "meeting"
    assert only(out, PresenceChanged) == []  # still not ready
    assert rig.offers(rig.call("c1")) == []
    assert rig.offers(rig.set("a1", READY)) == [("c1", "a1")]


def test_wrap_up_ends_after_queue_timer() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", wrap_up=30))
    rig.online("1001")
    rig.call("c1")
    rig.answer("c1", "a1")
    rig.tick(60)
    out = rig.hang_up("c1")
    assert [e.state for e in only(out, AgentStateChanged)] == [WRAP_UP]
    assert rig.acd.next_deadline() == rig.now + 30
    assert rig.tick(29.9) == []
    out = rig.tick(0.1)
    assert [(e.previous, e.state) for e in only(out, AgentStateChanged)] == [(WRAP_UP, READY)]


def test_calls_during_wrap_up_wait_for_it_to_end() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", wrap_up=10))
    rig.online("1001")
    rig.call("c1")
    rig.answer("c1", "a1")
    rig.hang_up("c1")
    assert rig.offers(rig.call("c2")) == []
    assert rig.offers(rig.tick(10)) == [("c2", "a1")]


def test_ready_during_wrap_up_ends_it_at_once() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", wrap_up=30))
    rig.online("1001")
    rig.call("c1")
    rig.answer("c1", "a1")
    rig.hang_up("c1")
    rig.tick(5)
    out = rig.set("a1", READY)
    assert [(e.previous, e.state) for e in only(out, AgentStateChanged)] == [(WRAP_UP, READY)]
    assert rig.acd.next_deadline() is None
    assert rig.tick(30) == []


def test_not_ready_during_wrap_up_keeps_the_agent_away() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", wrap_up=30))
    rig.online("1001")
    rig.call("c1")
    rig.answer("c1", "a1")
    rig.hang_up("c1")
    rig.set("a1", NOT_READY, "break")
    rig.tick(60)
    assert rig.state("a1") is NOT_READY


def test_not_ready_during_call_replaces_wrap_up() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", wrap_up=30))
    rig.online("1001")
    rig.call("c1")
    rig.answer("c1", "a1")
    assert rig.set("a1", NOT_READY, "break") == []
    out = rig.hang_up("c1")
    assert [(e.state, e.reason) for e in only(out, AgentStateChanged)] == [(NOT_READY, "break")]


def test_zero_wrap_up_returns_to_ready_at_once() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", wrap_up=0))
    rig.online("1001")
    rig.call("c1")
    rig.answer("c1", "a1")
    rig.call("c2")
    out = rig.hang_up("c1")
    assert rig.offers(out) == [("c2", "a1")]


def test_manual_wrap_up_is_timed() -> None:
    rig = Rig()
    rig.online("1001")
    rig.set("a1", WRAP_UP, "after outbound")
    view = rig.acd.agent("a1")
    assert view is not None and view.deadline == rig.now + 60
    rig.tick(60)
    assert rig.state("a1") is READY


def test_lost_bye_reclaimed_after_timeout() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", wrap_up=0), max_call_duration=3600)
    rig.online("1001")
    rig.call("c1")
    rig.answer("c1", "a1")
    assert rig.acd.next_deadline() == rig.now + 3600
    out = rig.tick(3600)
    assert only(out, EndCall) == [EndCall(call_id="c1", agent="a1", reason="reclaimed")]
    assert rig.state("a1") is READY
    assert rig.hang_up("c1") == []  # the BYE after all: nothing left to do


def test_unanswered_invite_never_leaves_the_agent_ringing() -> None:
    rig = Rig()
    rig.online("1001")
    rig.call("c1")
    assert rig.state("a1") is RINGING
    rig.tick(15)  # the B2BUA never reported anything
    assert only(rig.log, CancelOffer)[0].reason is CancelReason.NO_ANSWER
    # a1 is the only agent: a new round offers the caller to a1 again.
    assert rig.state("a1") is RINGING


def test_presence_follows_state() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", wrap_up=5))
    rig.online("1001")
    rig.call("c1")
    rig.answer("c1", "a1")
    rig.hang_up("c1")
    rig.tick(5)
    rig.set("a1", NOT_READY, "x")
    rig.log += rig.acd.logoff("a1", rig.now)
    presences = [p.presence.value for p in only(rig.log, PresenceChanged)]
    assert presences == ["available", "busy", "wrap_up", "available", "not_ready", "logged_off"]


def test_presence_and_logoff_events() -> None:
    rig = Rig()
    rig.online("1001")
    out = rig.acd.logoff("a1", rig.now)
    assert [type(o).__name__ for o in out] == [
        "AgentStateChanged", "PresenceChanged", "AgentLoggedOff"]
    assert only(out, PresenceChanged)[0].presence is Presence.LOGGED_OFF


def test_direct_call_makes_agent_busy_and_returns_to_previous_state() -> None:
    rig = Rig()
    rig.online("1001")
    rig.set("a1", NOT_READY, "admin")
    rig.acd.direct_call_started("d1", "a1", rig.now)
    assert rig.state("a1") is ON_CALL
    assert rig.offers(rig.call("c1")) == []
    out = rig.hang_up("d1")
    assert [(e.state, e.reason) for e in only(out, AgentStateChanged)] == [(NOT_READY, "admin")]


def test_direct_call_while_ringing_withdraws_the_offer() -> None:
    rig = Rig()
    rig.online("1001", "1002")
    rig.call("c1")
    out = rig.record(rig.acd.direct_call_started("d1", "a1", rig.now))
    assert only(out, CancelOffer)[0].reason is CancelReason.AGENT_UNAVAILABLE
    assert rig.offers(out) == [("c1", "a2")]
    rig.hang_up("d1")
    assert rig.state("a1") is READY


def test_not_ready_while_ringing_declines_without_a_miss() -> None:
    rig = Rig()
    rig.online("1001", "1002")
    rig.call("c1")
    out = rig.set("a1", NOT_READY, "break")
    assert only(out, OfferEnded)[0].outcome is OfferOutcome.REJECTED
    assert rig.offers(out) == [("c1", "a2")]
    view = rig.acd.agent("a1")
    assert view is not None and view.misses == 0


def test_ready_request_while_ringing_is_refused() -> None:
    rig = Rig()
    rig.online("1001")
    rig.call("c1")
    with pytest.raises(AcdError, match="ringing"):
        rig.set("a1", READY)
    with pytest.raises(AcdError):
        rig.acd.set_state("a1", ON_CALL, "", rig.now)


# -- routing -------------------------------------------------------------------


def test_longest_idle_agent_gets_the_next_call() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", wrap_up=0))
    rig.online("1002", "1001", "1003")  # a2 ready first
    assert rig.offers(rig.call("c1")) == [("c1", "a2")]
    assert rig.offers(rig.call("c2")) == [("c2", "a1")]
    assert rig.offers(rig.fail("c2", "a1", OfferFailure.REJECTED)) == [("c2", "a3")]
    rig.answer("c1", "a2")
    rig.tick(1)
    rig.hang_up("c1")  # a2 is ready again, but idle for the shortest time
    assert rig.offers(rig.call("c3")) == [("c3", "a1")]


def test_ring_no_answer_moves_to_the_next_agent() -> None:
    rig = Rig()
    rig.online("1001", "1002")
    rig.call("c1")
    out = rig.tick(15)
    assert only(out, CancelOffer) == [CancelOffer(
        call_id="c1", agent="a1", device="a1", reason=CancelReason.NO_ANSWER)]
    assert only(out, OfferEnded)[0].outcome is OfferOutcome.NO_ANSWER
    assert rig.offers(out) == [("c1", "a2")]
    assert rig.state("a1") is READY


def test_offer_failed_busy_moves_to_the_next_agent() -> None:
    rig = Rig()
    rig.online("1001", "1002")
    rig.call("c1")
    out = rig.fail("c1", "a1", OfferFailure.BUSY)
    assert only(out, CancelOffer) == []  # the B2BUA already knows that leg failed
    assert rig.offers(out) == [("c1", "a2")]


def test_three_misses_set_not_ready_no_answer() -> None:
    rig = Rig()
    rig.online("1001")
    rig.call("c1")
    rig.tick(15)
    rig.fail("c1", "a1", OfferFailure.NO_ANSWER)
    assert rig.state("a1") is RINGING  # third offer
    out = rig.tick(15)
    changes = only(out, AgentStateChanged)
    assert [(e.state, e.reason) for e in changes] == [(NOT_READY, "no_answer")]
    caller = rig.acd.caller("c1")
    assert caller is not None and caller.state is CallerState.WAITING


def test_max_no_answer_is_per_queue() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", max_no_answer=1))
    rig.online("1001")
    rig.call("c1")
    rig.fail("c1", "a1", OfferFailure.ERROR)
    assert rig.state("a1") is NOT_READY


def test_answer_resets_the_miss_count() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", wrap_up=0))
    rig.online("1001")
    rig.call("c1")
    rig.tick(15)
    rig.tick(15)
    rig.answer("c1", "a1")
    view = rig.acd.agent("a1")
    assert view is not None and view.misses == 0


def test_caller_abandon_while_ringing_cancels_offer() -> None:
    rig = Rig()
    rig.online("1001")
    rig.call("c1")
    out = rig.abandon("c1")
    assert [type(o) for o in out] == [
        CallerLeftQueue, CancelOffer, OfferEnded, AgentStateChanged, PresenceChanged]
    assert only(out, CallerLeftQueue)[0].reason is LeaveReason.ABANDONED
    assert only(out, CancelOffer)[0].reason is CancelReason.ABANDONED
    assert rig.state("a1") is READY
    assert rig.acd.next_deadline() is None
    assert rig.answer("c1", "a1") == [CancelOffer(
        call_id="c1", agent="a1", device="a1", reason=CancelReason.WITHDRAWN)]


def test_withdrawn_offer_keeps_the_agents_place_in_the_idle_line() -> None:
    rig = Rig()
    rig.online("1001", "1002")
    rig.call("c1")  # a1
    rig.abandon("c1")
    assert rig.offers(rig.call("c2")) == [("c2", "a1")]


def test_caller_abandon_while_waiting_leaves_queue() -> None:
    rig = Rig()
    rig.call("c1")
    rig.call("c2")
    rig.tick(7)
    out = rig.abandon("c1")
    assert only(out, CallerLeftQueue) == [CallerLeftQueue(
        time=rig.now, call_id="c1", queue="sales", reason=LeaveReason.ABANDONED, waited=7.0)]
    caller = rig.acd.caller("c2")
    assert caller is not None and caller.position == 1
    assert rig.abandon("c1") == []


def test_queue_position_reported_on_join() -> None:
    rig = Rig()
    positions = [only(rig.call(f"c{i}"), CallerJoinedQueue)[0].position for i in range(3)]
    assert positions == [1, 2, 3]
    assert only(rig.call("vip", priority=5), CallerJoinedQueue)[0].position == 1


def test_max_wait_sends_caller_to_overflow_queue() -> None:
    sales = QueueSettings(name="sales", number="600", max_wait=60, overflow="support")
    support = QueueSettings(name="support", number="700")
    agents = (AgentSettings(name="a1", queues=("sales",)),
              AgentSettings(name="s1", queues=("support",)))
    rig = Rig(sales, support, agents=agents)
    rig.online("a1")
    rig.set("a1", NOT_READY, "busy")
    rig.call("c1")
    caller = rig.acd.caller("c1")
    assert caller is not None and caller.deadline == rig.now + 60
    out = rig.tick(60)
    assert only(out, CallerLeftQueue) == [CallerLeftQueue(
        time=rig.now, call_id="c1", queue="sales", reason=LeaveReason.TIMEOUT, waited=60.0,
        target="support")]
    assert only(out, CallerJoinedQueue)[0].queue == "support"
    assert rig.offers(rig.online("s1")) == [("c1", "s1")]


def test_max_wait_while_ringing_withdraws_the_offer_without_a_miss() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", max_wait=10, ring_timeout=15,
                            overflow_announcement="closed"))
    rig.online("1001")
    rig.call("c1")
    out = rig.tick(10)
    assert only(out, CancelOffer)[0].reason is CancelReason.CALLER_MOVED
    assert only(out, HangUpCaller) == [HangUpCaller(
        call_id="c1", reason=HangUpReason.OVERFLOW, announcement="closed")]
    view = rig.acd.agent("a1")
    assert view is not None and view.state is READY and view.misses == 0


def test_max_wait_to_outside_number_sends_to_overflow() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", max_wait=30, overflow="+4930123"))
    rig.call("c1")
    out = rig.tick(30)
    assert only(out, SendToOverflow) == [SendToOverflow(call_id="c1", target="+4930123")]
    assert rig.acd.caller("c1") is None


def test_empty_queue_rule_overflows_at_once() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", when_empty=EmptyRule.OVERFLOW,
                            overflow_announcement="nobody-here"))
    out = rig.call("c1")
    assert [type(o) for o in out] == [CallerJoinedQueue, CallerLeftQueue, HangUpCaller]
    assert only(out, CallerLeftQueue)[0].reason is LeaveReason.OVERFLOW
    assert only(out, HangUpCaller)[0].announcement == "nobody-here"
    assert rig.acd.caller("c1") is None


def test_empty_rule_counts_not_ready_agents_as_present() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", when_empty=EmptyRule.OVERFLOW))
    rig.online("1001")
    rig.set("a1", NOT_READY, "break")
    rig.call("c1")
    caller = rig.acd.caller("c1")
    assert caller is not None and caller.state is CallerState.WAITING


def test_last_agent_logging_off_overflows_waiting_callers() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", when_empty=EmptyRule.OVERFLOW,
                            overflow="+491"))
    rig.online("1001")
    rig.set("a1", NOT_READY, "break")
    rig.call("c1")
    out = rig.acd.logoff("a1", rig.now)
    assert only(out, SendToOverflow) == [SendToOverflow(call_id="c1", target="+491")]


def test_overflow_loop_ends_in_hang_up() -> None:
    a = QueueSettings(name="qa", number="601", max_wait=10, overflow="qb")
    b = QueueSettings(name="qb", number="602", max_wait=10, overflow="qa")
    rig = Rig(a, b, agents=())
    rig.call("c1", "601")
    out = rig.tick(10)
    assert only(out, CallerJoinedQueue)[0].queue == "qb"
    out = rig.tick(10)
    assert [type(o) for o in out] == [CallerLeftQueue, HangUpCaller]


def test_overflowed_caller_keeps_its_arrival_time() -> None:
    sales = QueueSettings(name="sales", number="600", max_wait=30, overflow="support")
    support = QueueSettings(name="support", number="700")
    agents = (AgentSettings(name="s1", queues=("support",)),)
    rig = Rig(sales, support, agents=agents)
    rig.call("early", "600")
    rig.tick(10)
    rig.call("late", "700")
    rig.tick(20)  # early moves to support, ahead of late
    caller = rig.acd.caller("early")
    assert caller is not None and caller.position == 1
    assert rig.offers(rig.online("s1")) == [("early", "s1")]


def test_priority_callers_served_first_fifo_within_priority() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", wrap_up=0))
    for call_id, priority in [("n1", 0), ("v1", 5), ("n2", 0), ("v2", 5), ("u1", 9)]:
        rig.call(call_id, priority=priority)
        rig.tick(1)
    queue = rig.acd.queue("sales")
    assert queue is not None
    assert [c.call_id for c in queue.callers] == ["u1", "v1", "v2", "n1", "n2"]
    assert queue.longest_wait(rig.now) == 5.0
    served = []
    rig.online("1001")
    for _ in range(5):
        call_id, agent = rig.offers(rig.log)[-1]
        served.append(call_id)
        rig.answer(call_id, agent)
        rig.hang_up(call_id)
    assert served == ["u1", "v1", "v2", "n1", "n2"]


def test_queue_default_priority_applies_to_its_callers() -> None:
    vip = QueueSettings(name="vip", number="601", priority=3)
    normal = QueueSettings(name="normal", number="602")
    agents = (AgentSettings(name="a1", queues=("vip", "normal")),)
    rig = Rig(vip, normal, agents=agents)
    rig.call("n1", "602")
    rig.tick(1)
    rig.call("v1", "601")
    assert rig.offers(rig.online("a1")) == [("v1", "a1")]


def test_agent_in_two_queues_gets_the_longest_waiting_caller() -> None:
    q1 = QueueSettings(name="q1", number="601", wrap_up=0)
    q2 = QueueSettings(name="q2", number="602", wrap_up=0)
    agents = (AgentSettings(name="a1", queues=("q1", "q2")),)
    rig = Rig(q1, q2, agents=agents)
    rig.call("x1", "601")
    rig.tick(1)
    rig.call("y1", "602")
    rig.tick(1)
    rig.call("x2", "601")
    # y1 came in before x2, so after x1 the agent gets y1.
    assert rig.offers(rig.online("a1")) == [("x1", "a1")]
    rig.answer("x1", "a1")
    assert rig.offers(rig.hang_up("x1")) == [("y1", "a1")]


def test_round_robin_rotates() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", strategy=Strategy.ROUND_ROBIN,
                            wrap_up=0))
    rig.online("1003", "1002", "1001")  # readiness order does not matter
    picks = []
    for i in range(5):
        (offer,) = rig.offers(rig.call(f"c{i}"))
        picks.append(offer[1])
        rig.answer(*offer)
        rig.hang_up(offer[0])
    assert picks == ["a1", "a2", "a3", "a1", "a2"]


def test_round_robin_skips_busy_members() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", strategy=Strategy.ROUND_ROBIN))
    rig.online("1001", "1002", "1003")
    rig.set("a2", NOT_READY, "break")
    picks = [rig.offers(rig.call(f"c{i}"))[0][1] for i in range(2)]
    assert picks == ["a1", "a3"]


def test_fewest_calls() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", strategy=Strategy.FEWEST_CALLS,
                            wrap_up=0))
    rig.online("1001", "1002", "1003")
    for call_id, agent in [("c1", "a1"), ("c2", "a2"), ("c3", "a3")]:
        assert rig.offers(rig.call(call_id)) == [(call_id, agent)]
        rig.answer(call_id, agent)
    rig.hang_up("c1")
    assert rig.offers(rig.call("c4")) == [("c4", "a1")]
    rig.answer("c4", "a1")
    rig.hang_up("c4")
    rig.hang_up("c2")
    rig.tick(1)
    rig.hang_up("c3")
    # Calls taken: a1 2, a2 1, a3 1. a2 and a3 tie and a2 has been idle longer;
    # then a3 beats a1 although a1 has been idle longest.
    assert rig.offers(rig.call("c5")) == [("c5", "a2")]
    assert rig.offers(rig.call("c6")) == [("c6", "a3")]


def test_linear_with_penalties() -> None:
    queue = QueueSettings(name="sales", number="600", strategy=Strategy.LINEAR, wrap_up=0,
                          members=("a3", "a1", "a2"), penalties={"a3": 1})
    rig = Rig(queue)
    rig.online("1003", "1001", "1002")
    # a3 is listed first but has a penalty: a1 (next in order) first, then a2, then a3.
    assert rig.offers(rig.call("c1")) == [("c1", "a1")]
    assert rig.offers(rig.call("c2")) == [("c2", "a2")]
    assert rig.offers(rig.call("c3")) == [("c3", "a3")]
    rig.answer("c1", "a1")
    rig.hang_up("c1")
    assert rig.offers(rig.call("c4")) == [("c4", "a1")]


def test_penalty_applies_to_every_strategy() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", penalties={"a1": 2}))
    rig.online("1001", "1002")  # a1 idle longest, but penalised
    assert rig.offers(rig.call("c1")) == [("c1", "a2")]
    assert rig.offers(rig.call("c2")) == [("c2", "a1")]


def test_ring_all_first_answer_wins() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", strategy=Strategy.RING_ALL))
    rig.online("1001", "1002", "1003")
    out = rig.call("c1")
    assert rig.offers(out) == [("c1", "a1"), ("c1", "a2"), ("c1", "a3")]
    rig.fail("c1", "a3", OfferFailure.REJECTED)  # the others keep ringing
    assert rig.state("a1") is RINGING
    out = rig.answer("c1", "a2")
    assert only(out, ConnectAgent) == [ConnectAgent(call_id="c1", agent="a2", device="a2")]
    assert only(out, CancelOffer) == [CancelOffer(
        call_id="c1", agent="a1", device="a1", reason=CancelReason.ANSWERED_ELSEWHERE)]
    assert [rig.state(a) for a in ("a1", "a2", "a3")] == [READY, ON_CALL, READY]
    # a late answer from a1 is turned down; its leg is dropped
    assert only(rig.answer("c1", "a1"), CancelOffer)[0].reason is CancelReason.WITHDRAWN
    assert rig.state("a1") is READY


def test_ring_all_timeout_counts_a_miss_for_every_agent() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", strategy=Strategy.RING_ALL))
    rig.online("1001", "1002")
    rig.call("c1")
    out = rig.tick(15)
    assert len(only(out, CancelOffer)) == 2
    assert rig.offers(out) == [("c1", "a1"), ("c1", "a2")]  # a new round
    views = [rig.acd.agent(a) for a in ("a1", "a2")]
    assert [v.misses for v in views if v is not None] == [1, 1]


def test_on_call_agent_gets_no_offer() -> None:
    rig = Rig()
    rig.online("1001")
    rig.call("c1")
    rig.answer("c1", "a1")
    assert rig.offers(rig.call("c2")) == []
    assert rig.offers(rig.call("c3")) == []


def test_duplicate_answer_report_is_ignored() -> None:
    rig = Rig()
    rig.online("1001")
    rig.call("c1")
    rig.answer("c1", "a1")
    assert rig.answer("c1", "a1") == []


def test_late_offer_failed_is_ignored() -> None:
    rig = Rig()
    rig.online("1001", "1002")
    rig.call("c1")
    rig.tick(15)  # a1 timed out; a2 rings
    assert rig.fail("c1", "a1", OfferFailure.NO_ANSWER) == []
    assert rig.state("a2") is RINGING


def test_transfer_to_queue_reuses_call_id() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", wrap_up=0))
    rig.online("1001", "1002")
    rig.call("c1")
    rig.answer("c1", "a1")
    rig.tick(1)
    rig.hang_up("c1")
    out = rig.call("c1")
    assert rig.offers(out) == [("c1", "a2")]
    with pytest.raises(AcdError):
        rig.call("c1")


def test_unknown_target_is_an_error() -> None:
    rig = Rig()
    with pytest.raises(AcdError):
        rig.call("c1", "999")
    assert rig.acd.route("sales") == rig.acd.route("600")


def test_full_call_life_cycle_events_in_order() -> None:
    rig = Rig(QueueSettings(name="sales", number="600", wrap_up=5))
    rig.online("1001")
    rig.tick(1)
    rig.call("c1")
    rig.tick(2)
    rig.answer("c1", "a1")
    rig.tick(30)
    rig.hang_up("c1")
    rig.tick(5)
    rig.log += rig.acd.logoff("a1", rig.now)
    t = T0 + 1

    def state(at: float, new: AgentState, old: AgentState) -> AgentStateChanged:
        return AgentStateChanged(time=at, user="a1", state=new, previous=old, reason="")

    def presence(at: float, value: Presence) -> PresenceChanged:
        return PresenceChanged(time=at, user="a1", presence=value)

    assert rig.log == [
        AgentLoggedOn(time=t, user="a1", device="a1", automatic=True),
        state(t, READY, LOGGED_OFF),
        presence(t, Presence.AVAILABLE),
        CallerJoinedQueue(time=t + 1, call_id="c1", queue="sales", position=1, priority=0),
        state(t + 1, RINGING, READY),
        presence(t + 1, Presence.BUSY),
        CallOffered(time=t + 1, call_id="c1", queue="sales", agent="a1", device="a1"),
        OfferCall(call_id="c1", agent="a1", device="a1", queue="sales", timeout=15.0),
        CallerLeftQueue(time=t + 3, call_id="c1", queue="sales", reason=LeaveReason.ANSWERED,
                        waited=2.0, agent="a1"),
        OfferEnded(time=t + 3, call_id="c1", agent="a1", outcome=OfferOutcome.ANSWERED),
        state(t + 3, ON_CALL, RINGING),
        ConnectAgent(call_id="c1", agent="a1", device="a1"),
        state(t + 33, WRAP_UP, ON_CALL),
        presence(t + 33, Presence.WRAP_UP),
        state(t + 38, READY, WRAP_UP),
        presence(t + 38, Presence.AVAILABLE),
        AgentStateChanged(time=t + 38, user="a1", state=LOGGED_OFF, previous=READY,
                          reason="logoff"),
        presence(t + 38, Presence.LOGGED_OFF),
        AgentLoggedOff(time=t + 38, user="a1", device="a1", reason="logoff"),
    ]
    assert rig.acd.next_deadline() is None


# -- entry menu ----------------------------------------------------------------

MENU = MenuSettings(name="main", number="500", announcement="welcome",
                    choices={"1": "sales", "2": "700"}, timeout=8, retries=1)


def _menu_rig(menu: MenuSettings = MENU) -> Rig:
    sales = QueueSettings(name="sales", number="600")
    support = QueueSettings(name="support", number="700")
    return Rig(sales, support, menus=(menu,), agents=())


def test_entry_menu_digit_picks_a_queue() -> None:
    rig = _menu_rig()
    out = rig.call("c1", "500")
    assert out == [MenuEntered(time=rig.now, call_id="c1", menu="main"),
                   PlayToCaller(call_id="c1", announcement="welcome")]
    caller = rig.acd.caller("c1")
    assert caller is not None and caller.state is CallerState.IN_MENU
    out = rig.record(rig.acd.caller_digit("c1", "2", rig.now))
    assert only(out, MenuLeft) == [MenuLeft(time=rig.now, call_id="c1", menu="main",
                                            exit=MenuExit.CHOICE, digit="2")]
    assert only(out, CallerJoinedQueue)[0].queue == "support"
    assert rig.acd.caller_digit("c1", "1", rig.now) == []  # digits in a queue are ignored


def test_entry_menu_wrong_digit_replays_then_hangs_up() -> None:
    rig = _menu_rig()
    rig.call("c1", "500")
    out = rig.record(rig.acd.caller_digit("c1", "9", rig.now))
    assert out == [PlayToCaller(call_id="c1", announcement="welcome")]
    out = rig.tick(8)
    assert only(out, MenuLeft)[0].exit is MenuExit.FAILED
    assert only(out, HangUpCaller)[0].reason is HangUpReason.NO_CHOICE


def test_entry_menu_timeout_replays_then_default() -> None:
    menu = MenuSettings(name="main", number="500", announcement="welcome",
                        choices={"1": "sales"}, timeout=5, retries=2, default="support")
    rig = _menu_rig(menu)
    rig.call("c1", "500")
    assert only(rig.tick(5), PlayToCaller) != []
    assert only(rig.tick(5), PlayToCaller) != []
    out = rig.tick(5)
    assert only(out, MenuLeft)[0].exit is MenuExit.DEFAULT
    assert only(out, CallerJoinedQueue)[0].queue == "support"


def test_abandon_in_menu() -> None:
    rig = _menu_rig()
    rig.call("c1", "500")
    out = rig.abandon("c1")
    assert only(out, MenuLeft)[0].exit is MenuExit.ABANDONED
    assert rig.acd.next_deadline() is None


def test_overflow_to_a_menu() -> None:
    sales = QueueSettings(name="sales", number="600", max_wait=5, overflow="500")
    rig = Rig(sales, QueueSettings(name="support", number="700"), menus=(MENU,), agents=())
    rig.call("c1")
    out = rig.tick(5)
    assert only(out, MenuEntered)[0].menu == "main"


# -- views ---------------------------------------------------------------------


def test_queue_view_lists_callers_and_member_states() -> None:
    rig = Rig()
    rig.online("1001")
    rig.call("c1")
    rig.call("c2")
    view = rig.acd.queue("600")
    assert view is not None
    assert [(c.call_id, c.state, c.position) for c in view.callers] == [
        ("c1", CallerState.OFFERING, 1), ("c2", CallerState.WAITING, 2)]
    assert view.agents == (("a1", RINGING), ("a2", LOGGED_OFF), ("a3", LOGGED_OFF))
    assert view.callers[0].offered_to == ("a1",)
    assert [q.name for q in rig.acd.queues()] == ["sales"]
    assert rig.acd.queue("nope") is None
    assert rig.acd.is_registered("1001") and not rig.acd.is_registered("1002")


def test_is_agent_answers_for_configured_agents_only() -> None:
    rig = Rig()
    assert rig.acd.is_agent("a1")
    assert not rig.acd.is_agent("nobody")
    assert rig.acd.is_agent("a2") == (rig.acd.agent("a2") is not None)


def test_longest_idle_pick_is_what_the_generic_strategy_would_choose() -> None:
    import random

    from cms.acd.queue import choose

    rng = random.Random(7)
    agents = tuple(AgentSettings(name=f"a{i}", extension=f"10{i:02d}", queues=("sales",))
                   for i in range(1, 9))
    penalties = {"a2": 1, "a5": 1, "a7": 2}
    for _ in range(300):
        rig = Rig(QueueSettings(name="sales", number="600", penalties=penalties), agents=agents)
        rig.online(*rng.sample([a.extension for a in agents], rng.randint(0, 8)))
        acd = rig.acd
        for user in acd._ready:
            acd._agents[user].idle_since = float(rng.choice((1, 2, 3)))  # ties: member order
        queue = acd._queues["sales"]
        tried = set(rng.sample([a.name for a in agents], rng.randint(0, 8)))
        candidates = acd._candidates(queue)
        fresh = [c for c in candidates if c.user not in tried] or candidates
        expected = choose(Strategy.LONGEST_IDLE, fresh, None)[0] if candidates else None
        left = set(tried)
        assert acd._longest_idle(queue, left) == expected
        assert left == (tried if not candidates or any(c.user not in tried for c in candidates)
                        else set())
