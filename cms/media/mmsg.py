"""Batched UDP I/O: Linux `sendmmsg`/`recvmmsg` through ctypes, on preallocated buffers.

Python's socket module has neither call. A `MessageBatch` owns `capacity` fixed-size slots
(datagram bytes, optional per-slot destination and control buffers) and the `mmsghdr`
array that points at them, so sending or receiving up to `capacity` datagrams is one
system call and no Python object per datagram. `field()` gives a numpy view of one header
field across all slots, for writing or reading every packet at once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct

import numpy as np

from cms.net.udp import IoVec, MMsgHdr, MsgHdr

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20  # recvmmsg: report a datagram's full length even if the slot is shorter.
SO_TIMESTAMPNS = 35  # Linux: kernel receive time as a struct timespec control message.
TIMESTAMP_CONTROL_SIZE = 32  # cmsghdr (16 bytes on 64-bit) + struct timespec (16 bytes).
_TIMESPEC_OFFSET = 16
_SOCKADDR_IN = struct.Struct("=H2s4s8x")  # family (native), port, address (network order).


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                      ctypes.c_void_p]
_recvmmsg.restype = ctypes.c_int
_HDR_SIZE = ctypes.sizeof(MMsgHdr)
_CONTROLLEN_OFFSET = MsgHdr.msg_controllen.offset
_LEN_OFFSET = MMsgHdr.msg_len.offset


class MessageBatch:
    """`capacity` datagram slots of `slot_size` bytes with their message headers."""

    def __init__(self, capacity: int, slot_size: int, *, addressed: bool = False,
                 control_size: int = 0) -> None:
        self.capacity = capacity
        self.slot_size = slot_size
        self.control_size = control_size
        self._data = (ctypes.c_char * (capacity * slot_size))()
        self.data = np.frombuffer(self._data, dtype=np.uint8)
        self._iov = (IoVec * capacity)()
        self._hdrs = (MMsgHdr * capacity)()
        self._headers = np.frombuffer(self._hdrs, dtype=np.uint8)
        self._names = (ctypes.c_char * (16 * capacity))() if addressed else None
        self._control = (ctypes.c_char * max(1, control_size * capacity))()
        base = ctypes.addressof(self._data)
        for i in range(capacity):
            self._iov[i].iov_base = base + i * slot_size
            self._iov[i].iov_len = slot_size
            hdr = self._hdrs[i].msg_hdr
            hdr.msg_iov = ctypes.addressof(self._iov[i])
            hdr.msg_iovlen = 1
            if self._names is not None:
                hdr.msg_name = ctypes.addressof(self._names) + 16 * i
                hdr.msg_namelen = 16
            if control_size:
                hdr.msg_control = ctypes.addressof(self._control) + i * control_size
                hdr.msg_controllen = control_size
        self._address = ctypes.addressof(self._hdrs)
        # Strided views over the headers: what the kernel writes back per message.
        self.lengths = self._view(self._headers, _LEN_OFFSET, _HDR_SIZE, np.uint32)
        self._controllens = self._view(self._headers, _CONTROLLEN_OFFSET, _HDR_SIZE,
                                       np.uint64)

    def _view(self, buffer: np.ndarray, offset: int, stride: int,
              dtype: str | type) -> np.ndarray:
        return np.ndarray(shape=(self.capacity,), dtype=dtype, buffer=buffer, offset=offset,
                          strides=(stride,))

    def field(self, offset: int, dtype: str) -> np.ndarray:
        """A writable view of the field at `offset` in every slot (e.g. ">u2" at 2: seq)."""
        return np.ndarray(shape=(self.capacity,), dtype=dtype, buffer=self.data,
                          offset=offset, strides=(self.slot_size,))

    def set_length(self, index: int, length: int) -> None:
        """Send `length` bytes from slot `index`."""
        self._iov[index].iov_len = length

    def set_destination(self, index: int, address: tuple[str, int]) -> None:
        """Where slot `index` is sent (IPv4 only)."""
        if self._names is None:
            raise ValueError("this batch was made without destinations")
        packed = _SOCKADDR_IN.pack(socket.AF_INET, address[1].to_bytes(2, "big"),
                                   socket.inet_aton(address[0]))
        ctypes.memmove(ctypes.addressof(self._names) + 16 * index, packed, 16)

    def raw(self, count: int) -> tuple[bytes, bytes]:
        """Copies of the first `count` slots and of their control buffers."""
        return (ctypes.string_at(self._data, count * self.slot_size),
                ctypes.string_at(self._control, count * self.control_size))

    def slot(self, index: int) -> memoryview:
        """The bytes of slot `index`."""
        start = index * self.slot_size
        return memoryview(self._data).cast("B")[start:start + self.slot_size]

    def send(self, fd: int, start: int = 0, count: int | None = None) -> int:
        """Send slots start..start+count in one call; the number sent (-errno on error)."""
        count = self.capacity - start if count is None else count
        sent = _sendmmsg(fd, self._address + start * _HDR_SIZE, count, MSG_DONTWAIT)
        return sent if sent >= 0 else -ctypes.get_errno()

    def receive(self, fd: int) -> int:
        """Read up to `capacity` datagrams without blocking; how many (0 when none).

        A datagram longer than a slot is cut to the slot; `lengths` has its full length.
        """
        if self.control_size:
            self._controllens[:] = self.control_size
        received = _recvmmsg(fd, self._address, self.capacity, MSG_DONTWAIT | MSG_TRUNC, None)
        if received >= 0:
            return received
        error = ctypes.get_errno()
        if error in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
            return 0
        raise OSError(error, os.strerror(error))

    def receive_times_ns(self, count: int) -> np.ndarray:
        """Kernel receive times (CLOCK_REALTIME ns) of the first `count` datagrams read, from
        SO_TIMESTAMPNS control messages (0 where there was none)."""
        control = np.frombuffer(self._control, dtype=np.uint8)
        seconds = self._view(control, _TIMESPEC_OFFSET, self.control_size, "=i8")[:count]
        nanos = self._view(control, _TIMESPEC_OFFSET + 8, self.control_size, "=i8")[:count]
        return seconds * 1_000_000_000 + nanos


def enable_receive_timestamps(sock: socket.socket) -> None:
    """Ask the kernel for each datagram's receive time (read with `receive_times_ns`)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
