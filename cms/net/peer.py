"""Where a message came from and where its responses go (RFC 3261 §18.2.2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tcp import TcpConnection
    from .udp import Address, UdpTransport


class UdpPeer:
    """A UDP peer: responses go to `addr` through the shared socket."""

    __slots__ = ("udp", "addr")
    transport = "UDP"

    def __init__(self, udp: UdpTransport, addr: Address) -> None:
        self.udp = udp
        self.addr = addr

    def send(self, data: bytes) -> None:
        """Send a datagram to the peer."""
        self.udp.send(data, self.addr)

    def __repr__(self) -> str:
        return f"UDP {self.addr[0]}:{self.addr[1]}"


class TcpPeer:
    """A TCP peer: responses go back over the connection the request came on."""

    __slots__ = ("conn", "addr")
    transport = "TCP"

    def __init__(self, conn: TcpConnection) -> None:
        self.conn = conn
        self.addr = conn.peer

    def send(self, data: bytes) -> None:
        """Write to the connection (dropped if it has closed)."""
        self.conn.send(data)

    def __repr__(self) -> str:
        return f"TCP {self.addr[0]}:{self.addr[1]}"


Peer = UdpPeer | TcpPeer
