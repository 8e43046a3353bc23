"""RFC 4733 telephone-events: payload codec, sender timing, detector dedupe and loss."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cms.media.dtmf import (
    DigitPressed,
    DigitReleased,
    DtmfDetector,
    DtmfError,
    DtmfPacket,
    DtmfSender,
    TelephoneEvent,
    digit_to_event,
    event_to_digit,
)


def test_payload_layout_follows_rfc_4733() -> None:
    # Event 5, end bit, volume 10, duration 800: 05 8a 0320.
    event = TelephoneEvent(event=5, end=True, volume=10, duration=800)
    assert event.serialize() == bytes.fromhex("058a0320")
    assert TelephoneEvent.parse(bytes.fromhex("058a0320")) == event
    assert TelephoneEvent.parse(bytes.fromhex("0b0a00a0")) == TelephoneEvent(
        event=11, end=False, volume=10, duration=160)


def test_reserved_bit_is_ignored_and_short_payload_rejected() -> None:
    assert TelephoneEvent.parse(bytes.fromhex("01ca0000")).volume == 10
    with pytest.raises(DtmfError):
        TelephoneEvent.parse(b"\x01\x0a")


@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF))
def test_payload_round_trip(event: int, end: bool, volume: int, duration: int) -> None:
    original = TelephoneEvent(event=event, end=end, volume=volume, duration=duration)
    assert TelephoneEvent.parse(original.serialize()) == original


def test_digit_codes() -> None:
    assert [digit_to_event(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert digit_to_event("a") == 12
    assert event_to_digit(11) == "#" and event_to_digit(16) == "!" and event_to_digit(99) == "?"
    with pytest.raises(DtmfError):
        digit_to_event("E")


def run_sender(sender: DtmfSender, ticks: int) -> list[DtmfPacket | None]:
    return [sender.next_packet() for _ in range(ticks)]


def test_sender_packet_sequence_for_one_digit() -> None:
    sender = DtmfSender("7", duration_ms=100, pause_ms=0)
    packets = run_sender(sender, 8)
    sent = [p for p in packets if p is not None]
    events = [TelephoneEvent.parse(p.payload) for p in sent]
    # 5 packets over 100 ms (the last with the end bit), then the end packet twice more.
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert [p.marker for p in sent] == [True] + [False] * 6
    assert {e.event for e in events} == {7}
    assert packets[7] is None and not sender.busy


def test_sender_pauses_between_digits_and_reports_state() -> None:
    sender = DtmfSender("12", duration_ms=40, pause_ms=40)
    states = []
    for _ in range(14):
        packet = sender.next_packet()
        states.append((packet is not None, sender.sending))
    # Digit: 2 update ticks + 2 more end repeats = 4 packets, then 2 silent pause ticks.
    assert [s[0] for s in states[:6]] == [True, True, True, True, False, False]
    assert [s[0] for s in states[6:12]] == [True, True, True, True, False, False]
    assert not sender.busy


def detect(detector: DtmfDetector, packets: list[tuple[bytes, int]]) -> list[object]:
    notices: list[object] = []
    for payload, timestamp in packets:
        notices.extend(detector.feed(payload, timestamp))
    return notices


def digit_packets(digit: str, timestamp: int) -> list[tuple[bytes, int]]:
    sender = DtmfSender(digit, duration_ms=100, pause_ms=0)
    return [(p.payload, timestamp) for p in run_sender(sender, 7) if p is not None]


def test_detector_reports_each_digit_once_with_its_duration() -> None:
    notices = detect(DtmfDetector(), digit_packets("5", 1000) + digit_packets("5", 3000))
    assert notices == [DigitPressed("5", 5, 1000), DigitReleased("5", 5, 1000, 100.0),
                       DigitPressed("5", 5, 3000), DigitReleased("5", 5, 3000, 100.0)]


def test_detector_survives_lost_start_and_end_packets() -> None:
    packets = digit_packets("9", 500)
    # Start and first update lost: the digit is still reported, once.
    notices = detect(DtmfDetector(), packets[2:])
    assert [type(n) for n in notices] == [DigitPressed, DigitReleased]
    # Every end packet lost: the press is still reported.
    notices = detect(DtmfDetector(), packets[:4])
    assert notices == [DigitPressed("9", 9, 500)]
    # Only one end packet arrived: press and release at once.
    notices = detect(DtmfDetector(), packets[-1:])
    assert [type(n) for n in notices] == [DigitPressed, DigitReleased]


def test_detector_ignores_late_reordered_packets_of_an_old_digit() -> None:
    first, second = digit_packets("1", 100), digit_packets("2", 2000)
    notices = detect(DtmfDetector(), first[:-1] + second[:2] + first[-1:] + second[2:])
    assert [(type(n).__name__, n.digit) for n in notices] == [  # type: ignore[attr-defined]
        ("DigitPressed", "1"), ("DigitReleased", "1"),
        ("DigitPressed", "2"), ("DigitReleased", "2")]


def test_detector_ignores_garbage() -> None:
    assert DtmfDetector().feed(b"\x01", 0) == ()
