"""In-process A/B of the relay's cost per packet: this checkout's media layer beside another's.

On a shared machine two relay processes measured one after the other meet different
neighbours; here both media layers run in one process, pinned to one core, and take turns
round by round, so a busy moment costs both alike. Each side opens `calls` bridged leg pairs
(MediaService: epoll reactor, companion sockets) toward a few phone sockets; per round every
leg gets `per` packets queued on loopback, then the side's reactor drains them all, and
its CPU time (process_time) divided by the packets relayed is that round's figure. The
median of the per-round ratios (new/base), over a run with each side built first, is the
result; below 1 is cheaper.

The other checkout's `cms/media` is imported under another package name (it imports only
relatively on this path), so it needs no install of its own.

    taskset -c 1 python -m cms.media.bench_relay_ab --base ../base --calls 800 --rounds 50
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import socket
import statistics
import struct
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from .service import raise_open_file_limit

PAYLOAD = bytes([0xFF]) * 160
PHONES_PER_SIDE = 4
WARMUP_ROUNDS = 4


def load_media(checkout: Path, name: str = "media_ab_base") -> ModuleType:
    """Another checkout's cms/media package, imported as `name`."""
    root = checkout / "cms" / "media"
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    if spec is None or spec.loader is None:
        raise ImportError(f"no cms/media package under {checkout}")
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    spec.loader.exec_module(package)
    return package


class Side:
    """One media layer's legs, bridged in pairs, and the phones that feed them."""

    def __init__(self, package: str, calls: int, transcode: bool) -> None:
        service = importlib.import_module(package + ".service")
        formats = importlib.import_module(package + ".formats")
        relay = importlib.import_module(package + ".relay")
        self.service: Any = service.MediaService("127.0.0.1", (0, 0))
        self.service.start()
        self.phones = [_phone() for _ in range(2 * PHONES_PER_SIDE)]
        self.targets: list[tuple[socket.socket, tuple[str, int], int]] = []
        for call in range(calls):
            a_phone = self.phones[call % PHONES_PER_SIDE]
            b_phone = self.phones[PHONES_PER_SIDE + call % PHONES_PER_SIDE]
            a, b = self.service.open_leg("a"), self.service.open_leg("b")
            a.configure(formats.MediaFormat(codec=formats.PCMU), a_phone.getsockname())
            b_codec = formats.PCMA if transcode else formats.PCMU
            b.configure(formats.MediaFormat(codec=b_codec), b_phone.getsockname())
            relay.bridge(a, b)
            self.targets += [(a_phone, a.local_address, 2 * call + 1),
                             (b_phone, b.local_address, 2 * call + 2)]

    def round(self, first_seq: int, per: int) -> tuple[float, int]:
        """Queue `per` packets on every leg, drain them; (CPU seconds, packets relayed).

        The phones' sends are inside the measured window (they cost both sides the same):
        an io_uring reactor receives as task work that the kernel runs when this thread
        returns from a system call, so much of its receiving happens during those sends.
        """
        sent0 = self.relayed()
        cpu0 = time.process_time()
        for k in range(per):
            seq = first_seq + k
            for phone, address, ssrc in self.targets:
                header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF,
                                     ssrc)
                phone.sendto(header + PAYLOAD, address)
        reactor = self.service.reactor
        drain = getattr(reactor, "drain", None)  # An io_uring reactor's; epoll: the loop.
        while drain is None:
            reactor._ready()
            if not reactor._epoll.poll(0, 1):
                break
        if drain is not None:
            drain()
        cpu1 = time.process_time()
        relayed = self.relayed() - sent0
        for phone in self.phones:
            _drain(phone)
        return cpu1 - cpu0, relayed

    def relayed(self) -> int:
        """Packets the legs sent so far."""
        return sum(leg.endpoint.sent for leg in self.service.legs)

    def close(self) -> None:
        """Close legs and phones."""
        self.service.close()
        for phone in self.phones:
            phone.close()


def _phone() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


def _drain(sock: socket.socket) -> None:
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return


async def compare(base: str, calls: int, rounds: int, per: int, transcode: bool,
                  new_first: bool = False) -> dict[str, Any]:
    """Alternate the two sides for `rounds` rounds; medians and the per-round ratio.

    The side built second measured 2-3% cheaper in A/A runs (same code both sides), so
    `main` builds them in both orders and combines the two ratios.
    """
    packages = {"base": base, "new": __package__ or "cms.media"}
    built = ("new", "base") if new_first else ("base", "new")
    sides = {name: Side(packages[name], calls, transcode) for name in built}
    costs: dict[str, list[float]] = {"base": [], "new": []}
    ratios = []
    try:
        for index in range(rounds + WARMUP_ROUNDS):
            order = ("base", "new") if index % 2 == 0 else ("new", "base")
            this: dict[str, float] = {}
            for name in order:
                cpu, relayed = sides[name].round(index * per, per)
                this[name] = 1e6 * cpu / max(1, relayed)
            if index >= WARMUP_ROUNDS:
                for name, value in this.items():
                    costs[name].append(value)
                ratios.append(this["new"] / this["base"])
    finally:
        for side in sides.values():
            side.close()
    return {"calls": calls, "rounds": rounds, "per": per, "transcode": transcode,
            "base_us": statistics.median(costs["base"]),
            "new_us": statistics.median(costs["new"]),
            "ratio": statistics.median(ratios)}


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base", type=Path, required=True, help="the other checkout's root")
    parser.add_argument("--calls", type=int, default=800)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--per", type=int, default=1, help="packets per leg per round")
    parser.add_argument("--transcode", action="store_true", help="leg B in PCMA")
    args = parser.parse_args(argv)
    raise_open_file_limit()
    base = load_media(args.base.resolve()).__name__
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    ratios = []
    for new_first in (False, True):
        result = asyncio.run(compare(base, args.calls, args.rounds, args.per, args.transcode,
                                     new_first))
        ratios.append(result["ratio"])
        print(f"{result['calls']} calls x{result['per']}"
              f"{' transcoding' if args.transcode else ''}, {result['rounds']} rounds, "
              f"{'new' if new_first else 'base'} built first: base {result['base_us']:.3f} "
              f"us/packet, new {result['new_us']:.3f}; new/base median per-round ratio "
              f"{result['ratio']:.3f}", flush=True)
    print(f"new/base: {statistics.geometric_mean(ratios):.3f} (geometric mean of both orders)")


if __name__ == "__main__":
    main()
