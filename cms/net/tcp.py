"""TCP transport: Content-Length framing, connection reuse by peer address, idle close."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import cast

from cms.sip.errors import ParseError
from cms.sip.framing import KeepAlive, StreamFramer

log = logging.getLogger("cms.net.tcp")

Address = tuple[str, int]


class TcpConnection(asyncio.Protocol):
    """One TCP connection; complete messages go to the transport's handler."""

    def __init__(self, owner: TcpTransport) -> None:
        self._owner = owner
        self._framer = StreamFramer(owner.max_size)
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)
        self.last_active = time.monotonic()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, hence the cast.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        self._owner._register(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        try:
            items = self._framer.feed(data)
        except ParseError as exc:
            log.warning("tcp %s:%s: framing lost (%s); closing", *self.peer, exc)
            self._owner.dropped += 1
            self.close()
            return
        for item in items:
            if isinstance(item, KeepAlive):
                self.send(b"\r\n")
                continue
            try:
                self._owner._on_message(item, self)
            except Exception:
                log.exception("unhandled error processing a message from %s:%s", *self.peer)
        self._owner._batch_end()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._owner._unregister(self)

    def send(self, data: bytes) -> None:
        """Queue bytes on the connection (asyncio buffers; never blocks)."""
        if self.transport is not None and not self.closed:
            self.last_active = time.monotonic()
            self.transport.write(data)

    def close(self) -> None:
        """Close the connection."""
        if self.transport is not None and not self.closed:
            self.transport.close()


MessageHandler = Callable[[bytes, TcpConnection], None]


class TcpTransport:
    """A listening TCP socket plus the live connections, reused by peer address."""

    def __init__(self, on_message: MessageHandler, on_batch_end: Callable[[], None] | None,
                 idle_timeout: float, max_size: int) -> None:
        self._on_message = on_message
        self._on_batch_end = on_batch_end
        self.idle_timeout = idle_timeout
        self.max_size = max_size
        self.connections: dict[Address, TcpConnection] = {}
        self.dropped = 0
        self._server: asyncio.base_events.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def listen(self, host: str, port: int) -> None:
        """Start accepting connections on host:port (0: any free port)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: TcpConnection(self), host, port, reuse_address=True
        )
        self._sweeper = asyncio.create_task(self._sweep_idle())

    @property
    def local_address(self) -> Address:
        """The (host, port) of the listening socket."""
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def connect(self, addr: Address) -> TcpConnection:
        """Reuse a live connection to addr, or open one."""
        conn = self.connections.get(addr)
        if conn is not None and not conn.closed:
            return conn
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(lambda: TcpConnection(self), *addr)
        return protocol

    def _register(self, conn: TcpConnection) -> None:
        self.connections[conn.peer] = conn

    def _unregister(self, conn: TcpConnection) -> None:
        if self.connections.get(conn.peer) is conn:
            del self.connections[conn.peer]

    def _batch_end(self) -> None:
        if self._on_batch_end is not None:
            self._on_batch_end()

    async def _sweep_idle(self) -> None:
        interval = max(1.0, min(30.0, self.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            cutoff = time.monotonic() - self.idle_timeout
            for conn in list(self.connections.values()):
                if conn.last_active < cutoff:
                    log.info("tcp %s:%s idle for %.0f s; closing", *conn.peer, self.idle_timeout)
                    conn.close()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections.values()):
            conn.close()
        if self._server is not None:
            await self._server.wait_closed()
