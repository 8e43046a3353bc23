"""Two real soft phones (WAV audio) call each other peer to peer on loopback.

Phone A's microphone plays a 1000 Hz tone and phone B's a 1500 Hz tone (both -9 dBFS
RMS); each records its speaker into a WAV file, which the tests analyse by FFT. Calls go
directly between the phones until the CMS routes calls (issue 3).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from audio_analysis import TONE_A, TONE_B, TONE_LEVEL, dominant_frequency, rms_dbfs, tail, tone_dbfs
from phone_factory import PhoneFactory, output_of
from softphone_process import (
    ApiError,
    EventRecorder,
    SoftphoneProcess,
    StartSoftphone,
    wait_until,
)

pytestmark = pytest.mark.integration

WINDOW = 0.3  # seconds of output analysed
SETTLE = 0.3  # seconds after a change before the analysed window starts (RTP, jitter buffer)


@dataclass
class Pair:
    a: SoftphoneProcess
    b: SoftphoneProcess
    a_call: dict[str, Any]
    b_call: dict[str, Any]
    a_out: Path
    b_out: Path


def wait_for_tone(path: Path, frequency: float, above: float = -20.0,
                  timeout: float = 5.0) -> float:
    """Wait until the last WINDOW seconds of `path` carry `frequency` above `above` dBFS."""
    level = [-120.0]

    def check() -> bool:
        if not path.exists():
            return False
        samples, rate = tail(path, WINDOW)
        if samples.size < rate * WINDOW:
            return False
        level[0] = tone_dbfs(samples, rate, frequency)
        return level[0] > above

    assert wait_until(check, timeout, 0.1), f"{frequency} Hz at {level[0]:.1f} dBFS in {path}"
    return level[0]


def level_after_settling(path: Path, frequency: float | None = None) -> float:
    """Wait SETTLE + WINDOW, then measure the last WINDOW seconds (a tone or broadband)."""
    time.sleep(SETTLE + WINDOW)
    samples, rate = tail(path, WINDOW)
    return rms_dbfs(samples) if frequency is None else tone_dbfs(samples, rate, frequency)


def dial(a: SoftphoneProcess, b: SoftphoneProcess) -> tuple[dict[str, Any], dict[str, Any]]:
    """A calls B; returns (A's call, B's ringing call)."""
    a_call = a.post("/calls", {"to": f"sip:b@{b.sip_uri_host}"})
    b_call = b.wait_for_call(lambda c: c["state"] == "incoming")
    return a_call, b_call


def start_pair(start_softphone: StartSoftphone, audio: str = "wav",
               **b_settings: Any) -> tuple[SoftphoneProcess, SoftphoneProcess]:
    """Phones A and B, started side by side."""
    a = start_softphone("a", audio=audio, ready=False)
    b = start_softphone("b", audio=audio, ready=False, **b_settings)
    return a.wait_ready(), b.wait_ready()


def connected_pair(start_softphone: StartSoftphone) -> Pair:
    """A and B in an established call, each already hearing the other's tone."""
    a, b = start_pair(start_softphone)
    a_call, b_call = dial(a, b)
    b.post(f"/calls/{b_call['id']}/answer")
    a.wait_for_call(lambda c: c["id"] == a_call["id"] and c["state"] == "established")
    b.wait_for_call(lambda c: c["id"] == b_call["id"] and c["state"] == "established")
    wait_for_tone(output_of(a), TONE_B)
    wait_for_tone(output_of(b), TONE_A)
    return Pair(a, b, a_call, b_call, output_of(a), output_of(b))


@pytest.fixture(scope="module")
def shared_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """One call for the tests that only change audio settings or hold it (setup is slow)."""
    factory = PhoneFactory(tmp_path_factory.mktemp("pair"))
    try:
        yield connected_pair(factory)
    finally:
        factory.stop_all()


@pytest.fixture
def pair(shared_pair: Pair) -> Pair:
    """The shared call as new: default audio settings, off hold, both sides hearing."""
    for phone, call in ((shared_pair.a, shared_pair.a_call), (shared_pair.b, shared_pair.b_call)):
        phone.put("/audio", {"speaker_volume": 1.0, "mic_volume": 1.0, "mute": False})
        current = phone.wait_for_call(lambda c, call=call: c["id"] == call["id"])
        assert current["state"] == "established", current
        if current["held"]:
            phone.post(f"/calls/{call['id']}/retrieve")
    wait_for_tone(shared_pair.a_out, TONE_B, above=TONE_LEVEL - 1.5)
    wait_for_tone(shared_pair.b_out, TONE_A, above=TONE_LEVEL - 1.5)
    return shared_pair


@pytest.fixture
def fresh_pair(start_softphone: StartSoftphone) -> Pair:
    """A call of its own, for tests that end it."""
    return connected_pair(start_softphone)


def test_a_call_rings_then_is_established_on_both_sides(
    start_softphone: StartSoftphone, tone_files: dict[str, Path]
) -> None:
    a, b = start_pair(start_softphone)
    a_events, b_events = EventRecorder(a), EventRecorder(b)
    try:
        a_call, b_call = dial(a, b)
        assert a_call["direction"] == "outgoing" and a_call["state"] == "dialing"
        assert b_call["direction"] == "incoming"
        assert b_events.wait_for(lambda e: e["type"] == "call.incoming")["call"]["id"] == \
            b_call["id"]
        a_events.wait_for(lambda e: e["type"] == "call.ringing")

        b.post(f"/calls/{b_call['id']}/answer")

        a_events.wait_for(lambda e: e["type"] == "call.established")
        b_events.wait_for(lambda e: e["type"] == "call.established")
        a.post(f"/calls/{a_call['id']}/hangup")
        a_events.wait_for(lambda e: e["type"] == "call.ended")
        ended = b_events.wait_for(lambda e: e["type"] == "call.ended")
        assert ended["call"]["answered"] is not None
        assert a_events.types()[0] == "hello"
        seqs = [e["seq"] for e in a_events.events[1:]]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        a_events.close()
        b_events.close()


def test_each_side_hears_the_other_sides_tone(pair: Pair) -> None:
    time.sleep(SETTLE)
    for out, heard, own in ((pair.a_out, TONE_B, TONE_A), (pair.b_out, TONE_A, TONE_B)):
        samples, rate = tail(out, WINDOW)
        assert dominant_frequency(samples, rate) == pytest.approx(heard, abs=20)
        assert tone_dbfs(samples, rate, heard) == pytest.approx(TONE_LEVEL, abs=1.5)
        assert tone_dbfs(samples, rate, own) < tone_dbfs(samples, rate, heard) - 40


def test_speaker_volume_half_lowers_the_received_tone_by_6_db(pair: Pair) -> None:
    before = level_after_settling(pair.a_out, TONE_B)

    pair.a.put("/audio", {"speaker_volume": 0.5})
    after = level_after_settling(pair.a_out, TONE_B)

    assert after - before == pytest.approx(-6.02, abs=1.0)
    far = level_after_settling(pair.b_out, TONE_A)
    assert far == pytest.approx(TONE_LEVEL, abs=1.5), "A's speaker volume changed B's audio"


def test_microphone_volume_scales_what_the_far_side_hears(pair: Pair) -> None:
    before = level_after_settling(pair.b_out, TONE_A)

    pair.a.put("/audio", {"mic_volume": 0.5})

    assert level_after_settling(pair.b_out, TONE_A) - before == pytest.approx(-6.02, abs=1.0)


def test_mute_makes_the_far_side_silent_and_unmute_brings_the_voice_back(pair: Pair) -> None:
    audio = pair.a.put("/audio", {"mute": True})
    assert audio["mute"] is True

    assert level_after_settling(pair.b_out) < -50.0
    assert level_after_settling(pair.a_out, TONE_B) > -12.0, "mute must not deafen A"

    pair.a.put("/audio", {"mute": False})
    wait_for_tone(pair.b_out, TONE_A)


def test_level_meters_report_the_tone_levels_of_both_directions(pair: Pair) -> None:
    levels = pair.a.get("/audio/levels")

    assert levels["microphone"]["rms_dbfs"] == pytest.approx(TONE_LEVEL, abs=0.5)
    assert levels["microphone"]["peak_dbfs"] == pytest.approx(-6.02, abs=0.5)
    assert levels["speaker"]["rms_dbfs"] == pytest.approx(TONE_LEVEL, abs=1.5)

    pair.a.put("/audio", {"speaker_volume": 0.5})
    time.sleep(0.3)
    assert pair.a.get("/audio/levels")["speaker"]["rms_dbfs"] == pytest.approx(
        TONE_LEVEL - 6.02, abs=1.5)


def test_hold_silences_both_directions_and_retrieve_restores_them(pair: Pair) -> None:
    held = pair.a.post(f"/calls/{pair.a_call['id']}/hold")
    assert held["state"] == "established"
    pair.a.wait_for_call(lambda c: c["held"])
    pair.b.wait_for_call(lambda c: c["remote_held"])

    assert level_after_settling(pair.b_out) < -50.0
    assert level_after_settling(pair.a_out) < -50.0

    pair.a.post(f"/calls/{pair.a_call['id']}/retrieve")
    pair.a.wait_for_call(lambda c: not c["held"])
    wait_for_tone(pair.a_out, TONE_B)
    wait_for_tone(pair.b_out, TONE_A)


def test_dtmf_digits_reach_the_other_phone_as_events(pair: Pair) -> None:
    events = EventRecorder(pair.b)
    try:
        pair.a.post(f"/calls/{pair.a_call['id']}/dtmf", {"digits": "1#9"})

        assert wait_until(lambda: len([e for e in events.events if e["type"] == "call.dtmf"])
                          >= 3, 5.0), events.types()
        digits = [e["digit"] for e in events.events if e["type"] == "call.dtmf"]
        assert digits == ["1", "#", "9"]
    finally:
        events.close()


def test_bad_dtmf_digits_are_refused(pair: Pair) -> None:
    with pytest.raises(ApiError) as refused:
        pair.a.post(f"/calls/{pair.a_call['id']}/dtmf", {"digits": "12x"})
    assert refused.value.status == 400
    assert refused.value.body["error"]["code"] == "bad_digits"


def test_hangup_ends_the_call_on_both_sides_and_both_keep_it_in_history(
    fresh_pair: Pair,
) -> None:
    pair = fresh_pair
    pair.b.post(f"/calls/{pair.b_call['id']}/hangup")

    assert wait_until(lambda: not pair.a.calls() and not pair.b.calls(), 5.0)
    a_history = pair.a.get("/history")["calls"]
    b_history = pair.b.get("/history")["calls"]
    assert [c["id"] for c in a_history] == [pair.a_call["id"]]
    assert [c["id"] for c in b_history] == [pair.b_call["id"]]
    assert a_history[0]["direction"] == "outgoing" and a_history[0]["code"] == 200
    assert a_history[0]["duration"] > 0.2


def test_rejected_call_ends_at_the_caller_with_603(
    start_softphone: StartSoftphone, tone_files: dict[str, Path]
) -> None:
    a, b = start_pair(start_softphone, audio="null")
    a_call, b_call = dial(a, b)

    b.post(f"/calls/{b_call['id']}/reject")

    assert wait_until(lambda: not a.calls(), 5.0)
    last = a.get("/history")["calls"][0]
    assert last["id"] == a_call["id"]
    assert last["code"] == 603 and last["answered"] is None


def test_auto_answer_always_picks_up_by_itself(
    start_softphone: StartSoftphone, tone_files: dict[str, Path]
) -> None:
    a, b = start_pair(start_softphone, audio="null", auto_answer="always")

    a_call = a.post("/calls", {"to": f"sip:b@{b.sip_uri_host}"})

    a.wait_for_call(lambda c: c["id"] == a_call["id"] and c["state"] == "established")
    assert b.calls()[0]["auto_answer"] is True


def test_answering_an_established_call_again_is_a_conflict(pair: Pair) -> None:
    with pytest.raises(ApiError) as refused:
        pair.b.post(f"/calls/{pair.b_call['id']}/answer")
    assert refused.value.status == 409
    assert refused.value.body["error"]["code"] == "invalid_state"
