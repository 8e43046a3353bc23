"""The relay's common case for a chunk of io_uring completions, compiled with numba.

The common case is what `Leg._on_packet` does for nearly every packet: an RTP audio packet
with the leg's audio payload type, routed to another leg without transcoding, from the SSRC
the target's stream already follows (not held by injected DTMF), continuing the sequence
numbers its receive statistics expect. `relay_chunk` does, in one compiled call, what the
reactor needs for a chunk of completions read straight from the completion ring: it decodes
each (see cms.media.uring_reactor for user_data), recognises stale ones by the slot's
generation, and for each packet of the common case does what that Python code does —
`ReceiveStats.update`'s common branch, the mapping onto the target's `OutboundStream`, the
header rewrite in place in the receive buffer, the target's `sent` counter — on the state in
a `SlotTable`, writes the send into the submission ring and the buffer, once sent, back into
the provided-buffer ring. Everything else comes back to Python in order: packets for the
per-packet path, receives that ended, sends that failed.

A leg's packets are taken in order; once one leaves the common case, the leg's later
packets in the chunk leave it too (they must follow it through the per-packet path).

`relay_ring` is the reactor's loop around it: chunk after chunk, each one's sends submitted
with io_uring_enter (a raw system call from the compiled code), until the ring is empty or a
chunk left work for Python; one call from Python per wake-up in the common case.

Compiled once per process (`compile_kernels`, called by MediaService.start and by each
UringReactor), from numba's on-disk cache when there is one: never in the middle of traffic.
"""

from __future__ import annotations

import llvmlite.binding
import numba
import numpy as np
from llvmlite import ir
from numba.core.extending import intrinsic

from cms.net.uring import (
    CQE_F_BUFFER,
    CQE_F_MORE,
    ENTER_GETEVENTS,
    MSG_DONTWAIT,
    OP_SEND,
    SQE_CQE_SKIP_SUCCESS,
    SYS_IO_URING_ENTER,
)

from .formats import CLOCK_RATE
from .rtp import HEADER_SIZE
from .slots import FLOAT, INT
from .stats import _WINDOW, _WINDOW_MASK, MAX_DROPOUT

# user_data of a ring entry: bits 62-63 its kind, 48-61 the slot's generation, 0-31 the slot.
RECV, SEND, CANCEL = 0, 1, 2
KIND_SHIFT = 62
GEN_SHIFT = 48
GEN_MASK = 0x3FFF
SLOT_MASK = 0xFFFFFFFF

# A relayed packet's send entry as the 8 little-endian words of an io_uring_sqe: opcode,
# flags, ioprio, fd | off | addr | len, msg_flags | user_data | the rest zero.
_SEND_WORD0 = OP_SEND | SQE_CQE_SKIP_SUCCESS << 8
_SEND_FLAGS = MSG_DONTWAIT << 32
_SEND_KIND = SEND << KIND_SHIFT

_TARGET, _AUDIO_PT, _OUT_PT = INT["target"], INT["audio_pt"], INT["out_pt"]
_RX_SSRC, _RX_MAX, _RX_CYCLES = INT["rx_ssrc"], INT["rx_max"], INT["rx_cycles"]
_RX_SEEN, _RX_RECEIVED, _RECEIVED = INT["rx_seen"], INT["rx_received"], INT["received"]
_OUT_FEED, _OUT_HELD, _SEND_FD = INT["out_feed"], INT["out_held"], INT["send_fd"]
_OUT_SEQ, _OUT_TS, _OUT_SSRC = INT["out_seq"], INT["out_ts"], INT["out_ssrc"]
_OUT_SEQ_OFFSET, _OUT_TS_OFFSET = INT["out_seq_offset"], INT["out_ts_offset"]
_GENERATION, _SENT = INT["generation"], INT["sent"]
_RX_TRANSIT, _RX_JITTER, _OUT_TIME = FLOAT["rx_transit"], FLOAT["rx_jitter"], FLOAT["out_time"]
_CLOCK = float(CLOCK_RATE)
_MAX_SHIFT = _WINDOW + 1  # A longer shift of the window leaves the same: only the new bit.


@numba.njit(cache=True, nogil=True)
def relay_chunk(cqes: np.ndarray, head: int, count: int, ints: np.ndarray,
                floats: np.ndarray, blocked: np.ndarray, stamp: int, packets: np.ndarray,
                base: int, sqes: np.ndarray, tail: int, buffer_words: np.ndarray,
                buffer_halves: np.ndarray, buffer_tail: int, now: float, out: np.ndarray
                ) -> tuple[int, int, int, int, int]:
    """Take `count` completions from `head` on in `cqes` (the completion ring as rows of
    two int64 words), relay the common case and write its sends into `sqes` (the submission
    ring as rows of eight words) from `tail` on; the caller has checked there is room.

    `ints` and `floats` are a SlotTable's; `packets` the provided buffers by id, at memory
    address `base`; `blocked` is scratch by slot (`stamp`: a value unused before in it).
    The buffers of relayed packets and of stale completions are written back into the
    provided-buffer ring (`buffer_words`, `buffer_halves`: its entries, see BufferRing) from
    `buffer_tail` on, for the caller to publish once the sends are submitted. Written into
    `out` for the caller, each in completion order, a column per completion: rows 0-2
    (slot, buffer id, length) of packets for the per-packet path, rows 3-4 (slot, result) of
    receives that ended, rows 5-6 (slot, error number) of sends that failed. Returns how many
    sends and recycled buffers were written, and how many columns of each group of `out`.
    """
    cq_mask = cqes.shape[0] - 1
    sq_mask = sqes.shape[0] - 1
    buffer_mask = buffer_words.shape[0] - 1
    capacity = ints.shape[0]
    size = packets.shape[1]
    timestamp_now = now * _CLOCK
    sends = recycled = slows = ends = fails = 0
    for index in range(head, head + count):
        seq = ts = highest = step = marker_pt = 0
        row = index & cq_mask
        user_data = cqes[row, 0]
        word = cqes[row, 1]
        result = np.int64(np.int32(word & 0xFFFFFFFF))
        flags = (word >> 32) & 0xFFFFFFFF
        kind = (user_data >> KIND_SHIFT) & 3
        slot = user_data & SLOT_MASK
        live = slot < capacity and (
            (user_data >> GEN_SHIFT) & GEN_MASK) == ints[slot, _GENERATION] & GEN_MASK
        if kind == SEND:
            if live and result < 0:
                out[5, fails] = slot
                out[6, fails] = -result
                fails += 1
            continue
        if kind != RECV:
            continue
        if live and not flags & CQE_F_MORE:
            out[3, ends] = slot
            out[4, ends] = result
            ends += 1
        if not flags & CQE_F_BUFFER:
            continue
        bid = flags >> 16
        if not live:
            entry = (buffer_tail + recycled) & buffer_mask
            buffer_words[entry, 0] = base + bid * size
            buffer_halves[entry, 6] = bid
            recycled += 1
            continue
        # Leg._on_packet's tests, in its order; any failing one: the per-packet path.
        packet = packets[bid]
        target = ints[slot, _TARGET]
        fast = blocked[slot] != stamp and result >= HEADER_SIZE and target >= 0
        if fast:
            first = np.int64(packet[0])
            marker_pt = np.int64(packet[1])
            seq = np.int64(packet[2]) << 8 | np.int64(packet[3])
            ts = (np.int64(packet[4]) << 24 | np.int64(packet[5]) << 16
                  | np.int64(packet[6]) << 8 | np.int64(packet[7]))
            ssrc = (np.int64(packet[8]) << 24 | np.int64(packet[9]) << 16
                    | np.int64(packet[10]) << 8 | np.int64(packet[11]))
            highest = ints[slot, _RX_MAX]
            step = (seq - highest) & 0xFFFF
            fast = (first & 0xC0 == 0x80 and marker_pt & 0x7F == ints[slot, _AUDIO_PT]
                    and ints[slot, _RX_SSRC] == ssrc and 0 < step < MAX_DROPOUT
                    and ints[target, _OUT_FEED] == ssrc and ints[target, _OUT_HELD] == 0
                    and ints[target, _SEND_FD] >= 0)
        if not fast:
            blocked[slot] = stamp
            out[0, slows] = slot
            out[1, slows] = bid
            out[2, slows] = result
            slows += 1
            continue
        # ReceiveStats.update, its common branch.
        if seq < highest:
            ints[slot, _RX_CYCLES] += 1 << 16
        ints[slot, _RX_MAX] = seq
        ints[slot, _RX_SEEN] = (ints[slot, _RX_SEEN] << min(step, _MAX_SHIFT) | 1) & _WINDOW_MASK
        ints[slot, _RX_RECEIVED] += 1
        ints[slot, _RECEIVED] += 1
        transit = timestamp_now - ts
        delta = abs(transit - floats[slot, _RX_TRANSIT])  # NaN before a first transit.
        floats[slot, _RX_TRANSIT] = transit
        if delta < 2147483648.0:  # A timestamp wrap is not jitter.
            jitter = floats[slot, _RX_JITTER]
            floats[slot, _RX_JITTER] = jitter + (delta - jitter) * 0.0625
        # OutboundStream.map_relayed on the target.
        seq = (seq + ints[target, _OUT_SEQ_OFFSET]) & 0xFFFF
        ts = (ts + ints[target, _OUT_TS_OFFSET]) & 0xFFFFFFFF
        if (seq - ints[target, _OUT_SEQ]) & 0xFFFF < 0x8000:
            ints[target, _OUT_SEQ] = seq
        if (ts - ints[target, _OUT_TS]) & 0xFFFFFFFF < 0x80000000:
            ints[target, _OUT_TS] = ts
            floats[target, _OUT_TIME] = now
        # The header the target's phone sees; the marker bit is kept.
        ssrc = ints[target, _OUT_SSRC]
        packet[1] = (marker_pt & 0x80) | ints[slot, _OUT_PT]
        packet[2] = seq >> 8
        packet[3] = seq
        packet[4] = ts >> 24
        packet[5] = ts >> 16
        packet[6] = ts >> 8
        packet[7] = ts
        packet[8] = ssrc >> 24
        packet[9] = ssrc >> 16
        packet[10] = ssrc >> 8
        packet[11] = ssrc
        ints[target, _SENT] += 1  # Taken back if the send fails.
        entry = (tail + sends) & sq_mask
        sqes[entry, 0] = _SEND_WORD0 | ints[target, _SEND_FD] << 32
        sqes[entry, 1] = 0
        sqes[entry, 2] = base + bid * size
        sqes[entry, 3] = result | _SEND_FLAGS
        sqes[entry, 4] = (_SEND_KIND | (ints[target, _GENERATION] & GEN_MASK) << GEN_SHIFT
                          | target)
        sqes[entry, 5] = 0
        sqes[entry, 6] = 0
        sqes[entry, 7] = 0
        sends += 1
        entry = (buffer_tail + recycled) & buffer_mask
        buffer_words[entry, 0] = base + bid * size
        buffer_halves[entry, 6] = bid
        recycled += 1
    return sends, recycled, slows, ends, fails


# x86-64 Linux system calls made from compiled code (io_uring is used on x86-64 only;
# io_uring_enter's number is cms.net.uring's).
_SYS_CLOCK_GETTIME = 228
_CLOCK_MONOTONIC = 1
# Why relay_ring returned.
IDLE = 0  # No completions left (after entering the kernel once to collect held-back ones).
BUDGET = 1  # It took `budget` chunks: let other callbacks run.
PYTHON = 2  # The last chunk left work in `out` for Python.
NO_ROOM = 3  # No room in the submission queue: submit from Python.
REFUSED = 4  # io_uring_enter failed (EINTR, EBUSY, ...): submit from Python.

llvmlite.binding.initialize_native_asmparser()  # For the inline `syscall` below.


@intrinsic
def _syscall(typingctx, number, a, b, c, d, e, f):  # type: ignore[no-untyped-def]
    # The raw instruction: the result, or -errno (no libc, no errno, no function pointer to
    # keep out of numba's cache). A compiler barrier too ("memory"): the ring's entries and
    # tails are stored before the kernel is entered, and read again after.
    signature = numba.types.int64(*[numba.types.int64] * 7)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        word = ir.IntType(64)
        call = ir.InlineAsm(ir.FunctionType(word, [word] * 7), "syscall",
                            "={rax},{rax},{rdi},{rsi},{rdx},{r10},{r8},{r9},"
                            "~{rcx},~{r11},~{memory}", side_effect=True)
        return builder.call(call, args)

    return signature, codegen


@numba.njit(cache=True, nogil=True)
def _monotonic(scratch: np.ndarray) -> float:
    # time.monotonic(), the same float: CLOCK_MONOTONIC's nanoseconds / 1e9.
    _syscall(_SYS_CLOCK_GETTIME, _CLOCK_MONOTONIC, scratch.ctypes.data, 0, 0, 0, 0)
    return float(scratch[0] * 1_000_000_000 + scratch[1]) / 1e9


@numba.njit(cache=True, nogil=True)
def relay_ring(fd: int, words: np.ndarray, index: np.ndarray, cqes: np.ndarray,
               sqes: np.ndarray, ints: np.ndarray, floats: np.ndarray, blocked: np.ndarray,
               stamp: int, packets: np.ndarray, base: int, buffer_words: np.ndarray,
               buffer_halves: np.ndarray, sq_tail: int, pending: int, buffer_tail: int,
               budget: int, chunk: int, now: float, scratch: np.ndarray, out: np.ndarray
               ) -> tuple[int, int, int, int, int, int, int, int, int]:
    """Relay from the ring with file descriptor `fd` until there is nothing left, a chunk
    leaves work for Python or `budget` chunks were taken: `relay_chunk` on up to `chunk`
    completions at a time, then io_uring_enter submits their sends (and runs the kernel's
    task work: more completions), then the buffers are published.

    `words` are the ring's shared 32-bit words, `index` where its submission head and tail
    and completion head and tail are among them; `sq_tail`, `pending` (entries queued but
    not submitted) and `buffer_tail` (buffers written, see BufferRing) are the caller's
    bookkeeping, returned updated. `now` is the arrival time to use, or NaN: read
    CLOCK_MONOTONIC per chunk (into `scratch`, two int64). The rest as relay_chunk's.
    Returns why it stopped (IDLE, BUDGET, PYTHON, NO_ROOM, REFUSED), the chunks taken, the
    new sq_tail, pending and buffer_tail, the packets relayed, and the last chunk's counts
    of `out` columns (packets for the per-packet path, receives ended, sends failed).
    """
    sq_head_word, sq_tail_word, cq_head_word, cq_tail_word = index[0], index[1], index[2], \
        index[3]
    sq_entries = sqes.shape[0]
    status = BUDGET
    chunks = relayed = slows = ends = fails = 0
    while chunks < budget:
        head = np.int64(words[cq_head_word])
        ready = (np.int64(words[cq_tail_word]) - head) & 0xFFFFFFFF
        if not ready:
            # Completions the kernel holds back (task work not run yet) are posted on entry.
            _syscall(SYS_IO_URING_ENTER, fd, 0, 0, ENTER_GETEVENTS, 0, 0)
            ready = (np.int64(words[cq_tail_word]) - head) & 0xFFFFFFFF
            if not ready:
                status = IDLE
                break
        space = sq_entries - ((sq_tail - np.int64(words[sq_head_word])) & 0xFFFFFFFF)
        count = min(ready, chunk, space)  # A completion queues at most one send.
        if count <= 0:
            status = NO_ROOM
            break
        arrival = now if now == now else _monotonic(scratch)
        sends, recycled, slows, ends, fails = relay_chunk(
            cqes, head, count, ints, floats, blocked, stamp + chunks, packets, base, sqes,
            sq_tail, buffer_words, buffer_halves, buffer_tail, arrival, out)
        chunks += 1
        relayed += sends
        words[cq_head_word] = (head + count) & 0xFFFFFFFF
        sq_tail = (sq_tail + sends) & 0xFFFFFFFF
        words[sq_tail_word] = sq_tail
        pending += sends
        buffer_tail = (buffer_tail + recycled) & 0xFFFF
        if pending:
            submitted = _syscall(SYS_IO_URING_ENTER, fd, pending, 0, 0, 0, 0)
            if submitted < 0:
                status = REFUSED
                break
            pending -= submitted
            if pending:
                status = REFUSED
                break
        # The kernel took the sends (MSG_DONTWAIT: their data is copied): the buffers too.
        buffer_halves[0, 7] = buffer_tail  # The ring's tail, over the first entry's resv.
        if slows or ends or fails:
            status = PYTHON
            break
    return status, chunks, sq_tail, pending, buffer_tail, relayed, slows, ends, fails


_RELAY_CHUNK = ("UniTuple(int64, 5)(int64[:, ::1], int64, int64, int64[:, ::1], "
                "float64[:, ::1], int64[::1], int64, uint8[:, ::1], int64, int64[:, ::1], "
                "int64, uint64[:, ::1], uint16[:, ::1], int64, float64, int64[:, ::1])")


_RELAY_RING = ("UniTuple(int64, 9)(int64, uint32[::1], int64[::1], int64[:, ::1], "
               "int64[:, ::1], int64[:, ::1], float64[:, ::1], int64[::1], int64, "
               "uint8[:, ::1], int64, uint64[:, ::1], uint16[:, ::1], int64, int64, int64, "
               "int64, int64, float64, int64[::1], int64[:, ::1])")


def compile_kernels() -> None:
    """Compile (or load from numba's cache) the kernels for the types the reactor passes,
    and allow no other: a call with anything else fails rather than compiling mid-traffic."""
    for kernel, signature in ((relay_chunk, _RELAY_CHUNK), (relay_ring, _RELAY_RING)):
        if not kernel.signatures:
            kernel.compile(signature)
            kernel.disable_compile()
