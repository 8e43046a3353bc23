"""The `Acd` façade: agents, queues, entry menus, routing and timers, sans-IO.

Inputs are method calls with the current time `now` (never decreasing); each
returns the outputs it caused, in order: `AcdEvent`s for the journal and
`Action`s for the B2BUA (see `events.py`). The owner calls
`handle_timer(now)` once `now` reaches `next_deadline()`.

Routing runs after every input: waiting callers are taken in service order
(priority, then arrival; see `queue.py`) and each gets the agent(s) its
queue's strategy picks among that queue's eligible agents.

Rules worth knowing:
- An agent takes one offer at a time and none while `on_call`; ring-all rings
  every eligible agent and the first answer wins (the others get
  `CancelOffer`; a late second answer gets `CancelOffer(WITHDRAWN)`).
- The ACD owns the ring timeout: when it runs out, the offer is cancelled and
  counts as a miss; `max_no_answer` consecutive misses (of any kind reported
  by `offer_failed`, or ring timeouts) set the agent not_ready(no_answer).
- `set_state` or `logoff` during a call takes effect when the agent's calls
  end (instead of the wrap-up). During ringing only not_ready is accepted; it
  declines the offer without counting a miss.
- An unregistered device logs its agent off (after the call, if on one);
  free seating: an agent logs on at a work centre and offers ring that AOR.
- Every transient agent state is timed: ringing by the ring timeout, wrap-up
  by its length, on_call by `max_call_duration` (a lost BYE: `EndCall`).
- An overflow target that the caller has already passed through (a loop)
  ends in the announcement and hang-up instead.
- Transfer to a queue: report `call_ended` for the agent's call, then
  `caller_arrived` again with the same call id.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from cms.config import Config

from .agent import Agent, log_off, log_on, transition
from .errors import AcdError
from .events import (
    AnnouncePosition,
    CallerJoinedQueue,
    CallerLeftQueue,
    CallOffered,
    CancelOffer,
    CancelReason,
    ConnectAgent,
    EndCall,
    HangUpCaller,
    HangUpReason,
    LeaveReason,
    MenuEntered,
    MenuExit,
    MenuLeft,
    OfferCall,
    OfferEnded,
    OfferFailure,
    OfferOutcome,
    Output,
    PlayToCaller,
    SendToOverflow,
)
from .queue import Caller, Candidate, QueueRuntime, choose
from .settings import AcdSettings, EmptyRule, MenuSettings, Strategy, build_settings
from .states import PRESENCE, AgentState, CallerState
from .timers import Timers
from .views import AgentView, CallerView, Destination, QueueView

__all__ = ["Acd"]

_OFF = AgentState.LOGGED_OFF
_READY = AgentState.READY
_NOT_READY = AgentState.NOT_READY
_RINGING = AgentState.RINGING
_ON_CALL = AgentState.ON_CALL
_WRAP_UP = AgentState.WRAP_UP

_DEVICE_GONE = "device_unregistered"


class _Timer(Enum):
    OFFER = "offer"  # ring timeout of a caller's current offers (key: call id)
    MAX_WAIT = "max_wait"  # call id
    MENU = "menu"  # call id
    CALL = "call"  # reclaim of an answered or direct call (call id)
    ANNOUNCE = "announce"  # next position announcement of a waiting caller (call id)
    WRAP_UP = "wrap_up"  # user


_Key: TypeAlias = tuple[_Timer, str]


@dataclass(slots=True)
class _Call:
    """A call an agent is on: answered from a queue, or direct (queue None)."""

    call_id: str
    agent: str
    queue: str | None


class Acd:
    """Automatic call distribution for every configured queue, agent and work centre."""

    def __init__(self, settings: AcdSettings) -> None:
        self.settings = settings
        self._agents = {a.name: Agent(a.name) for a in settings.agents}
        self._auto_logon = {a.name for a in settings.agents if a.auto_logon}
        # Devices are registrar AORs (account names); names and extensions both lead to them.
        self._devices: dict[str, str] = {}
        self._owner: dict[str, str | None] = {}  # device -> its user (None: a work centre)
        for a in settings.agents:
            self._add_device(a.name, a.extension, a.name)
        for w in settings.work_centres:
            self._add_device(w.name, w.extension, None)
        self._registered: set[str] = set()
        self._seated: dict[str, str] = {}  # device -> the agent logged on at it
        self._queues: dict[str, QueueRuntime] = {}
        self._member_of: dict[str, list[str]] = {a.name: [] for a in settings.agents}
        for q in settings.queues:
            members = list(dict.fromkeys(q.members))
            members += [a.name for a in settings.agents
                        if q.name in a.queues and a.name not in members]
            self._queues[q.name] = QueueRuntime(q, tuple(members))
            for user in members:
                self._member_of[user].append(q.name)
        self._menus = {m.name: m for m in settings.menus}
        self._routes: dict[str, Destination] = {}
        for q in settings.queues:
            for key in (q.name, q.number):
                if key:
                    self._routes[key] = Destination("queue", q.name)
        for m in settings.menus:
            for key in (m.name, m.number):
                if key:
                    self._routes[key] = Destination("menu", m.name)
        self._callers: dict[str, Caller] = {}
        self._calls: dict[str, _Call] = {}
        self._timers: Timers[_Key] = Timers()
        self._ready: set[str] = set()  # agents in READY: lets routing stop early
        self._seq = 0

    @classmethod
    def from_config(cls, config: Config) -> Acd:
        """An ACD for a loaded configuration."""
        return cls(build_settings(config))

    def _add_device(self, name: str, extension: str, owner: str | None) -> None:
        self._owner[name] = owner
        for key in (name, extension):
            if key:
                self._devices[key] = name

    # -- devices -----------------------------------------------------------

    def device_registered(self, device: str, now: float) -> list[Output]:
        """A user's or work centre's phone registered (its first contact)."""
        name = self._devices.get(device)
        if name is None or name in self._registered:
            return []
        self._registered.add(name)
        out: list[Output] = []
        seated = self._seated.get(name)
        if seated is not None:
            agent = self._agents[seated]
            # Back before the call ended: the pending log-off no longer applies.
            if agent.after_call is not None and agent.after_call[1] == _DEVICE_GONE:
                agent.after_call = None
        owner = self._owner[name]
        if seated is None and owner is not None and owner in self._auto_logon:
            agent = self._agents[owner]
            if agent.state is _OFF:
                self._log_on(agent, name, _READY, "", now, out, automatic=True)
        self._dispatch(now, out)
        return out

    def device_unregistered(self, device: str, now: float) -> list[Output]:
        """A phone's last contact went away; the agent seated there is logged off."""
        name = self._devices.get(device)
        if name is None or name not in self._registered:
            return []
        self._registered.discard(name)
        out: list[Output] = []
        seated = self._seated.get(name)
        if seated is not None:
            self._log_off(self._agents[seated], _DEVICE_GONE, now, out)
        self._dispatch(now, out)
        return out

    # -- agents ------------------------------------------------------------

    def logon(
        self,
        user: str,
        device: str | None,
        now: float,
        *,
        state: AgentState = AgentState.READY,
        reason: str = "",
    ) -> list[Output]:
        """Log an agent on at its own phone (device None) or a work centre (name or extension)."""
        agent = self._agent(user)
        name = user if device is None else self._devices.get(device)
        if name is None:
            raise AcdError(f"unknown device {device!r}")
        owner = self._owner[name]
        if owner is not None and owner != user:
            raise AcdError(f"device {name!r} is {owner!r}'s own phone")
        if agent.state is not _OFF:
            if agent.device == name:
                return []
            raise AcdError(f"agent {user!r} is logged on at {agent.device!r}; log off first")
        seated = self._seated.get(name)
        if seated is not None:
            raise AcdError(f"device {name!r} is in use by {seated!r}")
        out: list[Output] = []
        self._log_on(agent, name, state, reason, now, out, automatic=False)
        self._dispatch(now, out)
        return out

    def logoff(self, user: str, now: float) -> list[Output]:
        """Log an agent off (after its current call, if on one)."""
        agent = self._agent(user)
        out: list[Output] = []
        if agent.state is not _OFF:
            self._log_off(agent, "logoff", now, out)
            self._dispatch(now, out)
        return out

    def set_state(self, user: str, state: AgentState, reason: str, now: float) -> list[Output]:
        """An agent asks for ready, not_ready (with a reason code) or wrap_up."""
        agent = self._agent(user)
        if state not in (_READY, _NOT_READY, _WRAP_UP):
            raise AcdError(f"an agent cannot ask for {state.value}")
        if agent.state is _OFF:
            raise AcdError(f"agent {user!r} is not logged on")
        if state is _READY:
            reason = ""
        out: list[Output] = []
        current = agent.state
        if current is _ON_CALL:
            agent.after_call = (state, reason)
            return out
        if current is _RINGING:
            if state is not _NOT_READY:
                raise AcdError(f"agent {user!r} is ringing: answer, reject or go not_ready")
            assert agent.offer is not None
            caller = self._callers[agent.offer]
            self._drop_offer(
                caller, agent, CancelReason.AGENT_UNAVAILABLE, OfferOutcome.REJECTED, now, out
            )
            caller.tried.add(user)
        elif current is _WRAP_UP and state is _WRAP_UP:
            return out
        if state is _WRAP_UP:
            self._start_wrap_up(agent, self.settings.manual_wrap_up, reason, now, out)
        else:
            self._timers.cancel((_Timer.WRAP_UP, user))
            if state is _READY:
                agent.misses = 0
            self._move(agent, state, reason, now, out)
        self._dispatch(now, out)
        return out

    # -- callers -----------------------------------------------------------

    def caller_arrived(
        self, call_id: str, target: str, now: float, *, priority: int | None = None
    ) -> list[Output]:
        """A caller dialled a queue or menu (name or number); higher `priority` is served first."""
        if call_id in self._callers or call_id in self._calls:
            raise AcdError(f"call {call_id!r} is already with the ACD")
        destination = self.route(target)
        if destination is None:
            raise AcdError(f"{target!r} is no queue or menu")
        self._seq += 1
        caller = Caller(call_id, now, self._seq, priority or 0, priority is not None)
        self._callers[call_id] = caller
        out: list[Output] = []
        if destination.kind == "menu":
            self._enter_menu(caller, self._menus[destination.name], now, out)
        else:
            self._join(caller, self._queues[destination.name], now, out)
        self._dispatch(now, out)
        return out

    def caller_digit(self, call_id: str, digit: str, now: float) -> list[Output]:
        """An RFC 4733 digit from the caller; it matters only in an entry menu."""
        caller = self._callers.get(call_id)
        if caller is None or caller.state is not CallerState.IN_MENU:
            return []
        assert caller.menu is not None
        menu = self._menus[caller.menu]
        out: list[Output] = []
        choice = menu.choices.get(digit)
        if choice is None:
            self._menu_retry(caller, menu, now, out)
        else:
            self._timers.cancel((_Timer.MENU, call_id))
            out.append(MenuLeft(time=now, call_id=call_id, menu=menu.name,
                                exit=MenuExit.CHOICE, digit=digit))
            self._join(caller, self._queue_named(choice), now, out)
        self._dispatch(now, out)
        return out

    def caller_abandoned(self, call_id: str, now: float) -> list[Output]:
        """The caller hung up (CANCEL or BYE) while in a menu, waiting or being offered."""
        if call_id in self._calls:
            return self.call_ended(call_id, now)
        caller = self._callers.pop(call_id, None)
        if caller is None:
            return []
        out: list[Output] = []
        if caller.state is CallerState.IN_MENU:
            assert caller.menu is not None
            self._timers.cancel((_Timer.MENU, call_id))
            out.append(MenuLeft(time=now, call_id=call_id, menu=caller.menu,
                                exit=MenuExit.ABANDONED))
        else:
            self._unqueue(caller, LeaveReason.ABANDONED, now, out)
            self._withdraw_all(caller, CancelReason.ABANDONED, now, out)
        self._dispatch(now, out)
        return out

    # -- reports from the B2BUA ----------------------------------------------

    def offer_answered(self, call_id: str, agent: str, now: float) -> list[Output]:
        """The agent's device answered; the first answer wins and gets `ConnectAgent`."""
        who = self._agents.get(agent)
        if who is None:
            return []
        caller = self._callers.get(call_id)
        if caller is None or agent not in caller.offers:
            call = self._calls.get(call_id)
            if call is not None and call.agent == agent:
                return []  # the same answer reported twice
            # Too late (answered elsewhere, timed out, caller gone): drop that leg.
            return [CancelOffer(call_id=call_id, agent=agent, device=who.device or "",
                                reason=CancelReason.WITHDRAWN)]
        assert caller.queue is not None and who.device is not None
        queue = caller.queue
        out: list[Output] = []
        caller.offers.discard(agent)
        who.offer = None
        self._unqueue(caller, LeaveReason.ANSWERED, now, out, agent=agent)
        out.append(OfferEnded(time=now, call_id=call_id, agent=agent,
                              outcome=OfferOutcome.ANSWERED))
        who.misses = 0
        who.calls_taken[queue] = who.calls_taken.get(queue, 0) + 1
        who.total_calls += 1
        self._start_call(who, call_id, queue, now, out)
        out.append(ConnectAgent(call_id=call_id, agent=agent, device=who.device))
        self._withdraw_all(caller, CancelReason.ANSWERED_ELSEWHERE, now, out)
        del self._callers[call_id]
        self._dispatch(now, out)
        return out

    def offer_failed(
        self, call_id: str, agent: str, reason: OfferFailure, now: float
    ) -> list[Output]:
        """The agent's device did not answer: busy, no answer, rejected or error."""
        caller = self._callers.get(call_id)
        who = self._agents.get(agent)
        if caller is None or who is None or agent not in caller.offers:
            return []  # already withdrawn or answered: nothing to undo
        out: list[Output] = []
        self._miss(caller, who, OfferOutcome(reason.value), None, now, out)
        self._dispatch(now, out)
        return out

    def call_ended(self, call_id: str, now: float) -> list[Output]:
        """An answered or direct call ended (BYE from either side)."""
        if call_id in self._callers:
            return self.caller_abandoned(call_id, now)
        call = self._calls.pop(call_id, None)
        if call is None:
            return []
        out: list[Output] = []
        self._end_call(call, now, out)
        self._dispatch(now, out)
        return out

    def direct_call_started(self, call_id: str, user: str, now: float) -> list[Output]:
        """An agent is on a call that is not from a queue (dialled, or to its extension)."""
        agent = self._agents.get(user)
        if agent is None or agent.state is _OFF or call_id in self._calls:
            return []
        if call_id in self._callers:
            raise AcdError(f"call {call_id!r} is queued, not direct")
        out: list[Output] = []
        if agent.state is _RINGING:
            assert agent.offer is not None
            caller = self._callers[agent.offer]
            self._drop_offer(
                caller, agent, CancelReason.AGENT_UNAVAILABLE, OfferOutcome.CANCELLED, now, out
            )
            agent.resume = (_READY, "")
        elif agent.state is _NOT_READY:
            agent.resume = (_NOT_READY, agent.reason)
        elif agent.state is not _ON_CALL:
            agent.resume = (_READY, "")
        self._timers.cancel((_Timer.WRAP_UP, user))
        self._start_call(agent, call_id, None, now, out)
        self._dispatch(now, out)
        return out

    # -- timers --------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When `handle_timer` must be called next, or None."""
        return self._timers.next_deadline()

    def handle_timer(self, now: float) -> list[Output]:
        """Fire every timer due at `now`."""
        out: list[Output] = []
        while (key := self._timers.pop_due(now)) is not None:
            kind, name = key
            if kind is _Timer.OFFER:
                caller = self._callers[name]
                for user in sorted(caller.offers):
                    self._miss(caller, self._agents[user], OfferOutcome.NO_ANSWER,
                               CancelReason.NO_ANSWER, now, out)
            elif kind is _Timer.MAX_WAIT:
                self._overflow(self._callers[name], LeaveReason.TIMEOUT, now, out)
            elif kind is _Timer.MENU:
                caller = self._callers[name]
                assert caller.menu is not None
                self._menu_retry(caller, self._menus[caller.menu], now, out)
            elif kind is _Timer.ANNOUNCE:
                self._announce_position(self._callers[name], now, out)
            elif kind is _Timer.CALL:
                call = self._calls.pop(name)
                out.append(EndCall(call_id=name, agent=call.agent, reason="reclaimed"))
                self._end_call(call, now, out)
            else:
                self._move(self._agents[name], _READY, "", now, out)
            self._dispatch(now, out)
        return out

    # -- queries -----------------------------------------------------------

    def route(self, target: str) -> Destination | None:
        """The queue or menu a dialled number or name reaches, if any."""
        return self._routes.get(target)

    def is_registered(self, device: str) -> bool:
        """Whether a device (name or extension) has a registered phone."""
        return self._devices.get(device) in self._registered

    def agent(self, user: str) -> AgentView | None:
        """A snapshot of one agent."""
        agent = self._agents.get(user)
        return None if agent is None else self._agent_view(agent)

    def is_agent(self, user: str) -> bool:
        """True when `user` is an agent (without building the snapshot `agent` returns)."""
        return user in self._agents

    def agents(self) -> list[AgentView]:
        """Snapshots of all agents, in configuration order."""
        return [self._agent_view(a) for a in self._agents.values()]

    def caller(self, call_id: str) -> CallerView | None:
        """A snapshot of a caller in a menu or queue (None once answered or gone)."""
        caller = self._callers.get(call_id)
        return None if caller is None else self._caller_view(caller)

    def queue(self, name: str) -> QueueView | None:
        """A snapshot of a queue, by name or number."""
        destination = self.route(name)
        if destination is None or destination.kind != "queue":
            return None
        queue = self._queues[destination.name]
        return QueueView(
            name=queue.name,
            number=queue.settings.number,
            strategy=queue.settings.strategy,
            callers=tuple(self._caller_view(c) for c in queue.callers),
            agents=tuple((m, self._agents[m].state) for m in queue.members),
        )

    def queues(self) -> list[QueueView]:
        """Snapshots of all queues, in configuration order."""
        return [v for name in self._queues if (v := self.queue(name)) is not None]

    def _agent_view(self, agent: Agent) -> AgentView:
        deadline: float | None = None
        if agent.state is _RINGING and agent.offer is not None:
            deadline = self._timers.deadline((_Timer.OFFER, agent.offer))
        elif agent.state is _WRAP_UP:
            deadline = self._timers.deadline((_Timer.WRAP_UP, agent.user))
        elif agent.state is _ON_CALL:
            times = [self._timers.deadline((_Timer.CALL, c)) for c in agent.calls]
            deadline = min((t for t in times if t is not None), default=None)
        return AgentView(
            user=agent.user,
            state=agent.state,
            reason=agent.reason,
            presence=PRESENCE[agent.state],
            since=agent.since,
            device=agent.device,
            idle_since=agent.idle_since,
            misses=agent.misses,
            offer=agent.offer,
            calls=tuple(agent.calls),
            calls_taken=agent.total_calls,
            deadline=deadline,
        )

    def _caller_view(self, caller: Caller) -> CallerView:
        times = [self._timers.deadline((kind, caller.call_id))
                 for kind in (_Timer.OFFER, _Timer.MAX_WAIT, _Timer.MENU)]
        queue = self._queues[caller.queue] if caller.queue is not None else None
        return CallerView(
            call_id=caller.call_id,
            state=caller.state,
            queue=caller.queue,
            menu=caller.menu,
            position=queue.position(caller) if queue is not None else 0,
            priority=caller.priority,
            arrived_at=caller.arrived_at,
            joined_at=caller.joined_at,
            offered_to=tuple(sorted(caller.offers)),
            deadline=min((t for t in times if t is not None), default=None),
        )

    # -- agent internals -------------------------------------------------------

    def _agent(self, user: str) -> Agent:
        agent = self._agents.get(user)
        if agent is None:
            raise AcdError(f"unknown agent {user!r}")
        return agent

    def _move(
        self, agent: Agent, state: AgentState, reason: str, now: float, out: list[Output]
    ) -> None:
        out.extend(transition(agent, state, reason, now))
        if state is _READY:
            self._ready.add(agent.user)
        else:
            self._ready.discard(agent.user)

    def _log_on(
        self,
        agent: Agent,
        device: str,
        state: AgentState,
        reason: str,
        now: float,
        out: list[Output],
        *,
        automatic: bool,
    ) -> None:
        out.extend(log_on(agent, device, state, reason, now, automatic=automatic))
        self._seated[device] = agent.user
        if state is _READY:
            self._ready.add(agent.user)

    def _log_off(self, agent: Agent, reason: str, now: float, out: list[Output]) -> None:
        if agent.calls:
            agent.after_call = (_OFF, reason)
            return
        if agent.state is _RINGING:
            assert agent.offer is not None
            self._drop_offer(self._callers[agent.offer], agent, CancelReason.AGENT_UNAVAILABLE,
                             OfferOutcome.CANCELLED, now, out)
        self._timers.cancel((_Timer.WRAP_UP, agent.user))
        if agent.device is not None:
            self._seated.pop(agent.device, None)
        out.extend(log_off(agent, reason, now))
        self._ready.discard(agent.user)
        for name in self._member_of[agent.user]:
            queue = self._queues[name]
            if queue.settings.when_empty is EmptyRule.OVERFLOW and not self._staffed(queue):
                for caller in list(queue.callers):
                    self._overflow(caller, LeaveReason.OVERFLOW, now, out)

    def _start_wrap_up(
        self, agent: Agent, duration: float, reason: str, now: float, out: list[Output]
    ) -> None:
        self._move(agent, _WRAP_UP, reason, now, out)
        self._timers.set((_Timer.WRAP_UP, agent.user), now + duration)

    def _start_call(
        self, agent: Agent, call_id: str, queue: str | None, now: float, out: list[Output]
    ) -> None:
        agent.calls[call_id] = queue
        if queue is not None:
            agent.wrap_queue = queue
        self._calls[call_id] = _Call(call_id, agent.user, queue)
        self._timers.set((_Timer.CALL, call_id), now + self.settings.max_call_duration)
        self._move(agent, _ON_CALL, "", now, out)

    def _end_call(self, call: _Call, now: float, out: list[Output]) -> None:
        self._timers.cancel((_Timer.CALL, call.call_id))
        agent = self._agents[call.agent]
        agent.calls.pop(call.call_id, None)
        if agent.calls or agent.state is not _ON_CALL:
            return
        wrap_queue, agent.wrap_queue = agent.wrap_queue, None
        wanted, agent.after_call = agent.after_call, None
        wrap = self._queues[wrap_queue].settings.wrap_up if wrap_queue is not None else 0.0
        if wanted is None:
            if wrap_queue is None:
                state, reason = agent.resume
            elif wrap > 0:
                self._start_wrap_up(agent, wrap, "", now, out)
                return
            else:
                state, reason = _READY, ""
        else:
            state, reason = wanted
        if state is _OFF:
            self._log_off(agent, reason, now, out)
        elif state is _WRAP_UP:
            self._start_wrap_up(agent, wrap or self.settings.manual_wrap_up, reason, now, out)
        else:
            self._move(agent, state, reason, now, out)

    def _miss(
        self,
        caller: Caller,
        agent: Agent,
        outcome: OfferOutcome,
        cancel: CancelReason | None,
        now: float,
        out: list[Output],
    ) -> None:
        assert caller.queue is not None
        limit = self._queues[caller.queue].settings.max_no_answer
        self._drop_offer(caller, agent, cancel, outcome, now, out)
        caller.tried.add(agent.user)
        agent.misses += 1
        agent.idle_since = now  # a silent phone goes to the back of the longest-idle line
        if limit and agent.misses >= limit:
            agent.misses = 0
            self._move(agent, _NOT_READY, self.settings.no_answer_reason, now, out)
        else:
            self._move(agent, _READY, "", now, out)

    # -- caller internals ----------------------------------------------------

    def _queue_named(self, target: str) -> QueueRuntime:
        destination = self._routes[target]
        return self._queues[destination.name]

    def _staffed(self, queue: QueueRuntime) -> bool:
        return any(self._agents[m].state is not _OFF for m in queue.members)

    def _join(self, caller: Caller, queue: QueueRuntime, now: float, out: list[Output]) -> None:
        settings = queue.settings
        caller.state = CallerState.WAITING
        caller.queue = queue.name
        caller.menu = None
        caller.joined_at = now
        caller.tried.clear()
        caller.visited.add(queue.name)
        if not caller.explicit_priority:
            caller.priority = settings.priority
        position = queue.add(caller)
        out.append(CallerJoinedQueue(time=now, call_id=caller.call_id, queue=queue.name,
                                     position=position, priority=caller.priority))
        if settings.max_wait > 0:
            self._timers.set((_Timer.MAX_WAIT, caller.call_id), now + settings.max_wait)
        if settings.announce_position > 0:
            self._timers.set((_Timer.ANNOUNCE, caller.call_id),
                             now + settings.announce_position_first)
        if settings.when_empty is EmptyRule.OVERFLOW and not self._staffed(queue):
            self._overflow(caller, LeaveReason.OVERFLOW, now, out)

    def _unqueue(
        self,
        caller: Caller,
        reason: LeaveReason,
        now: float,
        out: list[Output],
        *,
        agent: str = "",
        target: str = "",
    ) -> None:
        assert caller.queue is not None
        self._queues[caller.queue].remove(caller)
        self._timers.cancel((_Timer.MAX_WAIT, caller.call_id))
        self._timers.cancel((_Timer.OFFER, caller.call_id))
        self._timers.cancel((_Timer.ANNOUNCE, caller.call_id))
        out.append(CallerLeftQueue(time=now, call_id=caller.call_id, queue=caller.queue,
                                   reason=reason, waited=now - caller.joined_at,
                                   agent=agent, target=target))

    def _overflow(self, caller: Caller, reason: LeaveReason, now: float, out: list[Output]) -> None:
        assert caller.queue is not None
        settings = self._queues[caller.queue].settings
        target = settings.overflow
        destination = self.route(target) if target else None
        self._unqueue(caller, reason, now, out, target=target)
        self._withdraw_all(caller, CancelReason.CALLER_MOVED, now, out)
        caller.queue = None
        if destination is not None and destination.name not in caller.visited:
            if destination.kind == "queue":
                self._join(caller, self._queues[destination.name], now, out)
            else:
                self._enter_menu(caller, self._menus[destination.name], now, out)
            return
        del self._callers[caller.call_id]
        if target and destination is None:
            out.append(SendToOverflow(call_id=caller.call_id, target=target))
        else:
            out.append(HangUpCaller(call_id=caller.call_id, reason=HangUpReason.OVERFLOW,
                                    announcement=settings.overflow_announcement))

    def _announce_position(self, caller: Caller, now: float, out: list[Output]) -> None:
        """Tell a waiting caller its place (not while an agent is ringing for it), re-arm."""
        assert caller.queue is not None
        queue = self._queues[caller.queue]
        if caller.state is CallerState.WAITING:
            out.append(AnnouncePosition(call_id=caller.call_id, queue=queue.name,
                                        position=queue.position(caller),
                                        waiting=len(queue.callers)))
        self._timers.set((_Timer.ANNOUNCE, caller.call_id),
                         now + queue.settings.announce_position)

    def _enter_menu(
        self, caller: Caller, menu: MenuSettings, now: float, out: list[Output]
    ) -> None:
        caller.state = CallerState.IN_MENU
        caller.menu = menu.name
        caller.queue = None
        caller.attempts = 0
        caller.visited.add(menu.name)
        out.append(MenuEntered(time=now, call_id=caller.call_id, menu=menu.name))
        if menu.announcement:
            out.append(PlayToCaller(call_id=caller.call_id, announcement=menu.announcement))
        self._timers.set((_Timer.MENU, caller.call_id), now + menu.timeout)

    def _menu_retry(
        self, caller: Caller, menu: MenuSettings, now: float, out: list[Output]
    ) -> None:
        caller.attempts += 1
        if caller.attempts <= menu.retries:
            if menu.announcement:
                out.append(PlayToCaller(call_id=caller.call_id, announcement=menu.announcement))
            self._timers.set((_Timer.MENU, caller.call_id), now + menu.timeout)
            return
        self._timers.cancel((_Timer.MENU, caller.call_id))
        if menu.default:
            out.append(MenuLeft(time=now, call_id=caller.call_id, menu=menu.name,
                                exit=MenuExit.DEFAULT))
            self._join(caller, self._queue_named(menu.default), now, out)
            return
        out.append(MenuLeft(time=now, call_id=caller.call_id, menu=menu.name,
                            exit=MenuExit.FAILED))
        del self._callers[caller.call_id]
        out.append(HangUpCaller(call_id=caller.call_id, reason=HangUpReason.NO_CHOICE,
                                announcement=menu.goodbye))

    # -- offers ----------------------------------------------------------------

    def _drop_offer(
        self,
        caller: Caller,
        agent: Agent,
        cancel: CancelReason | None,
        outcome: OfferOutcome,
        now: float,
        out: list[Output],
    ) -> None:
        """Take one agent's offer off a caller; the agent's new state is the caller's business."""
        caller.offers.discard(agent.user)
        agent.offer = None
        if cancel is not None:
            out.append(CancelOffer(call_id=caller.call_id, agent=agent.user,
                                   device=agent.device or "", reason=cancel))
        out.append(OfferEnded(time=now, call_id=caller.call_id, agent=agent.user,
                              outcome=outcome))
        if not caller.offers:
            self._timers.cancel((_Timer.OFFER, caller.call_id))
            if caller.state is CallerState.OFFERING:
                caller.state = CallerState.WAITING

    def _withdraw_all(
        self, caller: Caller, cancel: CancelReason, now: float, out: list[Output]
    ) -> None:
        for user in sorted(caller.offers):
            agent = self._agents[user]
            self._drop_offer(caller, agent, cancel, OfferOutcome.CANCELLED, now, out)
            self._move(agent, _READY, "", now, out)

    def _dispatch(self, now: float, out: list[Output]) -> None:
        """Offer waiting callers, in service order, to the agents their queues pick."""
        if not self._ready:
            return
        blocked: set[str] = set()  # queues with no eligible agent left in this pass
        waiting = list(heapq.merge(*(q.callers for q in self._queues.values()), key=Caller.order))
        for caller in waiting:
            if caller.state is not CallerState.WAITING or caller.queue in blocked:
                continue
            assert caller.queue is not None
            queue = self._queues[caller.queue]
            if queue.settings.strategy is Strategy.LONGEST_IDLE:
                picked = self._longest_idle(queue, caller.tried)
                chosen = None if picked is None else [picked]
            else:
                chosen = self._choose(queue, caller.tried)
            if chosen is None:
                blocked.add(queue.name)
                continue
            self._offer(caller, queue, chosen, now, out)
            if not self._ready:
                return

    def _choose(self, queue: QueueRuntime, tried: set[str]) -> list[Candidate] | None:
        """The queue strategy's pick among the members not yet tried by this caller, else
        (a new round: `tried` is cleared) among all; None when no member is eligible."""
        candidates = self._candidates(queue)
        if not candidates:
            return None
        fresh = [c for c in candidates if c.user not in tried]
        if not fresh:
            tried.clear()  # everyone free has missed this caller: start a new round
            fresh = candidates
        return choose(queue.settings.strategy, fresh, queue.last_offered)

    def _longest_idle(self, queue: QueueRuntime, tried: set[str]) -> Candidate | None:
        """What `choose(LONGEST_IDLE, ...)` would pick, in one pass over the members.

        The default strategy, run at every offer: building every ready member's
        Candidate only to keep one cost more than the rest of an offer. The pick is
        the least (penalty, idle_since, member order) among the members not yet
        tried by this caller, else (a new round: `tried` is cleared) among all.
        """
        penalties = queue.settings.penalties
        best: tuple[int, float, int] | None = None  # among the fresh
        best_any: tuple[int, float, int] | None = None  # among all eligible
        for index, user, agent in self._eligible(queue):
            key = (penalties.get(user, 0), agent.idle_since, index)
            if best_any is None or key < best_any:
                best_any = key
            if user not in tried and (best is None or key < best):
                best = key
        if best_any is None:
            return None
        if best is None:
            tried.clear()  # everyone free has missed this caller: start a new round
            best = best_any
        penalty, idle_since, index = best
        user = queue.members[index]
        return Candidate(user, index, penalty, idle_since,
                         self._agents[user].calls_taken.get(queue.name, 0))

    def _candidates(self, queue: QueueRuntime) -> list[Candidate]:
        penalties = queue.settings.penalties
        name = queue.name
        return [Candidate(user, index, penalties.get(user, 0), agent.idle_since,
                          agent.calls_taken.get(name, 0))
                for index, user, agent in self._eligible(queue)]

    def _eligible(self, queue: QueueRuntime) -> Iterator[tuple[int, str, Agent]]:
        """(member order, user, agent) of each ready member whose device is registered.

        Runs over every member at each offer: names bound once."""
        ready, agents, registered = self._ready, self._agents, self._registered
        for index, user in enumerate(queue.members):
            if user in ready:
                agent = agents[user]
                if agent.device in registered:
                    yield index, user, agent

    def _offer(
        self, caller: Caller, queue: QueueRuntime, chosen: list[Candidate], now: float,
        out: list[Output],
    ) -> None:
        settings = queue.settings
        caller.state = CallerState.OFFERING
        queue.last_offered = chosen[0].order
        self._timers.set((_Timer.OFFER, caller.call_id), now + settings.ring_timeout)
        for candidate in chosen:
            agent = self._agents[candidate.user]
            assert agent.device is not None
            caller.offers.add(agent.user)
            agent.offer = caller.call_id
            self._move(agent, _RINGING, "", now, out)
            out.append(CallOffered(time=now, call_id=caller.call_id, queue=queue.name,
                                   agent=agent.user, device=agent.device))
            out.append(OfferCall(call_id=caller.call_id, agent=agent.user, device=agent.device,
                                 queue=queue.name, timeout=settings.ring_timeout))
