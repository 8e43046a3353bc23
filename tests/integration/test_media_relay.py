"""Two phones on loopback talk through a bridge (PCMU on one leg, PCMA on the other)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import numpy as np
import pytest

from cms.media.formats import PCMA, PCMU, Codec, MediaFormat
from cms.media.relay import Leg, bridge
from cms.media.rtp import RtpPacket
from cms.media.service import MediaService
from cms.media.sources import ToneSource

pytestmark = pytest.mark.integration

SECONDS = 1.0
LEVEL_DBFS = -10.0


class TonePhone:
    """A phone that sends a tone in real time (20 ms packets) and keeps what it hears."""

    def __init__(self, codec: Codec, frequency: float) -> None:
        self.codec = codec
        self.source = ToneSource(frequency, LEVEL_DBFS)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.sent: list[np.ndarray] = []
        self.heard: list[RtpPacket] = []

    async def talk(self, leg: Leg, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n in range(int(seconds * 50)):
            await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))
            frame = self.source.next_frame()
            self.sent.append(frame)
            packet = RtpPacket(payload_type=self.codec.static_payload_type, sequence=n,
                               timestamp=160 * n, ssrc=0x1000 + id(self) % 1000,
                               payload=self.codec.encode(frame))
            self.sock.sendto(packet.serialize(), leg.local_address)
            self.listen()

    def listen(self) -> None:
        while True:
            try:
                self.heard.append(RtpPacket.parse(self.sock.recv(2048)))
            except BlockingIOError:
                return

    def heard_audio(self) -> np.ndarray:
        packets = sorted(self.heard, key=lambda p: p.sequence)
        return np.concatenate([self.codec.decode(p.payload) for p in packets])


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * 8000 / samples.size)


def rms_db(samples: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(samples.astype(np.float64) ** 2))))


def test_two_phones_hear_each_others_tone_through_a_transcoding_bridge() -> None:
    async def scenario() -> tuple[TonePhone, TonePhone, int, int, int]:
        service = MediaService("127.0.0.1", (0, 0))
        service.start()
        alice, bob = TonePhone(PCMU, 1000), TonePhone(PCMA, 1500)
        leg_a, leg_b = service.open_leg("alice"), service.open_leg("bob")
        leg_a.configure(MediaFormat(codec=PCMU), alice.address)
        leg_b.configure(MediaFormat(codec=PCMA), bob.address)
        bridge(leg_a, leg_b)
        # A stranger aims a 2.2 kHz tone at Alice's leg: nobody may hear it.
        stranger = TonePhone(PCMU, 2200)
        await asyncio.gather(alice.talk(leg_a, SECONDS), bob.talk(leg_b, SECONDS),
                             stranger.talk(leg_a, SECONDS))
        await asyncio.sleep(0.1)
        alice.listen()
        bob.listen()
        stranger.listen()
        strangers = leg_a.stats().dropped_strangers
        lost = leg_a.stats().received.packets_lost + leg_b.stats().received.packets_lost
        service.close()
        return alice, bob, strangers, lost, len(stranger.heard)

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        alice, bob, strangers, lost, stranger_heard = runner.run(scenario())

    assert lost == 0
    assert strangers == 50 and stranger_heard == 0
    for listener, talker, frequency in ((alice, bob, 1500), (bob, alice, 1000)):
        assert len(listener.heard) == 50
        assert {p.payload_type for p in listener.heard} == {listener.codec.static_payload_type}
        heard = listener.heard_audio()
        assert dominant_hz(heard) == pytest.approx(frequency, abs=20)
        assert rms_db(heard) == pytest.approx(rms_db(np.concatenate(talker.sent)), abs=1.0)
        # Nothing of the stranger's tone got through (G.711's own distortion is below -40 dB).
        spectrum = np.abs(np.fft.rfft(heard * np.hanning(heard.size)))
        stranger_bin = int(2200 * heard.size / 8000)
        assert spectrum[stranger_bin - 5:stranger_bin + 5].max() < 1e-2 * spectrum.max()
