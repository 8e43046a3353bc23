"""UDP transport: one non-blocking socket read until empty on each wake-up.

On Linux the datagrams of a wake-up are read with recvmmsg(2) (through ctypes),
up to `BATCH` per system call: one call per burst instead of one per datagram
plus a last one that fails with EAGAIN (which Python raises as an exception).
Elsewhere, or if libc lacks it, `socket.recvfrom` in a loop does the same.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import socket
import struct
import sys
from collections.abc import Callable

log = logging.getLogger("cms.net.udp")

Address = tuple[str, int]
DatagramHandler = Callable[[bytes, Address], None]

# Reads per wake-up before yielding to other tasks, so one busy socket cannot starve them.
MAX_READS_PER_WAKEUP = 64
RECV_SIZE = 65_535
# Datagrams per recvmmsg call (each with a RECV_SIZE buffer).
BATCH = 16
_ICMP_ERRORS = (errno.ECONNREFUSED, errno.EHOSTUNREACH)


# struct iovec, struct msghdr and struct mmsghdr (Linux), shared with cms.media.mmsg.
class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


_NAME_SIZE = 16  # sizeof(struct sockaddr_in)


def _load_recvmmsg() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.recvmmsg
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                         ctypes.c_void_p]
    function.restype = ctypes.c_int
    return function


_recvmmsg = _load_recvmmsg()


class _BatchReader:
    """Preallocated recvmmsg(2) buffers for one IPv4 socket: up to BATCH datagrams a call."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._data = ctypes.create_string_buffer(BATCH * RECV_SIZE)
        self._names = (ctypes.c_char * (BATCH * _NAME_SIZE))()
        self._iovecs = (IoVec * BATCH)()
        self._headers = (MMsgHdr * BATCH)()
        data_at = ctypes.addressof(self._data)
        names_at = ctypes.addressof(self._names)
        for i in range(BATCH):
            self._iovecs[i].iov_base = data_at + i * RECV_SIZE
            self._iovecs[i].iov_len = RECV_SIZE
            header = self._headers[i].msg_hdr
            header.msg_name = names_at + i * _NAME_SIZE
            header.msg_namelen = _NAME_SIZE
            header.msg_iov = ctypes.addressof(self._iovecs[i])
            header.msg_iovlen = 1
        self._headers_at = ctypes.addressof(self._headers)
        # Raw views: reading lengths and addresses through them is cheaper than ctypes fields.
        self._header_view = memoryview(self._headers).cast("B")
        self._names_view = memoryview(self._names).cast("B")
        self._data_view = memoryview(self._data).cast("B")
        self._stride = ctypes.sizeof(MMsgHdr)
        self._len_at = MMsgHdr.msg_len.offset
        self._namelen_at = MsgHdr.msg_namelen.offset
        self._hosts: dict[bytes, str] = {}

    def read(self, limit: int) -> list[tuple[bytes, Address]] | None:
        """Up to `limit` (<= BATCH) datagrams; [] when none is waiting; None on an ICMP error.

        Raises OSError for any other error.
        """
        assert _recvmmsg is not None
        got = _recvmmsg(self._fd, self._headers_at, limit, socket.MSG_DONTWAIT, None)
        if got < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return []
            if code == errno.EINTR or code in _ICMP_ERRORS:
                return None
            raise OSError(code, f"recvmmsg: {errno.errorcode.get(code, code)}")
        headers = self._header_view
        names = self._names_view
        data = self._data_view
        stride = self._stride
        len_at = self._len_at
        namelen_at = self._namelen_at
        hosts = self._hosts
        unpack = struct.unpack_from
        pack = struct.pack_into
        out: list[tuple[bytes, Address]] = []
        for i in range(got):
            length = unpack("I", headers, i * stride + len_at)[0]
            pack("I", headers, i * stride + namelen_at, _NAME_SIZE)  # reset for the next call
            at = i * _NAME_SIZE
            if unpack("H", names, at)[0] != socket.AF_INET:
                continue  # no usable source address (never for a bound IPv4 UDP socket)
            raw = bytes(names[at + 4 : at + 8])
            host = hosts.get(raw)
            if host is None:
                host = socket.inet_ntoa(raw)
                if len(hosts) >= 4096:
                    hosts.clear()
                hosts[raw] = host
            port = (names[at + 2] << 8) | names[at + 3]
            start = i * RECV_SIZE
            out.append((data[start : start + length].tobytes(), (host, port)))
        return out



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
        self._local_address: Address | None = None
        sock.setblocking(False)
        # IPv4 only: recvfrom spells IPv6 sources (scope, mapped IPv4) in ways not worth
        # reproducing here.
        batched = _recvmmsg is not None and sock.family == socket.AF_INET
        self._batch = _BatchReader(sock.fileno()) if batched else None
        self._loop.add_reader(
            sock.fileno(), self._readable if self._batch is None else self._readable_batched
        )

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
        # A bound socket's address never changes: ask the kernel once, not for every
        # Via and Contact written (several per call).
        address = self._local_address
        if address is None:
            host, port = self.sock.getsockname()[:2]
            address = (host, port)
            if port:
                self._local_address = address
        return address

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

    def _readable_batched(self) -> None:
        assert self._batch is not None
        read = self._batch.read
        handler = self._on_datagram
        count = 0
        errors = 0
        try:
            while count < MAX_READS_PER_WAKEUP:
                try:
                    batch = read(min(BATCH, MAX_READS_PER_WAKEUP - count))
                except OSError as exc:
                    log.warning("udp receive error: %s", exc)
                    break
                if batch is None:
                    # An ICMP error (ECONNREFUSED) or EINTR: not fatal for UDP; read on.
                    errors += 1
                    if errors > MAX_READS_PER_WAKEUP:
                        break
                    continue
                for data, addr in batch:
                    try:
                        handler(data, addr)
                    except Exception:
                        log.exception("unhandled error processing a datagram from %s:%s", *addr)
                count += len(batch)
                if len(batch) < BATCH:
                    # Drained, most likely: rather than a last call that finds nothing, let
                    # the (level-triggered) poller say if more has arrived since.
                    break
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
