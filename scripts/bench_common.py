"""Helpers shared by the benchmarks of `python -m scripts.bench` beyond the registrar one:
a `cms serve` with a generated configuration, place_calls agents and callers, /proc figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bench import (
    HOST,
    Processes,
    answers_options,
    default_cms,
    free_port,
    load_average,
    log_tail,
    pinned,
    say,
    toml_string,
    tree_cpu_seconds,
)
from .bench_errors import BenchError

ROOT = Path(__file__).resolve().parent.parent
QUEUE_NAME, QUEUE_NUMBER = "sales", "600"
AGENT_PASSWORD = "bench-secret"


def cores() -> tuple[int | None, int | None]:
    """(core of the CMS, core of the load generators), or (None, None) on one core."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return (1, 0) if {0, 1} <= set(allowed) else (allowed[1], allowed[0])


def conditions(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    cms_core, gen_core = cores()
    pinning = (
        "not pinned (fewer than 2 cores)"
        if cms_core is None
        else f"cms on core {cms_core}, load generators on core {gen_core} (taskset)"
    )
    cond = {"nproc": os.cpu_count(), "pinning": pinning, "load_average": load_average()}
    cond.update(extra or {})
    return cond


def conditions_line(cond: dict[str, Any]) -> str:
    """`conditions` for the first line a benchmark prints: pinning, nproc, load average."""
    return f"{cond['pinning']}; nproc {cond['nproc']}; load average {cond['load_average']}"


def rss_kib(pid: int) -> int:
    """VmRSS of a process, KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def agent_name(index: int) -> str:
    return f"agent{index:05d}"


def write_config(path: Path, data_dir: Path, sip_port: int, http_port: int, users: int,
                 *, ring_timeout: float = 5, wrap_up: float = 0, first_member: int = 1) -> None:
    """Users agent00001.. (auto_logon; those from `first_member` on in the sales queue) and
    the sales queue (number 600)."""
    out = [
        "[cms]",
        f"sip = {toml_string(f'{HOST}:{sip_port}')}",
        f"http = {toml_string(f'{HOST}:{http_port}')}",
        f"data_dir = {toml_string(str(data_dir))}",
        'realm = "cms.local"',
    ]
    for index in range(1, users + 1):
        out += [
            "",
            "[[users]]",
            f"name = {toml_string(agent_name(index))}",
            f"password = {toml_string(AGENT_PASSWORD)}",
            f'extension = "{20000 + index}"',
            f"queues = [{toml_string(QUEUE_NAME) if index >= first_member else ''}]",
            'role = "agent"',
            "auto_logon = true",
        ]
    out += [
        "",
        "[[queues]]",
        f"name = {toml_string(QUEUE_NAME)}",
        f"number = {toml_string(QUEUE_NUMBER)}",
        'strategy = "longest-idle"',
        f"ring_timeout = {ring_timeout}",
        f"wrap_up = {wrap_up}",
    ]
    path.write_text("\n".join(out) + "\n")


@dataclass
class Cms:
    """A running `cms serve`."""

    proc: Any
    sip_port: int
    http_port: int
    log: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return int(self.proc.pid)

    @property
    def target(self) -> str:
        return f"{HOST}:{self.sip_port}"

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def health(self) -> dict[str, Any]:
        import urllib.request

        url = f"http://{HOST}:{self.http_port}/api/v1/health"
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.loads(response.read()))


def start_cms(procs: Processes, workdir: Path, cms: str, users: int, core: int | None,
              extra_args: Sequence[str] = (), **queue: Any) -> Cms:
    sip_port, http_port = free_port(), free_port()
    data_dir = workdir / "cms-data"
    data_dir.mkdir(exist_ok=True)
    config = workdir / "cms.toml"
    write_config(config, data_dir, sip_port, http_port, users, **queue)
    argv = pinned(core, [
        cms, "serve",
        "--config", str(config),
        "--sip", f"{HOST}:{sip_port}",
        "--http", f"{HOST}:{http_port}",
        "--data-dir", str(data_dir),
        *extra_args,
    ])  # fmt: skip
    log = workdir / "cms.log"
    say(f"starting cms: {shlex.join(argv)}")
    proc = procs.start(argv, log, workdir)
    server = Cms(proc, sip_port, http_port, log, argv)
    if not answers_options(sip_port, 60.0, server.alive):
        raise BenchError(f"cms did not answer OPTIONS on {server.target}:\n{log_tail(log)}")
    return server


def place_calls_argv(core: int | None, *args: str) -> list[str]:
    return pinned(core, [sys.executable, "-m", "scripts.place_calls", *args])


def start_agents(procs: Processes, workdir: Path, cms: Cms, names: Sequence[str],
                 core: int | None, timeout: float = 120.0,
                 extra_args: Sequence[str] = ()) -> Any:
    """place_calls in agent mode for `names`; returns once they are all registered."""
    log = workdir / "agents.log"
    argv = place_calls_argv(
        core, "--target", cms.target, "--password", AGENT_PASSWORD,
        "--expires", "3600", *(arg for name in names for arg in ("--agent", name)),
        *extra_args,
    )
    say(f"starting {len(names)} auto-answering agents (place_calls agent mode, "
        f"{'core ' + str(core) if core is not None else 'not pinned'})")
    proc = procs.start(argv, log, ROOT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if "agents ready" in text:
            return proc
        if proc.poll() is not None or "REGISTER timed out" in text:
            break
        time.sleep(0.2)
    raise BenchError(f"the agents did not all register:\n{log_tail(log)}")


def wait_for_line(proc: Any, log: Path, line: str, timeout: float, offset: int = 0) -> bool:
    """Wait until `line` appears in a process's log past `offset` bytes (False: the process
    exited or the time ran out)."""
    return read_line(proc, log, lambda text: text == line, timeout, offset) is not None


def read_line(proc: Any, log: Path, match: Callable[[str], bool], timeout: float,
              offset: int = 0) -> str | None:
    """The last line of a process's log past `offset` bytes that `match`es, waiting until
    there is one (None: the process exited or the time ran out; the log is read at least
    once, so a line already there is found with no time left)."""
    deadline = time.monotonic() + timeout
    while True:
        if log.exists():
            with log.open("rb") as file:
                file.seek(offset)
                lines = [text for text in file.read().decode(errors="replace").splitlines()
                         if match(text)]
            if lines:
                return lines[-1]
        if proc.poll() is not None or time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


# ------------------------------------------------------------- A/B rounds in alternation


def add_ab_arguments(parser: argparse.ArgumentParser, what: str, cms_a: str = "",
                     cms_b: str = "a second cms executable to compare with the first") -> None:
    """The options an alternating-rounds benchmark shares: --rounds, --cms, --cms-b,
    --cms-arg, --keep (`what` takes one run per round: "CMS", "registrar")."""
    parser.add_argument("--rounds", type=int, default=5, help=f"runs per {what} (5)")
    parser.add_argument("--cms", default=default_cms(), help=f"the cms executable{cms_a}")
    parser.add_argument("--cms-b", help=cms_b)
    parser.add_argument(
        "--cms-arg", action="append", default=[], metavar="ARG", help="extra `cms serve` argument"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")


@contextlib.contextmanager
def bench_workdir(prefix: str, keep: bool, procs: Processes) -> Iterator[Path]:
    """A temporary work directory; on the way out every process stops and (unless `keep`)
    the directory goes."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield workdir
    finally:
        procs.stop_all()
        if keep:
            say(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def report_rounds(title: str, values: dict[str, list[float]], baseline: str, *,
                  width: int = 0, value_format: str = ".3f", ratio_format: str = ".3f",
                  runs_format: str | None = None) -> None:
    """The medians of each side's per-round figures, then each other side's per-round ratios
    to `baseline` (their median, and the ratio of the medians)."""
    say()
    say(f"{title}, load now {load_average()}")
    for name, runs in values.items():
        if runs:
            say(f"  {name:{width}s} median {statistics.median(runs):{value_format}}  runs "
                + " ".join(f"{v:{runs_format or value_format}}" for v in runs))
    base = values.get(baseline)
    if not base:
        return
    for name, runs in values.items():
        if name == baseline:
            continue
        ratios = [v / b for v, b in zip(runs, base, strict=False) if b]
        if ratios:
            say(f"  {name}/{baseline} per-round ratio median "
                f"{statistics.median(ratios):{ratio_format}} ("
                + " ".join(f"{r:.2f}" for r in ratios) + "); ratio of medians "
                f"{statistics.median(runs) / statistics.median(base):{ratio_format}}")


def bench_main(run: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
               argv: Sequence[str] | None) -> int:
    """Parse, run, and turn a BenchError into exit status 2."""
    args = parser.parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
