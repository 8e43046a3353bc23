"""Synthetic calls: place N calls at a rate into a number, or run auto-answering agents.

Caller mode (the default) places `--calls` calls at `--rate` per second to
`--number` at `--target`, each playing a tone (`--tone`) or a WAV file
(`--wav`), optionally sending RFC 4733 DTMF (`--dtmf`), hanging up `--duration`
seconds after the answer, and reports:

- setup time, INVITE to 200 (p50 / p90 / p99 / max), and failures by status;
- per call, whether the far side's audio was heard (RTP with non-silent
  payload) and the dominant frequency of its last second; with `--expect-tone`
  whether that tone was heard and how long after the 200 it started (for a
  queue: the time until an agent's audio arrived).

A 407 challenge (a caller outside the CMS's trusted networks) is answered with
`--user` / `--password`.

`--judge-every N` (both modes) records and judges the audio of every Nth call only
(a load generator's CPU goes to the calls, not to FFTs); the other calls count the
RTP packets they received, and an answered call that received none counts as
failed ("no RTP"), so media is still checked on every call. `--wait-for-signal`
sets up, prints "ready", and places the first call on SIGUSR1 (a benchmark keeps
the start-up out of its timing).

Agent mode (`--agent NAME[:PASSWORD]`, repeatable) registers each agent by
digest and answers every call after `--answer-after` seconds of ringing,
playing `--answer-tone` and recording what it hears, until `--run-for`
seconds passed or SIGINT / SIGTERM; then it unregisters and reports the calls.
SIGUSR2 prints a `tally {...}` line of the counts so far (a benchmark's per-step share).
Callers in one process and agents in another measure calls per second through
a queue:

    python -m scripts.place_calls --agent agent1:agent1pw --agent agent2:agent2pw \\
        --target 127.0.0.1:5060 --answer-tone 1000 --expect-tone 440 &
    python -m scripts.place_calls --target 127.0.0.1:5060 --number 600 --calls 50 \\
        --rate 10 --duration 5 --tone 440 --expect-tone 1000

Both are a user agent built on the CMS's own SIP core (`scripts.sip_ua`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cms.media.service import MediaService
from cms.media.sources import AudioSource, ToneSource, WavSource

from .sip_ua import AnswerPolicy, Call, UserAgent, target_of
from .ua_media import (
    SILENCE_DBFS,
    TONE_TOLERANCE_HZ,
    ToneLoop,
    dominant_frequency,
    is_tone,
    level_dbfs,
    loop_frames,
)

TONE_MIN_BLOCKS = 3  # 300 ms of the expected tone count as "heard"
ANALYSED_SECONDS = 1.0  # the dominant frequency reported is that of the last second heard


@dataclass
class CallResult:
    """What one call did and what its phone heard."""

    index: int
    call_id: str
    status: int
    reason: str
    setup_ms: float | None  # INVITE to 200 (placed calls)
    ended_by: str
    packets_received: int
    audio_heard: bool  # RTP with non-silent audio arrived
    heard_hz: float | None  # dominant frequency of the last second heard
    heard_dbfs: float | None
    tone_heard: bool | None  # the expected tone, for at least TONE_MIN_BLOCKS blocks
    tone_after_ms: float | None  # from the 200 to the first block of the expected tone
    digits_received: str = ""
    attached_data: dict[str, Any] | None = None
    judged: bool = True  # audio recorded and judged; else only packets_received is known


def judge(call: Call, index: int, expect_tone: float | None) -> CallResult:
    """Turn a finished call into its result (only counted packets for an unrecorded call)."""
    media = call.media
    setup = call.setup_time if call.direction == "out" else None
    heard = False
    heard_hz = heard_dbfs = tone_heard = tone_after = None
    digits = ""
    if media.recorded:
        heard, heard_hz, heard_dbfs, tone_heard, tone_after = listen(call, expect_tone)
        digits = media.leg.stats().digits
    return CallResult(
        index=index, call_id=call.call_id, status=call.status, reason=call.reason,
        setup_ms=round(1000 * setup, 2) if setup is not None else None,
        ended_by=call.ended_by, packets_received=media.received, audio_heard=heard,
        heard_hz=heard_hz, heard_dbfs=heard_dbfs, tone_heard=tone_heard,
        tone_after_ms=tone_after, digits_received=digits,
        attached_data=call.attached_data, judged=media.recorded,
    )


def listen(call: Call, expect_tone: float | None
           ) -> tuple[bool, float | None, float | None, bool | None, float | None]:
    """What a recorded call heard: (any audio, dominant Hz and dBFS of the last second,
    expected tone heard, ms from the 200 to its first block)."""
    media = call.media
    packets = media.recording.audio_packets(media.payload_type)
    heard = any(level_dbfs(media.codec.decode(p.payload)) > SILENCE_DBFS for p in packets)
    heard_hz = heard_dbfs = None
    if packets:
        samples = media.samples(since=packets[-1].arrival - ANALYSED_SECONDS)
        heard_dbfs = round(level_dbfs(samples), 1)
        heard_hz = round(dominant_frequency(samples), 1) if heard_dbfs > SILENCE_DBFS else None
    tone_heard = tone_after = None
    if expect_tone is not None:
        # Blocks (an FFT each) only when a tone is expected: they cost more than the call.
        matching = [block for block in media.blocks() if is_tone(block, expect_tone)]
        tone_heard = len(matching) >= TONE_MIN_BLOCKS
        if matching and call.answered_at is not None:
            tone_after = round(1000 * max(0.0, matching[0].arrival - call.answered_at), 1)
    return heard, heard_hz, heard_dbfs, tone_heard, tone_after


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank percentile (p in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def spread(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99 and max of a list of numbers."""
    return {"p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "max": max(values) if values else None}


NO_RTP = "no RTP"  # failures_by_status key: answered, but the far side's RTP never arrived


# What an agent-mode tally line (SIGUSR2) carries: cumulative counts of the summary.
TALLY_KEYS = ("answered", "failed", "failures_by_status", "judged", "audio_heard")


def summarize(results: Sequence[CallResult], expect_tone: float | None,
              elapsed: float | None = None, require_rtp: bool = False) -> dict[str, Any]:
    """The report over all calls.

    With `require_rtp` (sampled judging) an answered call that received no RTP packet
    is also counted in `failed` (as "no RTP"); `answered` still counts every 2xx.
    """
    answered = [r for r in results if 200 <= r.status < 300]
    judged = [r for r in answered if r.judged]
    failures = Counter(str(r.status) for r in results if not 200 <= r.status < 300)
    if require_rtp:
        no_rtp = sum(r.packets_received == 0 for r in answered)
        if no_rtp:
            failures[NO_RTP] = no_rtp
    summary: dict[str, Any] = {
        "calls": len(results),
        "answered": len(answered),
        "failed": sum(failures.values()),
        "failures_by_status": dict(sorted(failures.items())),
        "setup_ms": spread([r.setup_ms for r in answered if r.setup_ms is not None]),
        "judged": len(judged),
        "audio_heard": sum(r.audio_heard for r in judged),
    }
    if expect_tone is not None:
        summary["expected_tone_hz"] = expect_tone
        summary["tone_heard"] = sum(bool(r.tone_heard) for r in judged)
        summary["tone_after_ms"] = spread([r.tone_after_ms for r in judged
                                           if r.tone_after_ms is not None])
    if elapsed:
        summary["elapsed_s"] = round(elapsed, 3)
        summary["calls_per_s"] = round(len(answered) / elapsed, 2)
    return summary


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_summary(summary: dict[str, Any]) -> str:
    """The report as a few human-readable lines."""
    lines = [f"answered {summary['answered']}/{summary['calls']}, failed {summary['failed']}"
             + (f" {summary['failures_by_status']}" if summary["failures_by_status"] else "")]
    if "calls_per_s" in summary:
        lines[0] += f" in {summary['elapsed_s']:.1f} s ({summary['calls_per_s']} answered/s)"
    setup = summary["setup_ms"]
    if setup["p50"] is not None:
        lines.append(f"setup time INVITE->200 (ms): p50 {_ms(setup['p50'])}  "
                     f"p90 {_ms(setup['p90'])}  p99 {_ms(setup['p99'])}  "
                     f"max {_ms(setup['max'])}")
    judged = summary.get("judged", summary["answered"])
    of = f"{judged}" + ("" if judged == summary["answered"] else " judged")
    lines.append(f"far-side audio heard: {summary['audio_heard']}/{of}")
    if "expected_tone_hz" in summary:
        after = summary["tone_after_ms"]
        lines.append(f"expected tone {summary['expected_tone_hz']:g} Hz heard: "
                     f"{summary['tone_heard']}/{of}; first heard after "
                     f"the 200 (ms): p50 {_ms(after['p50'])}  p90 {_ms(after['p90'])}  "
                     f"p99 {_ms(after['p99'])}  max {_ms(after['max'])}")
    return "\n".join(lines)


def source_factory(tone: float, wav: str | None, level: float) -> Callable[[], AudioSource]:
    """A new source per call: the WAV file (looped) if given, else a sine tone (sent as
    cached packets when it repeats within a second, as any whole number of Hz does)."""
    if wav is not None:
        WavSource(wav)  # fail early on an unreadable file
        return lambda: WavSource(wav)
    if loop_frames(tone) is not None:
        ToneLoop(tone, level)  # fail early on a bad frequency, as ToneSource would
        return lambda: ToneLoop(tone, level)
    return lambda: ToneSource(tone, level)


def sampler(every: int | None) -> Callable[[], bool]:
    """True for the 1st, (N+1)th, (2N+1)th ... call: those are recorded and judged."""
    count = 0

    def judge_this() -> bool:
        nonlocal count
        count += 1
        return every is None or (count - 1) % every == 0

    return judge_this


def generator_media(host: str) -> MediaService:
    """RTP legs for many short calls: no connected companion socket per leg (it saves the
    CMS a little per packet, but costs a socket, a bind and a connect per call)."""
    return MediaService(host, (0, 0), companion=False)


# --------------------------------------------------------------------------- caller mode


async def place_one(ua: UserAgent, index: int, args: argparse.Namespace,
                    source: Callable[[], AudioSource], answers: list[float],
                    record: bool = True) -> CallResult:
    """One call: INVITE, talk for the duration (DTMF on the way), BYE, judge what was heard.

    The answer time goes to `answers`; the call is forgotten once judged.
    """
    call = await ua.call(args.number, source(), record=record)
    if call.answered_at is not None:
        answers.append(call.answered_at)
    if call.is_up:
        if args.dtmf:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.ended.wait(), args.dtmf_at)
            if call.is_up:
                try:
                    call.send_dtmf(args.dtmf)
                except ValueError as exc:
                    call.reason = f"no DTMF: {exc}"
        remaining = args.duration - (time.monotonic() - (call.answered_at or 0.0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(call.ended.wait(), max(0.0, remaining))
        await call.hang_up()
    result = judge(call, index, args.expect_tone)
    ua.forget(call)
    return result


async def run_calls(args: argparse.Namespace) -> dict[str, Any]:
    """Caller mode: place the calls at the rate, wait for all, summarize."""
    source = source_factory(args.tone, args.wav, args.level)
    media = generator_media(args.local_host)
    ua = UserAgent(target_of(args.target), user=args.user or "caller", password=args.password,
                   host=args.local_host, media=media, user_agent="cms-place-calls")
    media.start()
    await ua.start()
    loop = asyncio.get_running_loop()
    judge_this = sampler(args.judge_every)
    if args.wait_for_signal:
        go = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, go.set)
        print("ready", flush=True)
        await go.wait()
        loop.remove_signal_handler(signal.SIGUSR1)
    start = loop.time()
    first_invite = time.monotonic()
    answers: list[float] = []
    tasks = []
    try:
        for index in range(args.calls):
            delay = start + index / args.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(place_one(ua, index, args, source, answers,
                                                    judge_this())))
        results = list(await asyncio.gather(*tasks))
    finally:
        await ua.close()
        media.close()
    elapsed = (max(answers) - first_invite) if answers else None
    return {"mode": "calls", "target": args.target, "number": args.number,
            "rate": args.rate, "duration": args.duration,
            "judge_every": args.judge_every or 1,
            "summary": summarize(results, args.expect_tone, elapsed,
                                 require_rtp=args.judge_every is not None),
            "calls": [asdict(r) for r in results]}


# --------------------------------------------------------------------------- agent mode


def parse_agent(value: str, default_password: str | None) -> tuple[str, str]:
    """NAME[:PASSWORD] (the password defaults to --password)."""
    name, _, password = value.partition(":")
    password = password or default_password or ""
    if not name or not password:
        raise argparse.ArgumentTypeError(f"agent {value!r} needs NAME:PASSWORD or --password")
    return name, password


async def run_agents(args: argparse.Namespace, stop: asyncio.Event | None = None
                     ) -> dict[str, Any]:
    """Agent mode: register, answer every call, until stopped; report the calls."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    source = source_factory(args.answer_tone, args.wav, args.level)
    ring_for = None if args.no_answer else args.answer_after
    policy = AnswerPolicy(ring_for=ring_for, reject=args.reject, source=source,
                          record=sampler(args.judge_every))
    media = generator_media(args.local_host)
    media.start()
    results: list[tuple[str, CallResult]] = []

    def ended(call: Call) -> None:
        # Judge each call as it ends and forget its recording: agents may run for hours.
        results.append((call.ua.user, judge(call, len(results), args.expect_tone)))
        call.ua.forget(call)

    def tally() -> None:
        # SIGUSR2: the counts so far, one line, so a benchmark can take them per step.
        summary = summarize([r for _, r in results], args.expect_tone,
                            require_rtp=args.judge_every is not None)
        print("tally " + json.dumps({key: summary[key] for key in TALLY_KEYS}), flush=True)

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGUSR2, tally)
    agents = [UserAgent(target_of(args.target), user=name, password=password,
                        host=args.local_host, media=media, answer=policy,
                        user_agent="cms-place-calls-agent", on_ended=ended)
              for name, password in (parse_agent(a, args.password) for a in args.agent)]
    try:
        for ua in agents:
            await ua.start()
            status = await ua.register(args.expires)
            print(f"agent {ua.user} at {ua.contact}: REGISTER {status or 'timed out'}",
                  flush=True)
            if status != 200:
                stop.set()
        if not stop.is_set():
            print("agents ready", flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.run_for)
    finally:
        for ua in agents:
            await ua.close()
        media.close()
    by_agent = Counter(user for user, r in results if 200 <= r.status < 300)
    return {"mode": "agents", "target": args.target,
            "judge_every": args.judge_every or 1,
            "summary": dict(summarize([r for _, r in results], args.expect_tone,
                                      require_rtp=args.judge_every is not None),
                            answered_by_agent=dict(sorted(by_agent.items()))),
            "calls": [dict(asdict(r), agent=user) for user, r in results]}


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m scripts.place_calls",
        description="Place synthetic calls into a number (caller mode) or run auto-answering "
                    "agents (--agent); both on the CMS's own SIP core, with real RTP.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  python -m scripts.place_calls --target 127.0.0.1:5060 --number 600 "
               "--calls 20 --rate 5 --duration 5 --tone 440 --expect-tone 1000\n"
               "  python -m scripts.place_calls --target 127.0.0.1:5060 "
               "--agent agent1:agent1pw --answer-tone 1000 --run-for 60",
    )
    parser.add_argument("--target", default="127.0.0.1:5060",
                        help="the CMS's SIP address, HOST[:PORT] (default %(default)s)")
    parser.add_argument("--local-host", default="127.0.0.1",
                        help="address to bind SIP and RTP on (default %(default)s)")
    parser.add_argument("--wav", help="play this WAV file (mono 16-bit, 8-48 kHz), looped, "
                                      "instead of a tone")
    parser.add_argument("--level", type=float, default=-10.0,
                        help="tone level in dBFS (default %(default)s)")
    parser.add_argument("--expect-tone", type=float, metavar="HZ",
                        help="judge whether the far side's audio is this tone "
                             f"(±{TONE_TOLERANCE_HZ:g} Hz)")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="also write the report, with every call, as JSON")
    parser.add_argument("--password", help="digest password (407 for calls, 401 for agents)")
    parser.add_argument("--judge-every", type=int, metavar="N",
                        help="record and judge the audio of every Nth call only (the others "
                             "count RTP packets); an answered call that received no RTP then "
                             "counts as failed (default: judge every call)")
    calls = parser.add_argument_group("caller mode")
    calls.add_argument("--number", default="600", help="number or name to call (default "
                                                       "%(default)s)")
    calls.add_argument("--calls", type=int, default=1, help="how many calls (default 1)")
    calls.add_argument("--rate", type=float, default=1.0, help="new calls per second "
                                                               "(default 1)")
    calls.add_argument("--duration", type=float, default=5.0,
                       help="seconds from answer to our BYE (default %(default)s)")
    calls.add_argument("--tone", type=float, default=440.0,
                       help="tone to play in Hz (default %(default)s)")
    calls.add_argument("--dtmf", default="", help="DTMF digits to send (RFC 4733)")
    calls.add_argument("--dtmf-at", type=float, default=1.0,
                       help="seconds after the answer to send them (default %(default)s)")
    calls.add_argument("--user", help="our user name (From, and digest username for a 407)")
    calls.add_argument("--wait-for-signal", action="store_true",
                       help='set up, print "ready", place the first call on SIGUSR1')
    agents = parser.add_argument_group("agent mode")
    agents.add_argument("--agent", action="append", default=[], metavar="NAME[:PASSWORD]",
                        help="register this agent and answer its calls (repeatable)")
    agents.add_argument("--answer-tone", type=float, default=1000.0,
                        help="tone the agents play in Hz (default %(default)s)")
    agents.add_argument("--answer-after", type=float, default=0.0,
                        help="seconds of ringing before answering (default %(default)s)")
    agents.add_argument("--no-answer", action="store_true", help="ring, never answer")
    agents.add_argument("--reject", type=int, metavar="STATUS",
                        help="reject every call with this status (e.g. 486)")
    agents.add_argument("--expires", type=int, default=300,
                        help="registration lifetime asked for (default %(default)s)")
    agents.add_argument("--run-for", type=float, metavar="SECONDS",
                        help="stop after this long (default: until SIGINT / SIGTERM)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run caller or agent mode; exit 0 when every call was answered (and heard, if asked)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.agent and (args.calls < 1 or args.rate <= 0):
        parser.error("--calls must be at least 1 and --rate positive")
    if args.judge_every is not None and args.judge_every < 1:
        parser.error("--judge-every must be at least 1")
    if args.agent:
        try:
            [parse_agent(a, args.password) for a in args.agent]
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))
    runner = run_agents(args) if args.agent else run_calls(args)
    # A generator's objects live for a call: keep the collector off the start-up's objects
    # and run it less often (it took a few % of a caller's CPU).
    gc.freeze()
    gc.set_threshold(10_000, 50, 50)
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as asyncio_runner:
        report = asyncio_runner.run(runner)
    summary = report["summary"]
    print(format_summary(summary), flush=True)
    if "answered_by_agent" in summary:
        print(f"answered by agent: {summary['answered_by_agent']}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    ok = summary["failed"] == 0 and summary["answered"] > 0 or bool(args.agent)
    if args.expect_tone is not None and summary.get("tone_heard") != summary["judged"]:
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
