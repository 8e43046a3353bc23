"""The calls benchmark's step verdict: every call answered and with media, judged calls heard."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # scripts/ is not installed

from scripts.bench_calls import CallStep, Tally, agents_line  # noqa: E402


def test_a_step_is_clean_when_every_call_was_answered_and_every_judged_call_heard_audio() -> None:
    step = CallStep(rate=100, calls=500, answered=500, judged=50, audio_heard=50)

    assert step.clean
    assert "heard 50/50 judged" in step.line()


def test_a_judged_call_that_heard_nothing_makes_the_step_not_clean() -> None:
    assert not CallStep(rate=100, calls=500, answered=500, judged=50, audio_heard=49).clean


def test_a_call_without_rtp_makes_the_step_not_clean() -> None:
    step = CallStep(rate=100, calls=500, answered=500, failed=1, failures={"no RTP": 1},
                    judged=50, audio_heard=50)

    assert not step.clean
    assert "{'no RTP': 1}" in step.line()


def test_a_step_whose_agents_got_a_call_without_rtp_is_not_clean() -> None:
    step = CallStep(rate=400, calls=2000, answered=2000, judged=200, audio_heard=200,
                    agents_answered=2000, agents_failed=3, agents_failures={"no RTP": 3})

    assert not step.clean
    assert "agents' side: answered 2000 failed 3 {'no RTP': 3}" in step.line()
    step.agents_failed, step.agents_failures = 0, None
    assert step.clean


def test_the_agents_line_says_what_the_agents_side_saw() -> None:
    summary = {"answered": 900, "failed": 1, "failures_by_status": {"no RTP": 1},
               "judged": 90, "audio_heard": 90}

    assert agents_line(summary) == ("agents answered 900 calls, failed 1 {'no RTP': 1}, "
                                    "heard 90/90 judged")


def test_the_callers_cpu_of_a_step_whose_callers_were_stopped_is_not_shown_as_zero() -> None:
    unmeasured = CallStep(rate=100, calls=500).line()
    measured = CallStep(rate=100, calls=500, caller_cpu_pct=12.0).line()

    assert "callers  n/a " in unmeasured
    assert "callers  12% " in measured


AGENTS = """
import signal, sys, time
print('tally {"answered": 0}', flush=True)  # an earlier step's line: not this one's
signal.signal(signal.SIGUSR2, lambda *_: print('tally {"answered": 7}', flush=True))
print("ready", flush=True)
time.sleep(30)
"""


def test_a_tally_is_the_line_the_agents_print_after_the_signal(tmp_path: Path) -> None:
    log = tmp_path / "agents.log"
    with log.open("wb") as out:
        agents = subprocess.Popen([sys.executable, "-c", AGENTS], stdout=out)
    try:
        while b"ready" not in log.read_bytes():
            assert agents.poll() is None
            time.sleep(0.01)
        assert Tally(agents, log).take() == {"answered": 7}
    finally:
        agents.kill()
        agents.wait()
    assert Tally(agents, log).take() is None  # gone: no answer, no wait


def test_a_logged_line_is_found_even_with_no_time_left_to_wait(tmp_path: Path) -> None:
    from scripts.bench_common import read_line, wait_for_line

    class Running:
        def poll(self) -> None:
            return None

    log = tmp_path / "clients.log"
    log.write_text("starting\nready: 250 ws clients in 1.2 s\n")

    assert read_line(Running(), log, lambda text: text.startswith("ready:"), 0.0) == (
        "ready: 250 ws clients in 1.2 s")
    assert not wait_for_line(Running(), log, "ready", 0.0)  # whole lines only
