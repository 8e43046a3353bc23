"""calls: calls per second through a queue to auto-answering agents, media anchored.

`cms serve` (pinned to core 1 when there are 2+ cores) runs with a generated
configuration: N agents with auto_logon in the queue `sales` (number 600, wrap_up 0,
ring_timeout 5). place_calls in agent mode registers them and answers every call at once
(pinned to core 0, as are the callers). Caller rates then go up step by step, each step
a place_calls caller run of short calls (--duration 0.2) for a few seconds. A step is
clean when every call was answered and received RTP, and every judged call heard audio,
on the callers' side and on the agents' (their tally, read by SIGUSR2 before the step
and once they have seen its calls end); the escalation stops at the first step that is
not. Audio is FFT-judged on every JUDGE_EVERY-th call (callers and agents alike: the
generators' CPU goes to calls, not FFTs); every other call still sends and receives real
RTP through the CMS and counts as failed if none arrived. Each caller process is started
and set up before its step and placing calls on a signal, so its start-up stays out of
the step. Each step shows the achieved answered calls/s, setup time INVITE->200 p50/p99,
the CMS's CPU as a share of one core (utime+stime from /proc over the step) and per
answered call (milliseconds: the figure to compare versions by, see
scripts/bench_calls_cpu.py), and the callers' and agents' own CPU shares (they share
core 0: near 100% together means the generators, not the CMS, were the limit).
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .bench import Processes, log_tail, process_cpu_seconds, say, wait_unreaped
from .bench_common import (
    QUEUE_NUMBER,
    Cms,
    agent_name,
    conditions,
    conditions_line,
    cores,
    place_calls_argv,
    read_line,
    start_agents,
    start_cms,
    wait_for_line,
)
from .bench_errors import BenchError

# Past the target too: each step's share of the agents' tally is taken (SIGUSR2) when the
# agents have seen its calls end, so a step past the target is judged on its own.
FULL_RATES = (25, 50, 100, 150, 200, 300, 350, 400)
QUICK_RATES = (25, 50, 100)
FULL_STEP_S = 5.0
QUICK_STEP_S = 3.0
CALL_DURATION_S = 0.2
TARGET_RATE = 300
ACHIEVED_SHARE = 0.9  # the target counts as met when a clean step achieved 90% of it
JUDGE_EVERY = 10  # audio FFT-judged on every 10th call; all calls must receive RTP
CALLER_SETUP_S = 60.0  # a caller process's start-up (imports, socket) on a busy machine


@dataclass
class CallStep:
    rate: int
    calls: int
    answered: int = 0
    failed: int = 0
    failures: dict[str, int] | None = None
    judged: int = 0  # answered calls whose audio was recorded and judged
    audio_heard: int = 0  # of those, the ones that heard non-silent audio
    achieved: float = 0.0
    setup_p50_ms: float | None = None
    setup_p99_ms: float | None = None
    cms_cpu_pct: float = 0.0
    cms_cpu_ms_per_call: float | None = None  # CMS CPU time over the step / answered calls
    caller_cpu_pct: float | None = None  # None: the callers did not finish, not measured
    agents_cpu_pct: float | None = None  # the auto-answering agents' process, same core
    # The agents' side of this step (their tally's change over it); None: not taken.
    agents_answered: int | None = None
    agents_failed: int | None = None
    agents_failures: dict[str, int] | None = None
    wall_s: float = 0.0
    load_average: str = ""

    @property
    def clean(self) -> bool:
        return (self.failed == 0 and self.answered == self.calls
                and self.audio_heard == self.judged and not self.agents_failed)

    def line(self) -> str:
        def ms(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.1f}"

        def pct(value: float | None) -> str:
            return " n/a" if value is None else f"{value:3.0f}%"

        fails = f" {self.failures}" if self.failures else ""
        per_call = "n/a" if self.cms_cpu_ms_per_call is None else f"{self.cms_cpu_ms_per_call:.2f}"
        return (
            f"calls offered {self.rate:4d}/s  answered {self.answered:5d}/{self.calls:<5d} "
            f"failed {self.failed}{fails}  heard {self.audio_heard}/{self.judged} judged  "
            f"achieved {self.achieved:6.1f}/s  setup p50 "
            f"{ms(self.setup_p50_ms)} ms p99 {ms(self.setup_p99_ms)} ms  cms cpu "
            f"{self.cms_cpu_pct:3.0f}% of a core ({per_call} ms/call)  "
            f"callers {pct(self.caller_cpu_pct)}  "
            + ("" if self.agents_cpu_pct is None else f"agents {pct(self.agents_cpu_pct)}  ")
            + ("" if self.agents_failed is None else
               f"agents' side: answered {self.agents_answered} failed {self.agents_failed}"
               f"{' ' + str(self.agents_failures) if self.agents_failures else ''}  ")
            + f"load {self.load_average}  {'clean' if self.clean else 'NOT clean'}"
        )


@dataclass
class StepRun:
    """A step whose callers are running (`start_step`), to be finished by `finish_step`."""

    step: CallStep
    caller: Any
    report: Path
    workdir: Path
    cms: Cms
    cpu0: float
    began: float
    seconds: float
    agents: Any = None  # the agents' process, when its CPU is to be reported
    agents_cpu0: float = 0.0
    caller_cpu0: float = 0.0  # the caller's start-up, not counted in the step


def start_step(procs: Processes, workdir: Path, cms: Cms, rate: int, seconds: float,
               core: int | None, agents: Any = None) -> StepRun:
    """Start a place_calls caller run against `cms`: the caller process starts and sets up
    first; the step (and every CPU figure) begins when it is told to place its calls."""
    calls = max(1, round(rate * seconds))
    report = workdir / f"calls-{rate}.json"
    report.unlink(missing_ok=True)
    argv = place_calls_argv(
        core, "--target", cms.target, "--number", QUEUE_NUMBER, "--calls", str(calls),
        "--rate", str(rate), "--duration", str(CALL_DURATION_S), "--json", str(report),
        "--judge-every", str(JUDGE_EVERY), "--wait-for-signal",
    )
    log = workdir / f"callers-{rate}.log"
    offset = log.stat().st_size if log.exists() else 0
    caller = procs.start(argv, log, Path(__file__).parent.parent)
    if not wait_for_line(caller, log, "ready", CALLER_SETUP_S, offset):
        procs.stop(caller)
        raise BenchError(f"the caller process for {rate}/s did not get ready:\n{log_tail(log)}")
    caller_cpu0 = process_cpu_seconds(caller.pid)
    agents_cpu0 = process_cpu_seconds(agents.pid) if agents is not None else 0.0
    cpu0, began = cms.cpu_seconds(), time.monotonic()
    os.kill(caller.pid, signal.SIGUSR1)
    return StepRun(CallStep(rate, calls), caller, report, workdir, cms, cpu0, began, seconds,
                   agents, agents_cpu0, caller_cpu0)


def finish_step(procs: Processes, run: StepRun) -> CallStep:
    """Wait for the callers of a started step, then read its figures."""
    step, caller, rate, calls = run.step, run.caller, run.step.rate, run.step.calls
    try:
        if wait_unreaped(caller, run.seconds + 60):
            caller_cpu: float | None = process_cpu_seconds(caller.pid) - run.caller_cpu0
        else:
            say(f"  callers at {rate}/s did not finish in time; stopped")
            caller_cpu = None  # not measured: the stopped process is reaped unread
    finally:
        procs.stop(caller)
    step.wall_s = time.monotonic() - run.began
    cms_cpu = run.cms.cpu_seconds() - run.cpu0
    step.cms_cpu_pct = 100.0 * cms_cpu / step.wall_s
    if caller_cpu is not None:
        step.caller_cpu_pct = 100.0 * caller_cpu / step.wall_s
    if run.agents is not None and run.agents.poll() is None:
        agents_cpu = process_cpu_seconds(run.agents.pid) - run.agents_cpu0
        step.agents_cpu_pct = 100.0 * agents_cpu / step.wall_s
    step.load_average = conditions()["load_average"]
    try:
        summary = json.loads(run.report.read_text())["summary"]
    except (OSError, ValueError, KeyError):
        say(f"  no report from the callers at {rate}/s (see {run.workdir})")
        step.failed = calls
        return step
    step.answered = summary["answered"]
    step.failed = summary["failed"]
    step.failures = summary["failures_by_status"] or None
    step.judged = int(summary.get("judged", step.answered))
    step.audio_heard = int(summary.get("audio_heard", 0))
    step.achieved = float(summary.get("calls_per_s") or 0.0)
    if step.answered:
        step.cms_cpu_ms_per_call = 1000.0 * cms_cpu / step.answered
    step.setup_p50_ms = summary["setup_ms"]["p50"]
    step.setup_p99_ms = summary["setup_ms"]["p99"]
    return step


def run_step(procs: Processes, workdir: Path, cms: Cms, rate: int, seconds: float,
             core: int | None, agents: Any = None) -> CallStep:
    """One caller run at `rate` for `seconds` against `cms`, with its figures."""
    return finish_step(procs, start_step(procs, workdir, cms, rate, seconds, core, agents))


class Tally:
    """The agents' running counts, read by signal (place_calls agent mode, SIGUSR2)."""

    def __init__(self, agents: Any, log: Path) -> None:
        self.agents = agents
        self.log = log

    def take(self, timeout: float = 10.0) -> dict[str, Any] | None:
        """Ask for a tally line and read it (None: the agents did not answer)."""
        if self.agents.poll() is not None:
            return None
        offset = self.log.stat().st_size if self.log.exists() else 0
        os.kill(self.agents.pid, signal.SIGUSR2)
        line = read_line(self.agents, self.log, lambda text: text.startswith("tally "),
                         timeout, offset)
        return None if line is None else dict(json.loads(line[len("tally "):]))

    def judge(self, step: CallStep, before: dict[str, Any] | None,
              settle: float = 10.0) -> None:
        """Set `step`'s agents' share: the tally's change once every answered call of the
        step has ended on the agents' side too (or `settle` seconds passed)."""
        if before is None:
            return
        deadline = time.monotonic() + settle
        while True:
            after = self.take()
            if after is None:
                return
            answered = after["answered"] - before["answered"]
            if answered >= step.answered or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        step.agents_answered = answered
        step.agents_failed = after["failed"] - before["failed"]
        failures = {kind: count - before["failures_by_status"].get(kind, 0)
                    for kind, count in after["failures_by_status"].items()}
        step.agents_failures = {k: v for k, v in failures.items() if v} or None


def run_calls_bench(cms_path: str, quick: bool, workdir: Path, agents: int = 100,
                    extra_args: tuple[str, ...] = ()) -> dict[str, Any]:
    rates = QUICK_RATES if quick else FULL_RATES
    seconds = QUICK_STEP_S if quick else FULL_STEP_S
    cms_core, gen_core = cores()
    cond = conditions({
        "agents": agents, "rates": list(rates), "step_s": seconds,
        "call_duration_s": CALL_DURATION_S, "queue": "sales 600, wrap_up 0, ring_timeout 5",
        "media_check": f"audio FFT-judged on every {JUDGE_EVERY}th call (callers and agents); "
                       "every call must receive RTP",
    })
    say(f"calls benchmark: {agents} agents, rates {','.join(map(str, rates))}/s, "
        f"{seconds:g} s per step, calls of {CALL_DURATION_S:g} s, {cond['media_check']}; "
        f"{conditions_line(cond)}")
    procs = Processes()
    steps: list[CallStep] = []
    agents_report = workdir / "agents.json"
    agents_summary: dict[str, Any] | None = None
    try:
        cms = start_cms(procs, workdir, cms_path, agents, cms_core, extra_args,
                        ring_timeout=5, wrap_up=0)
        agents_proc = start_agents(procs, workdir, cms,
                                   [agent_name(i) for i in range(1, agents + 1)], gen_core,
                                   extra_args=("--judge-every", str(JUDGE_EVERY),
                                               "--json", str(agents_report)))
        time.sleep(0.5)
        tally = Tally(agents_proc, workdir / "agents.log")
        for rate in rates:
            before = tally.take()
            step = run_step(procs, workdir, cms, rate, seconds, gen_core, agents_proc)
            tally.judge(step, before)
            steps.append(step)
            say("  " + step.line())
            if not step.clean or not cms.alive():
                break
            time.sleep(0.5)
        procs.stop(agents_proc, grace=30.0)  # SIGTERM: they hang up, unregister, report
        agents_summary = read_agents_summary(agents_report)
    finally:
        procs.stop_all()
    clean = [s for s in steps if s.clean]
    best = max(clean, key=lambda s: s.rate) if clean else None
    highest = best.rate if best else 0
    # The agents' side counts too: a call whose agent got no RTP fails its step (or the
    # run, when the agents' per-step tally could not be taken).
    agents_clean = best is not None and (
        best.agents_failed == 0 if best.agents_failed is not None
        else agents_summary is not None and agents_summary["failed"] == 0)
    met = (best is not None and highest >= TARGET_RATE and agents_clean
           and best.achieved >= ACHIEVED_SHARE * TARGET_RATE)
    why = ("clean at every offered rate: a lower bound" if steps and steps[-1].clean
           else "stopped at the first step not clean")
    summary = (
        f"calls: highest clean rate {highest}/s (achieved "
        f"{best.achieved if best else 0:.1f}/s; {why}); target >= {TARGET_RATE} calls/s on one "
        f"core: {'met' if met else 'NOT met'}"
        + ("" if not quick or met else " (--quick stops at 100/s)")
    )
    if agents_summary is not None:
        line = agents_line(agents_summary)
        say("  " + line)
        summary += "; over the whole run, " + line
        if agents_summary["failed"] and not agents_clean:
            summary += " (media failures on the agents' side: not clean)"
    cond["load_average_after"] = conditions()["load_average"]
    return {
        "benchmark": "calls",
        "conditions": cond,
        "steps": [dict(asdict(s), clean=s.clean) for s in steps],
        "agents": agents_summary,
        "highest_clean_rate": highest,
        "target_rate": TARGET_RATE,
        "target_met": met,
        "summary": [summary],
    }


def read_agents_summary(report: Path) -> dict[str, Any] | None:
    """The agents' own report over the whole run (None: they wrote none)."""
    try:
        return dict(json.loads(report.read_text())["summary"])
    except (OSError, ValueError, KeyError):
        say(f"  no report from the agents ({report})")
        return None


def agents_line(summary: dict[str, Any]) -> str:
    """What the agents' side saw: calls answered, failures (no RTP), audio of judged calls."""
    fails = summary["failures_by_status"]
    return (f"agents answered {summary['answered']} calls, failed {summary['failed']}"
            + (f" {fails}" if fails else "")
            + f", heard {summary['audio_heard']}/{summary['judged']} judged")
