"""Journal throughput with fsync'd commits: `python -m cms.events.bench --help`."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .journal import Journal
from .model import Event


async def measure(path: Path, events: int, burst: int, synchronous: str = "FULL",
                  rate: float = 0.0) -> dict[str, float]:
    """Append `events` in bursts of `burst` per loop turn; time until all are committed.

    `rate` > 0 paces the bursts to that many events per second (the loop idles
    between them, as a server's does); 0 appends as fast as the loop can.
    """
    journal = Journal(path, synchronous=synchronous)
    await journal.start()
    appended_at: dict[int, float] = {}
    latencies: list[float] = []

    def on_commit(batch: Sequence[Event]) -> None:
        now = time.perf_counter()
        for event in batch:
            started = appended_at.pop(event.seq, None)
            if started is not None:
                latencies.append(now - started)

    journal.subscribe(on_commit)
    data = {"user": "agent0001", "state": "ready", "previous": "not_ready", "reason": ""}
    started = time.perf_counter()
    for index in range(events):
        event = journal.append("agent.state_changed", data)
        if index % 100 == 0:
            appended_at[event.seq] = time.perf_counter()
        if (index + 1) % burst == 0:
            if rate > 0:
                ahead = started + (index + 1) / rate - time.perf_counter()
                await asyncio.sleep(max(0.0, ahead))
            else:
                await asyncio.sleep(0)
    await journal.flush()
    elapsed = time.perf_counter() - started
    commits = journal.commits
    await journal.close()
    latencies.sort()
    return {
        "events": events,
        "seconds": elapsed,
        "events_per_s": events / elapsed,
        "commits": commits,
        "events_per_commit": events / max(1, commits),
        "latency_p50_ms": 1000 * statistics.median(latencies) if latencies else 0.0,
        "latency_p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    """Print events/s of the journal with durable (synchronous=FULL) WAL commits."""
    parser = argparse.ArgumentParser(prog="python -m cms.events.bench",
                                     description="Event journal throughput (fsync'd commits).")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--burst", type=int, default=200,
                        help="events appended per event-loop turn (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="events per second to offer; 0 = as fast as possible (default)")
    parser.add_argument("--dir", help="directory for the database (default: a temporary one)")
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL", "OFF"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        result = asyncio.run(measure(Path(directory) / "journal.sqlite3", args.events,
                                     args.burst, args.synchronous, args.rate))
    print(f"journal: {result['events']:.0f} events in {result['seconds']:.3f} s = "
          f"{result['events_per_s']:,.0f} events/s (synchronous={args.synchronous}, "
          f"{result['commits']:.0f} commits, {result['events_per_commit']:.0f} events/commit, "
          f"append->delivered p50 {result['latency_p50_ms']:.2f} ms "
          f"p99 {result['latency_p99_ms']:.2f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
