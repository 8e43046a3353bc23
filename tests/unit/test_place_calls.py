"""The synthetic-call driver's pure parts: what counts as hearing a tone, and the report."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from cms.media.formats import PCMU
from cms.media.rtp import RtpPacket
from cms.media.sources import HoldMusicSource, ToneSource

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/ is not installed

from scripts.place_calls import (  # noqa: E402
    NO_RTP,
    CallResult,
    build_parser,
    format_summary,
    percentile,
    sampler,
    summarize,
)
from scripts.ua_media import (  # noqa: E402
    Recording,
    ToneLoop,
    dominant_frequency,
    is_tone,
    level_dbfs,
    loop_frames,
)


def record(recording: Recording, frames: list[np.ndarray], start: float = 0.0) -> None:
    """Feed PCMU packets of these frames into a recording, as a leg's socket would."""
    for n, frame in enumerate(frames):
        packet = RtpPacket(payload_type=0, sequence=n, timestamp=160 * n, ssrc=7,
                           payload=PCMU.encode(frame)).serialize()
        recording.add(bytearray(packet), len(packet))


def result(index: int, status: int = 200, setup_ms: float | None = 5.0,
           tone_heard: bool | None = True) -> CallResult:
    return CallResult(index=index, call_id=f"c{index}", status=status, reason="",
                      setup_ms=setup_ms, ended_by="local", packets_received=50,
                      audio_heard=status == 200, heard_hz=1000.0, heard_dbfs=-13.0,
                      tone_heard=tone_heard, tone_after_ms=12.0)


def test_dominant_frequency_of_a_g711_tone_is_its_frequency() -> None:
    tone = ToneSource(1000)
    audio = PCMU.decode(PCMU.encode(np.concatenate([tone.next_frame() for _ in range(50)])))

    assert dominant_frequency(audio) == pytest.approx(1000, abs=10)
    assert level_dbfs(audio) == pytest.approx(-13.0, abs=0.5)


def test_recorded_blocks_tell_a_tone_from_hold_music() -> None:
    recording = Recording()
    music, tone = HoldMusicSource(), ToneSource(1000)
    record(recording, [music.next_frame() for _ in range(25)]
           + [tone.next_frame() for _ in range(25)])

    blocks = recording.blocks(PCMU, 0)

    assert len(blocks) == 10
    assert [is_tone(block, 1000) for block in blocks] == [False] * 5 + [True] * 5
    assert recording.samples(PCMU, 0).size == 50 * 160


def test_silence_is_no_tone_whatever_its_spectrum() -> None:
    recording = Recording()
    record(recording, [np.zeros(160, dtype=np.int16)] * 10)

    assert not any(is_tone(block, 1000) for block in recording.blocks(PCMU, 0))


def test_a_recording_keeps_its_first_packets_and_counts_the_rest() -> None:
    recording = Recording(limit=3)
    record(recording, [np.zeros(160, dtype=np.int16)] * 5)

    assert recording.count == 5
    assert [p.sequence for p in recording.packets] == [0, 1, 2]


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]

    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def test_summary_counts_failures_by_status_and_only_answered_calls_setup_times() -> None:
    results = [result(0, setup_ms=2.0), result(1, setup_ms=4.0), result(2, 486, None, None),
               result(3, 408, None, None), result(4, 486, None, None)]

    summary = summarize(results, expect_tone=1000.0, elapsed=2.0)

    assert summary["answered"] == 2 and summary["failed"] == 3
    assert summary["failures_by_status"] == {"408": 1, "486": 2}
    assert summary["setup_ms"]["p50"] == 2.0 and summary["setup_ms"]["max"] == 4.0
    assert summary["tone_heard"] == 2
    assert summary["calls_per_s"] == 1.0


def test_the_command_line_defaults_to_one_call_into_the_sales_queue() -> None:
    args = build_parser().parse_args(["--target", "127.0.0.1:5070"])

    assert (args.number, args.calls, args.agent) == ("600", 1, [])
    assert args.tone == 440.0 and args.expect_tone is None


def test_a_tone_loop_sends_the_same_samples_as_a_tone_source() -> None:
    for frequency in (1000.0, 440.0, 697.0):
        loop, tone = ToneLoop(frequency), ToneSource(frequency)

        for _ in range(120):
            assert np.array_equal(loop.next_frame(), tone.next_frame())


def test_a_tone_loop_is_whole_frames_and_its_payloads_are_encoded_once() -> None:
    assert loop_frames(1000) == 1 and loop_frames(440) == 5 and loop_frames(697) == 50
    assert loop_frames(440.5) is None

    payloads = ToneLoop(440).payloads(PCMU)

    assert payloads is ToneLoop(440).payloads(PCMU)
    assert payloads == tuple(PCMU.encode(frame) for frame in ToneLoop(440).frames)


def test_sampled_judging_picks_the_first_call_and_every_nth_after_it() -> None:
    every_third, every_call = sampler(3), sampler(None)

    assert [every_third() for _ in range(7)] == [True, False, False, True, False, False, True]
    assert all(every_call() for _ in range(5))


def unjudged(index: int, packets: int) -> CallResult:
    return dataclasses.replace(result(index), packets_received=packets, audio_heard=False,
                               heard_hz=None, heard_dbfs=None, tone_heard=None, judged=False)


def test_with_sampled_judging_an_answered_call_without_rtp_counts_as_failed() -> None:
    results = [result(0), unjudged(1, 9), unjudged(2, 0), result(3, 486, None, None)]

    summary = summarize(results, expect_tone=1000.0, require_rtp=True)

    assert summary["answered"] == 3 and summary["failed"] == 2
    assert summary["failures_by_status"] == {"486": 1, NO_RTP: 1}
    assert summary["judged"] == 1 and summary["audio_heard"] == 1
    assert summary["tone_heard"] == 1
    assert "heard: 1/1 judged" in format_summary(summary)


def test_by_default_every_call_is_judged_and_no_rtp_is_not_a_failure_of_its_own() -> None:
    silent = dataclasses.replace(result(1), packets_received=0, audio_heard=False)

    summary = summarize([result(0), silent], expect_tone=None)

    assert summary["failed"] == 0 and summary["judged"] == 2 and summary["audio_heard"] == 1
    assert "far-side audio heard: 1/2\n" in format_summary(summary) + "\n"


def test_the_sampling_and_start_signal_options_are_opt_in() -> None:
    args = build_parser().parse_args([])
    assert args.judge_every is None and not args.wait_for_signal

    args = build_parser().parse_args(["--judge-every", "10", "--wait-for-signal"])
    assert args.judge_every == 10 and args.wait_for_signal


def test_the_ua_knows_the_attached_data_header_the_cms_sends() -> None:
    from cms.calls.manager import ATTACHED_DATA_HEADER as CMS_HEADER
    from scripts.sip_ua import ATTACHED_DATA_HEADER

    assert ATTACHED_DATA_HEADER == CMS_HEADER
