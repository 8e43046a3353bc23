"""What the CTI may ask of calls, and what it sees of them.

The B2BUA (`cms.calls.manager.CallManager`) implements `CallControl`; the CTI
API (`cms.cti`) calls it and turns `CallCommandError` into its JSON error
shape. `user` is the CMS user acting (an agent acting on its own call), or
None for a supervisor or an API key, who may act on any call. Who may see
which call is the CTI's rule, from `CallView.users`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = ["CallCommandError", "CallControl", "CallView", "PartyView"]

TransferMode = Literal["blind", "consult"]
CompleteAs = Literal["transfer", "conference"]


class CallCommandError(Exception):
    """A call command that cannot be carried out: HTTP-like `status` (4xx), stable `code`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class PartyView:
    """One SIP leg of a call as the CTI shows it."""

    role: str  # "caller", "agent", "callee", "consult", ...
    number: str  # the party's number or extension as SIP shows it
    user: str  # the CMS user (agent or work centre) behind the leg, "" for outside parties
    state: str  # "calling", "ringing", "up", "held", "ended"

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "number": self.number, "user": self.user,
                "state": self.state}


@dataclass(frozen=True, slots=True)
class CallView:
    """A snapshot of one live call."""

    id: str
    kind: str  # "queue", "menu", "direct", "click_to_dial", "consult"
    direction: str  # "inbound", "outbound", "internal"
    state: str  # "routing", "queued", "ringing", "connected", "held", "ended"
    caller: str
    target: str
    queue: str
    agent: str
    created: float
    answered: float | None
    users: frozenset[str]  # CMS users taking part (for the CTI's visibility rule)
    parties: tuple[PartyView, ...] = ()
    attached_data: Mapping[str, Any] = field(default_factory=dict)
    related: str = ""  # the call a consult call belongs to, or the consult of this call

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "direction": self.direction,
            "state": self.state, "caller": self.caller, "target": self.target,
            "queue": self.queue, "agent": self.agent, "created": self.created,
            "answered": self.answered, "users": sorted(self.users),
            "parties": [party.to_json() for party in self.parties],
            "attached_data": dict(self.attached_data), "related": self.related,
        }


class CallControl(Protocol):
    """Commands on calls. Each raises `CallCommandError` when it cannot be done."""

    def list_calls(self) -> list[CallView]:
        """Every live call."""
        ...

    def get_call(self, call_id: str) -> CallView | None:
        """One live call, or None."""
        ...

    async def make_call(self, user: str, to: str,
                        attached_data: Mapping[str, Any] | None = None) -> CallView:
        """Click-to-dial: ring `user`'s device (auto-answer hints), then call `to`."""
        ...

    async def answer(self, call_id: str, user: str | None) -> CallView:
        """Answer a call ringing at `user`'s device (if the device can be answered remotely)."""
        ...

    async def reject(self, call_id: str, user: str | None) -> CallView:
        """Decline a call ringing at `user`'s device (the ACD treats it as a refusal)."""
        ...

    async def hangup(self, call_id: str, user: str | None) -> CallView:
        """End the call (or, in a conference, `user`'s part of it)."""
        ...

    async def hold(self, call_id: str, user: str | None) -> CallView:
        """Put the other party on hold (it hears hold audio)."""
        ...

    async def retrieve(self, call_id: str, user: str | None) -> CallView:
        """Take the held party back."""
        ...

    async def send_dtmf(self, call_id: str, user: str | None, digits: str) -> CallView:
        """Send RFC 4733 digits to the other party."""
        ...

    async def transfer(self, call_id: str, user: str | None, to: str,
                       mode: TransferMode) -> CallView:
        """Hand the other party to `to` (blind, or consult: ring `to` then complete)."""
        ...

    async def consult(self, call_id: str, user: str | None, to: str) -> CallView:
        """Hold the other party and call `to` from the same device; returns the consult call."""
        ...

    async def complete(self, call_id: str, user: str | None, consult_id: str,
                       as_: CompleteAs) -> CallView:
        """Join the held party with the consulted one (transfer) or all three (conference)."""
        ...

    def attached_data(self, call_id: str) -> dict[str, Any]:
        """The call's attached data."""
        ...

    def update_attached_data(self, call_id: str, user: str | None,
                             changes: Mapping[str, Any]) -> dict[str, Any]:
        """Merge `changes` (JSON merge patch: null deletes a key); returns the new data."""
        ...
