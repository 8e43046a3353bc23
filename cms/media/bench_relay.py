"""Relay benchmark: N bridged G.711 calls on loopback; CPU µs per relayed packet, and loss.

The relay runs in a child process (uvloop if installed) with two legs per call, each on its
own socket. This process plays every phone from one socket: each stream sends 50 packets/s,
with the streams' phases spread over the 20 ms frame, and counts what comes back.

    python -m cms.media.bench_relay --calls 100 300 500 --seconds 10 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import socket
import statistics
import struct
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from .formats import PCMA, PCMU, MediaFormat
from .relay import bridge
from .service import MediaService

PACKET_SIZE = 172  # 12-byte header + 160 bytes of G.711: 20 ms.
PHASES = 10  # The generator sends a tenth of the streams every 2 ms.
_HEADER = struct.Struct("!BBHII")


@dataclass(frozen=True, slots=True)
class BenchResult:
    """One run: relay CPU per relayed packet, rates and loss."""

    calls: int
    seconds: float
    relayed: int
    cpu_us_per_packet: float
    user_us_per_packet: float
    system_us_per_packet: float
    packets_in_per_second: float
    sent: int
    received: int
    loss: float
    strangers: int

    def line(self) -> str:
        """A one-line summary."""
        return (f"calls={self.calls:5d}  in={self.packets_in_per_second:8.0f} pkt/s  "
                f"cpu={self.cpu_us_per_packet:5.2f} µs/pkt (user {self.user_us_per_packet:.2f}"
                f" + sys {self.system_us_per_packet:.2f})  loss={100 * self.loss:.3f}%"
                f"  (sent {self.sent}, back {self.received})")


def _relay_process(conn: Connection, calls: int, peer: tuple[str, int], transcode: bool,
                   kernel_filter: bool, epoll: bool) -> None:
    _pin(0)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_relay_main(conn, calls, peer, transcode, kernel_filter, epoll))


async def _relay_main(conn: Connection, calls: int, peer: tuple[str, int], transcode: bool,
                      kernel_filter: bool, epoll: bool) -> None:
    service = MediaService("127.0.0.1", (0, 0), kernel_filter=kernel_filter, epoll=epoll)
    service.start()
    legs = []
    for _ in range(calls):
        a, b = service.open_leg(), service.open_leg()
        a.configure(MediaFormat(codec=PCMU), peer)
        b.configure(MediaFormat(codec=PCMA if transcode else PCMU), peer)
        bridge(a, b)
        legs += [a, b]
    conn.send([leg.local_address[1] for leg in legs])
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    marks: list[tuple[float, float, int]] = []

    def on_command() -> None:
        command = conn.recv()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        relayed = sum(leg.endpoint.sent for leg in legs)
        marks.append((usage.ru_utime, usage.ru_stime, relayed))
        if command == "stop":
            strangers = sum(leg.endpoint.dropped_strangers for leg in legs)
            wakeups = service.reactor.wakeups if service.reactor is not None else -1
            print(f"    relay wakeups {wakeups}", flush=True)
            conn.send((marks, strangers))
            done.set_result(None)

    loop.add_reader(conn.fileno(), on_command)
    await done
    loop.remove_reader(conn.fileno())
    service.close()


def run(calls: int, seconds: float = 10.0, warmup: float = 2.0, transcode: bool = False,
        kernel_filter: bool = False, epoll: bool = True) -> BenchResult:
    """Run one measurement of `calls` bridged calls for `seconds` after `warmup`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_relay_process, daemon=True,
                              args=(child, calls, sock.getsockname(), transcode, kernel_filter,
                                    epoll))
    process.start()
    _pin(1)
    try:
        ports: list[int] = parent.recv()
        return _generate(sock, parent, ports, calls, seconds, warmup)
    finally:
        process.join(5)
        if process.is_alive():
            process.kill()
        sock.close()


def _generate(sock: socket.socket, control: Connection, ports: list[int], calls: int,
              seconds: float, warmup: float) -> BenchResult:
    streams = [(("127.0.0.1", port), bytearray(PACKET_SIZE)) for port in ports]
    for index, (_, packet) in enumerate(streams):
        _HEADER.pack_into(packet, 0, 0x80, 0, 0, 0, 0x10000 + index)
        packet[12:] = b"\xff" * 160  # μ-law (and A-law-ish) near-silence.
    groups = [streams[phase::PHASES] for phase in range(PHASES)]
    buf = bytearray(2048)
    sent = received = 0
    start = time.monotonic()
    mark_at, stop_at = start + warmup, start + warmup + seconds
    marked = False
    step = 0.020 / PHASES
    tick = 0
    while True:
        now = time.monotonic()
        if not marked and now >= mark_at:
            control.send("mark")
            marked = True
        if now >= stop_at:
            break
        due = start + tick * step
        if now < due:
            time.sleep(due - now)
        seq = tick // PHASES
        for address, packet in groups[tick % PHASES]:
            struct.pack_into("!HI", packet, 2, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF)
            sock.sendto(packet, address)
            sent += 1
        tick += 1
        received += _drain(sock, buf)
    control.send("stop")
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        received += _drain(sock, buf)
        time.sleep(0.01)
    marks, strangers = control.recv()
    (user0, sys0, relayed0), (user1, sys1, relayed1) = marks
    relayed = max(1, relayed1 - relayed0)
    return BenchResult(
        calls=calls, seconds=seconds, relayed=relayed,
        cpu_us_per_packet=1e6 * (user1 - user0 + sys1 - sys0) / relayed,
        user_us_per_packet=1e6 * (user1 - user0) / relayed,
        system_us_per_packet=1e6 * (sys1 - sys0) / relayed,
        packets_in_per_second=relayed / seconds, sent=sent, received=received,
        loss=max(0.0, 1 - received / sent) if sent else 0.0, strangers=strangers)


def _pin(cpu: int) -> None:
    # Relay and generator on different CPUs, so the relay's figure is its own (Linux only).
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


def _drain(sock: socket.socket, buf: bytearray) -> int:
    count = 0
    while True:
        try:
            sock.recv_into(buf)
        except BlockingIOError:
            return count
        count += 1


def main(argv: list[str] | None = None) -> None:
    """Command line: run each call count `repeat` times and print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 300, 500])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--transcode", action="store_true", help="one leg PCMA, one PCMU")
    parser.add_argument("--kernel-filter", action="store_true",
                        help="connect() each leg's socket to its peer")
    parser.add_argument("--no-epoll", action="store_true",
                        help="one event-loop reader per socket instead of one epoll set")
    args = parser.parse_args(argv)
    for calls in args.calls:
        results = []
        for _ in range(args.repeat):
            result = run(calls, args.seconds, args.warmup, args.transcode, args.kernel_filter,
                         not args.no_epoll)
            print("  " + result.line(), flush=True)
            results.append(result)
        cpu = statistics.median(r.cpu_us_per_packet for r in results)
        loss = statistics.median(r.loss for r in results)
        print(f"calls={calls}: median {cpu:.2f} µs/pkt, median loss {100 * loss:.3f}%",
              flush=True)


if __name__ == "__main__":
    main()
