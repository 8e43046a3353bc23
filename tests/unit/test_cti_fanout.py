"""The raw fan-out writer: every socket gets its bytes whole and in order, or is reported."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from cms.cti.fanout import RawWriter, write_each


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made = [socket.socketpair() for _ in range(12)]
    for ours, _theirs in made:
        ours.setblocking(False)
    yield made
    for ours, theirs in made:
        ours.close()
        theirs.close()


def read_all(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_socket_gets_its_own_batches_whole_and_in_order(
        pairs: list[tuple[socket.socket, socket.socket]], threads: int) -> None:
    writer = RawWriter(threads, min_share=1)
    try:
        for batch in range(20):
            items = [(ours.fileno(), f"[{n}:{batch}]".encode() * 50)
                     for n, (ours, _) in enumerate(pairs)]
            assert writer.write(items) == []
        for n, (_, theirs) in enumerate(pairs):
            expected = b"".join(f"[{n}:{batch}]".encode() * 50 for batch in range(20))
            assert read_all(theirs, len(expected)) == expected
    finally:
        writer.close()


def test_a_full_socket_is_reported_with_what_it_took(
        pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    ours, theirs = pairs[0]
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = b"x" * 4_000_000  # more than the socket pair buffers
    short = write_each([(pairs[1][0].fileno(), b"ok"), (ours.fileno(), big)])
    assert len(short) == 1
    index, sent = short[0]
    assert index == 1 and 0 < sent < len(big)
    assert write_each([(ours.fileno(), b"more")]) == [(0, 0)]  # EAGAIN: nothing taken
    assert read_all(pairs[1][1], 2) == b"ok"
    assert len(theirs.recv(1 << 20)) > 0


def test_a_closed_peer_is_reported_as_failed(
        pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    writer = RawWriter(2, min_share=1)
    try:
        pairs[5][1].close()
        items = [(ours.fileno(), b"event") for ours, _ in pairs]
        assert writer.write(items) == [(5, -1)]
    finally:
        writer.close()


def test_after_close_the_writer_still_writes_everything_itself(
        pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    writer = RawWriter(3, min_share=1)
    writer.close()
    assert writer.write([(ours.fileno(), b"late") for ours, _ in pairs]) == []
    for _, theirs in pairs:
        assert read_all(theirs, 4) == b"late"
