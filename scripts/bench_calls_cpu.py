"""CMS CPU per call at one fixed rate, CMS versions measured in alternation.

`python -m scripts.bench_calls_cpu --rounds 6 --rate 200` starts `cms serve`
(pinned to core 1, as `scripts.bench` does) with N auto-answering agents
(place_calls agent mode, pinned to core 0), then runs place_calls callers at one
offered rate for `--seconds` per round, and prints the CMS CPU milliseconds per
answered call of each round (utime + stime from /proc over the caller run, divided
by the answered calls), the medians, and with `--cms-b PATH` (another checkout's
`.venv/bin/cms`) the median of the per-round ratios B/A. Both CMSes run side by
side and take turns round by round, so that they meet the same moments of a
shared, noisy machine; with `--together` their callers run at the same time
(each CMS at --rate), which cancels more of the noise of a busy machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .bench import Processes, say
from .bench_calls import JUDGE_EVERY, CallStep, finish_step, run_step, start_step
from .bench_common import (
    Cms,
    add_ab_arguments,
    agent_name,
    bench_main,
    bench_workdir,
    cores,
    report_rounds,
    start_agents,
    start_cms,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench_calls_cpu", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rate", type=int, default=200, help="offered calls/s (200)")
    add_ab_arguments(parser, "CMS", " (A)", "a second cms executable (B) to compare with A")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of calls per run (5)")
    parser.add_argument("--agents", type=int, default=100, help="auto-answering agents (100)")
    parser.add_argument(
        "--together", action="store_true",
        help="run A's and B's callers at the same time, each CMS at --rate (both CMSes share "
        "core 1 then, and meet exactly the same moments of a noisy machine)",
    )
    return parser


def start_side(procs: Processes, workdir: Path, cms: str, args: argparse.Namespace
               ) -> tuple[Cms, Any]:
    """One `cms serve` with its own auto-answering agents (and their process)."""
    workdir.mkdir(exist_ok=True)
    cms_core, gen_core = cores()
    server = start_cms(procs, workdir, cms, args.agents, cms_core, tuple(args.cms_arg),
                       ring_timeout=5, wrap_up=0)
    agents = start_agents(procs, workdir, server,
                          [agent_name(i) for i in range(1, args.agents + 1)], gen_core,
                          extra_args=("--judge-every", str(JUDGE_EVERY)))
    return server, agents


def run_round(procs: Processes, workdir: Path, servers: dict[str, tuple[Cms, Any]],
              args: argparse.Namespace, core: int | None) -> dict[str, CallStep]:
    """One step per CMS: in turn, or (--together) at the same time."""
    if not args.together:
        steps = {}
        for name, (server, agents) in servers.items():
            steps[name] = run_step(procs, workdir / name, server, args.rate, args.seconds, core,
                                   agents)
            time.sleep(0.5)
        return steps
    runs = {name: start_step(procs, workdir / name, server, args.rate, args.seconds, core,
                             agents)
            for name, (server, agents) in servers.items()}
    steps = {name: finish_step(procs, run) for name, run in runs.items()}
    time.sleep(0.5)
    return steps


def run(args: argparse.Namespace) -> int:
    procs = Processes()
    sides = {"A": str(Path(args.cms).resolve())}  # start_cms runs it from its work directory
    if args.cms_b:
        sides["B"] = str(Path(args.cms_b).resolve())
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    ok = True
    with bench_workdir("cms-bench-calls-cpu-", args.keep, procs) as workdir:
        servers = {name: start_side(procs, workdir / name, path, args)
                   for name, path in sides.items()}
        time.sleep(1.0)
        _, gen_core = cores()
        for round_no in range(0, args.rounds + 1):  # round 0 warms up, unmeasured
            for name, step in run_round(procs, workdir, servers, args, gen_core).items():
                per_call = step.cms_cpu_ms_per_call
                label = "warm-up" if round_no == 0 else f"round {round_no}"
                say(f"{label} {name} cpu/call "
                    f"{'n/a' if per_call is None else f'{per_call:.3f} ms'}  {step.line()}")
                ok = ok and step.clean
                if round_no and per_call is not None:
                    cpu[name].append(per_call)
    report_rounds(f"CMS CPU ms/call at {args.rate}/s, {args.rounds} alternating rounds of "
                  f"{args.seconds:g} s", cpu, "A")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
