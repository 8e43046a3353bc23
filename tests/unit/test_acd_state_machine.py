"""The ACD under random sequences of inputs and time steps (hypothesis state machine).

Invariants checked after every step:
- no agent is ever offered a call while ringing for another or while on a call;
- no caller is lost: each ends answered, abandoned, overflowed or hung up by
  an action, or the ACD still holds it;
- every transient agent state (ringing, on_call, wrap_up) has a pending
  deadline, and so does every caller being offered;
- the event stream alone reproduces every agent's state and presence;
- no caller waits while a ready member agent with a registered phone is idle.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cms.acd import (
    Acd,
    AcdError,
    AcdSettings,
    AgentSettings,
    AgentState,
    AgentStateChanged,
    CallerLeftQueue,
    CallerState,
    CancelOffer,
    CancelReason,
    ConnectAgent,
    EmptyRule,
    EndCall,
    HangUpCaller,
    LeaveReason,
    MenuExit,
    MenuLeft,
    MenuSettings,
    OfferCall,
    OfferEnded,
    OfferFailure,
    Output,
    Presence,
    PresenceChanged,
    QueueSettings,
    SendToOverflow,
    Strategy,
    WorkCentreSettings,
)

SETTINGS = AcdSettings(
    agents=(
        AgentSettings(name="a1", extension="1001", queues=("q1", "q2")),
        AgentSettings(name="a2", extension="1002", queues=("q1",)),
        AgentSettings(name="a3", extension="1003", queues=("q2", "q3")),
        AgentSettings(name="a4", extension="1004", queues=("q3",), auto_logon=False),
    ),
    work_centres=(WorkCentreSettings(name="w1", extension="2001"),
                  WorkCentreSettings(name="w2", extension="2002")),
    queues=(
        QueueSettings(name="q1", number="601", ring_timeout=10, wrap_up=5, max_wait=40,
                      overflow="q2", max_no_answer=2),
        QueueSettings(name="q2", number="602", strategy=Strategy.RING_ALL, ring_timeout=8,
                      wrap_up=0, when_empty=EmptyRule.OVERFLOW, priority=1),
        QueueSettings(name="q3", number="603", strategy=Strategy.ROUND_ROBIN, ring_timeout=6,
                      wrap_up=3, max_wait=90, overflow="+4930", members=("a4", "a3"),
                      penalties={"a4": 1}),
        QueueSettings(name="q4", number="604", strategy=Strategy.FEWEST_CALLS,
                      members=("a2", "a4"), max_wait=25, overflow="q1"),
    ),
    menus=(MenuSettings(name="m", number="500", announcement="hi",
                        choices={"1": "q1", "3": "603"}, timeout=5, retries=1, default="q4"),),
    max_call_duration=300,
)
USERS = [a.name for a in SETTINGS.agents]
DEVICES = USERS + ["w1", "w2", "1001", "2002"]
TRANSIENT = {AgentState.RINGING, AgentState.ON_CALL, AgentState.WRAP_UP}
FINAL_LEAVE = {LeaveReason.ANSWERED, LeaveReason.ABANDONED}


class AcdMachine(RuleBasedStateMachine):
    """Drives one Acd and keeps a model built only from its outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.acd = Acd(SETTINGS)
        self.now = 0.0
        self.next_call = 0
        self.arrived: set[str] = set()
        self.holding: set[str] = set()  # callers the ACD must still hold
        self.ringing: dict[str, str] = {}  # agent -> call it rings for
        self.on_calls: dict[str, set[str]] = {u: set() for u in USERS}  # agent -> calls
        self.call_agent: dict[str, str] = {}  # answered or direct call -> agent
        self.states = {u: AgentState.LOGGED_OFF for u in USERS}
        self.presence = {u: Presence.LOGGED_OFF for u in USERS}

    # -- feeding outputs into the model ----------------------------------------

    def absorb(self, outputs: list[Output]) -> None:
        for o in outputs:
            if isinstance(o, OfferCall):
                assert o.agent not in self.ringing, f"{o.agent} offered two calls"
                assert not self.on_calls[o.agent], f"{o.agent} offered a call while on a call"
                self.ringing[o.agent] = o.call_id
            elif isinstance(o, OfferEnded):
                assert self.ringing.pop(o.agent) == o.call_id
            elif isinstance(o, CancelOffer) and o.reason is not CancelReason.WITHDRAWN:
                assert self.ringing.get(o.agent) == o.call_id
            elif isinstance(o, ConnectAgent):
                self.on_calls[o.agent].add(o.call_id)
                self.call_agent[o.call_id] = o.agent
            elif isinstance(o, EndCall):
                self._forget_call(o.call_id)
            elif isinstance(o, CallerLeftQueue):
                assert o.call_id in self.holding
                if o.reason in FINAL_LEAVE:
                    self.holding.discard(o.call_id)
            elif isinstance(o, MenuLeft) and o.exit is MenuExit.ABANDONED:
                self.holding.discard(o.call_id)
            elif isinstance(o, HangUpCaller | SendToOverflow):
                assert o.call_id in self.holding
                self.holding.discard(o.call_id)
            elif isinstance(o, AgentStateChanged):
                assert self.states[o.user] is o.previous
                self.states[o.user] = o.state
            elif isinstance(o, PresenceChanged):
                assert self.presence[o.user] is not o.presence
                self.presence[o.user] = o.presence

    def _forget_call(self, call_id: str) -> None:
        agent = self.call_agent.pop(call_id, None)
        if agent is not None:
            self.on_calls[agent].discard(call_id)

    # -- inputs -------------------------------------------------------------

    @rule(device=st.sampled_from(DEVICES))
    def register(self, device: str) -> None:
        self.absorb(self.acd.device_registered(device, self.now))

    @rule(device=st.sampled_from(DEVICES))
    def unregister(self, device: str) -> None:
        self.absorb(self.acd.device_unregistered(device, self.now))

    @rule(user=st.sampled_from(USERS), device=st.sampled_from([None, "w1", "2002", "a2"]),
          not_ready=st.booleans())
    def logon(self, user: str, device: str | None, not_ready: bool) -> None:
        state = AgentState.NOT_READY if not_ready else AgentState.READY
        try:
            self.absorb(self.acd.logon(user, device, self.now, state=state, reason="start"))
        except AcdError:
            pass

    @rule(user=st.sampled_from(USERS))
    def logoff(self, user: str) -> None:
        self.absorb(self.acd.logoff(user, self.now))

    @rule(user=st.sampled_from(USERS),
          state=st.sampled_from([AgentState.READY, AgentState.NOT_READY, AgentState.WRAP_UP]),
          reason=st.sampled_from(["", "break", "lunch"]))
    def set_state(self, user: str, state: AgentState, reason: str) -> None:
        try:
            self.absorb(self.acd.set_state(user, state, reason, self.now))
        except AcdError:
            pass

    @rule(dialled=st.sampled_from(["q1", "602", "q3", "q4", "500"]),
          priority=st.sampled_from([None, 0, 2]))
    def arrive(self, dialled: str, priority: int | None) -> None:
        self.next_call += 1
        call_id = f"c{self.next_call}"
        self.arrived.add(call_id)
        self.holding.add(call_id)
        self.absorb(self.acd.caller_arrived(call_id, dialled, self.now, priority=priority))

    @precondition(lambda self: self.holding)
    @rule(data=st.data(), digit=st.sampled_from(["1", "3", "9"]))
    def digit(self, data: st.DataObject, digit: str) -> None:
        call_id = data.draw(st.sampled_from(sorted(self.holding)))
        self.absorb(self.acd.caller_digit(call_id, digit, self.now))

    @precondition(lambda self: self.arrived)
    @rule(data=st.data())
    def abandon(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(sorted(self.arrived)))
        outputs = self.acd.caller_abandoned(call_id, self.now)
        self._forget_call(call_id)  # an answered call ends this way too
        self.absorb(outputs)

    @precondition(lambda self: self.ringing)
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        agent, call_id = data.draw(st.sampled_from(sorted(self.ringing.items())))
        self.absorb(self.acd.offer_answered(call_id, agent, self.now))

    @precondition(lambda self: self.arrived)
    @rule(data=st.data(), agent=st.sampled_from(USERS))
    def stray_answer(self, data: st.DataObject, agent: str) -> None:
        call_id = data.draw(st.sampled_from(sorted(self.arrived)))
        self.absorb(self.acd.offer_answered(call_id, agent, self.now))

    @precondition(lambda self: self.ringing)
    @rule(data=st.data(), reason=st.sampled_from(list(OfferFailure)))
    def fail(self, data: st.DataObject, reason: OfferFailure) -> None:
        agent, call_id = data.draw(st.sampled_from(sorted(self.ringing.items())))
        self.absorb(self.acd.offer_failed(call_id, agent, reason, self.now))

    @precondition(lambda self: self.call_agent)
    @rule(data=st.data())
    def end(self, data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(sorted(self.call_agent)))
        outputs = self.acd.call_ended(call_id, self.now)
        self._forget_call(call_id)
        self.absorb(outputs)

    @rule(user=st.sampled_from(USERS))
    def direct_call(self, user: str) -> None:
        self.next_call += 1
        call_id = f"d{self.next_call}"
        outputs = self.acd.direct_call_started(call_id, user, self.now)
        view = self.acd.agent(user)
        assert view is not None
        if call_id in view.calls:
            self.on_calls[user].add(call_id)
            self.call_agent[call_id] = user
        self.absorb(outputs)

    @rule(seconds=st.sampled_from([0.5, 1, 3, 5, 8, 10, 30, 120, 400]))
    def wait(self, seconds: float) -> None:
        self.now += seconds
        self.absorb(self.acd.handle_timer(self.now))

    # -- invariants ------------------------------------------------------------

    @invariant()
    def agents_match_the_event_stream(self) -> None:
        for view in self.acd.agents():
            assert view.state is self.states[view.user]
            assert view.presence is self.presence[view.user]
            assert (view.state is AgentState.RINGING) == (view.user in self.ringing)
            assert view.offer == self.ringing.get(view.user)
            assert set(view.calls) == self.on_calls[view.user]
            assert (view.state is AgentState.ON_CALL) == bool(view.calls)

    @invariant()
    def transient_states_have_a_deadline(self) -> None:
        next_deadline = self.acd.next_deadline()
        for view in self.acd.agents():
            if view.state in TRANSIENT:
                assert view.deadline is not None and view.deadline > self.now, view
                assert next_deadline is not None and next_deadline <= view.deadline
            else:
                assert view.deadline is None

    @invariant()
    def no_caller_is_lost(self) -> None:
        for call_id in self.arrived:
            caller = self.acd.caller(call_id)
            assert (caller is not None) == (call_id in self.holding), call_id
            if caller is not None and caller.state is not CallerState.WAITING:
                assert caller.deadline is not None and caller.deadline > self.now

    @invariant()
    def no_caller_waits_while_a_member_is_free(self) -> None:
        for queue in self.acd.queues():
            if not any(c.state is CallerState.WAITING for c in queue.callers):
                continue
            for user, state in queue.agents:
                if state is not AgentState.READY:
                    continue
                view = self.acd.agent(user)
                assert view is not None and view.device is not None
                assert not self.acd.is_registered(view.device), (queue.name, user)

TestAcdStateMachine = AcdMachine.TestCase
TestAcdStateMachine.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
