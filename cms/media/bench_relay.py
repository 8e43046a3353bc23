"""Relay benchmark: concurrent G.711 calls relayed on one core, the CMS beside rtpengine.

For each call count (ascending) the same load (cms.media.loadgen: 2 streams per call, 50
packets/s each) runs first with no relay ("direct": the generator's own ceiling and the
latency baseline), then through each relay under test, back to back so that they meet the
same moments of a shared machine. The relays run pinned to one core, the generator to the
other. Per step: loss (lost, or later than --late-ms), latency p50/p99 and the latency the
relay added (minus direct at the same percentile), the relay's CPU µs per relayed packet
(its utime+stime over the window / packets relayed in it), its share of the core, the
core's steal time, and the generator's own CPU and lag.

A step is clean with at most --max-loss-pct lost or late; one that is not is tried again
(--tries) before the relay leaves the escalation. A step where the generator fell behind
(lag, unsent packets or > 90% of its core) is "generator behind": tried again too, but it
does not end the relay's escalation (it says nothing about the relay); when the generator
is behind with no relay at all ("direct"), the escalation ends.

    python -m cms.media.bench_relay --calls 400 600 800 1000 1200 --seconds 6

A/B of two checkouts (this one as "cms", another worktree as "base"), each call count run
five times with the order alternating, medians of CPU per packet and their ratio printed:

    python -m cms.media.bench_relay --targets cms --variant base@../base: --calls 800 1000 \
        --rounds 5 --no-direct --tries 1 --keep-going
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bench_report import HEADER, Step, figures, medians, paired_medians, summarise
from .bench_targets import (
    CmsRelay,
    Direct,
    Rtpengine,
    Target,
    core_steal,
    process_cpu_seconds,
    udp_drops,
)
from .loadgen import LoadGenerator, LoadResult, Phones

DEFAULT_CALLS = (400, 600, 800, 1000, 1200)
MAX_GENERATOR_CPU = 0.9
MAX_GENERATOR_LAG_MS = 50.0


@dataclass(slots=True)
class Settings:
    """How to run."""

    calls: Sequence[int] = DEFAULT_CALLS
    targets: Sequence[str] = ("rtpengine", "cms")
    seconds: float = 6.0
    warmup: float = 1.0
    drain: float = 0.5
    late_ms: float = 50.0
    max_loss: float = 0.001
    tries: int = 2
    relay_core: int | None = 1
    generator_core: int | None = 0
    cms_options: Sequence[str] = ()
    # More CMS relays, "name[@checkout]:options", e.g. "kf:--kernel-filter", "old@/tmp/old:".
    variants: Sequence[str] = ()
    keep_going: bool = False  # Run every step for every relay, clean or not (for A/B runs).
    # Each call count this many times in a row, the relays' order alternating (A/B medians).
    rounds: int = 1
    direct: bool = True  # Also run each step without a relay (the added-latency baseline).


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def measure(target: Target, phones: Phones, calls: int, settings: Settings, attempt: int,
            direct: LoadResult | None) -> Step:
    """Run one step: allocate the calls, send, tear down."""
    routes = target.open_calls(phones.pairs(calls))
    generator = LoadGenerator(phones, routes)
    relay_ports = {port for a_to, b_to in routes for _, port in (a_to, b_to)}
    phone_ports = set(phones.ports()) - relay_ports
    drops0 = udp_drops(relay_ports), udp_drops(phone_ports)
    pids = target.pids()
    marks: dict[str, Any] = {}

    def mark(name: str) -> None:
        marks[name] = (sum(process_cpu_seconds(pid) for pid in pids),
                       core_steal(settings.relay_core), time.monotonic())

    try:
        load = generator.run(settings.warmup, settings.seconds, settings.drain,
                             settings.late_ms, on_start=lambda: mark("start"),
                             on_end=lambda: mark("end"))
        drops = udp_drops(relay_ports) - drops0[0], udp_drops(phone_ports) - drops0[1]
    finally:
        target.close_calls()
        phones.drain()
    (cpu0, (total0, steal0), wall0), (cpu1, (total1, steal1), wall1) = (marks["start"],
                                                                         marks["end"])
    relay_cpu = (cpu1 - cpu0) / max(1e-9, wall1 - wall0)
    per_packet = 1e6 * (cpu1 - cpu0) / load.received if pids and load.received else None
    steal = 100 * (steal1 - steal0) / max(1.0, total1 - total0)
    behind = (load.generator_cpu > MAX_GENERATOR_CPU or load.unsent > 0
              or load.lag_p99_ms > MAX_GENERATOR_LAG_MS)
    if behind:
        verdict = "generator behind"
    else:
        verdict = "clean" if load.bad_fraction <= settings.max_loss else "not clean"
    added = (None, None)
    if direct is not None and load.received:
        added = (load.latency_p50_us - direct.latency_p50_us,
                 load.latency_p99_us - direct.latency_p99_us)
    return Step(target=target.name, calls=calls, attempt=attempt, load=load,
                relay_cpu=relay_cpu, cpu_us_per_packet=per_packet, steal_pct=steal,
                relay_drops=drops[0], phone_drops=drops[1],
                added_p50_us=added[0], added_p99_us=added[1], verdict=verdict,
                load_average=load_average())


def _make_targets(settings: Settings, workdir: Path) -> list[Target]:
    targets: list[Target] = []
    for name in settings.targets:
        if name == "cms":
            targets.append(CmsRelay(settings.relay_core, list(settings.cms_options)))
        elif name == "rtpengine":
            if Rtpengine.available() is None:
                print("rtpengine: not installed (make setup-bench); skipped", flush=True)
                continue
            targets.append(Rtpengine(settings.relay_core, workdir))
        else:
            raise ValueError(f"unknown target {name!r}")
    for variant in settings.variants:
        name, _, options = variant.partition(":")
        name, _, checkout = name.partition("@")
        targets.append(CmsRelay(settings.relay_core, options.split(), name=name,
                                root=Path(checkout) if checkout else None))
    return targets


def run(settings: Settings) -> dict[str, Any]:
    """The whole escalation; a JSON-able document with every step and the summary."""
    if settings.generator_core is not None and (os.cpu_count() or 1) > settings.generator_core:
        os.sched_setaffinity(0, {settings.generator_core})
    workdir = Path(tempfile.mkdtemp(prefix="cms-bench-relay-"))
    phones = Phones()
    targets = _make_targets(settings, workdir)
    direct = Direct()
    steps: list[Step] = []
    conditions = {
        "calls": list(settings.calls), "seconds": settings.seconds, "warmup_s": settings.warmup,
        "late_ms": settings.late_ms, "max_loss_pct": 100 * settings.max_loss,
        "tries": settings.tries, "relay_core": settings.relay_core,
        "generator_core": settings.generator_core, "nproc": os.cpu_count(),
        "load_average": load_average(), "targets": [t.name for t in targets],
        "cms_options": list(settings.cms_options),
    }
    print(f"relay benchmark: {', '.join(t.name for t in targets)} pinned to core "
          f"{settings.relay_core}, generator on core {settings.generator_core}; "
          f"{settings.seconds:g} s per step after {settings.warmup:g} s warm-up; clean: "
          f"<= {100 * settings.max_loss:g}% lost or later than {settings.late_ms:g} ms; "
          f"load average {conditions['load_average']}", flush=True)
    print(HEADER, flush=True)
    active = list(targets)
    try:
        for target in targets:
            target.start()
        rounds = [calls for calls in settings.calls for _ in range(max(1, settings.rounds))]
        for index, calls in enumerate(rounds):
            if targets and not active:
                break  # (With no relay at all, the steps measure the generator alone.)
            baseline = _direct_step(direct, phones, calls, settings, steps)
            if baseline is not None and baseline.verdict == "generator behind":
                print(f"generator behind at {calls} calls: stopping", flush=True)
                break
            # Alternate which relay goes first, so that neither always follows the other.
            for target in list(active if index % 2 == 0 else reversed(active)):
                for attempt in range(1, settings.tries + 1):
                    step = measure(target, phones, calls, settings, attempt,
                                   baseline.load if baseline is not None else None)
                    steps.append(step)
                    print(step.row(), flush=True)
                    if step.clean:
                        break
                # A step where the generator fell behind says nothing about the relay.
                if step.verdict == "not clean" and not settings.keep_going:
                    active.remove(target)
    finally:
        for target in targets:
            target.stop()
        phones.close()
    conditions["load_average_after"] = load_average()
    summary = summarise(steps, [t.name for t in targets])
    if settings.rounds > 1:
        summary += paired_medians(steps, [t.name for t in targets])
    for line in summary:
        print(line, flush=True)
    return {"benchmark": "relay", "conditions": conditions,
            "steps": [_step_json(step) for step in steps], "summary": summary,
            **figures(steps, [t.name for t in targets])}


def _direct_step(direct: Direct, phones: Phones, calls: int, settings: Settings,
                 steps: list[Step]) -> Step | None:
    """The no-relay baseline at `calls` (retried if not clean), or None if not wanted."""
    if not settings.direct:
        return None
    for attempt in range(1, settings.tries + 1):
        baseline = measure(direct, phones, calls, settings, attempt, None)
        steps.append(baseline)
        print(baseline.row(), flush=True)
        if baseline.clean:
            break
    return baseline


def _step_json(step: Step) -> dict[str, Any]:
    document = dataclasses.asdict(step)
    document["clean"] = step.clean
    return document


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, nargs="+", default=list(DEFAULT_CALLS))
    parser.add_argument("--targets", nargs="*", default=["rtpengine", "cms"],
                        choices=["rtpengine", "cms"])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--late-ms", type=float, default=50.0)
    parser.add_argument("--max-loss-pct", type=float, default=0.1)
    parser.add_argument("--tries", type=int, default=2)
    parser.add_argument("--relay-core", type=int, default=1)
    parser.add_argument("--generator-core", type=int, default=0)
    parser.add_argument("--cms-option", action="append", default=[],
                        help="passed to cms.media.relay_server, e.g. --cms-option=--kernel-filter")
    parser.add_argument("--variant", action="append", default=[],
                        help="another CMS relay to compare, NAME[@CHECKOUT]:OPTIONS (e.g. "
                        "'kf:--kernel-filter', or 'old@/path/to/other/worktree:' for A/B)")
    parser.add_argument("--keep-going", action="store_true",
                        help="run every step for every relay, clean or not")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run each call count this many times, alternating the relays' "
                        "order, and print each relay's median CPU us/packet (A/B)")
    parser.add_argument("--no-direct", action="store_true",
                        help="skip the no-relay steps (no added latency; faster A/B runs)")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--medians", type=Path, nargs="+", metavar="JSON",
                        help="only print the medians of earlier runs' --json files")
    args = parser.parse_args(argv)
    if args.medians:
        documents = [json.loads(path.read_text()) for path in args.medians]
        # `python -m scripts.bench --json` nests each benchmark's document.
        documents = [d.get("benchmarks", {}).get("relay", d) for d in documents]
        for line in medians(documents):
            print(line)
        return
    settings = Settings(calls=args.calls, targets=args.targets, seconds=args.seconds,
                        warmup=args.warmup, late_ms=args.late_ms,
                        max_loss=args.max_loss_pct / 100, tries=args.tries,
                        relay_core=args.relay_core, generator_core=args.generator_core,
                        cms_options=args.cms_option, variants=args.variant,
                        keep_going=args.keep_going, rounds=args.rounds,
                        direct=not args.no_direct)
    document = run(settings)
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
