"""UDP transport: one non-blocking socket read until empty on each wake-up."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("cms.net.udp")

Address = tuple[str, int]
DatagramHandler = Callable[[bytes, Address], None]

# Reads per wake-up before yielding to other tasks, so one busy socket cannot starve them.
MAX_READS_PER_WAKEUP = 64
RECV_SIZE = 65_535


class UdpTransport:
    """A bound UDP socket feeding `on_datagram` for each packet; `send` never blocks."""

    def __init__(self, sock: socket.socket, on_datagram: DatagramHandler,
                 on_batch_end: Callable[[], None] | None = None) -> None:
        self.sock = sock
        self._on_datagram = on_datagram
        self._on_batch_end = on_batch_end
        self._loop = asyncio.get_running_loop()
        self.received = 0
        self.send_errors = 0
        sock.setblocking(False)
        self._loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    def bind(cls, host: str, port: int, on_datagram: DatagramHandler,
             on_batch_end: Callable[[], None] | None = None) -> UdpTransport:
        """Bind a socket on host:port (port 0: any free port) and start reading."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for option, size in ((socket.SO_RCVBUF, 4 << 20), (socket.SO_SNDBUF, 4 << 20)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, size)
            except OSError:
                pass
        sock.bind((host, port))
        return cls(sock, on_datagram, on_batch_end)

    @property
    def local_address(self) -> Address:
        """The bound (host, port)."""
        host, port = self.sock.getsockname()[:2]
        return host, port

    def _readable(self) -> None:
        recvfrom = self.sock.recvfrom
        handler = self._on_datagram
        count = 0
        try:
            while count < MAX_READS_PER_WAKEUP:
                try:
                    data, addr = recvfrom(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    # ICMP errors surface here on Linux (ECONNREFUSED): not fatal for UDP.
                    if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                        log.warning("udp receive error: %s", exc)
                    continue
                count += 1
                try:
                    handler(data, addr[:2])
                except Exception:
                    log.exception("unhandled error processing a datagram from %s:%s", *addr[:2])
        finally:
            self.received += count
            if self._on_batch_end is not None:
                self._on_batch_end()

    def send(self, data: bytes, addr: Address) -> None:
        """Send one datagram; a full buffer or unreachable peer is counted, not raised."""
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:
            self.send_errors += 1
            if self.send_errors <= 10 or self.send_errors % 1000 == 0:
                log.warning("udp send to %s:%s failed: %s (%d failures)", *addr, exc,
                            self.send_errors)

    def close(self) -> None:
        """Stop reading and close the socket."""
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()
