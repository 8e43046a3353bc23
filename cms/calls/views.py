"""What the CTI sees of a call (`CallView`), and the JSON merge patch for its attached data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .control import CallView, PartyView
from .model import Call, CallState, LegState, SipLeg

MAX_ATTACHED_BYTES = 16_384  # It rides base64 in a SIP header: keep INVITEs under UDP size.


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396: keys in `patch` replace those in `target`, null deletes, objects merge."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping):
            current = result.get(key)
            result[key] = merge_patch(current if isinstance(current, Mapping) else {}, value)
        else:
            result[key] = value
    return result


def party_state(leg: SipLeg) -> str:
    """A leg's state as the CTI shows it."""
    if leg.state is LegState.UP and (leg.held or leg.cms_held):
        return "held"
    return leg.state.value


def party_view(call: Call, leg: SipLeg) -> PartyView:
    """One leg of a call."""
    number = call.caller_number if leg is call.caller and not leg.user else leg.device
    return PartyView(role=leg.role, number=number or leg.user, user=leg.user,
                     state=party_state(leg))


def call_state(call: Call) -> str:
    """The call's state: its own, or "held" when a connected call's party is held."""
    if call.state is CallState.CONNECTED and any(
            leg.cms_held or leg.held for leg in call.legs() if leg.state is LegState.UP):
        return "held"
    return call.state.value


def call_view(call: Call) -> CallView:
    """A snapshot of a live call."""
    legs = [call.caller, *(leg for leg in call.legs() if leg is not call.caller)]
    users = {leg.user for leg in legs if leg.user}
    if call.agent:
        users.add(call.agent)
    return CallView(
        id=call.id, kind=call.kind, direction=call.direction, state=call_state(call),
        caller=call.caller_number, target=call.target, queue=call.queue, agent=call.agent,
        created=call.created, answered=call.answered_at, users=frozenset(users),
        parties=tuple(party_view(call, leg) for leg in legs if leg.state is not LegState.ENDED),
        attached_data=dict(call.attached_data), related=call.related,
    )


def call_info(call: Call) -> dict[str, Any]:
    """What `interaction.created` tells about a call."""
    return {"kind": call.kind, "direction": call.direction, "caller": call.caller_number,
            "target": call.target, "queue": call.queue, "agent": call.agent,
            "attached_data": dict(call.attached_data)}
