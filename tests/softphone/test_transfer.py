"""Blind and attended transfer (REFER, REFER with Replaces) between real phones, peer to
peer on loopback: soft phones A, B, C and baresip (through the CMS, see
test_attended_transfer_via_cms.py and tests/integration/test_phone_transfers.py).

B is the agent who transfers; A is the caller who ends up talking to C.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audio_analysis import TONE_A, TONE_B, TONE_C
from baresip_peer import AVAILABLE, BaresipPeer
from phone_factory import heard_level
from softphone_process import EventRecorder, SoftphoneProcess, StartSoftphone, wait_until

pytestmark = pytest.mark.integration


def hears(phone: SoftphoneProcess, frequency: float) -> bool:
    return heard_level(phone, frequency) > -20.0


def connect(caller: SoftphoneProcess, callee: SoftphoneProcess,
            to: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """`caller` calls `callee`, which answers; returns both calls (established)."""
    call = caller.post("/calls", {"to": to or f"sip:x@{callee.sip_uri_host}"})
    ringing = callee.wait_for_call(lambda c: c["state"] == "incoming")
    callee.post(f"/calls/{ringing['id']}/answer")
    caller.wait_for_call(lambda c: c["id"] == call["id"] and c["state"] == "established")
    return call, ringing


def test_blind_transfer_hands_the_caller_to_the_third_phone(
    start_softphone: StartSoftphone, tone_files: dict[str, Path]
) -> None:
    a, b, c = start_softphone.start_many("a", "b", "c", audio="wav")
    _, b_call = connect(a, b)

    b.post(f"/calls/{b_call['id']}/transfer", {"to": f"sip:c@{c.sip_uri_host}"})

    ringing = c.wait_for_call(lambda call: call["state"] == "incoming")
    assert "softphone@" in ringing["remote"]  # A calls C itself
    c.post(f"/calls/{ringing['id']}/answer")
    a.wait_for_call(lambda call: call["state"] == "established" and "c@" in call["remote"])
    assert wait_until(lambda: not b.calls(), 5.0), b.calls()
    assert wait_until(lambda: len(a.calls()) == 1, 5.0), a.calls()
    assert b.get("/history")["calls"][0]["transferred"] is True
    assert wait_until(lambda: hears(a, TONE_C) and hears(c, TONE_A), 5.0, 0.1)


def test_attended_transfer_joins_the_caller_and_the_consulted_phone(
    start_softphone: StartSoftphone, tone_files: dict[str, Path]
) -> None:
    a, b, c = start_softphone.start_many("a", "b", "c", audio="wav")
    a_call, b_first = connect(a, b)
    b_consult, c_call = connect(b, c)
    b.wait_for_call(lambda call: call["id"] == b_first["id"] and call["held"])  # auto-hold

    b.post(f"/calls/{b_first['id']}/transfer", {"consult_id": b_consult["id"]})

    assert wait_until(lambda: not b.calls(), 5.0), b.calls()
    a.wait_for_call(lambda call: call["id"] != a_call["id"] and call["state"] == "established")
    assert wait_until(lambda: [x["id"] for x in a.calls()] != [a_call["id"]]
                      and len(a.calls()) == 1, 5.0), a.calls()
    assert wait_until(lambda: len(c.calls()) == 1 and c.calls()[0]["id"] != c_call["id"], 5.0)
    assert wait_until(lambda: hears(a, TONE_C) and hears(c, TONE_A), 5.0, 0.1)


@pytest.fixture
def baresip(tmp_path: Path) -> Iterator[BaresipPeer]:
    if not AVAILABLE:
        pytest.skip("baresip (with aubridge) is not installed")
    peer = BaresipPeer(tmp_path / "baresip", user="carol")
    assert wait_until(peer.ready, 10), peer.output
    yield peer
    assert peer.terminate() == 0, peer.output


def test_blind_transfer_to_baresip(
    start_softphone: StartSoftphone, tone_files: dict[str, Path], baresip: BaresipPeer
) -> None:
    a, b = start_softphone.start_many("a", "b", audio="wav")
    _, b_call = connect(a, b)

    b.post(f"/calls/{b_call['id']}/transfer", {"to": baresip.uri})

    a.wait_for_call(lambda call: call["state"] == "established" and "carol@" in call["remote"])
    assert wait_until(lambda: not b.calls(), 5.0), b.calls()
    assert wait_until(lambda: hears(a, TONE_A), 5.0, 0.1), "no echo from baresip"


def test_blind_transfer_of_a_baresip_caller(
    start_softphone: StartSoftphone, tone_files: dict[str, Path], baresip: BaresipPeer
) -> None:
    b, c = start_softphone.start_many("b", "c", audio="wav")
    baresip.command("dial", f"sip:b@{b.sip_uri_host}")
    ringing = b.wait_for_call(lambda call: call["state"] == "incoming")
    b.post(f"/calls/{ringing['id']}/answer")
    b.wait_for_call(lambda call: call["state"] == "established")

    b.post(f"/calls/{ringing['id']}/transfer", {"to": f"sip:c@{c.sip_uri_host}"})

    offered = c.wait_for_call(lambda call: call["state"] == "incoming")
    assert "carol@" in offered["remote"]
    c.post(f"/calls/{offered['id']}/answer")
    assert wait_until(lambda: not b.calls(), 5.0), f"{b.calls()}\n{baresip.output}"
    c.wait_for_call(lambda call: call["state"] == "established")
    # (baresip's echo does not follow it into its second call: its aubridge device stays
    # with the first; what it decodes shows that C's audio reaches it)
    assert wait_until(lambda: baresip.heard(TONE_C) > -20.0, 5.0, 0.1), baresip.output


def test_an_attended_transfer_the_target_refuses_leaves_both_calls_up(
    start_softphone: StartSoftphone, tone_files: dict[str, Path], baresip: BaresipPeer
) -> None:
    # baresip 1.0 does not support Replaces: it answers the INVITE with Replaces with
    # 420 Bad Extension. (As a transferee it mangles the Replaces of Refer-To, so it takes
    # no part in attended transfers at all.)
    a, b = start_softphone.start_many("a", "b", audio="wav")
    a_call, b_call = connect(a, b)
    consult = b.post("/calls", {"to": baresip.uri})
    b.wait_for_call(lambda call: call["id"] == consult["id"] and call["state"] == "established")
    events = EventRecorder(b)
    try:
        b.post(f"/calls/{b_call['id']}/transfer", {"consult_id": consult["id"]})

        failed = events.wait_for(lambda e: e["type"] == "error" and "transfer" in e["where"])
    finally:
        events.close()
    assert failed["message"].startswith("420")
    assert sorted(c["id"] for c in b.calls()) == sorted([b_call["id"], consult["id"]])
    assert [c["id"] for c in a.calls()] == [a_call["id"]]


def test_three_way_conference_lets_everyone_hear_everyone(
    start_softphone: StartSoftphone, tone_files: dict[str, Path]
) -> None:
    a, b, c = start_softphone.start_many("a", "b", "c", audio="wav")
    a_to_b, _ = connect(a, b)
    a_to_c, _ = connect(a, c)
    a.wait_for_call(lambda call: call["id"] == a_to_b["id"] and call["held"])  # auto-hold

    joined = a.post(f"/calls/{a_to_c['id']}/conference", {"with": a_to_b["id"]})

    assert joined["conference"] == [a_to_b["id"]]
    a.wait_for_call(lambda call: call["id"] == a_to_b["id"] and not call["held"])
    assert wait_until(lambda: hears(b, TONE_A) and hears(b, TONE_C), 5.0, 0.1)
    assert wait_until(lambda: hears(c, TONE_A) and hears(c, TONE_B), 5.0, 0.1)
    assert wait_until(lambda: hears(a, TONE_B) and hears(a, TONE_C), 5.0, 0.1)
