"""RFC 3581 stamping of the top Via and the choice of where responses go (RFC 3261 §18.2.2)."""

from __future__ import annotations

import pytest

from cms.net.endpoint import SipEndpoint
from cms.net.peer import UdpPeer
from cms.sip.message import Headers, Request


def stamp(via: str, addr: tuple[str, int]) -> tuple[str, tuple[str, int]]:
    endpoint = SipEndpoint.__new__(SipEndpoint)
    endpoint.udp = object()  # type: ignore[assignment]
    request = Request("OPTIONS", "sip:cms", Headers.of([("Via", via)]))
    peer = endpoint._stamp_via(request, addr, None)
    assert isinstance(peer, UdpPeer)
    return request.headers["via"][0], peer.addr


@pytest.mark.parametrize("via, addr, stamped, reply_to", [
    ("SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bK1;rport", ("127.0.0.1", 40000),
     "SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bK1;rport=40000;received=127.0.0.1",
     ("127.0.0.1", 40000)),
    ("SIP/2.0/UDP 10.0.0.1:6001;branch=z9hG4bK1", ("192.0.2.7", 7000),
     "SIP/2.0/UDP 10.0.0.1:6001;branch=z9hG4bK1;received=192.0.2.7", ("192.0.2.7", 6001)),
    ("SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1", ("192.0.2.7", 7000),
     "SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1", ("192.0.2.7", 5060)),
    ("SIP/2.0/UDP pc.example.com;rport;branch=z9hG4bK1;received=1.2.3.4", ("192.0.2.7", 7000),
     "SIP/2.0/UDP pc.example.com;branch=z9hG4bK1;rport=7000;received=192.0.2.7",
     ("192.0.2.7", 7000)),
    ("SIP/2.0/UDP  pc.example.com : 5070 ; rport ; branch=z9hG4bK1", ("192.0.2.7", 7000),
     "SIP/2.0/UDP pc.example.com:5070;rport=7000;branch=z9hG4bK1;received=192.0.2.7",
     ("192.0.2.7", 7000)),
    ("SIP/2.0/UDP a.example.com;branch=z9hG4bK1;rport, SIP/2.0/UDP b.example.com;branch=x",
     ("192.0.2.7", 7000),
     "SIP/2.0/UDP a.example.com;branch=z9hG4bK1;rport=7000;received=192.0.2.7, "
     "SIP/2.0/UDP b.example.com;branch=x", ("192.0.2.7", 7000)),
])
def test_top_via_is_stamped_and_responses_follow_rport(
    via: str, addr: tuple[str, int], stamped: str, reply_to: tuple[str, int]
) -> None:
    assert stamp(via, addr) == (stamped, reply_to)
