"""memory: the CMS's memory per registered phone and per active anchored call.

`cms serve` runs with P phone users (not queue members) and M agents in the
queue `sales`. Its RSS (VmRSS) is read idle, after SIPp registered the P
phones (tests/integration/scenarios/register.xml, digest), after place_calls
registered the M agents, and with M concurrent anchored calls (a place_calls
caller with long calls into the queue, answered by the agents). KiB per phone
= RSS growth over the phones / P; KiB per call = RSS growth over the calls / M.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from .bench import HOST, BenchError, Processes, free_port, log_tail, pinned, say, which
from .bench_common import (
    AGENT_PASSWORD,
    QUEUE_NUMBER,
    Cms,
    agent_name,
    conditions,
    conditions_line,
    cores,
    open_fds,
    place_calls_argv,
    rss_kib,
    start_agents,
    start_cms,
)

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "tests" / "integration" / "scenarios" / "register.xml"
FULL = (2000, 200)  # phones, calls
QUICK = (1000, 100)
CALL_RATE = 50
SETTLE_S = 1.5


def settled_rss(pid: int) -> int:
    time.sleep(SETTLE_S)
    return rss_kib(pid)


def register_phones(procs: Processes, workdir: Path, cms: Cms, phones: int,
                    core: int | None) -> None:
    inf = workdir / "phones.csv"
    rows = [f"{agent_name(i)};{AGENT_PASSWORD};"
            f"[authentication username={agent_name(i)} password={AGENT_PASSWORD}];"
            for i in range(1, phones + 1)]
    inf.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")
    argv = pinned(core, [
        which("sipp") or "sipp", cms.target, "-sf", str(SCENARIO), "-inf", str(inf),
        "-r", "200", "-m", str(phones), "-l", "400", "-t", "u1", "-i", HOST,
        "-p", str(free_port()), "-cp", str(free_port()), "-nostdin",
        "-timeout", str(phones // 100 + 60), "-recv_timeout", "10000",
    ])  # fmt: skip
    log = workdir / "sipp-register.log"
    proc = procs.start(argv, log, workdir)
    code = proc.wait(timeout=phones / 100 + 90)
    procs.stop(proc)
    bindings = cms.health().get("bindings")
    if code != 0:
        raise BenchError(f"SIPp registration exited {code} ({bindings} bindings):\n"
                         f"{log_tail(log)}")
    say(f"  {phones} phones registered by SIPp (exit {code}; cms bindings {bindings})")


def run_memory_bench(cms_path: str, quick: bool, workdir: Path,
                     extra_args: tuple[str, ...] = ()) -> dict[str, Any]:
    if not which("sipp"):
        raise BenchError("sipp not found; run `make setup-bench`")
    phones, calls = QUICK if quick else FULL
    cms_core, gen_core = cores()
    cond = conditions({"phones": phones, "calls": calls, "call_rate": CALL_RATE})
    say(f"memory benchmark: {phones} phones, {calls} concurrent anchored calls; "
        f"{conditions_line(cond)}")
    procs = Processes()
    figures: dict[str, Any] = {}
    try:
        cms = start_cms(procs, workdir, cms_path, phones + calls, cms_core, extra_args,
                        ring_timeout=5, wrap_up=0, first_member=phones + 1)
        idle = figures["rss_idle_kib"] = settled_rss(cms.pid)
        say(f"  rss idle {idle} KiB")
        register_phones(procs, workdir, cms, phones, gen_core)
        registered = figures["rss_phones_kib"] = settled_rss(cms.pid)
        figures["kib_per_phone"] = round((registered - idle) / phones, 2)
        say(f"  rss with {phones} phones {registered} KiB")
        start_agents(procs, workdir, cms,
                     [agent_name(i) for i in range(phones + 1, phones + calls + 1)], gen_core)
        before = figures["rss_agents_kib"] = settled_rss(cms.pid)
        fds_before = open_fds(cms.pid)
        say(f"  rss with {calls} agents registered too {before} KiB, {fds_before} open fds")
        ramp = calls / CALL_RATE
        caller = procs.start(place_calls_argv(
            gen_core, "--target", cms.target, "--number", QUEUE_NUMBER, "--calls", str(calls),
            "--rate", str(CALL_RATE), "--duration", str(ramp + 20),
        ), workdir / "memory-callers.log", ROOT)
        time.sleep(ramp + 3)
        fds = open_fds(cms.pid)
        during = figures["rss_calls_kib"] = settled_rss(cms.pid)
        figures["fds_added_by_calls"] = fds - fds_before
        figures["kib_per_call"] = round((during - before) / calls, 2)
        say(f"  rss with {calls} calls up {during} KiB, {fds} open fds "
            f"(+{fds - fds_before}: sockets of the calls' legs)")
        if caller.poll() is not None:
            say(f"  warning: the callers ended early:\n{log_tail(workdir / 'memory-callers.log')}")
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"timed out: {exc}") from None
    finally:
        procs.stop_all()
    cond["load_average_after"] = conditions()["load_average"]
    summary = [
        f"memory: {figures['kib_per_phone']:.1f} KiB per registered phone ({phones} phones), "
        f"{figures['kib_per_call']:.1f} KiB per active anchored call ({calls} calls); "
        f"rss idle {figures['rss_idle_kib']} KiB, with phones {figures['rss_phones_kib']} KiB, "
        f"with calls {figures['rss_calls_kib']} KiB",
    ]
    return {"benchmark": "memory", "conditions": cond, **figures, "summary": summary}
