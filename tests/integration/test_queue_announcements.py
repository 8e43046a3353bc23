"""What a queued caller hears besides hold music: its position, and a goodbye before hang-up.

The prompts are the committed WAVs of sip_profiles/sounds; a caller's recording
is searched for them by normalised cross-correlation (after the same G.711
round trip the CMS's packets went through), so a test can tell "two" from "one".
"""

from __future__ import annotations

import asyncio
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from cms_process import REPO, StartCms
from test_calls import phone, run, wait_event, wait_records

from cms.media.formats import PCMU
from cms.media.sources import ToneSource, read_wav
from scripts.ua_media import dominant_frequency

SOUNDS = REPO / "sip_profiles" / "sounds"
MATCH = 0.9  # a prompt played through G.711 correlates above this with its WAV
NO_MATCH = 0.75


def prompt(name: str) -> np.ndarray:
    """A prompt as the caller receives it: through PCMU."""
    return PCMU.decode(PCMU.encode(read_wav(SOUNDS / f"{name}.wav"))).astype(np.float64)


def best_match(heard: np.ndarray, needle: np.ndarray) -> float:
    """The highest normalised cross-correlation of `needle` anywhere in `heard`."""
    heard = heard.astype(np.float64)
    if heard.size < needle.size:
        return 0.0
    dots = np.correlate(heard, needle, mode="valid")
    energy = np.concatenate(([0.0], np.cumsum(heard ** 2)))
    window = energy[needle.size:] - energy[:-needle.size]
    norms = np.sqrt(np.maximum(window, 1e-9)) * np.linalg.norm(needle)
    return float(np.max(dots / norms))


def test_a_waiting_caller_hears_its_position_and_hears_it_change(start_cms: StartCms) -> None:
    cms = start_cms(users=1, wrap_up=0,
                    queue_keys={"announce_position": 2.6, "announce_position_first": 0.3},
                    cms_keys={"sounds": str(SOUNDS)})

    async def scenario() -> None:
        async with phone(cms) as first_phone, phone(cms) as second_phone:
            first = await first_phone.call("600", ToneSource(440.0))
            assert first.status == 200, first.reason
            await wait_event(cms, "queue.caller_joined", position=1)
            second = await second_phone.call("600", ToneSource(440.0))
            assert second.status == 200, second.reason
            joined = time.monotonic()
            await wait_event(cms, "queue.caller_joined", position=2)
            await asyncio.sleep(2.4)  # the first announcement (at 0.3 s) lasts about 2.2 s
            heard = second.media.samples(since=joined)
            assert best_match(heard, prompt("position")) > MATCH
            assert best_match(heard, prompt("number-2")) > MATCH
            assert best_match(heard, prompt("number-1")) < NO_MATCH

            # The caller ahead gives up: the next announcement says "one".
            assert await first.hang_up() == 200
            moved_up = time.monotonic()
            await asyncio.sleep(2.6)
            heard = second.media.samples(since=moved_up)
            assert best_match(heard, prompt("number-1")) > MATCH
            assert best_match(heard, prompt("number-2")) < NO_MATCH
            assert await second.hang_up() == 200
        await wait_records(cms, 2)

    run(scenario(), cms)


def test_overflow_plays_the_goodbye_announcement_to_its_end_before_hanging_up(
    start_cms: StartCms,
) -> None:
    cms = start_cms(users=1, queue_keys={"max_wait": 0.5,
                                         "overflow_announcement": "all-agents-busy"},
                    cms_keys={"sounds": str(SOUNDS)})
    goodbye = prompt("all-agents-busy")

    async def scenario() -> None:
        async with phone(cms) as caller:
            call = await caller.call("600", ToneSource(440.0))
            assert call.status == 200, call.reason
            started = time.monotonic()
            await asyncio.wait_for(call.ended.wait(), 10)
            lasted = time.monotonic() - started
            assert call.ended_by == "remote"
            # max_wait, then the whole 4.5 s announcement, then the BYE.
            assert lasted >= 0.5 + goodbye.size / 8000
            assert best_match(call.media.samples(since=started), goodbye) > MATCH
        (record,) = await wait_records(cms, 1)
        assert record["outcome"] == "overflow"

    run(scenario(), cms)


def test_a_queue_with_hold_music_plays_its_wav_to_a_waiting_caller(
    start_cms: StartCms, tmp_path: Path,
) -> None:
    music = tmp_path / "music.wav"
    tone = ToneSource(600.0)
    with wave.open(str(music), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(np.concatenate([tone.next_frame() for _ in range(50)]).tobytes())
    cms = start_cms(users=1, queue_keys={"hold_music": str(music)})

    async def scenario() -> None:
        async with phone(cms) as caller:
            call = await caller.call("600", ToneSource(440.0))
            assert call.status == 200, call.reason
            joined = time.monotonic()
            await asyncio.sleep(1.5)  # longer than one pass: the WAV loops
            heard = call.media.samples(since=joined + 0.2)
            assert dominant_frequency(heard) == pytest.approx(600.0, abs=20)
            assert await call.hang_up() == 200

    run(scenario(), cms)
