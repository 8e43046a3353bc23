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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
TARGET_CALLS = 1000
TARGET_P99_ADDED_US = 2000.0
MAX_GENERATOR_CPU = 0.9
MAX_GENERATOR_LAG_MS = 50.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One target at one call count."""

    target: str
    calls: int
    attempt: int
    load: LoadResult
    relay_cpu: float  # Share of one core over the window.
    cpu_us_per_packet: float | None
    steal_pct: float
    added_p50_us: float | None
    added_p99_us: float | None
    relay_drops: int  # Dropped at the relay's sockets in the step (receive buffer full).
    phone_drops: int  # Dropped at the generator's sockets.
    verdict: str  # clean, not clean, generator behind
    load_average: str

    @property
    def clean(self) -> bool:
        """At most the allowed share lost or late, with the generator keeping up."""
        return self.verdict == "clean"

    def row(self) -> str:
        """One table row."""
        load = self.load
        cpu = "-" if self.cpu_us_per_packet is None else f"{self.cpu_us_per_packet:6.2f}"
        added = ("       -        -" if self.added_p50_us is None or self.added_p99_us is None
                 else f"{self.added_p50_us:8.0f} {self.added_p99_us:8.0f}")
        name = self.target + (f" (try {self.attempt})" if self.attempt > 1 else "")
        return (f"{name:17s} {self.calls:5d} {load.sent / load.seconds:8.0f} "
                f"{100 * load.lost / max(1, load.sent):7.3f} "
                f"{100 * load.late / max(1, load.sent):7.3f} {load.latency_p50_us:8.0f} "
                f"{load.latency_p99_us:8.0f} {added} {100 * self.relay_cpu:6.1f} {cpu:>6s} "
                f"{self.steal_pct:6.1f} {100 * load.generator_cpu:6.1f} "
                f"{load.lag_p99_ms:6.1f} {self.relay_drops:6d} {self.phone_drops:6d}  "
                f"{self.verdict}")


HEADER = ("target            calls    pkt/s   lost%   late%   p50 us   p99 us  added p50/p99 "
          "us  cpu%  us/pkt steal%  gen%  lag99ms drop:relay/gen  verdict")


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
        for index, calls in enumerate(settings.calls):
            if not active:
                break
            for attempt in range(1, settings.tries + 1):
                baseline = measure(direct, phones, calls, settings, attempt, None)
                steps.append(baseline)
                print(baseline.row(), flush=True)
                if baseline.clean:
                    break
            if baseline.verdict == "generator behind":
                print(f"generator behind at {calls} calls: stopping", flush=True)
                break
            # Alternate which relay goes first, so that neither always follows the other.
            for target in list(active if index % 2 == 0 else reversed(active)):
                for attempt in range(1, settings.tries + 1):
                    step = measure(target, phones, calls, settings, attempt, baseline.load)
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
    for line in summary:
        print(line, flush=True)
    return {"benchmark": "relay", "conditions": conditions,
            "steps": [_step_json(step) for step in steps], "summary": summary,
            **_figures(steps, [t.name for t in targets])}


def _step_json(step: Step) -> dict[str, Any]:
    document = dataclasses.asdict(step)
    document["clean"] = step.clean
    return document


def _final(steps: list[Step], name: str) -> dict[int, Step]:
    """The last attempt of each call count for one target."""
    return {step.calls: step for step in steps if step.target == name}


def largest_clean(steps: list[Step], name: str) -> int:
    """The largest call count whose last attempt was clean (0 if none)."""
    clean = [calls for calls, step in _final(steps, name).items() if step.clean]
    return max(clean, default=0)


def _figures(steps: list[Step], names: list[str]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name in names:
        largest = largest_clean(steps, name)
        at = _final(steps, name).get(largest)
        figures[name] = {
            "largest_clean_calls": largest,
            "cpu_us_per_packet": at.cpu_us_per_packet if at else None,
            "added_p50_us": at.added_p50_us if at else None,
            "added_p99_us": at.added_p99_us if at else None,
            # Every step's figure (clean or not): relays compared at the same load.
            "cpu_us_per_packet_by_calls": {str(calls): step.cpu_us_per_packet
                                           for calls, step in _final(steps, name).items()},
        }
    return {"targets": figures}


def paired_cpu_ratio(document: dict[str, Any], ours: str = "cms",
                     theirs: str = "rtpengine") -> float | None:
    """The median over call counts both relays ran of the ratio of their CPU µs/packet."""
    found = document.get("targets", {})
    a = found.get(ours, {}).get("cpu_us_per_packet_by_calls", {})
    b = found.get(theirs, {}).get("cpu_us_per_packet_by_calls", {})
    ratios = [a[c] / b[c] for c in set(a) & set(b) if a[c] and b[c]]
    return statistics.median(ratios) if ratios else None


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs <= 0:
        return "n/a"
    return f"{ours / theirs:.2f}"


def summarise(steps: list[Step], names: list[str]) -> list[str]:
    """Per relay its largest clean step and figures there; then the CMS/rtpengine ratios."""
    lines = []
    for name in names:
        largest = largest_clean(steps, name)
        at = _final(steps, name).get(largest)
        if at is None:
            lines.append(f"{name}: no clean step")
            continue
        ran = max(_final(steps, name))
        bound = " (a lower bound: the last step run)" if ran == largest else ""
        lines.append(
            f"{name}: largest clean step {largest} calls{bound}; there {at.cpu_us_per_packet:.2f}"
            f" CPU us/packet, {100 * at.relay_cpu:.0f}% of its core, added latency p50 "
            f"{at.added_p50_us:.0f} us p99 {at.added_p99_us:.0f} us (steal {at.steal_pct:.1f}%)")
    if "cms" in names and "rtpengine" in names:
        ours, theirs = _final(steps, "cms"), _final(steps, "rtpengine")
        lines.append(f"cms/rtpengine: largest clean calls {largest_clean(steps, 'cms')} / "
                     f"{largest_clean(steps, 'rtpengine')} = "
                     f"{_ratio(largest_clean(steps, 'cms'), largest_clean(steps, 'rtpengine'))}")
        for calls in sorted(set(ours) & set(theirs)):
            a, b = ours[calls], theirs[calls]
            cpu_ratio = _ratio(a.cpu_us_per_packet, b.cpu_us_per_packet)
            lines.append(
                f"  at {calls:5d} calls: cpu us/pkt {_fmt(a.cpu_us_per_packet)} vs "
                f"{_fmt(b.cpu_us_per_packet)} (ratio {cpu_ratio}),"
                f" added p50 {_fmt(a.added_p50_us, '.0f')} vs {_fmt(b.added_p50_us, '.0f')} us,"
                f" p99 {_fmt(a.added_p99_us, '.0f')} vs {_fmt(b.added_p99_us, '.0f')} us "
                f"(ratio {_ratio(a.added_p99_us, b.added_p99_us)}); {a.verdict} / {b.verdict}")
    if "cms" in names and "rtpengine" in names:
        paired = paired_cpu_ratio(_figures(steps, names))
        lines.append(f"cms/rtpengine CPU us/packet at the same loads (median over steps): "
                     f"{_fmt(paired)}")
    if "cms" in names:
        largest = largest_clean(steps, "cms")
        at = _final(steps, "cms").get(largest)
        p99_ok = at is not None and (at.added_p99_us or 0) <= TARGET_P99_ADDED_US
        lines.append(f"target >= {TARGET_CALLS} calls clean with p99 added <= "
                     f"{TARGET_P99_ADDED_US / 1000:g} ms: "
                     f"{'met' if largest >= TARGET_CALLS and p99_ok else 'NOT met'} "
                     f"(largest clean {largest}, p99 added there "
                     f"{_fmt(at.added_p99_us if at else None, '.0f')} us)")
    return lines


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def median_of(documents: list[dict[str, Any]], name: str, key: str) -> float | None:
    """The median of one target figure over several runs' documents."""
    values = [d["targets"][name][key] for d in documents
              if d.get("targets", {}).get(name, {}).get(key) is not None]
    return statistics.median(values) if values else None


def medians(documents: list[dict[str, Any]]) -> list[str]:
    """Per relay the medians over several runs' documents (--json of each), and the ratios
    of the CMS's medians to rtpengine's; the per-run ratios beside them."""
    keys = ("largest_clean_calls", "cpu_us_per_packet", "added_p50_us", "added_p99_us")
    names = sorted({name for d in documents for name in d.get("targets", {})})
    lines = [f"medians over {len(documents)} runs:"]
    table: dict[str, dict[str, float | None]] = {}
    for name in names:
        table[name] = {key: median_of(documents, name, key) for key in keys}
        lines.append(f"  {name:10s} " + "  ".join(f"{key} {_fmt(value, '.2f')}"
                                                    for key, value in table[name].items()))
    if "cms" in table and "rtpengine" in table:
        lines.append("  cms/rtpengine (ratio of medians): " + "  ".join(
            f"{key} {_ratio(table['cms'][key], table['rtpengine'][key])}" for key in keys))
        paired = [paired_cpu_ratio(d) for d in documents]
        known = [r for r in paired if r is not None]
        lines.append("  cpu us/pkt cms/rtpengine at the same call counts, per run: "
                     + ", ".join(_fmt(r) for r in paired)
                     + f"; median {_fmt(statistics.median(known) if known else None)}")
    return lines


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
                        help="another CMS relay to compare, NAME:OPTIONS (e.g. "
                        "'kf:--kernel-filter')")
    parser.add_argument("--keep-going", action="store_true",
                        help="run every step for every relay, clean or not")
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
                        keep_going=args.keep_going)
    document = run(settings)
    if args.json is not None:
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
