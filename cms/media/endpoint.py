"""One leg's RTP socket: reads until empty, admits only the negotiated peer, sends to it."""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
from collections.abc import Callable

from .ports import bind_companion, bind_udp
from .reactor import BUFFER_SIZE, EpollReactor, Packets, Reactor
from .rtp import HEADER_SIZE

log = logging.getLogger("cms.media.endpoint")

Address = tuple[str, int]
# Receives the shared buffer and the packet length; must finish with the buffer before it
# returns (the next read overwrites it).
PacketSink = Callable[[bytearray, int], None]

MAX_READS_PER_WAKEUP = 32  # Bounded so one flooded socket cannot starve the others.
_IGNORED_ERRORS = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)


def _drop(buf: bytearray, length: int) -> None:
    pass


def _receive_buffer(reactor: Reactor | None) -> tuple[bytearray, Packets]:
    # An epoll reactor's shared buffer (see EpollReactor.buffer), or one of our own.
    if isinstance(reactor, EpollReactor):
        return reactor.buffer, reactor.packets
    buffer = bytearray(BUFFER_SIZE)
    return buffer, Packets(buffer)


def _companion_budget() -> int:
    # Companions take at most a third of the file descriptors a process may open, so that
    # they never cost a new call its (first) socket: past that, legs do without one.
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft // 3


class _Companions:
    """How many companion sockets are open in this process, against the budget."""

    open = 0
    limit: int | None = None  # None: a third of RLIMIT_NOFILE, read when needed.

    @classmethod
    def available(cls) -> bool:
        """True if one more may be opened."""
        return cls.open < (_companion_budget() if cls.limit is None else cls.limit)


class PeerFilter:
    """Decides which source addresses may send RTP to this leg.

    Strict (default): only the address negotiated in SDP. Latching (for phones behind NAT):
    additionally the first packet whose source host is the SDP host or `nat_host` (the
    host SIP came from), on any port, moves the peer to that exact address; from then on
    the rule is strict again. Before a peer is known every packet is dropped.
    """

    def __init__(self) -> None:
        self.peer: Address | None = None
        self._latch_hosts: frozenset[str] = frozenset()

    @property
    def latching(self) -> bool:
        """True while waiting to latch onto the first packet from an allowed host."""
        return bool(self._latch_hosts)

    def expect(self, peer: Address | None, latch: bool = False,
               nat_host: str | None = None) -> None:
        """Accept packets from `peer` (and latch as described above when `latch`)."""
        self.peer = peer
        hosts = set()
        if latch and peer is not None:
            hosts.add(peer[0])
            if nat_host:
                hosts.add(nat_host)
        self._latch_hosts = frozenset(hosts)

    def admit(self, source: tuple[object, ...]) -> bool:
        """True if a packet from `source` is accepted (latching updates `peer`)."""
        address = (str(source[0]), int(source[1]))  # type: ignore[call-overload]
        if address == self.peer:
            return True
        if address[0] in self._latch_hosts:
            self.peer = address
            self._latch_hosts = frozenset()
            return True
        return False


class RtpEndpoint:
    """A bound UDP socket, read when readable until empty, each valid packet to `sink`.

    Readiness comes from the event loop (one reader per socket, up to 32 reads each call) or
    from a shared `EpollReactor` (one read per call; the reactor repeats until every socket
    is empty). With `kernel_filter`, a strict peer is enforced by connect()ing the socket:
    the kernel drops strangers' packets before we see them (cheaper per packet, but they are
    not counted in `dropped_strangers`). Otherwise each source address is compared here.

    With `companion` (and a reactor; the socket bound with SO_REUSEPORT, see
    `PortAllocator(shared=True)`), a strict peer also gets a second socket on the same port,
    connect()ed to it: the kernel delivers the peer's packets there, read without building
    a source address, and what is sent to the peer leaves through it without an address or
    a route lookup; strangers still arrive at the first socket and are counted.
    """

    # Slots, those read per packet first: a compact object, its hot fields in one cache line.
    __slots__ = ("_recv_into", "buffer", "received", "sink", "dropped_invalid",
                 "connected_send", "sent", "packets", "sock", "kernel_filter", "companions",
                 "_companion", "_companion_peer", "filter", "dropped_strangers", "send_errors",
                 "unsent", "_connected", "_on_close", "_loop", "_reactor", "_reads", "_fd",
                 "_recvfrom_into", "_send", "_sendto")

    def __init__(self, sock: socket.socket, *, kernel_filter: bool = False,
                 reactor: Reactor | None = None,
                 on_close: Callable[[int], None] | None = None,
                 companion: bool = False) -> None:
        self.sock = sock
        self.kernel_filter = kernel_filter
        self.companions = companion and reactor is not None and not kernel_filter
        self._companion: socket.socket | None = None
        self._companion_peer: Address | None = None
        # The peer-connected socket's send (companion or kernel filter), else None. `send`
        # uses it (os.write on its fd measured 2-4% slower per relayed packet); the io_uring
        # reactor's compiled relay sends on that socket's fd itself (see UringEndpoint).
        self.connected_send: Callable[[bytes | bytearray | memoryview], int] | None = None
        self.filter = PeerFilter()
        self.sink: PacketSink = _drop
        self.received = 0
        self.dropped_strangers = 0
        self.dropped_invalid = 0
        self.sent = 0
        self.send_errors = 0
        self.unsent = 0  # Packets to send while no peer was known.
        self._connected = False
        # With a reactor, one receive buffer for all its sockets (each packet is done with
        # before the next read): it stays in cache, where 2 KiB per leg would not.
        self.buffer, self.packets = _receive_buffer(reactor)
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._reactor: Reactor = reactor if reactor is not None else self._loop
        self._reads = getattr(reactor, "reads_per_call", MAX_READS_PER_WAKEUP)
        self._bind_socket(sock)
        self._reactor.add_reader(self._fd, self._reader())

    def _bind_socket(self, sock: socket.socket) -> None:
        # The socket's methods, looked up once: the per-packet paths call them directly.
        sock.setblocking(False)
        self.sock = sock
        self._fd = sock.fileno()
        self._recvfrom_into = sock.recvfrom_into
        self._recv_into = sock.recv_into  # Of the peer-connected socket: this or a companion.
        self._send = sock.send
        self._sendto = sock.sendto
        self.connected_send = None

    def _reader(self) -> Callable[[], None]:
        # A reactor reads one datagram per call (it calls again while data remains); the
        # event loop's readers read up to `_reads` each.
        if self._reads == 1:
            return self._read_one_connected if self._connected else self._read_one
        return self._read_connected if self._connected else self._read_filtered

    @property
    def local_address(self) -> Address:
        """The bound (host, port)."""
        host, port = self.sock.getsockname()[:2]
        return host, port

    @property
    def peer(self) -> Address | None:
        """Where packets go, and (unless latching) the only source accepted."""
        return self.filter.peer

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._fd < 0

    def set_peer(self, peer: Address | None, *, latch: bool = False,
                 nat_host: str | None = None) -> None:
        """Send to and accept from `peer` (from SDP); see PeerFilter for `latch`."""
        if self.sock.family == socket.AF_INET6 and peer is not None:
            peer = (peer[0], peer[1])
        self.filter.expect(peer, latch, nat_host)
        if self._connected and (peer is None or self.filter.latching):
            self._disconnect()
        self._maybe_connect()
        self._update_companion()

    def _update_companion(self) -> None:
        if not self.companions or self.closed:
            return
        peer = self.filter.peer
        wanted = (peer is not None and not self.filter.latching
                  and peer[0] not in ("0.0.0.0", "::"))
        if self._companion is not None:
            if wanted and peer == self._companion_peer:
                return
            self._drop_companion()
        if not wanted or peer is None or not _Companions.available():
            return
        try:
            companion = bind_companion(self.sock, peer)
        except OSError as exc:
            log.warning("RTP %s: no connected socket for %s (%s); the shared one serves",
                        self.local_address, peer, exc)
            return
        _Companions.open += 1
        self._companion = companion
        self._companion_peer = peer
        self._recv_into = companion.recv_into
        self.connected_send = companion.send
        self._watch_connected(companion.fileno())

    def _drop_companion(self) -> None:
        companion = self._companion
        if companion is None:
            return
        self._reactor.remove_reader(companion.fileno())
        companion.close()
        _Companions.open -= 1
        self._companion = self._companion_peer = None
        self._recv_into = self.sock.recv_into
        self.connected_send = None

    def _disconnect(self) -> None:
        # Python cannot connect() to AF_UNSPEC to dissolve the association, so rebind a
        # fresh socket on the same address instead.
        host, port = self.sock.getsockname()[:2]
        self._reactor.remove_reader(self._fd)
        self.sock.close()
        fresh = bind_udp(host, port)
        if fresh is None:
            raise OSError(errno.EADDRINUSE, f"RTP port {port} was taken while rebinding")
        self._bind_socket(fresh)
        self._connected = False
        self._reactor.add_reader(self._fd, self._reader())

    def _maybe_connect(self) -> None:
        peer = self.filter.peer
        if not self.kernel_filter or peer is None or self.filter.latching or self.closed:
            return
        self.sock.connect(peer)
        # Packets queued before connect() were not filtered by the kernel: discard them.
        while True:
            try:
                self.sock.recv_into(self.buffer)
            except OSError:
                break
        self.connected_send = self._send
        if not self._connected:
            self._connected = True
            self._reactor.remove_reader(self._fd)
            if self._reads == 1:
                self._watch_connected(self._fd)
            else:
                self._reactor.add_reader(self._fd, self._reader())

    def _watch_connected(self, fd: int) -> None:
        # A socket connected to the peer (companion or kernel filter), with a reactor.
        self._reactor.add_reader(fd, self._read_one_connected)

    def _read_one(self) -> None:
        # The hot path with a reactor: one datagram from the negotiated peer, to the sink.
        recvfrom_into = self._recvfrom_into
        buf = self.buffer
        try:
            length, source = recvfrom_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._on_error(exc)
            return
        if source != self.filter.peer:
            self._from_stranger(length, source)
            return
        if length < HEADER_SIZE or buf[0] & 0xC0 != 0x80:
            self.dropped_invalid += 1
            return
        self.received += 1
        sink = self.sink
        sink(buf, length)

    def _from_stranger(self, length: int, source: tuple[object, ...]) -> None:
        # Not (yet) the peer: dropped, or latched onto (see PeerFilter).
        if not self.filter.admit(source):
            self.dropped_strangers += 1
            return
        self.deliver(length)
        if self.kernel_filter:
            self._maybe_connect()  # The kernel filters from now on.
        self._update_companion()

    def _read_one_connected(self) -> None:
        # The hot path of a connected socket (kernel filter, or the companion): one datagram,
        # from the peer (the kernel checked). Callables kept on the instance are loaded into
        # locals before the call: CPython 3.11 specialises that attribute load, not a
        # method-style call through it. `deliver`'s check is inlined here and in `_read_one`
        # (a call per packet saved); the rarer paths call `deliver`.
        recv_into = self._recv_into
        buf = self.buffer
        try:
            length = recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._on_error(exc)
            return
        if length < HEADER_SIZE or buf[0] & 0xC0 != 0x80:
            self.dropped_invalid += 1
            return
        self.received += 1
        sink = self.sink
        sink(buf, length)

    def deliver(self, length: int) -> None:
        """Take a datagram of `length` bytes from the peer, already in `buffer`: dropped if
        not RTP, else counted and sunk (a latched stranger's first packet; a reactor that
        reads the connected socket itself)."""
        buf = self.buffer
        if length < HEADER_SIZE or buf[0] & 0xC0 != 0x80:
            self.dropped_invalid += 1
            return
        self.received += 1
        sink = self.sink
        sink(buf, length)

    def _read_filtered(self) -> None:
        recvfrom_into = self.sock.recvfrom_into
        buf = self.buffer
        peer = self.filter.peer
        sink = self.sink
        # Level-triggered: if the bound is reached, the loop calls again while data remains.
        for _ in range(self._reads):
            try:
                length, source = recvfrom_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._on_error(exc)
                continue
            if source != peer:
                if not self.filter.admit(source):
                    self.dropped_strangers += 1
                    continue
                peer = self.filter.peer
                latched = self.kernel_filter
            else:
                latched = False
            if length < HEADER_SIZE or buf[0] & 0xC0 != 0x80:
                self.dropped_invalid += 1
            else:
                self.received += 1
                sink(buf, length)
            if latched:
                self._maybe_connect()  # The kernel filters from now on; it reads next.
                return

    def _read_connected(self) -> None:
        recv_into = self.sock.recv_into
        buf = self.buffer
        sink = self.sink
        for _ in range(self._reads):
            try:
                length = recv_into(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._on_error(exc)
                continue
            if length < HEADER_SIZE or buf[0] & 0xC0 != 0x80:
                self.dropped_invalid += 1
                continue
            self.received += 1
            sink(buf, length)

    def _on_error(self, exc: OSError) -> None:
        # A connected socket reports the peer's ICMP "port unreachable" here: not fatal.
        if exc.errno not in _IGNORED_ERRORS:
            log.warning("RTP receive error on %s: %s", self.local_address, exc)

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one packet to the peer; errors and a missing peer are counted, not raised."""
        try:
            send = self.connected_send
            if send is not None:
                send(data)
            else:
                peer = self.filter.peer
                if peer is None:
                    self.unsent += 1
                    return
                self._sendto(data, peer)
            self.sent += 1
        except OSError as exc:
            self.send_failed(exc)

    def send_failed(self, exc: OSError) -> None:
        """Count (and now and then log) a failed send."""
        self.send_errors += 1
        if exc.errno not in _IGNORED_ERRORS and (self.send_errors <= 5
                                                 or self.send_errors % 1000 == 0):
            log.warning("RTP send to %s failed: %s (%d failures)", self.peer, exc,
                        self.send_errors)

    def close(self) -> None:
        """Stop reading, close the socket and give its port back."""
        if self._fd < 0:
            return
        port = self.local_address[1]
        self._drop_companion()
        self._reactor.remove_reader(self._fd)
        self._fd = -1
        self.sock.close()
        if self._on_close is not None:
            self._on_close(port)
