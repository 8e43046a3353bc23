"""RTP port allocation: even ports from a configured range, handed out round-robin."""

from __future__ import annotations

import errno
import socket

DEFAULT_RANGE = (20000, 29999)
DSCP_EF = 46 << 2  # Expedited Forwarding (RFC 3246), as the IP TOS byte.


class PortsExhausted(RuntimeError):
    """Every even port in the range is in use."""


class PortAllocator:
    """Binds UDP sockets on even ports of [first, last]; the odd port above stays unused.

    RTCP is not served, but keeping each odd port free means a phone's RTCP (sent to
    RTP port + 1) never lands on another call's RTP socket. Ports are handed out
    round-robin, so a released port is reused as late as possible and stray packets of an
    ended call rarely reach a new one. `first == 0` binds any free port (for tests).
    """

    def __init__(self, host: str = "0.0.0.0", first: int = DEFAULT_RANGE[0],
                 last: int = DEFAULT_RANGE[1], *, shared: bool = False) -> None:
        if first != 0 and not 1024 <= first <= last <= 65535:
            raise ValueError(f"bad RTP port range {first}-{last}")
        self.host = host
        self.shared = shared  # Sockets bound with SO_REUSEPORT (see bind_udp).
        self.first = first + (first & 1)
        self.last = last
        self._next = self.first
        self._in_use: set[int] = set()

    @property
    def capacity(self) -> int:
        """How many ports the range holds."""
        return 0 if self.first == 0 else (self.last - self.first) // 2 + 1

    @property
    def in_use(self) -> int:
        """How many ports are allocated now."""
        return len(self._in_use)

    def open(self) -> socket.socket:
        """A non-blocking UDP socket bound on a free even port; raises PortsExhausted."""
        if self.first == 0:
            sock = bind_udp(self.host, 0, shared=self.shared)
            assert sock is not None
            self._in_use.add(sock.getsockname()[1])
            return sock
        for _ in range(self.capacity):
            port = self._next
            self._next = port + 2 if port + 2 <= self.last else self.first
            if port in self._in_use:
                continue
            sock = bind_udp(self.host, port, shared=self.shared)
            if sock is not None:
                self._in_use.add(port)
                return sock
        raise PortsExhausted(f"no free even UDP port in {self.first}-{self.last} on {self.host}")

    def release(self, port: int) -> None:
        """Give a port back (after its socket is closed)."""
        self._in_use.discard(port)


def bind_udp(host: str, port: int, *, shared: bool = False) -> socket.socket | None:
    """A non-blocking UDP socket bound on host:port, marked EF; None if the port is taken.

    `shared`: with SO_REUSEPORT, so that a second socket of ours (see `bind_companion`) can
    share the port. The port is first bound without it, so a port in use by anyone (also
    by another of our processes) counts as taken, as without `shared`.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if shared:
        probe = bind_udp(host, port)
        if probe is None:
            return None
        port = probe.getsockname()[1]
        probe.close()
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            return None  # Taken by another process: try the next port.
        raise
    _prepare(sock, family)
    return sock


def bind_companion(sock: socket.socket, peer: tuple[str, int]) -> socket.socket:
    """A second socket on `sock`'s (shared) port, connect()ed to `peer`.

    The kernel hands a datagram to the connected socket that matches its source exactly,
    so the peer's packets arrive there (read without a source address) and everything else
    still at `sock`; and sending on it needs neither an address nor a route lookup.
    """
    companion = socket.socket(sock.family, socket.SOCK_DGRAM)
    try:
        companion.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        companion.bind(sock.getsockname()[:2])
        companion.connect(peer)
    except OSError:
        companion.close()
        raise
    _prepare(companion, sock.family)
    return companion


def _prepare(sock: socket.socket, family: int) -> None:
    sock.setblocking(False)
    try:
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, DSCP_EF)
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, DSCP_EF)
    except OSError:
        pass  # Marking is a courtesy to the network; not every platform allows it.
