"""Event delivery from the journal: polling (long-poll), WebSocket and server-sent events.

Every channel is a cursor over the journal, never a per-client queue: a
client reads `since(cursor)` and sleeps on `Journal.wait` when it is
caught up. A slow client simply lags; one whose cursor left the kept
history gets a resync signal (HTTP 410, a WebSocket `resync` message and
close code 4410, an SSE `resync` event) and rebuilds from the snapshots.
The journal delivers only committed events, so nothing a client saw can be
lost by a crash.

WebSocket fan-out has a fast path: a caught-up socket is "live", and each
committed batch is written to every live socket straight from the journal's
commit callback, as one pre-encoded frame per event shared by all sockets
(no compression, so the bytes are the same for everyone). That costs a
transport write per socket instead of a task wake-up and a `send_str` (a
transport with nothing buffered sends at once, one `send(2)`; what the
kernel does not take it keeps, in order). A socket whose transport buffer
backs up drops out of the live set and its own task catches it up through
`since()` with flow control.

Long polls waiting at the same cursor all wake on the same commit; their
response body is built once per batch and principal and shared.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, web

from cms.events import Event, Journal, ResyncRequired, iso_time
from cms.net.batch_write import BatchWriter
from cms.net.uring import UringError

from .auth import Principal
from .errors import ApiError
from .schema import SNAPSHOTS

__all__ = ["DEFAULT_HEARTBEAT", "EventDelivery", "RESYNC_CLOSE_CODE"]

log = logging.getLogger("cms.cti.events")

DEFAULT_HEARTBEAT = 15.0
RESYNC_CLOSE_CODE = 4410
PAGE = 500
LIVE_BUFFER_LIMIT = 256 * 1024  # bytes queued in a transport before a socket leaves the fast path

Visible = Callable[[Principal, Event], bool]


@dataclass(eq=False, slots=True)
class _LiveSocket:
    """A caught-up WebSocket or SSE stream served from the commit callback."""

    principal: Principal
    cursor: int
    transport: asyncio.Transport
    left: asyncio.Event = field(default_factory=asyncio.Event)  # set when it leaves the set
    kind: str = "ws"  # "ws", "sse", or "sse-chunked" (HTTP/1.1 chunked transfer coding)
    fd: int = -1  # the plain TCP socket under `transport`, for batched writes (-1: none)

    def __post_init__(self) -> None:
        # Writing to the descriptor directly bypasses the transport: only for plain TCP
        # (no TLS layer in between), and only while its own buffer is empty (see below).
        sock = self.transport.get_extra_info("socket")
        if sock is not None and self.transport.get_extra_info("sslcontext") is None:
            self.fd = sock.fileno()


class _LiveSet:
    """The live sockets, grouped by what they are sent: (principal, framing).

    Every socket of a group gets the same bytes, so a batch is encoded once per group
    and the group's sockets are written together. A group goes with its last socket.
    """

    def __init__(self) -> None:
        # (principal, kind) -> its sockets, in the order they went live (a dict: O(1) removal)
        self.groups: dict[tuple[Principal, str], dict[_LiveSocket, None]] = {}

    def __len__(self) -> int:
        return sum(map(len, self.groups.values()))

    def __bool__(self) -> bool:
        return bool(self.groups)

    def __iter__(self) -> Iterator[_LiveSocket]:
        return (live for group in list(self.groups.values()) for live in list(group))

    def add(self, live: _LiveSocket) -> None:
        self.groups.setdefault((live.principal, live.kind), {})[live] = None

    def discard(self, live: _LiveSocket) -> bool:
        """Take `live` out; whether it was in."""
        key = (live.principal, live.kind)
        group = self.groups.get(key)
        if group is None or live not in group:
            return False
        del group[live]
        if not group:
            del self.groups[key]
        return True


def ws_text_frame(payload: bytes) -> bytes:
    """A final, unmasked, uncompressed WebSocket text frame (server to client)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def _resync(exc: ResyncRequired) -> dict[str, object]:
    return {"first_seq": exc.first_seq, "last_seq": exc.last_seq, "snapshots": list(SNAPSHOTS)}


class EventDelivery:
    """The three delivery channels over one journal."""

    def __init__(self, journal: Journal, visible: Visible) -> None:
        self.journal = journal
        self.visible = visible
        self.closing = False
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        self._live = _LiveSet()
        # Long-poll bodies since the last commit: (cursor, limit, principal) -> (body, next).
        self._poll_bodies: dict[tuple[int, int, Principal | None], tuple[bytes | None, int]] = {}
        self.connected = 0  # push channels open now
        # Fan-out cost (commit callback): batches written, seconds spent, the longest one.
        self.fanout_batches = 0
        self.fanout_seconds = 0.0
        self.fanout_max = 0.0
        self.fanout_cpu_seconds = 0.0
        self.fallbacks = 0  # times a live channel left the fast path (slow, closed, or behind)
        # One io_uring submission for a batch's writes, where the kernel offers it.
        self._batch: BatchWriter | None = BatchWriter() if BatchWriter.available() else None
        self.batched_writes = 0  # socket writes that went out in one submission
        journal.subscribe(self._committed)

    def start_at(self, after: int | None) -> int:
        """The cursor to start from: `after`, or the newest event when absent."""
        return self.journal.head if after is None else after

    def _page(self, principal: Principal, cursor: int, limit: int) -> tuple[list[Event], int]:
        """The visible events after `cursor` (one read), and the cursor past what was read."""
        events = self.journal.since(cursor, limit)
        if not events:
            return [], cursor
        if principal.sees_all:
            return events, events[-1].seq
        return [e for e in events if self.visible(principal, e)], events[-1].seq

    # -- polling

    async def poll(self, principal: Principal, after: int | None, wait: float,
                   limit: int) -> web.Response:
        """`{"events": [...], "next": seq}`; waits up to `wait` s for a first visible event."""
        cursor = self.start_at(after)
        deadline = time.monotonic() + wait
        try:
            while True:
                body, cursor = self._poll_page(principal, cursor, limit)
                if body is not None or self.closing:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if self.journal.last_seq <= cursor:
                    await self.journal.wait(cursor, remaining)
        except ResyncRequired as exc:
            raise ApiError(410, "resync_required", str(exc), resync=_resync(exc)) from None
        if body is None:
            body = b'{"events":[],"next":%d}' % cursor
        return web.Response(body=body, content_type="application/json", charset="utf-8")

    def _poll_page(self, principal: Principal, cursor: int,
                   limit: int) -> tuple[bytes | None, int]:
        """The response body for events after `cursor` (None: none visible) and the next cursor.

        Every long poll waiting at the same cursor wakes on the same commit: the
        body is built once per batch for all of them that see the same events.
        """
        journal = self.journal
        key = (cursor, limit, None if principal.sees_all else principal)
        cached = self._poll_bodies.get(key)
        if cached is not None:
            journal.check_position(cursor)  # (pruning does not change last_seq)
            return cached
        events, after = self._page(principal, cursor, limit)
        body = None
        if events:
            body = ('{"events":[' + ",".join(e.json for e in events)
                    + f'],"next":{after}}}').encode()
        if after != cursor:
            self._poll_bodies[key] = (body, after)
        return body, after

    # -- WebSocket

    async def websocket(self, request: web.Request, principal: Principal, after: int | None,
                        heartbeat: float) -> web.WebSocketResponse:
        """Push each event as one text message; heartbeats while idle."""
        # No permessage-deflate: every socket gets the same frame bytes (see the fast path).
        ws = web.WebSocketResponse(max_msg_size=64 * 1024, compress=False)
        if not ws.can_prepare(request).ok:
            raise ApiError(426, "upgrade_required", "this endpoint speaks WebSocket",
                           {"Upgrade": "websocket"})
        cursor = self.start_at(after)
        await ws.prepare(request)
        self._sockets.add(ws)
        self.connected += 1
        pump = asyncio.create_task(
            self._pump_ws(ws, request.transport, principal, cursor, heartbeat))
        try:
            async for _message in ws:
                pass  # nothing is expected from the client; pings are answered by aiohttp
        finally:
            self.connected -= 1
            pump.cancel()
            try:
                await pump
            except (asyncio.CancelledError, Exception):
                pass
        return ws

    async def _pump_ws(self, ws: web.WebSocketResponse, transport: asyncio.Transport | None,
                       principal: Principal, cursor: int, heartbeat: float) -> None:
        journal = self.journal
        try:
            while not ws.closed:
                try:
                    events, cursor = self._page(principal, cursor, PAGE)
                except ResyncRequired as exc:
                    await ws.send_str(json.dumps({"type": "resync", "message": str(exc),
                                                  **_resync(exc)}))
                    await ws.close(code=RESYNC_CLOSE_CODE, message=b"resync required")
                    return
                for event in events:
                    await ws.send_str(event.json)
                if events or journal.last_seq > cursor:
                    continue
                if self.closing:
                    await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
                    return
                if transport is None or transport.is_closing():
                    return
                # Caught up: the commit callback writes from here on, until it lets go.
                live = _LiveSocket(principal, cursor, transport)
                self._live.add(live)
                try:
                    while not live.left.is_set() and not self.closing and not ws.closed:
                        try:
                            async with asyncio.timeout(heartbeat):
                                await live.left.wait()
                        except TimeoutError:
                            await ws.send_str(_heartbeat(live.cursor))
                finally:
                    self._live.discard(live)
                    cursor = live.cursor
        except (ConnectionError, RuntimeError):
            return  # the client went away mid-send

    def _committed(self, events: Sequence[Event]) -> None:
        """A batch is committed (the journal's callback, before any waiter runs)."""
        self._poll_bodies.clear()  # built for the batch before
        if self._live:
            self._fan_out(events)

    def _fan_out(self, events: Sequence[Event]) -> None:
        """Write a committed batch to every live channel."""
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            self._write_live(events)
        finally:
            took = time.perf_counter() - started
            self.fanout_batches += 1
            self.fanout_seconds += took
            # CPU of the loop thread (syscalls included): the cost without other processes.
            self.fanout_cpu_seconds += time.thread_time() - cpu
            self.fanout_max = max(self.fanout_max, took)

    def stats(self) -> dict[str, object]:
        """Push channels open and what the fan-out has cost so far."""
        batches = self.fanout_batches
        return {"connected": self.connected, "live": len(self._live), "fallbacks": self.fallbacks,
                "fanout_batches": batches, "fanout_total_ms": round(1000 * self.fanout_seconds, 3),
                "fanout_mean_ms": round(1000 * self.fanout_seconds / batches, 3) if batches else 0,
                "fanout_max_ms": round(1000 * self.fanout_max, 3),
                "fanout_cpu_total_ms": round(1000 * self.fanout_cpu_seconds, 3),
                "batched_writes": self.batched_writes}

    def _write_live(self, events: Sequence[Event]) -> None:
        # The batch's frames as one write per socket, encoded once per group (the same
        # bytes for every supervisor), so 500 sockets cost 500 writes, not 500 per event.
        frames: dict[int, bytes] = {}
        first, last = events[0].seq, events[-1].seq
        batch = self._batch
        fds: list[int] = []  # written together, straight to their sockets
        direct: list[_LiveSocket] = []
        payloads: list[bytes] = []
        for (principal, kind), group in list(self._live.groups.items()):
            data = self._encode_for(principal, kind, events, frames)
            for live in list(group):
                transport = live.transport
                if live.cursor != first - 1 or transport.is_closing():
                    self._let_go(live)
                    continue
                live.cursor = last
                if not data:
                    continue
                if batch is not None and live.fd >= 0 and not transport.get_write_buffer_size():
                    # Nothing queued in the transport: a direct write keeps the byte order.
                    fds.append(live.fd)
                    direct.append(live)
                    payloads.append(data)
                else:
                    self._write(live, data)
        if direct:
            assert batch is not None
            try:
                sent = batch.write(fds, payloads).tolist()
            except UringError:
                # The cursors moved already: these sockets must still get the batch.
                log.exception("batched fan-out failed; writing through the transports")
                self._batch = None
                batch.close()
                sent = [0] * len(direct)
            else:
                self.batched_writes += len(direct)
            for live, data, count in zip(direct, payloads, sent, strict=True):
                if count != len(data):
                    # Short, would block or failed: the transport queues the rest in order,
                    # or meets the error itself and closes.
                    self._write(live, data[count:] if count > 0 else data)

    def _write(self, live: _LiveSocket, data: bytes) -> None:
        transport = live.transport
        transport.write(data)  # sent at once when nothing is queued before it
        if transport.get_write_buffer_size() > LIVE_BUFFER_LIMIT:
            self._let_go(live)  # a slow reader: its task takes over with flow control

    def _encode_for(self, principal: Principal, kind: str, events: Sequence[Event],
                    frames: dict[int, bytes]) -> bytes:
        """The bytes of the batch that `principal` sees, in the framing `kind`."""
        shown = [e for e in events if principal.sees_all or self.visible(principal, e)]
        if not shown:
            return b""
        if kind == "ws":
            if not frames:
                frames.update((e.seq, ws_text_frame(e.json.encode())) for e in events)
            return b"".join(frames[e.seq] for e in shown)
        data = _sse_frames(shown)
        if kind == "sse-chunked":
            data = b"%x\r\n%b\r\n" % (len(data), data)
        return data

    def _let_go(self, live: _LiveSocket) -> None:
        if self._live.discard(live):
            self.fallbacks += 1
        live.left.set()

    # -- server-sent events

    async def sse(self, request: web.Request, principal: Principal, after: int | None,
                  heartbeat: float) -> web.StreamResponse:
        """`id: seq` + `data: event` per event; resumes after Last-Event-ID."""
        cursor = self.start_at(after)
        try:
            self.journal.check_position(cursor)
        except ResyncRequired as exc:
            raise ApiError(410, "resync_required", str(exc), resync=_resync(exc)) from None
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        })
        await response.prepare(request)
        self.connected += 1
        journal = self.journal
        try:
            await response.write(b"retry: 2000\n\n")
            while not self.closing:
                try:
                    events, cursor = self._page(principal, cursor, PAGE)
                except ResyncRequired as exc:
                    data = json.dumps({"type": "resync", "message": str(exc), **_resync(exc)})
                    await response.write(f"event: resync\ndata: {data}\n\n".encode())
                    break
                if events:
                    await response.write(_sse_frames(events))
                if events or journal.last_seq > cursor:
                    continue
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                # Caught up: the commit callback writes from here on (as for WebSockets),
                # framed as aiohttp frames this response's body.
                chunked = response.headers.get("Transfer-Encoding", "").lower() == "chunked"
                live = _LiveSocket(principal, cursor, transport,
                                   kind="sse-chunked" if chunked else "sse")
                self._live.add(live)
                try:
                    while not live.left.is_set() and not self.closing:
                        try:
                            async with asyncio.timeout(heartbeat):
                                await live.left.wait()
                        except TimeoutError:
                            await response.write(
                                f"event: heartbeat\ndata: {_heartbeat(live.cursor)}\n\n".encode())
                finally:
                    self._live.discard(live)
                    cursor = live.cursor
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            self.connected -= 1
        return response

    # -- shutdown

    async def shutdown(self) -> None:
        """End every push channel and long poll (the server is stopping)."""
        self.closing = True
        self.journal.wake()
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        for live in list(self._live):
            self._let_go(live)
        for ws in list(self._sockets):
            try:
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
            except Exception:
                log.debug("closing a WebSocket failed", exc_info=True)


def _heartbeat(cursor: int) -> str:
    return json.dumps({"type": "heartbeat", "time": iso_time(time.time()), "last_seq": cursor})


def _sse_frames(events: Iterable[Event]) -> bytes:
    return "".join(f"id: {e.seq}\ndata: {e.json}\n\n" for e in events).encode()
