"""The soft phone and baresip 1.0 call each other peer to peer on loopback (G.711).

baresip answers by itself and echoes what it hears, so the soft phone's own tone coming
back proves audio in both directions; baresip's decoder dump shows what it received.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from audio_analysis import TONE_A, tail, tone_dbfs
from baresip_peer import AVAILABLE, BaresipPeer
from phone_factory import output_of
from softphone_process import StartSoftphone, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not AVAILABLE, reason="baresip (with aubridge) is not installed"),
]


@pytest.fixture
def baresip(tmp_path: Path) -> Iterator[BaresipPeer]:
    peer = BaresipPeer(tmp_path / "baresip")
    assert wait_until(peer.ready, 10), peer.output
    yield peer
    code = peer.terminate()
    assert code == 0, peer.output


def echo_level(path: Path) -> float:
    samples, rate = tail(path, 0.4)
    return tone_dbfs(samples, rate, TONE_A)


def test_softphone_calls_baresip_and_audio_flows_both_ways(
    start_softphone: StartSoftphone, tone_files: dict[str, Path], baresip: BaresipPeer
) -> None:
    phone = start_softphone("a", audio="wav")
    out = output_of(phone)

    call = phone.post("/calls", {"to": baresip.uri})

    phone.wait_for_call(lambda c: c["id"] == call["id"] and c["state"] == "established")
    assert wait_until(lambda: baresip.heard(TONE_A) > -20.0, 5.0, 0.1), baresip.output
    assert wait_until(lambda: echo_level(out) > -20.0, 5.0, 0.1), baresip.output
    phone.post(f"/calls/{call['id']}/hangup")
    assert wait_until(lambda: not phone.calls(), 5.0)
    assert wait_until(lambda: "session closed" in baresip.output, 5.0), baresip.output


def test_baresip_calls_the_softphone_which_answers(
    start_softphone: StartSoftphone, tone_files: dict[str, Path], baresip: BaresipPeer
) -> None:
    phone = start_softphone("a", audio="wav")
    out = output_of(phone)

    baresip.command("dial", f"sip:a@{phone.sip_uri_host}")

    ringing = phone.wait_for_call(lambda c: c["state"] == "incoming")
    assert ringing["remote"].startswith("<sip:bob@127.0.0.1") or "bob@" in ringing["remote"]
    phone.post(f"/calls/{ringing['id']}/answer")
    phone.wait_for_call(lambda c: c["state"] == "established")
    assert wait_until(lambda: echo_level(out) > -20.0, 5.0, 0.1), baresip.output

    baresip.command("hangup")
    assert wait_until(lambda: not phone.calls(), 5.0)
    assert phone.get("/history")["calls"][0]["direction"] == "incoming"
