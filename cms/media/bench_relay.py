"""Relay benchmark: N bridged G.711 calls on loopback; CPU µs per relayed packet, and loss.

The relay runs in a child process (uvloop if installed) with two legs per call, each on its
own socket. This process plays every phone from one socket: each stream sends 50 packets/s,
with the streams' phases spread over the 20 ms frame, and counts what comes back. On Linux
the relay is pinned to CPU 0 and the generator to CPU 1, so the figure is the relay's own.

Modes, run interleaved so they share the machine's noise:
  default        MediaService as the B2BUA uses it (one epoll set, peer checked in Python)
  kernel-filter  each leg's socket connect()ed to its peer: the kernel drops strangers
  no-epoll       one event-loop reader per socket, each read until empty
  transcode      default, with one leg of each call PCMA (payload translated per packet)
  baseline       not this package: the least a Python relay can do (recvfrom_into, rewrite
                 SSRC/seq/ts with pack_into, sendto), for comparison

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
from .relay import Leg, bridge
from .service import MediaService

PACKET_SIZE = 172  # 12-byte header + 160 bytes of G.711: 20 ms.
PHASES = 10  # The generator sends a tenth of the streams every 2 ms.
MODES = ("default", "kernel-filter", "no-epoll", "transcode", "baseline")
_HEADER = struct.Struct("!BBHII")


@dataclass(frozen=True, slots=True)
class BenchResult:
    """One run: relay CPU per relayed packet, rates and loss."""

    mode: str
    calls: int
    seconds: float
    cpu_us_per_packet: float
    user_us_per_packet: float
    system_us_per_packet: float
    packets_in_per_second: float
    sent: int  # By the phones.
    relayed: int  # Sent on by the relay (whole run).
    received: int  # Back at the phones.
    loss: float  # Packets the phones sent that the relay did not send on.
    generator_drops: int  # Relayed but dropped by the generator's own socket (not the relay's).
    busy: float  # Relay CPU time / wall time in the window: near 1.0 means it was saturated.

    def line(self) -> str:
        """A one-line summary."""
        return (f"{self.mode:13s} calls={self.calls:5d}  in={self.packets_in_per_second:7.0f}"
                f" pkt/s  cpu={self.cpu_us_per_packet:5.2f} µs/pkt (user "
                f"{self.user_us_per_packet:5.2f} + sys {self.system_us_per_packet:5.2f})  "
                f"loss={100 * self.loss:.3f}%  busy={100 * self.busy:.0f}%  "
                f"generator drops={self.generator_drops}")


def _relay_process(conn: Connection, calls: int, peer: tuple[str, int], mode: str) -> None:
    _pin(0)
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    main = _baseline_main if mode == "baseline" else _relay_main
    asyncio.run(main(conn, calls, peer, mode))


async def _relay_main(conn: Connection, calls: int, peer: tuple[str, int], mode: str) -> None:
    service = MediaService("127.0.0.1", (0, 0), kernel_filter=mode == "kernel-filter",
                           epoll=mode != "no-epoll")
    service.start()
    legs: list[Leg] = []
    for _ in range(calls):
        a, b = service.open_leg(), service.open_leg()
        a.configure(MediaFormat(codec=PCMU), peer)
        b.configure(MediaFormat(codec=PCMA if mode == "transcode" else PCMU), peer)
        bridge(a, b)
        legs += [a, b]
    assert all(leg.format is not None for leg in legs)
    conn.send([(leg.local_address[1], leg.format.payload_type)  # type: ignore[union-attr]
               for leg in legs])

    def counters() -> tuple[int, int]:
        return (sum(leg.endpoint.received for leg in legs),
                sum(leg.endpoint.sent for leg in legs))

    await _serve_commands(conn, counters)
    service.close()


async def _baseline_main(conn: Connection, calls: int, peer: tuple[str, int],
                         mode: str) -> None:
    loop = asyncio.get_running_loop()
    rewrite = struct.Struct("!HII")
    socks = []
    for _ in range(2 * calls):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        socks.append(sock)
    counts = [0, 0]

    def relay(sock: socket.socket, out: socket.socket, ssrc: int) -> None:
        buf = bytearray(2048)
        view = memoryview(buf)

        def readable() -> None:
            while True:
                try:
                    length, source = sock.recvfrom_into(buf)
                except BlockingIOError:
                    return
                if source != peer:
                    continue
                counts[0] += 1
                seq, ts, _ = rewrite.unpack_from(buf, 2)
                rewrite.pack_into(buf, 2, (seq + 7) & 0xFFFF, (ts + 99) & 0xFFFFFFFF, ssrc)
                out.sendto(view[:length], peer)
                counts[1] += 1

        loop.add_reader(sock.fileno(), readable)

    for index in range(0, len(socks), 2):
        relay(socks[index], socks[index + 1], index)
        relay(socks[index + 1], socks[index], index + 1)
    conn.send([(sock.getsockname()[1], 0) for sock in socks])
    await _serve_commands(conn, lambda: (counts[0], counts[1]))
    for sock in socks:
        loop.remove_reader(sock.fileno())
        sock.close()


async def _serve_commands(conn: Connection, counters: object) -> None:
    """Answer "mark" and "stop" with CPU times and (received, sent) counters."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    marks: list[tuple[float, float, int, int, float]] = []

    def on_command() -> None:
        command = conn.recv()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        received, sent = counters()  # type: ignore[operator]
        marks.append((usage.ru_utime, usage.ru_stime, received, sent, time.monotonic()))
        if command == "stop":
            conn.send(marks)
            done.set_result(None)

    loop.add_reader(conn.fileno(), on_command)
    await done
    loop.remove_reader(conn.fileno())


def run(calls: int, seconds: float = 10.0, warmup: float = 2.0,
        mode: str = "default") -> BenchResult:
    """Run one measurement of `calls` bridged calls for `seconds` after `warmup`."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_relay_process, daemon=True,
                              args=(child, calls, sock.getsockname(), mode))
    process.start()
    try:
        legs: list[tuple[int, int]] = parent.recv()
        _pin(1)
        return _generate(sock, parent, legs, calls, seconds, warmup, mode)
    finally:
        process.join(5)
        if process.is_alive():
            process.kill()
        sock.close()


def _generate(sock: socket.socket, control: Connection, legs: list[tuple[int, int]],
              calls: int, seconds: float, warmup: float, mode: str) -> BenchResult:
    streams = []
    for index, (port, payload_type) in enumerate(legs):
        packet = bytearray(PACKET_SIZE)
        _HEADER.pack_into(packet, 0, 0x80, payload_type, 0, 0, 0x10000 + index)
        packet[12:] = b"\xd5" * 160
        streams.append((("127.0.0.1", port), packet))
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
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        received += _drain(sock, buf)
        time.sleep(0.01)
    control.send("stop")
    marks = control.recv()
    (user0, sys0, _, sent0, time0), (user1, sys1, _, relayed, time1) = marks
    window = max(1, relayed - sent0)
    return BenchResult(
        mode=mode, calls=calls, seconds=seconds,
        cpu_us_per_packet=1e6 * (user1 - user0 + sys1 - sys0) / window,
        user_us_per_packet=1e6 * (user1 - user0) / window,
        system_us_per_packet=1e6 * (sys1 - sys0) / window,
        packets_in_per_second=window / seconds, sent=sent, relayed=relayed,
        received=received, loss=max(0.0, 1 - relayed / sent) if sent else 0.0,
        generator_drops=relayed - received,
        busy=(user1 - user0 + sys1 - sys0) / max(1e-9, time1 - time0))


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
    """Command line: run each call count and mode `repeat` times, print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 300, 500])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["default"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    for calls in args.calls:
        results: dict[str, list[BenchResult]] = {mode: [] for mode in args.modes}
        for _ in range(args.repeat):
            for mode in args.modes:
                result = run(calls, args.seconds, args.warmup, mode)
                print("  " + result.line(), flush=True)
                results[mode].append(result)
        for mode, runs in results.items():
            cpu = statistics.median(r.cpu_us_per_packet for r in runs)
            loss = statistics.median(r.loss for r in runs)
            print(f"{mode:13s} calls={calls}: median {cpu:.2f} µs/pkt, median loss "
                  f"{100 * loss:.3f}%", flush=True)


if __name__ == "__main__":
    main()
