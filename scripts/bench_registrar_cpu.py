"""CPU per registration at one fixed rate, registrars measured in alternation.

`python -m scripts.bench_registrar_cpu --rounds 5 --rate 2000` starts Kamailio
and the CMS once (both pinned to core 1, as `scripts.bench` does), then runs
SIPp's digest REGISTER scenario at one offered rate against each in turn for
`--rounds` rounds, and prints the CPU microseconds per registration of each
run, the medians and the median of the per-round ratios (CMS over Kamailio).
Taking turns run by run lets both meet the same moments of a shared machine;
the load average is printed with each round.

A short unmeasured run against each registrar comes first (`--warmup`).
`--cms-b PATH` adds a second CMS executable (for example an older checkout's
`.venv/bin/cms`) as a third registrar in the rotation, to compare two versions
of the CMS under the same conditions.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence

from .bench import (
    Processes,
    Registrar,
    Settings,
    cms_registrar,
    kamailio_registrar,
    load_average,
    pinning,
    run_step,
    say,
    start_registrars,
    user_names,
    write_injection_file,
)
from .bench_common import (
    add_ab_arguments,
    bench_main,
    bench_workdir,
    report_rounds,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench_registrar_cpu", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rate", type=int, default=2000, help="offered registrations/s (2000)")
    add_ab_arguments(parser, "registrar")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument("--users", type=int, default=1000, help="users agent0001.. (1000)")
    parser.add_argument(
        "--warmup", type=float, default=2.0,
        help="seconds of unmeasured load per registrar first (2): every phone registers once, "
        "so the first round is not also the CMS's first sight of each account",
    )
    parser.add_argument("--no-kamailio", action="store_true", help="CMS runs only")
    return parser


def settings_for(args: argparse.Namespace, cms: str) -> Settings:
    registrar_core, sipp_core = pinning(1, 0)
    return Settings(
        sides=("kamailio", "cms"), rates=(args.rate,), duration=args.duration,
        users=args.users, tries=1, cpu_rate=args.rate, registrar_core=registrar_core,
        sipp_core=sipp_core, start_timeout=30.0, pause=0.5, cms=cms,
        cms_args=tuple(args.cms_arg), json_path=None, keep=args.keep,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    settings = settings_for(args, args.cms)
    procs = Processes()
    cpu: dict[str, list[float]] = {}
    ok = True
    with bench_workdir("cms-bench-cpu-", args.keep, procs) as workdir:
        names = user_names(settings.users)
        write_injection_file(workdir / "users.csv", names)
        registrars: list[Registrar] = []
        if not args.no_kamailio:
            registrars.append(kamailio_registrar(settings, workdir))
        registrars.append(cms_registrar(settings, workdir, names))
        if args.cms_b:
            sub = workdir / "b"
            sub.mkdir()
            other = cms_registrar(settings_for(args, args.cms_b), sub, names)
            other.name = "cms-b"
            registrars.append(other)
        if settings.sipp_core is not None:
            os.sched_setaffinity(0, {settings.sipp_core})
        cpu = {reg.name: [] for reg in registrars}
        start_registrars(registrars, procs, settings, workdir)
        time.sleep(1.0)
        if args.warmup > 0:
            warm = dataclasses.replace(settings, duration=args.warmup)
            for reg in registrars:
                step = run_step(reg, args.rate, 0, warm, procs, workdir)
                say(f"warm-up  {step.line()}")
                time.sleep(settings.pause)
        for round_no in range(1, args.rounds + 1):
            for reg in registrars:
                step = run_step(reg, args.rate, round_no, settings, procs, workdir)
                say(f"round {round_no} load {load_average()}  {step.line()}")
                if not step.clean:
                    ok = False
                if step.ok:
                    cpu[reg.name].append(step.cpu_us_per_reg or 0.0)
                time.sleep(settings.pause)
    report_rounds(f"CPU us/registration at {args.rate}/s, {args.rounds} alternating rounds",
                  cpu, "kamailio", width=9, value_format="6.1f", runs_format=".1f",
                  ratio_format=".2f")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    return bench_main(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
