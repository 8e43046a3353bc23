"""The kernel's floor under a CTI fan-out: one payload to N loopback TCP clients.

On loopback the receiver's side of TCP (its stack, the wake-up of its reader) runs in
the sender's context, so whatever writes to N local sockets pays for N deliveries on its
own core. This measures that cost with nothing of the CMS in it: N connected sockets,
read by 2 processes on the load core, get one `--bytes` payload each, all in one
io_uring submission (`cms.net.batch_write`, as the CMS's fan-out does) from a process
on the CMS's core. A CTI event cannot reach the last of N such clients sooner than this
after its commit, whatever the server does before.

    python -m scripts.tcp_floor --clients 500
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import sys
import time
from dataclasses import dataclass

from cms.net.batch_write import BatchWriter

from .bench_common import cores

READER_PROCESSES = 2


@dataclass(frozen=True)
class Floor:
    """Milliseconds to send one payload to every client, over the rounds."""

    clients: int
    payload: int
    p50_ms: float
    p90_ms: float
    rounds: int

    def line(self) -> str:
        return (f"kernel floor: {self.clients} loopback TCP sends of {self.payload} bytes in one "
                f"io_uring submission, readers on the load core: p50 {self.p50_ms:.2f} ms, "
                f"p90 {self.p90_ms:.2f} ms ({1000 * self.p50_ms / self.clients:.1f} us per "
                f"client; median of {self.rounds} rounds)")


def _read_until_closed(port: int, count: int, core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    sockets = {}
    poller = select.epoll()
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        sockets[sock.fileno()] = sock
        poller.register(sock.fileno(), select.EPOLLIN)
    while sockets:
        for fd, _ in poller.poll():
            try:
                if not sockets[fd].recv(65536):
                    poller.unregister(fd)
                    sockets.pop(fd).close()
            except BlockingIOError:
                pass


def measure(clients: int = 500, payload: int = 600, rounds: int = 40) -> Floor:
    """Send `payload` bytes to `clients` local readers `rounds` times (see module docstring)."""
    sender_core, reader_core = cores()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(clients)
    port = listener.getsockname()[1]
    children = []
    for index in range(READER_PROCESSES):
        share = clients // READER_PROCESSES + (index < clients % READER_PROCESSES)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                listener.close()
                _read_until_closed(port, share, reader_core)
            except BaseException:
                code = 1
            os._exit(code)
        children.append(pid)
    accepted = []
    writer = None
    affinity = os.sched_getaffinity(0)
    try:
        for _ in range(clients):
            sock, _address = listener.accept()
            sock.setblocking(False)
            accepted.append(sock)
        if sender_core is not None:
            os.sched_setaffinity(0, {sender_core})
        writer = BatchWriter()
        fds = [sock.fileno() for sock in accepted]
        data = [b"x" * payload] * clients
        times = []
        for _ in range(rounds + 3):
            time.sleep(0.02)  # let the readers drain and sleep, as between events
            started = time.perf_counter()
            sent = writer.write(fds, data)
            times.append(time.perf_counter() - started)
            if (sent != payload).any():
                raise RuntimeError(f"{int((sent != payload).sum())} sends came back short")
        times = sorted(times[3:])  # the first rounds warm up the sockets
    finally:
        os.sched_setaffinity(0, affinity)
        if writer is not None:
            writer.close()
        for sock in accepted:
            sock.close()
        listener.close()
        for pid in children:
            os.waitpid(pid, 0)
    return Floor(clients, payload, 1000 * statistics.median(times),
                 1000 * times[int(0.9 * len(times))], rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.tcp_floor",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--bytes", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args(argv)
    if not BatchWriter.available():
        print("io_uring is not available here", file=sys.stderr)
        return 1
    print(measure(args.clients, args.bytes, args.rounds).line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
