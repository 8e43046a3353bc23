"""`cms serve`: wires config, store, SIP transports, registrar and HTTP together."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from cms.acd.engine import Acd
from cms.acd.events import AcdEvent
from cms.calls.manager import CallManager
from cms.calls.records import CallRecordStore
from cms.config import Config
from cms.cti import Cti
from cms.cti.messaging import SipMessenger
from cms.events import InteractionLog, Journal, JournalFeed
from cms.media.service import MediaService, raise_open_file_limit
from cms.net.endpoint import SipEndpoint
from cms.net.tcp import TcpTransport
from cms.net.udp import UdpTransport
from cms.registrar.bindings import BindingChange, BindingTable
from cms.registrar.service import Registrar
from cms.sip.digest import DigestServer
from cms.store.bindings import BindingStore
from cms.store.secrets import load_secret

log = logging.getLogger("cms.server")

BINDING_SWEEP_INTERVAL = 5.0


class CmsServer:
    """The running CMS: SIP endpoint, registrar, store and HTTP server."""

    def __init__(self, config: Config, data_dir: str | Path, media_host: str = "0.0.0.0"
                 ) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.store = BindingStore(self.data_dir / "cms.sqlite3")
        self.table = BindingTable()
        settings = config.cms
        digest = DigestServer(
            settings.realm,
            secret=load_secret(self.data_dir / "digest.secret"),
            algorithms=settings.digest_algorithms,
            nonce_ttl=settings.nonce_ttl,
        )
        self.registrar = Registrar(config, self.table, digest, on_change=self._on_binding_change)
        self.endpoint = SipEndpoint(self.registrar, config.cms.tcp_idle_timeout)
        self.acd = Acd.from_config(config)
        # RTP leaves from the SIP address when that is a specific one, so that packets come
        # from the address the SDP names (phones drop RTP from anywhere else).
        self.media = MediaService(media_host, ports=(settings.rtp_ports[0], settings.rtp_ports[-1]))
        self.records = CallRecordStore(self.data_dir / "calls.sqlite3")
        # --- CTI: event journal and API (cms.events, cms.cti) ---
        # Interaction records are derived in the journal's own transactions (kill -9 safe).
        self.interactions = InteractionLog(settings.country_code)
        self.journal = Journal(self.data_dir / "events.sqlite3", projections=[self.interactions])
        self.feed = JournalFeed(self.journal, self._call_info)
        # --- end CTI ---
        self.calls = CallManager(self.endpoint, self.registrar, self.acd, self.media,
                                 self.records, trusted_sources=settings.trusted_sources,
                                 on_event=self._on_acd_event, on_record=self._on_call_record,
                                 on_call_event=self.feed.call_event,
                                 on_call_started=self.feed.call_started,
                                 sounds=config.sounds_dir(),
                                 hold_music={q.name: q.hold_music for q in config.queues
                                             if q.hold_music},
                                 ring_timeout=settings.ring_timeout)
        self.cti = Cti(config, self.acd, self.journal, self.calls.run_acd, health=self._health_doc,
                       messenger=SipMessenger(self.endpoint, self.registrar, self.calls.peer_of),
                       calls=self.calls, data_dir=self.data_dir)
        self._registered: set[str] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.udp: UdpTransport | None = None
        self.tcp: TcpTransport | None = None
        self.http_runner: web.AppRunner | None = None
        self.http_address: tuple[str, int] = ("", 0)
        self.started_at = time.time()

    def _on_binding_change(self, change: BindingChange) -> None:
        self.store.submit(change)
        self._device_check(change.aor)

    def _device_check(self, aor: str) -> None:
        """Tell the ACD when a device's first binding appears or its last one goes."""
        registered = self.table.count(aor) > 0
        if registered != (aor in self._registered):
            if registered:
                self._registered.add(aor)
            else:
                self._registered.discard(aor)
            self.calls.device_changed(aor, registered)

    async def _sweep_bindings(self) -> None:
        """Expire bindings that were not refreshed, and persist their removal."""
        while True:
            await asyncio.sleep(BINDING_SWEEP_INTERVAL)
            gone = self.table.expire(time.time())
            by_aor: dict[str, list[str]] = {}
            for aor, key in gone:
                by_aor.setdefault(aor, []).append(key)
            for aor, keys in by_aor.items():
                self.store.submit(BindingChange(aor, (), tuple(keys)))
                self._device_check(aor)

    def _on_acd_event(self, event: AcdEvent) -> None:
        # DEBUG, not INFO: about nine per call, they cost ~9% of the CPU per call at INFO,
        # and the journal already keeps every one of them; `_on_call_record` logs a call once.
        if log.isEnabledFor(logging.DEBUG):  # build the JSON only when it is logged
            log.debug("acd %s %s", event.TYPE, json.dumps(event.payload(), default=str))
        self.feed.acd_event(event)

    def _on_call_record(self, record: Mapping[str, Any]) -> None:
        log.info("call %s %s: %s -> %s, queue %s, agent %s, wait %s s, talk %s s",
                 record.get("id"), record.get("outcome"), record.get("caller"),
                 record.get("target"), record.get("queue") or "-",
                 record.get("agent") or "-", record.get("wait"), record.get("talk"))
        self.feed.call_record(record)

    # --- CTI hooks ---
    def _call_info(self, call_id: str) -> dict[str, object] | None:
        """What the journal's interaction.created tells about a live call."""
        return self.calls.call_info(call_id)
    # --- end CTI hooks ---

    async def start(self, sip: tuple[str, int], http: tuple[str, int]) -> None:
        """Load state, then listen for SIP (UDP and TCP on one port) and HTTP."""
        await self.journal.start()
        now = time.time()
        restored = self.store.load(now)
        for key, binding in restored:
            self.table.put(key, binding)
        self.store.start()
        log.info("restored bindings", extra={"count": len(restored)})
        await self._listen_sip(*sip)
        self.media.start()
        for aor in {binding.aor for _, binding in restored}:
            self._device_check(aor)
        self._sweeper = asyncio.create_task(self._sweep_bindings())
        await self._listen_http(*http)

    async def _listen_sip(self, host: str, port: int) -> None:
        endpoint = self.endpoint
        for attempt in range(20):
            udp = UdpTransport.bind(host, port, endpoint.on_udp, endpoint.flush)
            chosen = udp.local_address[1]
            tcp = TcpTransport(endpoint.on_tcp, endpoint.flush, endpoint.tcp_idle_timeout,
                               endpoint.max_size)
            try:
                await tcp.listen(host, chosen)
            except OSError:
                udp.close()
                if port != 0 or attempt == 19:
                    raise
                continue
            break
        self.udp, self.tcp = udp, tcp
        endpoint.attach(udp, tcp)
        log.info("listening for SIP", extra={"udp": f"{host}:{chosen}", "tcp": f"{host}:{chosen}"})

    async def _listen_http(self, host: str, port: int) -> None:
        app = web.Application()
        self.cti.mount(app)  # /api/v1: CTI, health and the OpenAPI document
        # Push channels are ended by the CTI's on_shutdown; do not wait a minute for stragglers.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        self.http_runner = runner
        self.http_address = (bound[0], bound[1])
        log.info("listening for HTTP", extra={"http": f"{bound[0]}:{bound[1]}"})

    def _health_doc(self) -> dict[str, object]:
        return {
            "status": "ok",
            "uptime": round(time.time() - self.started_at, 3),
            "bindings": sum(1 for _ in self.table),
            "sip": self.endpoint.stats(),
            "events": {"last_seq": self.journal.last_seq, "head": self.journal.head,
                       "commits": self.journal.commits,
                       **{f"{stage}_total_ms": round(1000 * seconds, 3)
                          for stage, seconds in self.journal.stage_seconds.items()}},
        }

    async def stop(self) -> None:
        """Stop listening, flush the store, close everything."""
        if self.http_runner is not None:
            await self.http_runner.cleanup()
        if self.tcp is not None:
            await self.tcp.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.calls.close()
        self.media.close()
        if self.udp is not None:
            self.udp.close()
        self.endpoint.close()
        self.store.close()
        self.records.close()
        await self.journal.close()
        log.info("stopped")


def tune_gc() -> None:
    """Keep the cyclic GC from pausing the SIP path.

    Thousands of live transactions make each full collection walk a large heap;
    startup objects are frozen out of it and older generations are collected
    rarely (one gen-1 pass per 2.5 M allocations, as before). Under call load
    nearly every young object lives on (transactions, journal events, SDP), so a
    young collection frees nothing and costs about 0.4 us per object: 10 000 keeps
    each pause near 5 ms where 50 000 made 25-55 ms stalls of call setup.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 250, 100)
    gc.callbacks.append(_report_long_gc)


_gc_started = 0.0


def _report_long_gc(phase: str, info: dict[str, int]) -> None:
    """Log collections long enough to delay SIP answers (they show up as retransmissions)."""
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    took = time.perf_counter() - _gc_started
    if took > 0.05:
        log.warning("garbage collection paused the server", extra={
            "generation": info.get("generation"), "ms": round(took * 1000, 1),
            "collected": info.get("collected"),
        })


async def run_server(config: Config, sip: tuple[str, int], http: tuple[str, int],
                     data_dir: str) -> int:
    """Run until SIGTERM or SIGINT; return the exit status."""
    raise_open_file_limit()
    server = CmsServer(config, data_dir, media_host=sip[0])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start(sip, http)
    except OSError:
        await server.stop()
        raise
    tune_gc()
    log.info("cms ready", extra={"config": config.source, "data_dir": data_dir})
    await stop.wait()
    log.info("shutting down")
    await server.stop()
    return 0
