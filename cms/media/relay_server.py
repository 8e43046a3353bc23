"""A relay-only process for benchmarks: calls allocated through MediaService on request.

Reads one JSON command per line on stdin, answers one JSON line on stdout:
  {"open": [[a_host, a_port, b_host, b_port], ...]}  -> {"routes": [[host, port, host, port]]}
      per call two bridged PCMU legs, leg A toward the caller's address and leg B toward
      the callee's; the reply says where A sends (leg A's port) and where B sends (leg B's)
  {"close": true}  -> {"closed": n, "relayed": packets the legs sent}
  {"quit": true}   -> exits
Options: --kernel-filter (connect() each leg's socket to its peer), --transcode (leg B in
PCMA), --no-epoll (one event-loop reader per socket), --no-uring (the epoll reactor even where
io_uring works), --report (reactor counters to stderr on "close").

    python -m cms.media.relay_server --host 127.0.0.1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from .formats import PCMA, PCMU, MediaFormat
from .relay import Leg, bridge
from .service import MediaService, raise_open_file_limit


class RelayServer:
    """The MediaService of a B2BUA without the SIP: bridged leg pairs on command."""

    def __init__(self, service: MediaService, transcode: bool = False,
                 report: bool = False) -> None:
        self.service = service
        self.transcode = transcode
        self.report = report
        self.legs: list[Leg] = []
        self._counted: dict[str, int] = {}

    def _report(self, relayed: int) -> None:
        # The reactor's counters since the last report, to stderr (not the command channel).
        reactor = self.service.reactor
        counts = {"relayed": relayed}
        for name in ("wakeups", "batches", "relayed_fast", "relayed_slow", "rearmed",
                     "enobufs"):
            value = getattr(reactor, name, 0)
            counts[name] = value - self._counted.get(name, 0)
            self._counted[name] = value
        ring = getattr(reactor, "ring", None)
        if ring is not None:
            counts["overflowed"] = ring.overflowed
        print(f"relay_server: {json.dumps(counts)}", file=sys.stderr, flush=True)

    def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        """One command's reply (see the module docstring)."""
        if "open" in command:
            routes = []
            for a_host, a_port, b_host, b_port in command["open"]:
                a, b = self.service.open_leg("a"), self.service.open_leg("b")
                a.configure(MediaFormat(codec=PCMU), (a_host, int(a_port)))
                b.configure(MediaFormat(codec=PCMA if self.transcode else PCMU),
                            (b_host, int(b_port)))
                bridge(a, b)
                self.legs += [a, b]
                routes.append([*a.local_address, *b.local_address])
            return {"routes": routes}
        if "close" in command:
            relayed = sum(leg.endpoint.sent for leg in self.legs)
            if self.report:
                self._report(relayed)
            for leg in self.legs:
                self.service.close_leg(leg)
            closed, self.legs = len(self.legs) // 2, []
            return {"closed": closed, "relayed": relayed}
        return {"error": f"unknown command {sorted(command)}"}


async def serve(args: argparse.Namespace) -> None:
    """Answer commands from stdin until "quit" or end of input."""
    service = MediaService(args.host, (0, 0), kernel_filter=args.kernel_filter,
                           epoll=not args.no_epoll, uring=not args.no_uring)
    service.start()
    server = RelayServer(service, transcode=args.transcode, report=args.report)
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def on_line() -> None:
        line = sys.stdin.readline()
        if not line or json.loads(line).get("quit"):
            if not done.done():
                done.set_result(None)
            return
        reply = server.handle(json.loads(line))
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()

    loop.add_reader(sys.stdin.fileno(), on_line)
    print(json.dumps({"ready": True}), flush=True)
    await done
    loop.remove_reader(sys.stdin.fileno())
    service.close()


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description="relay-only process for benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--no-epoll", action="store_true")
    parser.add_argument("--no-uring", action="store_true")
    parser.add_argument("--report", action="store_true",
                        help="print the reactor's wake-ups and batches to stderr on close")
    parser.add_argument("--kernel-filter", action="store_true")
    parser.add_argument("--transcode", action="store_true")
    args = parser.parse_args(argv)
    raise_open_file_limit()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
