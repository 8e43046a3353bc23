"""Load processes for the `cti` benchmark: event clients and a SIP caller, timed on shared clocks.

`python -m scripts.cti_load clients --kind ws|sse|poll|poll-1s --count N ...`
opens N CTI event channels (poll: long polls with wait=30; poll-1s: a plain
poll every second, each client at its own random phase) to a CMS and notes
when each one receives the `interaction.created` of each call;
`python -m scripts.cti_load caller ...` sends INVITEs into a queue at a
steady rate, each with its own From user, and notes when each left. Both
write JSON on exit (SIGTERM for the clients).

Two arrival times are kept for each (client, call):

- socket: the kernel's receive timestamp of the data on the client socket
  (SO_TIMESTAMPNS, read as a control message with each `recvmsg`). It is
  CLOCK_REALTIME, so the caller notes the INVITE's send time with
  `time.time()` as well. This is the arrival of record: it does not include
  the client process's own scheduling, which matters because 250 clients in
  one process become readable within a few ms and are served one after
  another. For TCP the timestamp is that of the last segment a read
  consumed; each event is one small write, read on its own.
- process: `time.monotonic()` (CLOCK_MONOTONIC, system-wide on Linux) right
  after the read returned, against the INVITE's monotonic send time: what
  the client program itself saw.

A client that gets data without a receive timestamp says so on stderr and
in its JSON (`untimed_reads`); the benchmark then fails rather than report
a figure it did not measure.

The clients are raw non-blocking sockets read from the event loop's reader
callbacks (`loop.add_reader`; asyncio's transports do not pass control
messages on), not aiohttp's client: both times are taken before any
parsing, so that 250 clients in one process measure the server's push and
not their own JSON decoding. The WebSocket and HTTP exchanges are the
standard ones (RFC 6455 upgrade, HTTP/1.1 keep-alive long polls).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import secrets
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

MARKER = b'"type":"interaction.created"'
CALLER = re.compile(rb'"type":"interaction.created".*?"caller":"([^"]*)"')
NEXT = re.compile(rb'"next":(\d+)\}\s*$')
# Plain polling (no wait) every so many seconds: what a CRM's browser does by default.
POLL_INTERVALS = {"poll-1s": 1.0}

# Linux values; Python 3.11's socket module does not name them.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SCM_TIMESTAMPNS = getattr(socket, "SCM_TIMESTAMPNS", SO_TIMESTAMPNS)
TIMESPEC = struct.Struct("@ll")  # struct timespec {time_t tv_sec; long tv_nsec} (SO_..._OLD)
ANCILLARY_SIZE = socket.CMSG_SPACE(TIMESPEC.size)
READ_SIZE = 65536


def now() -> float:
    """The process clock (CLOCK_MONOTONIC, system-wide on Linux)."""
    return time.monotonic()


def wall() -> float:
    """The socket clock: CLOCK_REALTIME, the clock of SO_TIMESTAMPNS."""
    return time.time()


# --------------------------------------------------------------------------- receive timestamps


def enable_receive_timestamps(sock: socket.socket) -> None:
    """Ask the kernel for each read's receive time (SO_TIMESTAMPNS, ns, CLOCK_REALTIME)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def kernel_time(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The SCM_TIMESTAMPNS of a `recvmsg`'s control messages, seconds; None without one."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            seconds, nanoseconds = TIMESPEC.unpack_from(data)
            if seconds or nanoseconds:  # (zero: the segment was never stamped)
                return int(seconds) + int(nanoseconds) / 1e9
    return None


# --------------------------------------------------------------------------- event clients


class EventClient:
    """One CTI event channel over a raw socket; keeps (times, bytes) of marked reads."""

    def __init__(self, kind: str, host: str, key: str) -> None:
        self.kind = kind
        # Interval polling: a plain poll every `interval` s, each client at its own phase.
        self.interval = POLL_INTERVALS.get(kind, 0.0)
        self.polling = kind == "poll" or self.interval > 0
        self.phase = random.uniform(0.0, self.interval)
        self.next_poll: asyncio.TimerHandle | None = None
        self.host = host
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.sock: socket.socket | None = None
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.head = b""  # until the response head is complete
        self.body = b""  # poll: the current response
        self.length = -1
        # (process time, the read's control messages: the socket time, data)
        self.hits: list[tuple[float, list[tuple[int, int, bytes]], bytes]] = []
        self.untimed = 0  # reads that came without a kernel receive timestamp
        self.closed = False

    async def open(self, address: tuple[str, int]) -> None:
        """Connect, start reading and send the channel's request."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        enable_receive_timestamps(sock)  # before anything arrives
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # (as asyncio's transports)
        try:
            await self.loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.loop.add_reader(sock.fileno(), self._readable)
        if self.kind == "ws":
            key = base64.b64encode(secrets.token_bytes(16)).decode()
            self._send("/api/v1/events/ws?heartbeat=120", "Upgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                       f"Sec-WebSocket-Key: {key}\r\n")
        elif self.kind == "sse":
            self._send("/api/v1/events/sse?heartbeat=120", "Accept: text/event-stream\r\n")
        else:
            self._poll(None)

    def _send(self, path: str, extra: str = "") -> None:
        if self.sock is None:
            return
        request = (f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nX-API-Key: {self.key}"
                   f"\r\n{extra}\r\n").encode()
        # A request is a few hundred bytes into an idle socket: a short send means trouble.
        try:
            sent = self.sock.send(request)
        except OSError as exc:
            self._lost(exc)
            return
        if sent != len(request):
            self._fail(b"short send of a request: %d of %d bytes" % (sent, len(request)))

    def _poll(self, after: int | None) -> None:
        query = ("limit=1000" if self.interval else "wait=30&limit=1000") + (
            f"&after={after}" if after is not None else "")
        self._send(f"/api/v1/events?{query}")

    def _poll_later(self, after: int) -> None:
        # The next tick of this client's own clock: phase + k * interval.
        now_ = self.loop.time()
        ticks = (now_ - self.phase) // self.interval + 1
        self.next_poll = self.loop.call_at(self.phase + ticks * self.interval, self._poll, after)

    def _readable(self) -> None:
        # The hot path of 250 sockets on one core: a bare recvmsg, and the control message
        # is decoded only when the results are written (a few us per read add up to ms).
        if self.sock is None:
            return
        try:
            data, ancillary, flags, _ = self.sock.recvmsg(READ_SIZE, ANCILLARY_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        at = now()  # first thing after the read: the process's arrival time
        if not data:
            self._lost(None)
            return
        if not ancillary or flags & socket.MSG_CTRUNC:
            self._untimed(data)
        if MARKER in data:
            self.hits.append((at, ancillary, data))
        if self.polling:
            self._poll_data(data)
        elif not self.ready.done():
            self.head += data
            if b"\r\n\r\n" in self.head:
                status = self.head.split(b" ", 2)[1]
                if status not in (b"101", b"200"):
                    self.ready.set_exception(RuntimeError(self.head[:300].decode("latin-1")))
                elif kernel_time(ancillary) is None:
                    self.ready.set_exception(RuntimeError(
                        "no SO_TIMESTAMPNS receive timestamp on a TCP read: the socket "
                        "arrival cannot be measured here"))
                else:
                    self.ready.set_result(None)

    def _untimed(self, data: bytes) -> None:
        self.untimed += 1
        if self.untimed == 1:
            print(f"cti_load: a {self.kind} read of {len(data)} bytes came without an "
                  "SO_TIMESTAMPNS receive timestamp", file=sys.stderr, flush=True)

    def _poll_data(self, data: bytes) -> None:
        self.body += data
        while True:
            if self.length < 0:
                end = self.body.find(b"\r\n\r\n")
                if end < 0:
                    return
                head, self.body = self.body[:end], self.body[end + 4:]
                if not head.startswith(b"HTTP/1.1 200"):
                    self._fail(head)
                    return
                match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                self.length = int(match.group(1)) if match else 0
            if len(self.body) < self.length:
                return
            page, self.body = self.body[:self.length], self.body[self.length:]
            self.length = -1
            found = NEXT.search(page, max(0, len(page) - 40))  # (it ends the body)
            if found is None:
                self._fail(page)
                return
            if not self.ready.done():
                self.ready.set_result(None)
            if self.interval:
                self._poll_later(int(found.group(1)))
            else:
                self._poll(int(found.group(1)))

    def _fail(self, what: bytes) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(what[:300].decode("latin-1")))
        self.close()

    def _lost(self, exc: Exception | None) -> None:
        self.close()
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed: {exc}"))

    def close(self) -> None:
        if self.next_poll is not None:
            self.next_poll.cancel()
        if self.sock is None:
            return
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.sock = None
        self.closed = True

    def arrivals(self) -> tuple[dict[str, float], dict[str, float]]:
        """caller -> when its interaction.created arrived (first sight): (process, socket)."""
        process: dict[str, float] = {}
        kernel: dict[str, float] = {}
        for at, ancillary, data in self.hits:
            kernel_at = kernel_time(ancillary)
            for match in CALLER.finditer(data):
                name = match.group(1).decode()
                if name not in process:
                    process[name] = at
                    if kernel_at is not None:
                        kernel[name] = kernel_at
        return process, kernel


async def run_clients(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    clients: list[EventClient] = []
    started = now()
    for first in range(0, args.count, 25):  # not all at once: the listen backlog is finite
        batch = []
        for _ in range(first, min(args.count, first + 25)):
            client = EventClient(args.kind, f"{args.host}:{args.port}", args.key)
            await client.open((args.host, args.port))
            batch.append(client)
        if args.kind != "poll":
            await asyncio.gather(*(c.ready for c in batch))
        clients += batch
    if args.kind == "poll":
        # A long poll answers only when an event comes: it is pending (ready) once sent.
        await asyncio.sleep(1.0)
    print(f"ready: {len(clients)} {args.kind} clients in {now() - started:.2f} s", flush=True)
    await stop.wait()
    pairs = [c.arrivals() for c in clients]
    result = {
        "kind": args.kind,
        "clients": len(clients),
        "closed_early": sum(c.closed for c in clients),
        "untimed_reads": sum(c.untimed for c in clients),
        "arrivals": [process for process, _ in pairs],  # CLOCK_MONOTONIC: the process's read
        "socket_arrivals": [kernel for _, kernel in pairs],  # CLOCK_REALTIME: the kernel's
    }
    Path(args.out).write_text(json.dumps(result))
    for client in clients:
        client.close()
    return 0


# --------------------------------------------------------------------------- SIP caller


class Caller(asyncio.DatagramProtocol):
    """Sends INVITEs (From user b000001, b000002, ...), ACKs answers, hangs up after `hold`."""

    def __init__(self, target: tuple[str, int], number: str, hold: float) -> None:
        self.target = target
        self.number = number
        self.hold = hold
        self.transport: asyncio.DatagramTransport | None = None
        self.local = ("127.0.0.1", 0)
        self.media_port = 0
        self.sent: dict[str, float] = {}  # caller -> INVITE sent at (CLOCK_MONOTONIC)
        self.sent_realtime: dict[str, float] = {}  # the same, CLOCK_REALTIME (socket arrivals)
        self.calls: dict[str, str] = {}  # Call-ID -> caller
        self.answered: set[str] = set()
        self.answered_at: dict[str, float] = {}  # caller -> its 200 OK arrived at
        self.failed: dict[str, int] = {}
        self.byes: set[str] = set()
        self.heard: set[str] = set()  # Call-IDs with any response (no more retransmissions)
        self.retransmissions = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = transport.get_extra_info("sockname")[:2]

    def invite(self, index: int) -> None:
        caller = f"b{index:06d}"
        call_id = f"{secrets.token_hex(8)}@bench"
        host, port = self.local
        sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {self.media_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
               "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
        target = f"{self.target[0]}:{self.target[1]}"
        message = (
            f"INVITE sip:{self.number}@{target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{caller}@{host}>;tag={secrets.token_hex(4)}\r\n"
            f"To: <sip:{self.number}@{target}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:{caller}@{host}:{port}>\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
        ).encode()
        self.calls[call_id] = caller
        assert self.transport is not None
        self.sent[caller] = now()
        self.sent_realtime[caller] = wall()  # SO_TIMESTAMPNS's clock; next to the send
        self.transport.sendto(message, self.target)
        asyncio.get_running_loop().call_later(0.5, self._retransmit, call_id, message, 0.5)

    def _retransmit(self, call_id: str, message: bytes, interval: float) -> None:
        """RFC 3261 timer A: resend the INVITE, doubling, until anything answers (7 tries)."""
        if call_id in self.heard or interval > 16 or self.transport is None:
            return
        self.retransmissions += 1
        self.transport.sendto(message, self.target)
        asyncio.get_running_loop().call_later(2 * interval, self._retransmit, call_id, message,
                                              2 * interval)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        head, _, _ = data.partition(b"\r\n\r\n")
        lines = head.decode("utf-8", "replace").split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact"}.get(
                name.strip().lower(), name.strip().lower())
            headers.setdefault(name, []).append(value.strip())
        first = lines[0]
        if first.startswith("SIP/2.0 "):
            self._response(int(first[8:11]), headers)
        else:
            self._request(first.split(" ", 1)[0], headers)

    def _response(self, status: int, headers: dict[str, list[str]]) -> None:
        call_id = headers.get("call-id", [""])[0]
        cseq = headers.get("cseq", [""])[0]
        caller = self.calls.get(call_id)
        self.heard.add(call_id)
        if caller is None or not cseq.endswith("INVITE") or status < 200:
            return
        to = headers.get("to", [""])[0]
        contact = headers.get("contact", [f"<sip:{self.number}@{self.target[0]}:"
                                          f"{self.target[1]}>"])[0]
        uri = contact[contact.find("<") + 1:contact.find(">")] if "<" in contact else contact
        if status >= 300:
            self.failed[caller] = status
            return  # (the CMS retransmits the final answer a few times; nobody minds)
        first = caller not in self.answered
        self.answered.add(caller)
        self.answered_at.setdefault(caller, now())
        ack = self._in_dialog("ACK", 1, uri, caller, call_id, headers, to)
        assert self.transport is not None
        self.transport.sendto(ack, self.target)
        if first:
            asyncio.get_running_loop().call_later(
                self.hold, lambda: self._bye(uri, caller, call_id, headers, to))

    def _in_dialog(self, method: str, cseq: int, uri: str, caller: str, call_id: str,
                   headers: dict[str, list[str]], to: str) -> bytes:
        host, port = self.local
        return (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: {headers.get('from', [''])[0]}\r\nTo: {to}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    def _bye(self, uri: str, caller: str, call_id: str, headers: dict[str, list[str]],
             to: str) -> None:
        if call_id in self.byes or self.transport is None:
            return
        self.byes.add(call_id)
        self.transport.sendto(self._in_dialog("BYE", 2, uri, caller, call_id, headers, to),
                              self.target)

    def _request(self, method: str, headers: dict[str, list[str]]) -> None:
        if method == "ACK":
            return
        if method == "BYE":
            self.byes.add(headers.get("call-id", [""])[0])
        lines = ["SIP/2.0 200 OK"]
        for name in ("via", "from", "to", "call-id", "cseq"):
            lines += [f"{name.title()}: {value}" for value in headers.get(name, [])]
        assert self.transport is not None
        self.transport.sendto(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode(),
                              self.target)


class _Discard(asyncio.DatagramProtocol):
    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        pass


async def run_caller(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    host, _, port = args.target.rpartition(":")
    caller = Caller((host, int(port)), args.number, args.hold)
    media, _ = await loop.create_datagram_endpoint(_Discard, local_addr=("127.0.0.1", 0))
    caller.media_port = media.get_extra_info("sockname")[1]
    transport, _ = await loop.create_datagram_endpoint(lambda: caller,
                                                       local_addr=("127.0.0.1", 0))
    calls = max(1, round(args.rate * args.seconds))
    offset0 = wall() - now()  # REALTIME - MONOTONIC: moves only if the wall clock is adjusted
    started = loop.time()
    for index in range(calls):
        delay = started + index / args.rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        caller.invite(args.first + index)
    await asyncio.sleep(args.hold + 1.5)
    Path(args.out).write_text(json.dumps({
        "sent": caller.sent, "sent_realtime": caller.sent_realtime,
        "realtime_offset_change_us": 1e6 * (wall() - now() - offset0),
        "answered": len(caller.answered), "failed": caller.failed,
        "answered_at": caller.answered_at, "retransmissions": caller.retransmissions,
        "rate": args.rate, "calls": calls,
    }))
    transport.close()
    media.close()
    print(f"caller: {calls} INVITEs, {len(caller.answered)} answered, "
          f"{len(caller.failed)} failed, {caller.retransmissions} INVITE retransmissions",
          flush=True)
    return 0


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.cti_load",
                                     description="Load processes of the cti benchmark.")
    sub = parser.add_subparsers(dest="mode", required=True)
    clients = sub.add_parser("clients", help="N event channels; JSON arrivals on SIGTERM")
    clients.add_argument("--kind", choices=("ws", "sse", "poll", *POLL_INTERVALS),
                         required=True)
    clients.add_argument("--count", type=int, default=250)
    clients.add_argument("--host", default="127.0.0.1")
    clients.add_argument("--port", type=int, required=True, help="the CMS's HTTP port")
    clients.add_argument("--key", required=True, help="an API key of the CMS ([cms] api_keys)")
    clients.add_argument("--out", required=True)
    caller = sub.add_parser("caller", help="INVITEs into a queue at a steady rate")
    caller.add_argument("--target", required=True, help="the CMS's SIP HOST:PORT")
    caller.add_argument("--number", default="600")
    caller.add_argument("--rate", type=float, default=20.0)
    caller.add_argument("--seconds", type=float, default=10.0)
    caller.add_argument("--hold", type=float, default=1.0, help="seconds before the BYE")
    caller.add_argument("--first", type=int, default=1, help="number of the first caller")
    caller.add_argument("--out", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runner = run_clients if args.mode == "clients" else run_caller
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as loop_runner:
        return loop_runner.run(runner(args))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
