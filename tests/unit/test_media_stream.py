"""Outgoing stream continuity (RFC 3550) when its feed switches: one SSRC, seq +1, ts forward."""

from __future__ import annotations

from cms.media.stream import DTMF, GENERATED, OutboundStream

SEQ_MASK, TS_MASK = 0xFFFF, 0xFFFFFFFF


def relay(stream: OutboundStream, seq: int, ts: int, ssrc: int, now: float
          ) -> tuple[int, int]:
    if ssrc != stream.feed:
        stream.follow(seq, ts, ssrc, now)
    return stream.map_relayed(seq, ts, now)


def forward(a: int, b: int, mask: int) -> int:
    """How far b is ahead of a, modulo the field size."""
    return (b - a) & mask


def test_generated_audio_advances_one_frame_per_tick() -> None:
    stream = OutboundStream(ssrc=7)
    packets = [stream.next_generated(tick, 1.0 + tick * 0.02) for tick in range(5)]
    assert packets[0][2] and not any(marker for _, _, marker in packets[1:])
    for (seq_a, ts_a, _), (seq_b, ts_b, _) in zip(packets, packets[1:], strict=False):
        assert forward(seq_a, seq_b, SEQ_MASK) == 1
        assert forward(ts_a, ts_b, TS_MASK) == 160


def test_skipped_ticks_show_as_a_forward_timestamp_jump() -> None:
    stream = OutboundStream()
    seq0, ts0, _ = stream.next_generated(10, 1.0)
    seq1, ts1, _ = stream.next_generated(14, 1.08)
    assert forward(seq0, seq1, SEQ_MASK) == 1 and forward(ts0, ts1, TS_MASK) == 4 * 160


def test_switch_from_hold_music_to_relayed_agent_keeps_the_stream_continuous() -> None:
    stream = OutboundStream(ssrc=0xCAFE)
    for tick in range(50):  # one second of hold music
        seq, ts, _ = stream.next_generated(tick, 10.0 + tick * 0.02)
    stream.release()  # the agent answers
    # The agent's phone numbers its packets its own way, far "behind" ours.
    out = [relay(stream, (3 + i) & SEQ_MASK, 5000 + 160 * i, 0xA6E17, 11.005 + i * 0.02)
           for i in range(3)]
    assert forward(seq, out[0][0], SEQ_MASK) == 1
    assert forward(out[0][0], out[1][0], SEQ_MASK) == 1
    # 25 ms after the last music packet: the timestamp moves 200 units forward, not back.
    assert forward(ts, out[0][1], TS_MASK) == 200
    assert forward(out[0][1], out[1][1], TS_MASK) == 160
    assert stream.ssrc == 0xCAFE


def test_switch_back_to_the_same_source_reanchors() -> None:
    stream = OutboundStream()
    relay(stream, 100, 16000, 1, 1.0)
    last_seq, last_ts = relay(stream, 101, 16160, 1, 1.02)
    stream.release()  # held: music plays for 2 s
    for tick in range(100):
        last_seq, last_ts, _ = stream.next_generated(tick, 1.04 + tick * 0.02)
    stream.release()  # retrieved: the same phone, same SSRC, its numbers moved on by 2 s
    seq, ts = relay(stream, 201, 32160, 1, 3.04)
    assert forward(last_seq, seq, SEQ_MASK) == 1
    assert 0 < forward(last_ts, ts, TS_MASK) <= 2 * 160


def test_relayed_reordering_and_loss_pass_through() -> None:
    stream = OutboundStream()
    first = relay(stream, 10, 0, 9, 0.0)
    third = relay(stream, 12, 320, 9, 0.04)
    second = relay(stream, 11, 160, 9, 0.05)
    fifth = relay(stream, 14, 640, 9, 0.08)
    assert [forward(first[0], p[0], SEQ_MASK) for p in (second, third, fifth)] == [1, 2, 4]
    assert stream.seq == fifth[0]  # the highest, not the last, is remembered


def test_relayed_stream_that_wraps_stays_continuous() -> None:
    stream = OutboundStream()
    out = [relay(stream, (65534 + i) & SEQ_MASK, (TS_MASK - 159 + 160 * i) & TS_MASK, 5,
                 i * 0.02) for i in range(4)]
    for a, b in zip(out, out[1:], strict=False):
        assert forward(a[0], b[0], SEQ_MASK) == 1 and forward(a[1], b[1], TS_MASK) == 160


def test_telephone_events_share_a_timestamp_and_audio_resumes_after_them() -> None:
    stream = OutboundStream()
    seq, ts, _ = stream.next_generated(0, 0.0)
    events = [stream.next_event(tick, tick == 1, tick * 0.02) for tick in range(1, 8)]
    assert stream.feed == DTMF
    assert len({event_ts for _, event_ts in events}) == 1
    assert [forward(seq, s, SEQ_MASK) for s, _ in events] == list(range(1, 8))
    stream.release()
    seq_after, ts_after, marker = stream.next_generated(8, 0.16)
    assert marker and stream.feed == GENERATED
    assert forward(events[-1][0], seq_after, SEQ_MASK) == 1
    # Audio resumes after the event's whole duration, not at its start timestamp.
    assert forward(events[0][1], ts_after, TS_MASK) >= 7 * 160
