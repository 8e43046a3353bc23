"""Text to the phones: SIP MESSAGE (RFC 3428, text/plain) to a device's registered contacts.

Broadcasts and alerts from the CTI reach each agent's phone this way. A
device may have several contacts (a desk phone and a soft phone); every one
gets the MESSAGE and the device counts as reached when any contact answers
2xx. Outcomes: "accepted" (2xx), "rejected" (a final error, with its status),
"timeout" (no final answer; Timer F) and "no_device" (nothing registered).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cms.net.endpoint import SipEndpoint
from cms.net.peer import Peer
from cms.registrar.bindings import Binding
from cms.registrar.service import Registrar
from cms.sip.message import Headers, Request
from cms.sip.responses import new_tag
from cms.sip.transaction import ResponseReceived, TimedOut, new_branch

__all__ = ["Delivered", "Messenger", "SipMessenger"]

MAX_CONTACTS = 10  # contacts of one device messaged at once


@dataclass(frozen=True, slots=True)
class Delivered:
    """What became of a message to one device."""

    status: str  # "accepted", "rejected", "timeout" or "no_device"
    sip_status: int | None = None


class Messenger(Protocol):
    """Sends a text to a device's phones."""

    async def send(self, device: str, text: str, sender: str) -> Delivered:
        """Deliver `text` from `sender` (shown as the From user) to `device`'s phones."""
        ...


class SipMessenger:
    """`Messenger` over the CMS's SIP endpoint and registrar."""

    def __init__(self, endpoint: SipEndpoint, registrar: Registrar,
                 peer_of: Callable[[Binding], Peer | None]) -> None:
        self.endpoint = endpoint
        self.registrar = registrar
        self.peer_of = peer_of

    async def send(self, device: str, text: str, sender: str) -> Delivered:
        targets = [(binding, peer) for binding in self.registrar.lookup(device)[:MAX_CONTACTS]
                   if (peer := self.peer_of(binding)) is not None]
        if not targets:
            return Delivered("no_device")
        results = await asyncio.gather(*(self._send_one(device, binding, peer, text, sender)
                                         for binding, peer in targets))
        accepted = [r for r in results if r.status == "accepted"]
        if accepted:
            return accepted[0]
        rejected = [r for r in results if r.status == "rejected"]
        return rejected[0] if rejected else results[0]

    def _send_one(self, device: str, binding: Binding, peer: Peer, text: str,
                  sender: str) -> asyncio.Future[Delivered]:
        realm = self.registrar.realm
        headers = Headers()
        headers["via"] = [f"SIP/2.0/{peer.transport} {self.endpoint.sent_by(peer)}"
                          f";branch={new_branch()};rport"]
        headers["max-forwards"] = ["70"]
        headers["from"] = [f"<sip:{_user_part(sender)}@{realm}>;tag={new_tag()}"]
        headers["to"] = [f"<sip:{device}@{realm}>"]
        headers["call-id"] = [f"{secrets.token_hex(10)}@cms"]
        headers["cseq"] = ["1 MESSAGE"]
        headers["content-type"] = ["text/plain;charset=UTF-8"]
        request = Request("MESSAGE", binding.contact, headers, text.encode())
        done: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()

        def on_event(event: ResponseReceived | TimedOut) -> None:
            if done.done():
                return
            if isinstance(event, TimedOut):
                done.set_result(Delivered("timeout"))
                return
            status = event.response.status
            if status >= 200:
                done.set_result(Delivered("accepted" if status < 300 else "rejected", status))

        self.endpoint.send_request(request, peer, on_event)
        return done


def _user_part(name: str) -> str:
    """A user name safe for a SIP URI's user part (names are [A-Za-z0-9._@+-])."""
    return "".join(c for c in name if c.isalnum() or c in "._+-") or "cms"
