"""Linux io_uring through ctypes and numpy: many socket operations per system call.

Python's standard library has no io_uring. This module maps a ring's submission and
completion queues into numpy structured arrays, so a batch of operations is written with
a few vectorised assignments (one per field, for the whole batch) and submitted with one
`io_uring_enter`; completions are read the same way. Nothing here allocates a Python
object per operation, which is what makes 500 socket writes, or a whole wake-up's worth
of relayed RTP, cheap in Python.

Compiled code (cms.media.fastpath) may also drive a ring itself, through the same memory as
plain arrays (`words`, `sq_words`, `cq_words`, a BufferRing's `entry_words` and
`entry_halves`), handing its bookkeeping back with `adopt` and `BufferRing.written`.

Memory ordering: the kernel reads the submission tail after `io_uring_enter` is entered
and x86-64 keeps stores in order, so plain numpy stores then the tail store are enough
there. On other architectures `Ring.available()` is False and callers keep their plain
socket path.

    ring = Ring(1024)
    ring.prepare(OP_SEND, fds, addrs, lengths, user_data, count=3)  # or ring.push(entries)
    ring.submit(wait=3)               # submit, and wait for 3 completions
    done = ring.completions()         # a copy of the ready completions; head advanced
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import platform
import sys
import weakref

import numpy as np

# System call numbers (x86-64 and every architecture using the generic table).
_SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426
_SYS_IO_URING_REGISTER = 427

# io_uring_setup flags and features.
SETUP_CQSIZE = 1 << 4  # cq_entries as given
SETUP_SUBMIT_ALL = 1 << 7  # keep submitting past a failed entry (it completes with an error)
SETUP_COOP_TASKRUN = 1 << 8  # no interrupting IPIs for completions: run them on entry
SETUP_SINGLE_ISSUER = 1 << 12
SETUP_NO_SQARRAY = 1 << 16  # entries are consumed in ring order, no index array
FEAT_SINGLE_MMAP = 1 << 0

# mmap offsets.
_OFF_SQ_RING = 0
_OFF_CQ_RING = 0x8000000
_OFF_SQES = 0x10000000

# io_uring_enter flags.
ENTER_GETEVENTS = 1 << 0

# Opcodes (include/uapi/linux/io_uring.h).
OP_ASYNC_CANCEL = 14
OP_SEND = 26
OP_RECV = 27

# Per-entry flags.
SQE_BUFFER_SELECT = 1 << 5
SQE_CQE_SKIP_SUCCESS = 1 << 6

# ioprio bits of recv/send entries.
RECV_MULTISHOT = 1 << 1

# Completion flags (with CQE_F_BUFFER, the buffer id is flags >> 16).
CQE_F_BUFFER = 1 << 0
CQE_F_MORE = 1 << 1

# io_uring_register opcodes.
_REGISTER_PBUF_RING = 22
_UNREGISTER_PBUF_RING = 23

MSG_DONTWAIT = 0x40
MSG_NOSIGNAL = 0x4000

SQE_DTYPE = np.dtype([
    ("opcode", np.uint8), ("flags", np.uint8), ("ioprio", np.uint16), ("fd", np.int32),
    ("off", np.uint64), ("addr", np.uint64), ("len", np.uint32), ("op_flags", np.uint32),
    ("user_data", np.uint64), ("buf_index", np.uint16), ("personality", np.uint16),
    ("file_index", np.int32), ("addr3", np.uint64), ("pad", np.uint64),
])
CQE_DTYPE = np.dtype([("user_data", np.uint64), ("res", np.int32), ("flags", np.uint32)])
BUF_DTYPE = np.dtype([("addr", np.uint64), ("len", np.uint32), ("bid", np.uint16),
                      ("resv", np.uint16)])
assert SQE_DTYPE.itemsize == 64 and CQE_DTYPE.itemsize == 16 and BUF_DTYPE.itemsize == 16


class _SqOffsets(ctypes.Structure):
    _fields_ = [("head", ctypes.c_uint32), ("tail", ctypes.c_uint32),
                ("ring_mask", ctypes.c_uint32), ("ring_entries", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("dropped", ctypes.c_uint32),
                ("array", ctypes.c_uint32), ("resv1", ctypes.c_uint32),
                ("user_addr", ctypes.c_uint64)]


class _CqOffsets(ctypes.Structure):
    _fields_ = [("head", ctypes.c_uint32), ("tail", ctypes.c_uint32),
                ("ring_mask", ctypes.c_uint32), ("ring_entries", ctypes.c_uint32),
                ("overflow", ctypes.c_uint32), ("cqes", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("resv1", ctypes.c_uint32),
                ("user_addr", ctypes.c_uint64)]


class _Params(ctypes.Structure):
    _fields_ = [("sq_entries", ctypes.c_uint32), ("cq_entries", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("sq_thread_cpu", ctypes.c_uint32),
                ("sq_thread_idle", ctypes.c_uint32), ("features", ctypes.c_uint32),
                ("wq_fd", ctypes.c_uint32), ("resv", ctypes.c_uint32 * 3),
                ("sq_off", _SqOffsets), ("cq_off", _CqOffsets)]


class _BufReg(ctypes.Structure):
    _fields_ = [("ring_addr", ctypes.c_uint64), ("ring_entries", ctypes.c_uint32),
                ("bgid", ctypes.c_uint16), ("flags", ctypes.c_uint16),
                ("resv", ctypes.c_uint64 * 3)]


_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class UringError(OSError):
    """io_uring could not be set up or used (the caller falls back to plain sockets)."""


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise UringError(err, f"{what}: {os.strerror(err)}")
    return result


def _address(buffer: mmap.mmap | ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buffer))


class Ring:
    """One io_uring: a submission queue and a completion queue as numpy arrays.

    Single-threaded: every method is called from the thread that created the ring.
    """

    _available: bool | None = None

    @classmethod
    def available(cls) -> bool:
        """Whether io_uring works here (Linux x86-64, not disabled): tried once per process."""
        if cls._available is None:
            cls._available = False
            if sys.platform.startswith("linux") and platform.machine() == "x86_64":
                try:
                    Ring(8).close()
                    cls._available = True
                except (UringError, OSError):
                    pass
        return cls._available

    def __init__(self, entries: int, *, cq_entries: int | None = None) -> None:
        params = _Params()
        params.flags = SETUP_SUBMIT_ALL | SETUP_COOP_TASKRUN | SETUP_SINGLE_ISSUER | \
            SETUP_NO_SQARRAY
        if cq_entries is not None:
            params.flags |= SETUP_CQSIZE
            params.cq_entries = cq_entries
        self.fd = _check(_syscall(_SYS_IO_URING_SETUP, entries, ctypes.byref(params)),
                         "io_uring_setup")
        # A ring dropped without close() still gives its descriptor back.
        self._finalizer = weakref.finalize(self, os.close, self.fd)
        self._maps: list[mmap.mmap] = []
        try:
            self._map(params)
        except BaseException:
            self.close()
            raise
        self.sq_entries = params.sq_entries
        self.cq_entries = params.cq_entries
        self._sq_mask = params.sq_entries - 1
        self._cq_mask = params.cq_entries - 1
        self._pending = 0  # entries written and published but not yet submitted
        self._buffer_groups: dict[int, BufferRing] = {}

    def _map(self, params: _Params) -> None:
        if not params.features & FEAT_SINGLE_MMAP:
            raise UringError(0, "io_uring without IORING_FEAT_SINGLE_MMAP")
        sq, cq = params.sq_off, params.cq_off
        size = max(sq.array + 4 * params.sq_entries,
                   cq.cqes + CQE_DTYPE.itemsize * params.cq_entries)
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        rings = mmap.mmap(self.fd, size, flags=flags,
                          prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=_OFF_SQ_RING)
        self._maps.append(rings)
        sqes = mmap.mmap(self.fd, SQE_DTYPE.itemsize * params.sq_entries, flags=flags,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=_OFF_SQES)
        self._maps.append(sqes)
        # The head and tail words as one-element memoryviews: reading one gives a Python int
        # at a fraction of a numpy element's cost (they are read several times per batch).
        words = memoryview(rings)
        self._sq_head = words[sq.head:sq.head + 4].cast("I")
        self._sq_tail = words[sq.tail:sq.tail + 4].cast("I")
        self._cq_head = words[cq.head:cq.head + 4].cast("I")
        self._cq_tail = words[cq.tail:cq.tail + 4].cast("I")
        self._cq_overflow = words[cq.overflow:cq.overflow + 4].cast("I")
        # For compiled code driving the ring itself: the same words as an array, and where
        # the submission head and tail and the completion head and tail are in it (see
        # `adopt`).
        self.words = np.frombuffer(rings, dtype=np.uint32)
        self.word_index = np.array([sq.head // 4, sq.tail // 4, cq.head // 4, cq.tail // 4],
                                   dtype=np.int64)
        self.sqes = np.frombuffer(sqes, dtype=SQE_DTYPE)
        self.cqes = np.frombuffer(rings, dtype=CQE_DTYPE, count=params.cq_entries,
                                  offset=cq.cqes)
        # The same entries as plain int64 words, for compiled code that reads and writes
        # them itself (see `words`).
        self.sq_words = self.sqes.view(np.int64).reshape(-1, SQE_DTYPE.itemsize // 8)
        self.cq_words = self.cqes.view(np.int64).reshape(-1, CQE_DTYPE.itemsize // 8)
        self._tail = self._sq_tail[0]

    # -- submission

    def space(self) -> int:
        """Free submission entries."""
        return self.sq_entries - (self._tail - self._sq_head[0]) % (1 << 32)

    def prepare(self, opcode: int, fds: np.ndarray | int, addrs: np.ndarray | int,
                lengths: np.ndarray | int, user_data: np.ndarray | int, *, count: int,
                op_flags: int = 0, flags: int = 0, ioprio: int = 0,
                buf_group: int = 0) -> None:
        """Queue `count` entries of one opcode, each field a scalar or an array of `count`."""
        entries = np.zeros(count, dtype=SQE_DTYPE)
        entries["opcode"] = opcode
        entries["flags"] = flags
        entries["ioprio"] = ioprio
        entries["fd"] = fds
        entries["addr"] = addrs
        entries["len"] = lengths
        entries["op_flags"] = op_flags
        entries["user_data"] = user_data
        entries["buf_index"] = buf_group
        self.push(entries)

    def push(self, entries: np.ndarray) -> None:
        """Queue entries built by the caller (a SQE_DTYPE array, e.g. rows of a template
        whose constant fields are filled once), copied in at most two slices."""
        count = len(entries)
        if count > self.space():
            self.submit()  # the kernel consumes what is queued, making room
            if count > self.space():
                raise UringError(0, f"no room for {count} submission entries")
        start = self._tail & self._sq_mask
        first = min(count, self.sq_entries - start)
        self.sqes[start:start + first] = entries[:first]
        if first < count:
            self.sqes[:count - first] = entries[first:]
        self._tail = (self._tail + count) & 0xFFFFFFFF
        self._sq_tail[0] = self._tail  # Visible to the kernel (submitted on `submit`).
        self._pending += count

    @property
    def tail(self) -> int:
        """Where the next queued entry goes (its row is `tail & (sq_entries - 1)`)."""
        return self._tail

    def adopt(self, tail: int, pending: int) -> None:
        """Take over from compiled code that queued entries, published the tail, submitted
        (or not) and consumed completions itself: the new tail and what is still unsubmitted."""
        self._tail = tail
        self._pending = pending

    def submit(self, wait: int = 0) -> int:
        """Submit everything published; with `wait`, block until that many completions."""
        flags = ENTER_GETEVENTS if wait else 0
        pending = self._pending
        if not pending and not wait:
            return 0
        submitted = _syscall(SYS_IO_URING_ENTER, self.fd, pending, wait, flags, None, 0)
        if submitted < 0:
            err = ctypes.get_errno()
            if err in (errno.EINTR, errno.EAGAIN, errno.EBUSY):  # the caller comes back later
                return 0
            raise UringError(err, f"io_uring_enter: {os.strerror(err)}")
        self._pending = max(0, pending - submitted)
        return int(submitted)

    @property
    def pending(self) -> int:
        """Entries published but not yet taken by the kernel (a failed or partial submit)."""
        return self._pending

    # -- completion

    def ready(self) -> int:
        """Completions waiting to be read."""
        return (self._cq_tail[0] - self._cq_head[0]) % (1 << 32)

    def flush(self) -> None:
        """Enter the kernel without submitting: completions it holds back as task work (see
        SETUP_COOP_TASKRUN) are posted, so `ready()` sees them."""
        _syscall(SYS_IO_URING_ENTER, self.fd, 0, 0, ENTER_GETEVENTS, None, 0)

    def completions(self, limit: int | None = None) -> np.ndarray:
        """A copy of every waiting completion (user_data, res, flags), or of the first
        `limit`, consumed."""
        head = self._cq_head[0]
        count = (self._cq_tail[0] - head) % (1 << 32)
        if limit is not None:
            count = min(count, limit)
        if not count:
            return self.cqes[:0].copy()
        start = head & self._cq_mask
        end = start + count
        if end <= self.cq_entries:
            done = self.cqes[start:end].copy()
        else:
            done = np.concatenate((self.cqes[start:], self.cqes[:end - self.cq_entries]))
        self._cq_head[0] = (head + count) & 0xFFFFFFFF
        return done

    @property
    def overflowed(self) -> int:
        """Completions the kernel could not post because the queue was full."""
        return self._cq_overflow[0]

    # -- provided buffers

    def buffer_ring(self, group: int, count: int, size: int) -> BufferRing:
        """Register `count` buffers of `size` bytes as buffer group `group`."""
        ring = BufferRing(self, group, count, size)
        self._buffer_groups[group] = ring
        return ring

    def _register(self, opcode: int, arg: ctypes.Structure, count: int) -> None:
        _check(_syscall(_SYS_IO_URING_REGISTER, self.fd, opcode, ctypes.byref(arg), count),
               "io_uring_register")

    def close(self) -> None:
        """Unregister buffers, unmap and close the ring (its pending operations are cancelled)."""
        for ring in list(self._buffer_groups.values()):
            ring.close()
        self._buffer_groups.clear()
        for name in ("sqes", "cqes", "sq_words", "cq_words", "words", "_sq_head", "_sq_tail",
                     "_cq_head", "_cq_tail", "_cq_overflow"):
            view = self.__dict__.pop(name, None)
            if isinstance(view, memoryview):
                view.release()
        for mapping in self._maps:
            try:
                mapping.close()
            except BufferError:
                pass  # a caller still holds a view; the mapping goes with it
        self._maps.clear()
        if self.fd >= 0:
            self._finalizer()  # closes the descriptor, once
            self.fd = -1


class BufferRing:
    """Buffers the kernel picks from for `SQE_BUFFER_SELECT` receives (a provided buffer ring).

    `data` is one numpy array of `count` rows of `size` bytes; a completion's buffer id is
    its row. Give rows back with `recycle` once their contents are used. Entries written are
    only seen by the kernel once published: `recycle(..., publish=False)` and `written`
    write ahead, `publish` hands over everything written so far.
    """

    def __init__(self, ring: Ring, group: int, count: int, size: int) -> None:
        if count & (count - 1):
            raise ValueError("the buffer count must be a power of two")
        self.group = group
        self.count = count
        self.size = size
        self._ring = ring
        self._entries_map = mmap.mmap(-1, BUF_DTYPE.itemsize * count,
                                      prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self._data_map = mmap.mmap(-1, count * size, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.entries = np.frombuffer(self._entries_map, dtype=BUF_DTYPE)
        # The entries as words (addr is word 0) and as half-words (bid is 6), for compiled
        # code that hands buffers back itself; `len` is the same in every entry from the
        # start and the kernel never writes it.
        self.entry_words = np.frombuffer(self._entries_map, dtype=np.uint64).reshape(count, 2)
        self.entry_halves = np.frombuffer(self._entries_map, dtype=np.uint16).reshape(count, 8)
        self.data = np.frombuffer(self._data_map, dtype=np.uint8).reshape(count, size)
        self.base = _address(self._data_map)
        # The ring's tail is a u16 overlaying the first entry's `resv`.
        self._tail_view = memoryview(self._entries_map)[14:16].cast("H")
        self._tail = 0  # Written up to here; published up to _tail_view.
        # The memory address of each buffer id.
        self.addresses = self.base + np.arange(count, dtype=np.uint64) * np.uint64(size)
        registration = _BufReg(ring_addr=_address(self._entries_map), ring_entries=count,
                               bgid=group)
        ring._register(_REGISTER_PBUF_RING, registration, 1)
        self._registered = True
        self.entries["len"] = size
        self.recycle(np.arange(count, dtype=np.uint16))

    def recycle(self, bids: np.ndarray, publish: bool = True) -> None:
        """Hand buffers back to the kernel (with `publish` false: once `publish` is called)."""
        count = len(bids)
        if count:
            start = self._tail & (self.count - 1)
            if start + count <= self.count:  # The usual case: one slice of entries.
                entries = self.entries[start:start + count]
                entries["addr"] = self.addresses[bids]
                entries["bid"] = bids
            else:
                slots = (self._tail + np.arange(count, dtype=np.uint32)) & (self.count - 1)
                self.entries["addr"][slots] = self.addresses[bids]
                self.entries["bid"][slots] = bids
            self._tail = (self._tail + count) & 0xFFFF
        if publish:
            self.publish()

    @property
    def tail(self) -> int:
        """Where the next buffer handed back goes (its entry is `tail & (count - 1)`)."""
        return self._tail

    def written(self, count: int) -> None:
        """The caller wrote `count` entries from `tail` on (published with the next `publish`)."""
        self._tail = (self._tail + count) & 0xFFFF

    def publish(self) -> None:
        """Let the kernel take every buffer written so far."""
        self._tail_view[0] = self._tail

    def close(self) -> None:
        if self._registered:
            self._registered = False
            registration = _BufReg(bgid=self.group)
            try:
                self._ring._register(_UNREGISTER_PBUF_RING, registration, 1)
            except UringError:
                pass
