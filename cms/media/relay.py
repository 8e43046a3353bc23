"""Legs and bridges: RTP relayed between two legs, or generated audio and DTMF played to one.

A `Leg` is one RTP session with a phone (one socket, one negotiated format). What it
receives is counted, checked for DTMF, and, when a route is set, relayed to another leg:
passed through when both use the same codec, transcoded through a byte table when not.
What it sends comes from exactly one feed at a time (a relayed leg, a generated source, or
injected DTMF) through one `OutboundStream`, so the phone sees one continuous stream.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .clock import MediaClock
from .dtmf import DigitPressed, DtmfDetector, DtmfNotice, DtmfSender
from .endpoint import Address, RtpEndpoint
from .formats import FRAME_MS, MediaFormat, transcode_table
from .rtp import RtpError, payload_bounds
from .slots import SlotOutboundStream, SlotReceiveStats, SlotTable
from .sources import AudioSource
from .stats import ReceiveStats, StreamStats
from .stream import HALF_SEQ, HALF_TS, SEQ_MASK, TS_MASK, OutboundStream

log = logging.getLogger("cms.media.relay")

_REWRITE = struct.Struct("!BHII")  # Marker/PT, sequence, timestamp, SSRC: bytes 1..11.
_HEADER = struct.Struct("!BBHII")
_monotonic = time.monotonic
_rewrite = _REWRITE.pack_into
_unpack_header = _REWRITE.unpack_from  # At offset 1: the same four fields.

DtmfListener = Callable[["Leg", DtmfNotice], None]
AudioTap = Callable[[bytearray, int], None]  # (packet buffer, length) of an unrelayed packet
MAX_DIGITS_KEPT = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class LegStats:
    """What one leg received and sent, to store with the call record."""

    name: str
    local: Address
    remote: Address | None
    codec: str | None
    received: StreamStats
    packets_sent: int
    send_errors: int
    dropped_strangers: int
    dropped_invalid: int
    dropped_payload_type: int
    digits: str  # DTMF digits received, in order.


class _Route:
    """One direction of a bridge: packets received on `source` go out on `target`."""

    __slots__ = ("target", "out", "send", "packets", "audio_pt", "dtmf_pt", "table")

    def __init__(self, source: Leg, target: Leg) -> None:
        if source.format is None or target.format is None:
            raise ValueError("configure both legs (format and peer) before bridging them")
        self.target = target
        self.out = target.out
        self.send = target.endpoint.send
        self.packets = source.endpoint.packets
        self.audio_pt = target.format.payload_type
        self.dtmf_pt = target.format.dtmf_payload_type
        self.table = transcode_table(source.format.codec, target.format.codec)

    def transcode(self, buf: bytearray, length: int) -> None:
        """Translate the payload in place to the target's codec."""
        table = self.table
        if buf[0] == 0x80:
            buf[12:length] = buf[12:length].translate(table)
        else:
            start, end = payload_bounds(buf, length)
            buf[start:end] = buf[start:end].translate(table)

    def relay_event(self, buf: bytearray, length: int, seq: int, ts: int, ssrc: int,
                    now: float) -> None:
        """Relay a telephone-event packet with the target's payload type, or drop it."""
        out = self.out
        if self.dtmf_pt is None or out.held:
            return
        if ssrc != out.feed:
            out.follow(seq, ts, ssrc, now)
        seq = (seq + out.seq_offset) & SEQ_MASK
        ts = (ts + out.ts_offset) & TS_MASK
        if (seq - out.seq) & SEQ_MASK < HALF_SEQ:
            out.seq = seq
        _REWRITE.pack_into(buf, 1, (buf[1] & 0x80) | self.dtmf_pt, seq, ts, out.ssrc)
        self.send(self.packets[length])


class Leg:
    """One RTP session with a phone: receive, count, detect DTMF, relay or play to it."""

    # Slots, those read per packet first: a compact object, its hot fields in one cache line.
    __slots__ = ("_audio_pt", "rx", "_route", "_dtmf_pt", "tap", "endpoint", "clock", "name",
                 "on_dtmf", "format", "out", "dropped_payload_type", "_digits", "_detector",
                 "_fed_by", "_player", "_sender", "_ticking")

    def __init__(self, endpoint: RtpEndpoint, clock: MediaClock, *, name: str = "",
                 on_dtmf: DtmfListener | None = None) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.name = name
        self.on_dtmf = on_dtmf
        self.format: MediaFormat | None = None
        table: SlotTable | None = getattr(endpoint, "table", None)
        if table is not None:
            # The endpoint's reactor relays batches itself: our state lives in its table.
            slot: int = endpoint.slot  # type: ignore[attr-defined]
            self.out: OutboundStream = SlotOutboundStream(table, slot)
            self.rx: ReceiveStats = SlotReceiveStats(table, slot)
        else:
            self.out = OutboundStream()
            self.rx = ReceiveStats()
        self.dropped_payload_type = 0
        self._digits: list[str] = []
        self._detector = DtmfDetector()
        self._audio_pt = -1
        self._dtmf_pt = -1
        self._route: _Route | None = None  # Where what this leg receives goes.
        self._fed_by: Leg | None = None  # The leg whose route ends here.
        self._player: _Player | None = None
        self._sender: DtmfSender | None = None
        self._ticking = False
        self.tap: AudioTap | None = None  # Gets received audio no route relays (a mixer).
        endpoint.sink = self._on_packet

    # -- configuration

    def configure(self, media_format: MediaFormat, remote: Address | None, *,
                  latch: bool = False, nat_host: str | None = None) -> None:
        """Apply the negotiated SDP: format and the phone's RTP address (see PeerFilter)."""
        self.format = media_format
        self._audio_pt = media_format.payload_type
        dtmf_pt = media_format.dtmf_payload_type
        self._dtmf_pt = -1 if dtmf_pt is None else dtmf_pt
        self.endpoint.set_peer(remote, latch=latch, nat_host=nat_host)
        if self._route is not None:
            _set_route(self, _Route(self, self._route.target))
        else:
            _set_route(self, None)  # Publishes the new audio payload type.
        if self._fed_by is not None:
            _set_route(self._fed_by, _Route(self._fed_by, self))

    @property
    def local_address(self) -> Address:
        """Our RTP address, for SDP."""
        return self.endpoint.local_address

    @property
    def relaying_to(self) -> Leg | None:
        """The leg that receives what this leg receives, if any."""
        return self._route.target if self._route is not None else None

    @property
    def fed_by(self) -> Leg | None:
        """The leg whose received audio this leg sends, if any."""
        return self._fed_by

    @property
    def playing(self) -> AudioSource | None:
        """The generated source this leg sends, if any."""
        return self._player.source if self._player is not None else None

    # -- what this leg sends

    def play(self, source: AudioSource, on_done: Callable[[Leg], None] | None = None) -> None:
        """Send generated audio from `source` (replacing any relayed or generated feed).

        `on_done` is called once when a source with a true `finished` attribute ends.
        """
        self._unfeed()
        self._player = _Player(source, on_done)
        self.out.release()
        self._update_ticking()

    def stop_audio(self) -> None:
        """Send nothing (no relay, no generated audio) until told otherwise."""
        self._unfeed()
        self.out.release()

    def send_dtmf(self, digits: str, duration_ms: int = 100, pause_ms: int = 60) -> None:
        """Send RFC 4733 events for `digits`; audio to the phone pauses during each digit."""
        if self.format is None or self.format.dtmf_payload_type is None:
            raise ValueError(f"leg {self.name!r}: no telephone-event payload type negotiated")
        if self._sender is None:
            self._sender = DtmfSender(duration_ms=duration_ms, pause_ms=pause_ms)
        self._sender.add(digits)
        self._update_ticking()

    def _unfeed(self) -> None:
        if self._fed_by is not None:
            _set_route(self._fed_by, None)
            self._fed_by = None
        self._player = None
        self._update_ticking()

    def _update_ticking(self) -> None:
        wanted = self._player is not None or self._sender is not None
        if wanted and not self._ticking:
            self.clock.subscribe(self._on_tick)
        elif not wanted and self._ticking:
            self.clock.unsubscribe(self._on_tick)
        self._ticking = wanted

    def _on_tick(self, tick: int) -> None:
        media_format = self.format
        if media_format is None:
            return
        now = _monotonic()
        if self._sender is not None:
            self._dtmf_tick(self._sender, media_format, tick, now)
        player = self._player
        if player is not None and not self.out.held:
            payload = player.next_payload(media_format)
            if payload is not None:
                seq, ts, marker = self.out.next_generated(tick, now)
                self.endpoint.send(_HEADER.pack(0x80, marker << 7 | media_format.payload_type,
                                                seq, ts, self.out.ssrc) + payload)
            if player.done:
                self._player = None
                self._update_ticking()
                if player.on_done is not None:
                    player.on_done(self)

    def _dtmf_tick(self, sender: DtmfSender, media_format: MediaFormat, tick: int,
                   now: float) -> None:
        out = self.out
        packet = sender.next_packet()
        if packet is not None and media_format.dtmf_payload_type is not None:
            out.held = True
            seq, ts = out.next_event(tick, packet.marker, now)
            self.endpoint.send(_HEADER.pack(0x80, packet.marker << 7
                                            | media_format.dtmf_payload_type,
                                            seq, ts, out.ssrc) + packet.payload)
        if out.held and not sender.sending:
            out.held = False
            out.release()  # Relayed or generated audio re-anchors after the event.
        if not sender.busy:
            self._sender = None
            self._update_ticking()

    # -- what this leg receives

    def _on_packet(self, buf: bytearray, length: int) -> None:
        marker_pt, seq, ts, ssrc = _unpack_header(buf, 1)
        pt = marker_pt & 0x7F
        now = _monotonic()
        if pt == self._audio_pt:
            self.rx.update(seq, ts, ssrc, now)
            route = self._route
            if route is None:
                if self.tap is not None:
                    self.tap(buf, length)
                return
            out = route.out
            if ssrc == out.feed:
                marker = marker_pt & 0x80
            elif out.held:
                return  # Injected DTMF is playing on the target.
            else:
                out.follow(seq, ts, ssrc, now)
                marker = 0x80  # A new source: let the phone's jitter buffer resynchronise.
            # Inline OutboundStream.map_relayed: this runs for every relayed packet.
            seq = (seq + out.seq_offset) & SEQ_MASK
            ts = (ts + out.ts_offset) & TS_MASK
            if (seq - out.seq) & SEQ_MASK < HALF_SEQ:
                out.seq = seq
            if (ts - out.ts) & TS_MASK < HALF_TS:
                out.ts = ts
                out.time = now
            _rewrite(buf, 1, marker | route.audio_pt, seq, ts, out.ssrc)
            if route.table is not None:
                route.transcode(buf, length)
            route.send(route.packets[length])
        elif pt == self._dtmf_pt:
            if self.rx.update_sequence(seq, ssrc):
                self._on_event(buf, length, seq, ts, ssrc, now)
        else:
            # Comfort noise and anything not negotiated: the other side did not agree to it.
            self.dropped_payload_type += 1

    def _on_event(self, buf: bytearray, length: int, seq: int, ts: int, ssrc: int,
                  now: float) -> None:
        try:
            start, end = payload_bounds(buf, length)
        except RtpError:
            self.endpoint.dropped_invalid += 1
            return
        notices = self._detector.feed(bytes(buf[start:end]), ts)
        if self._route is not None:
            self._route.relay_event(buf, length, seq, ts, ssrc, now)
        for notice in notices:
            if isinstance(notice, DigitPressed):
                self._digits.append(notice.digit)
                del self._digits[:-MAX_DIGITS_KEPT]
            if self.on_dtmf is not None:
                try:
                    self.on_dtmf(self, notice)
                except Exception:
                    log.exception("DTMF listener failed on leg %s", self.name)

    # -- results and life cycle

    def stats(self) -> LegStats:
        """A snapshot of this leg's counters and receive statistics."""
        endpoint = self.endpoint
        return LegStats(
            name=self.name, local=self.local_address if not endpoint.closed else ("", 0),
            remote=endpoint.peer, codec=self.format.codec.name if self.format else None,
            received=self.rx.snapshot(), packets_sent=endpoint.sent,
            send_errors=endpoint.send_errors, dropped_strangers=endpoint.dropped_strangers,
            dropped_invalid=endpoint.dropped_invalid,
            dropped_payload_type=self.dropped_payload_type, digits="".join(self._digits))

    def close(self) -> LegStats:
        """Unbridge, stop all feeds, close the socket; returns the final statistics."""
        disconnect(self)
        self._player = None
        self._sender = None
        self._update_ticking()
        final = self.stats()
        self.endpoint.close()
        return final


class _Player:
    """A generated source packetised for one leg's format."""

    def __init__(self, source: AudioSource, on_done: Callable[[Leg], None] | None) -> None:
        self.source = source
        self.on_done = on_done
        self.done = False
        self._pending: list[np.ndarray] = []

    def next_payload(self, media_format: MediaFormat) -> bytes | None:
        """This tick's payload, or None while collecting frames for a longer ptime."""
        frame = self.source.next_frame()
        self.done = bool(getattr(self.source, "finished", False))
        frames = max(1, media_format.ptime_ms // FRAME_MS)
        if frames > 1:
            self._pending.append(frame)
            if len(self._pending) < frames and not self.done:
                return None
            frame = np.concatenate(self._pending)
            self._pending.clear()
        return media_format.codec.encode(frame)


def connect(source: Leg, target: Leg) -> None:
    """Relay what `source` receives to `target` (one way), replacing target's feed."""
    if source is target:
        raise ValueError("a leg cannot be relayed to itself")
    route = _Route(source, target)
    target._unfeed()
    if source._route is not None:
        source._route.target._fed_by = None
    _set_route(source, route)
    target._fed_by = source
    target.out.release()


def bridge(a: Leg, b: Leg) -> None:
    """Relay both ways between two legs (a call's two halves talking)."""
    connect(a, b)
    connect(b, a)


def disconnect(leg: Leg) -> None:
    """Stop relaying to and from `leg` (generated feeds are untouched)."""
    if leg._route is not None:
        leg._route.target._fed_by = None
        _set_route(leg, None)
    if leg._fed_by is not None:
        _set_route(leg._fed_by, None)
        leg._fed_by = None
        leg.out.release()


def _set_route(leg: Leg, route: _Route | None) -> None:
    """Set where `leg` relays to, and tell a batch-relaying reactor (see cms.media.slots)."""
    leg._route = route
    endpoint = leg.endpoint
    table: SlotTable | None = getattr(endpoint, "table", None)
    if table is None:
        return
    slot: int = endpoint.slot  # type: ignore[attr-defined]
    target = -1  # The per-packet path: no route, or one that transcodes.
    if route is not None and route.table is None:
        target_endpoint = route.target.endpoint
        if getattr(target_endpoint, "table", None) is table:
            target = target_endpoint.slot  # type: ignore[attr-defined]
            table.out_pt[slot] = route.audio_pt
    table.target[slot] = target
    table.audio_pt[slot] = leg._audio_pt
