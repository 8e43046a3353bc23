"""Relay benchmark results: one step's record, the summary, medians over several runs.

A relay's figures are taken at its largest clean step; the CMS is also compared with
rtpengine at the same loads (its CPU per packet over each call count both ran), which is the
steadier figure on a shared machine.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from .loadgen import LoadResult

TARGET_CALLS = 1000
TARGET_P99_ADDED_US = 2000.0


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


def final_steps(steps: list[Step], name: str) -> dict[int, Step]:
    """The last attempt of each call count for one target."""
    return {step.calls: step for step in steps if step.target == name}


def largest_clean(steps: list[Step], name: str) -> int:
    """The largest call count whose last attempt was clean (0 if none)."""
    clean = [calls for calls, step in final_steps(steps, name).items() if step.clean]
    return max(clean, default=0)


def largest_within_latency(steps: list[Step], name: str) -> int:
    """The largest call count whose last attempt was clean with its added p99 at most the
    target (0 if none; a step without a no-relay baseline has no added figure: not counted)."""
    within = [calls for calls, step in final_steps(steps, name).items()
              if step.clean and step.added_p99_us is not None
              and step.added_p99_us <= TARGET_P99_ADDED_US]
    return max(within, default=0)


def figures(steps: list[Step], names: list[str]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name in names:
        largest = largest_clean(steps, name)
        at = final_steps(steps, name).get(largest)
        figures[name] = {
            "largest_clean_calls": largest,
            "largest_clean_calls_within_p99": largest_within_latency(steps, name),
            "cpu_us_per_packet": at.cpu_us_per_packet if at else None,
            "added_p50_us": at.added_p50_us if at else None,
            "added_p99_us": at.added_p99_us if at else None,
            # Every step's figure (clean or not): relays compared at the same load.
            "cpu_us_per_packet_by_calls": {str(calls): step.cpu_us_per_packet
                                           for calls, step in final_steps(steps, name).items()},
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


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs <= 0:
        return "n/a"
    return f"{ours / theirs:.2f}"


def summarise(steps: list[Step], names: list[str]) -> list[str]:
    """Per relay its largest clean step and figures there; then the CMS/rtpengine ratios."""
    lines = []
    for name in names:
        largest = largest_clean(steps, name)
        at = final_steps(steps, name).get(largest)
        if at is None:
            lines.append(f"{name}: no clean step")
            continue
        ran = max(final_steps(steps, name))
        bound = " (a lower bound: the last step run)" if ran == largest else ""
        lines.append(
            f"{name}: largest clean step {largest} calls{bound}; there "
            f"{fmt(at.cpu_us_per_packet)} CPU us/packet, {100 * at.relay_cpu:.0f}% of its core, "
            f"added latency p50 {fmt(at.added_p50_us, '.0f')} us p99 "
            f"{fmt(at.added_p99_us, '.0f')} us (steal {at.steal_pct:.1f}%)")
    if "cms" in names and "rtpengine" in names:
        ours, theirs = final_steps(steps, "cms"), final_steps(steps, "rtpengine")
        lines.append(f"cms/rtpengine: largest clean calls {largest_clean(steps, 'cms')} / "
                     f"{largest_clean(steps, 'rtpengine')} = "
                     f"{ratio(largest_clean(steps, 'cms'), largest_clean(steps, 'rtpengine'))}")
        for calls in sorted(set(ours) & set(theirs)):
            a, b = ours[calls], theirs[calls]
            cpu_ratio = ratio(a.cpu_us_per_packet, b.cpu_us_per_packet)
            lines.append(
                f"  at {calls:5d} calls: cpu us/pkt {fmt(a.cpu_us_per_packet)} vs "
                f"{fmt(b.cpu_us_per_packet)} (ratio {cpu_ratio}),"
                f" added p50 {fmt(a.added_p50_us, '.0f')} vs {fmt(b.added_p50_us, '.0f')} us,"
                f" p99 {fmt(a.added_p99_us, '.0f')} vs {fmt(b.added_p99_us, '.0f')} us "
                f"(ratio {ratio(a.added_p99_us, b.added_p99_us)}); {a.verdict} / {b.verdict}")
    if "cms" in names and "rtpengine" in names:
        paired = paired_cpu_ratio(figures(steps, names))
        lines.append(f"cms/rtpengine CPU us/packet at the same loads (median over steps): "
                     f"{fmt(paired)}")
    if "cms" in names:
        largest = largest_clean(steps, "cms")
        at = final_steps(steps, "cms").get(largest)
        # Both limits hold at one step: the largest clean one whose added p99 is in bounds.
        within = largest_within_latency(steps, "cms")
        lines.append(f"target >= {TARGET_CALLS} calls clean with p99 added <= "
                     f"{TARGET_P99_ADDED_US / 1000:g} ms: "
                     f"{'met' if within >= TARGET_CALLS else 'NOT met'} "
                     f"(largest clean with p99 added in bounds {within}; largest clean "
                     f"{largest}, p99 added there {fmt(at.added_p99_us if at else None, '.0f')}"
                     f" us)")
    return lines


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def paired_medians(steps: list[Step], names: list[str]) -> list[str]:
    """Per call count, each relay's median CPU µs/packet over every step run (all rounds and
    attempts) and its ratio to the first relay's: the A/B figure on a shared machine."""
    if not names:
        return []
    lines = [f"median CPU us/packet per call count (ratio to {names[0]}):"]
    for calls in sorted({step.calls for step in steps}):
        values: dict[str, float | None] = {}
        counts: dict[str, int] = {}
        for name in names:
            found = [s.cpu_us_per_packet for s in steps
                     if s.target == name and s.calls == calls and s.cpu_us_per_packet]
            values[name] = statistics.median(found) if found else None
            counts[name] = len(found)
        base = values[names[0]]
        lines.append(f"  {calls:5d} calls: " + ", ".join(
            f"{name} {fmt(values[name])} (n={counts[name]}, x{ratio(values[name], base)}"
            f"{_paired(steps, calls, name, names[0])})" for name in names))
    return lines


def _paired(steps: list[Step], calls: int, name: str, first: str) -> str:
    # The k-th step of `name` against the k-th of `first` (run back to back in one round):
    # the median of those ratios is steadier than the ratio of medians on a busy machine.
    if name == first:
        return ""
    ours = [s.cpu_us_per_packet for s in steps if s.target == name and s.calls == calls]
    theirs = [s.cpu_us_per_packet for s in steps if s.target == first and s.calls == calls]
    ratios = [a / b for a, b in zip(ours, theirs, strict=False) if a and b]
    return f", paired x{statistics.median(ratios):.3f}" if ratios else ""


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
        lines.append(f"  {name:10s} " + "  ".join(f"{key} {fmt(value, '.2f')}"
                                                    for key, value in table[name].items()))
    if "cms" in table and "rtpengine" in table:
        lines.append("  cms/rtpengine (ratio of medians): " + "  ".join(
            f"{key} {ratio(table['cms'][key], table['rtpengine'][key])}" for key in keys))
        paired = [paired_cpu_ratio(d) for d in documents]
        known = [r for r in paired if r is not None]
        lines.append("  cpu us/pkt cms/rtpengine at the same call counts, per run: "
                     + ", ".join(fmt(r) for r in paired)
                     + f"; median {fmt(statistics.median(known) if known else None)}")
    return lines
