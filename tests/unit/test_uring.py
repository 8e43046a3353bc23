"""cms.net.uring against real loopback sockets: batched sends and multishot receives."""

from __future__ import annotations

import ctypes
import gc
import os
import socket
from collections.abc import Iterator

import numpy as np
import pytest

from cms.net.uring import (
    CQE_F_BUFFER,
    CQE_F_MORE,
    MSG_DONTWAIT,
    OP_RECV,
    OP_SEND,
    RECV_MULTISHOT,
    SQE_BUFFER_SELECT,
    SQE_DTYPE,
    Ring,
)

pytestmark = pytest.mark.skipif(not Ring.available(), reason="no io_uring here")


@pytest.fixture
def ring() -> Iterator[Ring]:
    ring = Ring(256)
    yield ring
    ring.close()


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def test_one_submission_sends_a_datagram_from_each_socket(ring: Ring) -> None:
    receiver = udp_socket()
    senders = [udp_socket() for _ in range(40)]
    for sender in senders:
        sender.connect(receiver.getsockname())
    payload = ctypes.create_string_buffer(b"rtp!" * 43, 172)
    fds = np.array([s.fileno() for s in senders], dtype=np.int32)

    ring.prepare(OP_SEND, fds, ctypes.addressof(payload), 172, np.arange(40), count=40,
                 op_flags=MSG_DONTWAIT)
    assert ring.submit(wait=40) == 40

    done = ring.completions()
    assert sorted(done["user_data"].tolist()) == list(range(40))
    assert (done["res"] == 172).all()
    sources = set()
    for _ in range(40):
        data, source = receiver.recvfrom(2048)
        assert data == payload.raw
        sources.add(source)
    assert sources == {s.getsockname() for s in senders}
    assert ring.ready() == 0


def test_multishot_receives_fill_provided_buffers_and_keep_going(ring: Ring) -> None:
    buffers = ring.buffer_ring(3, 64, 256)
    receivers = [udp_socket() for _ in range(8)]
    fds = np.array([r.fileno() for r in receivers], dtype=np.int32)
    ring.prepare(OP_RECV, fds, 0, 0, np.arange(8) + 100, count=8, ioprio=RECV_MULTISHOT,
                 flags=SQE_BUFFER_SELECT, buf_group=3)
    ring.submit()
    sender = udp_socket()

    for round_ in range(20):  # 160 datagrams through 64 buffers: recycling must work
        for i, receiver in enumerate(receivers):
            sender.sendto(bytes([round_, i]) * 10, receiver.getsockname())
        ring.submit(wait=8)
        done = ring.completions()
        assert len(done) == 8
        assert (done["flags"] & CQE_F_BUFFER).all() and (done["flags"] & CQE_F_MORE).all()
        assert (done["res"] == 20).all()
        bids = (done["flags"] >> 16).astype(np.uint16)
        for user, bid in zip(done["user_data"].tolist(), bids.tolist(), strict=True):
            assert bytes(buffers.data[bid, :2]) == bytes([round_, user - 100])
        buffers.recycle(bids)


def test_prepare_makes_room_past_a_full_queue(ring: Ring) -> None:
    payload = ctypes.create_string_buffer(8)
    receiver = udp_socket()
    sender = udp_socket()
    sender.connect(receiver.getsockname())
    for _ in range(3):  # 3 x 200 entries through a 256-entry queue
        ring.prepare(OP_SEND, sender.fileno(), ctypes.addressof(payload), 8, 7, count=200,
                     op_flags=MSG_DONTWAIT)
        ring.submit(wait=200)
        assert len(ring.completions()) == 200
    assert ring.space() == ring.sq_entries


def test_pushed_entries_wrap_around_the_queue_and_flush_posts_held_back_completions(
        ring: Ring) -> None:
    buffers = ring.buffer_ring(5, 8, 256)
    receiver = udp_socket()
    sender = udp_socket()
    sender.connect(receiver.getsockname())
    ring.prepare(OP_RECV, receiver.fileno(), 0, 0, 1, count=1, ioprio=RECV_MULTISHOT,
                 flags=SQE_BUFFER_SELECT, buf_group=5)
    ring.submit()
    payload = ctypes.create_string_buffer(b"x" * 16, 16)
    template = np.zeros(200, dtype=SQE_DTYPE)
    template["opcode"] = OP_SEND
    template["op_flags"] = MSG_DONTWAIT
    template["fd"] = sender.fileno()
    template["addr"] = ctypes.addressof(payload)
    template["len"] = 16
    template["user_data"] = 2
    for _ in range(3):  # 3 x 200 through a 256-entry queue: two of them wrap
        ring.push(template)
        ring.submit()
        sends = 0
        while sends < 200:
            ring.flush()  # Runs the receives' task work too, posting their completions.
            done = ring.completions()
            sends += int((done["user_data"] == 2).sum())
            got = done[done["user_data"] == 1]
            buffers.recycle((got["flags"] >> 16).astype(np.int64))
    assert ring.pending == 0
    receiver.close()
    sender.close()


def test_a_ring_dropped_without_close_gives_its_descriptor_back() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        Ring(8)
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before


def test_dontwait_sends_have_completed_when_the_submission_returns(ring: Ring) -> None:
    # What lets the relay give a sent buffer back right after submitting (and skip the
    # completions of successful sends): MSG_DONTWAIT sends are issued inline, never queued.
    receivers = [udp_socket() for _ in range(8)]
    senders = [udp_socket() for _ in range(8)]
    for sender, receiver in zip(senders, receivers, strict=True):
        sender.connect(receiver.getsockname())
    payload = ctypes.create_string_buffer(b"r" * 172, 172)
    fds = np.array([s.fileno() for s in senders] * 25, dtype=np.int32)
    for _ in range(4):
        ring.prepare(OP_SEND, fds, ctypes.addressof(payload), 172, 9, count=len(fds),
                     op_flags=MSG_DONTWAIT)
        assert ring.submit() == len(fds)
        assert ring.ready() == len(fds)  # Every send's completion is already posted.
        done = ring.completions()
        assert (done["res"] == 172).all()
    for sock in receivers + senders:
        sock.close()
