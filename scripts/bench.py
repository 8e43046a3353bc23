"""Benchmarks of the project, run as `python -m scripts.bench` (`make bench`).

`--only NAME` runs one of registrar (below, in this module), calls
(scripts/bench_calls.py), relay (scripts/bench_relay.py), memory
(scripts/bench_memory.py), softphone, journal or cti (scripts/bench_cti.py);
the default runs all. `--quick` shortens each, and
`--json FILE` writes {"benchmarks": {NAME: figures}} after each benchmark.

registrar: the CMS registrar beside Kamailio 5.6 under the same SIPp load of
digest-authenticated REGISTERs (REGISTER, 401, REGISTER with credentials, 200).

Both registrars run pinned to one core (`taskset`), SIPp to another. Offered
rates go up step by step; at each rate Kamailio runs first, then the CMS, so
both meet the same moments of a shared, noisy machine. A step is clean when no
call failed, SIPp's retransmissions stayed under 1% of the REGISTERs sent and
the achieved rate was at least 90% of the offered one; a step that is not
clean is tried once more, and a registrar leaves the escalation at its first
rate that stays not clean. The achieved rate counts the first 99% of the
calls, so that a late retransmission of the last few does not stretch it.
SIPp sends from one fixed port per registrar: the same 1000 phones
re-register at every step, as real phones would, instead of adding contacts.

The registrar's CPU time (utime + stime of all its processes, from /proc) over
a step, divided by the registrations done, gives CPU microseconds per
registration. Each step line also shows the share of a core the registrar
used, the share of its core other processes took (or the hypervisor stole),
SIPp's share of its own core, and the datagrams dropped at the registrar's
socket: figures to tell a saturated registrar from a noisy machine.

For the CPU figure alone, `python -m scripts.bench_registrar_cpu --rounds 6`
runs SIPp at one rate (2000/s) against Kamailio and the CMS in alternation,
round after round, and prints the medians and the per-round ratios; with
`--cms-b PATH` another CMS executable (an older checkout) joins the rotation.

The files it needs live beside this module, in scripts/bench/:
kamailio-registrar.cfg (the reference registrar) and reg_auth.xml (the SIPp
scenario).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from .bench_errors import BenchError

ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "bench"
KAMAILIO_CFG = ASSETS / "kamailio-registrar.cfg"
SCENARIO = ASSETS / "reg_auth.xml"

HOST = "127.0.0.1"
REALM = "cms.local"
PASSWORD = "secret"
QUEUE = ("sales", "600")
FIRST_EXTENSION = 10001

FULL_RATES = (1000, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000)
QUICK_RATES = (1000, 2000, 4000, 6000, 8000)
FULL_DURATION = 5.0
QUICK_DURATION = 3.0

MAX_RETRANS_PCT = 1.0
MIN_ACHIEVED_SHARE = 0.9
BULK_SHARE = 0.99
SIDES = ("kamailio", "cms")
BENCHMARKS = ("registrar", "calls", "relay", "memory", "softphone", "journal", "cti")
SETUP_HINT = "run `make setup-bench` (scripts/setup.sh --bench) to install it"



def say(message: str = "") -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- settings


@dataclass
class Settings:
    """What to run and how, from the command line."""

    sides: tuple[str, ...]
    rates: tuple[int, ...]
    duration: float
    users: int
    tries: int
    cpu_rate: int
    registrar_core: int | None
    sipp_core: int | None
    start_timeout: float
    pause: float
    cms: str
    cms_args: tuple[str, ...]
    json_path: Path | None
    keep: bool


def parse_rates(text: str) -> tuple[int, ...]:
    try:
        rates = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not rates or rates[0] <= 0:
        raise argparse.ArgumentTypeError("rates must be positive")
    return tuple(rates)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench",
        description=(
            "The project's benchmarks. registrar: the CMS beside Kamailio 5.6 under the same "
            "SIPp load of digest-authenticated REGISTERs. calls: calls/s through a queue to "
            "auto-answering agents, media anchored. relay: concurrent G.711 calls relayed on "
            "one core, the CMS beside rtpengine (userspace): loss, latency, CPU per packet. "
            "memory: KiB per registered phone and per active call. journal: events/s "
            "with fsync'd commits. cti: push latency INVITE -> event at 500 WebSocket, SSE "
            "and long-poll clients."
        ),
    )
    parser.add_argument(
        "--only",
        choices=(*BENCHMARKS, *SIDES),
        help="run one benchmark (default: all of " + ", ".join(BENCHMARKS) + "); "
        "kamailio or cms: the registrar benchmark against that side alone",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a short variant of each benchmark (registrar: rates "
        f"{','.join(map(str, QUICK_RATES))} of {QUICK_DURATION:g} s each)",
    )
    parser.add_argument(
        "--agents", type=int, default=100, help="calls benchmark: auto-answering agents (100)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure here")
    parser.add_argument(
        "--rates",
        type=parse_rates,
        help=f"offered REGISTER rates per second (default {','.join(map(str, FULL_RATES))})",
    )
    parser.add_argument("--duration", type=float, help=f"seconds per step ({FULL_DURATION:g})")
    parser.add_argument("--users", type=int, default=1000, help="users agent0001.. (1000)")
    parser.add_argument("--tries", type=int, default=2, help="tries of a rate (2)")
    parser.add_argument(
        "--cpu-rate", type=int, default=2000, help="rate where CPU/registration is compared (2000)"
    )
    parser.add_argument("--registrar-core", type=int, default=1, help="core of the registrars (1)")
    parser.add_argument("--sipp-core", type=int, default=0, help="core of SIPp (0)")
    parser.add_argument(
        "--start-timeout", type=float, default=30.0, help="seconds for a registrar to start (30)"
    )
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between steps (0.5)")
    parser.add_argument(
        "--cms",
        default=default_cms(),
        help="the cms executable (default: .venv/bin/cms of the checkout)",
    )
    parser.add_argument(
        "--cms-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `cms serve` (repeatable), e.g. --cms-arg=--log-level=WARNING",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (configs, logs, SIPp stats)"
    )
    return parser


def default_cms() -> str:
    venv_cms = ROOT / ".venv" / "bin" / "cms"
    if venv_cms.exists():
        return str(venv_cms)
    return shutil.which("cms") or str(venv_cms)


def settings_from(args: argparse.Namespace) -> Settings:
    rates = set(args.rates or (QUICK_RATES if args.quick else FULL_RATES))
    rates.add(args.cpu_rate)  # the rate where CPU is compared must be among the steps
    duration = args.duration or (QUICK_DURATION if args.quick else FULL_DURATION)
    sides = (args.only,) if args.only in SIDES else SIDES
    registrar_core, sipp_core = pinning(args.registrar_core, args.sipp_core)
    return Settings(
        sides=sides,
        rates=tuple(sorted(rates)),
        duration=duration,
        users=args.users,
        tries=max(1, args.tries),
        cpu_rate=args.cpu_rate,
        registrar_core=registrar_core,
        sipp_core=sipp_core,
        start_timeout=args.start_timeout,
        pause=args.pause,
        cms=args.cms,
        cms_args=tuple(args.cms_arg),
        json_path=args.json,
        keep=args.keep or bool(os.environ.get("KEEP_WORKDIR")),
    )


def pinning(registrar_core: int, sipp_core: int) -> tuple[int | None, int | None]:
    """The cores to pin to, or (None, None) on a machine with a single core."""
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        say(f"note: only {len(allowed)} core available: nothing is pinned, figures mean less")
        return None, None
    for core in (registrar_core, sipp_core):
        if core not in allowed:
            raise BenchError(f"core {core} is not available (cores: {sorted(allowed)})")
    if registrar_core == sipp_core:
        raise BenchError("the registrars and SIPp must be pinned to different cores")
    return registrar_core, sipp_core


def check_tools(settings: Settings) -> None:
    """Fail with a clear message when a tool the run needs is missing."""
    needed = {"sipp": "sip-tester"}
    if "kamailio" in settings.sides:
        needed["kamailio"] = "kamailio"
    if settings.registrar_core is not None:
        needed["taskset"] = "util-linux"
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in needed.items() if not which(tool)]
    if missing:
        raise BenchError(f"not found: {', '.join(missing)}; {SETUP_HINT}")
    if "cms" in settings.sides and not Path(settings.cms).exists():
        raise BenchError(f"{settings.cms} not found: run `make setup` first, or give --cms")
    for path in (KAMAILIO_CFG, SCENARIO):
        if not path.exists():
            raise BenchError(f"{path} is missing")


def which(tool: str) -> str | None:
    """shutil.which, also looking in the sbin folders (kamailio is in /usr/sbin)."""
    path = os.environ.get("PATH", os.defpath) + ":/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(tool, path=path)


# ---------------------------------------------------------------- processes


class Processes:
    """Child processes, each in its own process group; all stopped on exit."""

    def __init__(self) -> None:
        self._running: list[subprocess.Popen[bytes]] = []

    def start(self, argv: Sequence[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after `grace` seconds or once the leader left."""
        signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            say(f"warning: process {proc.pid} survived SIGKILL")
        if proc in self._running:
            self._running.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self._running):
            self.stop(proc)


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def pinned(core: int | None, argv: Sequence[str]) -> list[str]:
    return (["taskset", "-c", str(core)] if core is not None else []) + list(argv)


def ephemeral_floor() -> int:
    """The lowest port the kernel hands out on its own (ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(port: int) -> bool:
    """Free on the loopback for UDP and TCP (the CMS listens on both)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, port))
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                tcp.bind((HOST, port))
    except OSError:
        return False
    return True


def free_port() -> int:
    """A free loopback port below the ephemeral range, so that nothing else is given it
    between our check and its use, nor between two SIPp runs that reuse it."""
    top = ephemeral_floor()
    bottom = min(10000, top // 2)
    for _ in range(500):
        port = random.randrange(bottom, top)
        if port_is_free(port):
            return port
    raise BenchError(f"no free port on {HOST} in {bottom}..{top - 1}")


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text[-lines:]) or "    (empty log)"


# ---------------------------------------------------------------- /proc


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (field 3 onwards), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def descendants(root: int) -> list[int]:
    """root and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = proc_stat(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu_seconds(root: int) -> float:
    """utime + stime of root and its descendants, plus what their reaped children used."""
    ticks = 0
    for pid in descendants(root):
        fields = proc_stat(pid)
        if fields:
            ticks += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CoreTimes:
    """Jiffies of one core (or of all cores) from /proc/stat."""

    busy: int
    steal: int
    total: int

    def __sub__(self, other: CoreTimes) -> CoreTimes:
        return CoreTimes(self.busy - other.busy, self.steal - other.steal, self.total - other.total)


def core_times(core: int | None) -> CoreTimes:
    name = "cpu" if core is None else f"cpu{core}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            # user nice system idle iowait irq softirq steal
            values = [int(value) for value in fields[1:9]]
            total = sum(values)
            return CoreTimes(total - values[3] - values[4], values[7], total)
    return CoreTimes(0, 0, 0)


def socket_drops(port: int) -> int:
    """The drops counter of the UDP socket bound to HOST:port, from /proc/net/udp."""
    wanted = f"{socket.htonl(int.from_bytes(socket.inet_aton(HOST), 'big')):08X}:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return 0
    return sum(int(line.split()[-1]) for line in lines if line.split()[1] == wanted)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# ---------------------------------------------------------------- SIP readiness


def options_request(target_port: int, local_port: int) -> bytes:
    token = uuid.uuid4().hex
    lines = [
        f"OPTIONS sip:{HOST}:{target_port} SIP/2.0",
        f"Via: SIP/2.0/UDP {HOST}:{local_port};branch=z9hG4bK{token[:16]};rport",
        "Max-Forwards: 70",
        f"From: <sip:bench@{HOST}:{local_port}>;tag={token[16:24]}",
        f"To: <sip:{HOST}:{target_port}>",
        f"Call-ID: {token}@{HOST}",
        "CSeq: 1 OPTIONS",
        "Accept: application/sdp",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answers_options(port: int, timeout: float, alive: Callable[[], bool]) -> bool:
    """Send OPTIONS every 0.25 s until a 200 comes back, `alive` turns false or time is up."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(0.25)
        local_port = sock.getsockname()[1]
        while time.monotonic() < deadline and alive():
            try:
                sock.sendto(options_request(port, local_port), (HOST, port))
                while True:
                    data = sock.recv(65535)
                    if data.startswith(b"SIP/2.0 200"):
                        return True
            except (TimeoutError, ConnectionRefusedError):
                continue
    return False


# ---------------------------------------------------------------- work directory


def user_names(count: int) -> list[str]:
    width = max(4, len(str(count)))
    return [f"agent{i:0{width}d}" for i in range(1, count + 1)]


def write_injection_file(path: Path, names: Iterable[str]) -> None:
    """SIPp -inf: field0 the user, field1 the credentials keyword for the Authorization."""
    rows = [f"{name};[authentication username={name} password={PASSWORD}]" for name in names]
    path.write_text("SEQUENTIAL\n" + "\n".join(rows) + "\n")


def toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_cms_config(path: Path, names: Sequence[str], sip_port: int, data_dir: Path) -> None:
    """A CMS configuration per DESIGN.md section 5: the users and one queue."""
    queue, number = QUEUE
    out = [
        "[cms]",
        f"sip = {toml_string(f'{HOST}:{sip_port}')}",
        f"http = {toml_string(f'{HOST}:0')}",
        f"data_dir = {toml_string(str(data_dir))}",
        f"realm = {toml_string(REALM)}",
    ]
    for index, name in enumerate(names):
        out += [
            "",
            "[[users]]",
            f"name = {toml_string(name)}",
            f"password = {toml_string(PASSWORD)}",
            f'extension = "{FIRST_EXTENSION + index}"',
            f"queues = [{toml_string(queue)}]",
        ]
    out += ["", "[[queues]]", f"name = {toml_string(queue)}", f"number = {toml_string(number)}"]
    path.write_text("\n".join(out) + "\n")


# ---------------------------------------------------------------- registrars


@dataclass
class Step:
    """One SIPp run at one offered rate against one registrar."""

    registrar: str
    rate: int
    attempt: int
    planned: int
    ok: int = 0
    failed: int = 0
    retrans: int = 0
    elapsed_s: float = 0.0  # SIPp's start to its last statistics
    bulk_s: float | None = None  # SIPp's start until BULK_SHARE of the calls had succeeded
    cpu_s: float = 0.0
    core_busy_pct: float = 0.0  # the registrars' core, busy (any process) or stolen
    steal_pct: float = 0.0
    others_pct: float = 0.0  # the part of core_busy_pct not spent by this registrar
    wall_s: float = 0.0  # the SIPp run, start to exit
    sipp_cpu_s: float = 0.0
    drops: int = 0  # datagrams dropped at the registrar's UDP socket (receive buffer full)
    sipp_exit: int | None = None
    stats_found: bool = False

    @property
    def registers_sent(self) -> int:
        """Original REGISTERs: two per completed call, at least one per failed call."""
        return max(2 * self.ok + self.failed, 1)

    @property
    def retrans_pct(self) -> float:
        return 100.0 * self.retrans / self.registers_sent

    @property
    def achieved(self) -> float:
        """Registrations per second over the bulk of the run: the first BULK_SHARE of the
        calls, so that the retransmission timer of the last few does not stretch the time
        (retransmissions have their own limit)."""
        if self.bulk_s:
            return math.ceil(BULK_SHARE * self.planned) / self.bulk_s
        return self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def registrar_pct(self) -> float:
        """The registrar's CPU time as a share of one core over the SIPp run."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def sipp_pct(self) -> float:
        return 100.0 * self.sipp_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_us_per_reg(self) -> float | None:
        return 1e6 * self.cpu_s / self.ok if self.ok else None

    def problems(self) -> list[str]:
        found = []
        if not self.stats_found:
            found.append("no SIPp statistics")
        if self.failed:
            found.append(f"{self.failed} failed")
        if self.ok + self.failed < self.planned:
            found.append(f"{self.planned - self.ok - self.failed} unfinished")
        if self.retrans_pct >= MAX_RETRANS_PCT:
            found.append(f"retransmissions {self.retrans_pct:.2f}%")
        if self.achieved < MIN_ACHIEVED_SHARE * self.rate:
            found.append(f"achieved {self.achieved:.0f}/s")
        return found

    @property
    def clean(self) -> bool:
        return not self.problems()

    def line(self) -> str:
        cpu = self.cpu_us_per_reg
        cpu_text = f"{cpu:7.1f}" if cpu is not None else "    n/a"
        try_text = f" (try {self.attempt})" if self.attempt > 1 else ""
        return (
            f"{self.registrar:9s} offered {self.rate:6d}/s  ok {self.ok:6d}/{self.planned:<6d} "
            f"failed {self.failed:5d}  retrans {self.retrans_pct:5.2f}%  "
            f"achieved {self.achieved:6.0f}/s  cpu {cpu_text} us/reg  "
            f"[registrar {self.registrar_pct:3.0f}% others {self.others_pct:3.0f}% "
            f"sipp {self.sipp_pct:3.0f}% drops {self.drops:5d}]  "
            f"{'clean' if self.clean else 'NOT clean'}{try_text}"
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            retrans_pct=round(self.retrans_pct, 3),
            registrar_pct=round(self.registrar_pct, 1),
            sipp_pct=round(self.sipp_pct, 1),
            achieved=round(self.achieved, 1),
            cpu_us_per_reg=None if self.cpu_us_per_reg is None else round(self.cpu_us_per_reg, 1),
            clean=self.clean,
            problems=self.problems(),
        )
        return data


@dataclass
class Registrar:
    """A registrar under test: how to start it, its process and its figures."""

    name: str
    port: int
    argv: list[str]
    log: Path
    # SIPp's source port for every step against this registrar: the same phones
    # (same Contact) re-register at each step instead of piling up new contacts.
    sipp_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    steps: list[Step] = field(default_factory=list)
    highest_clean: int = 0
    left: str = ""  # why it left the escalation; empty while it is in

    @property
    def active(self) -> bool:
        return not self.left and self.proc is not None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_at(self, rate: int) -> float | None:
        """CPU per registration at `rate`: the clean try if there is one, else the last."""
        tries = [step for step in self.steps if step.rate == rate]
        clean = [step for step in tries if step.clean]
        chosen = clean[-1] if clean else (tries[-1] if tries else None)
        return chosen.cpu_us_per_reg if chosen else None

    def as_dict(self, cpu_rate: int) -> dict[str, Any]:
        return {
            "port": self.port,
            "sipp_port": self.sipp_port,
            "command": shlex.join(self.argv),
            "highest_clean_rate": self.highest_clean,
            "left": self.left or "clean at every offered rate (a lower bound)",
            f"cpu_us_per_reg_at_{cpu_rate}": self.cpu_at(cpu_rate),
            "steps": [step.as_dict() for step in self.steps],
        }


def kamailio_registrar(settings: Settings, workdir: Path) -> Registrar:
    port = free_port()
    rundir = workdir / "kamailio-run"
    rundir.mkdir()
    argv = [
        which("kamailio") or "kamailio",
        "-DD", "-E",  # foreground, log to stderr
        "-f", str(KAMAILIO_CFG),
        "-l", f"udp:{HOST}:{port}",
        "-Y", str(rundir),  # runtime dir (the default /run/kamailio may not exist)
        "-m", "128", "-M", "16",  # shared and per-process memory, MB
    ]  # fmt: skip
    return Registrar(
        "kamailio", port, pinned(settings.registrar_core, argv), workdir / "kamailio.log"
    )


def cms_registrar(settings: Settings, workdir: Path, names: Sequence[str]) -> Registrar:
    port = free_port()
    config = workdir / "cms.toml"
    data_dir = workdir / "cms-data"
    data_dir.mkdir()
    write_cms_config(config, names, port, data_dir)
    argv = [
        settings.cms, "serve",
        "--config", str(config),
        "--sip", f"{HOST}:{port}",
        "--http", f"{HOST}:0",
        "--data-dir", str(data_dir),
        *settings.cms_args,
    ]  # fmt: skip
    return Registrar("cms", port, pinned(settings.registrar_core, argv), workdir / "cms.log")


def start_registrars(
    registrars: Sequence[Registrar], procs: Processes, settings: Settings, workdir: Path
) -> None:
    """Start all, then wait until each answers OPTIONS with 200."""
    for reg in registrars:
        say(f"starting {reg.name}: {shlex.join(reg.argv)}")
        reg.proc = procs.start(reg.argv, reg.log, workdir)
    for reg in registrars:
        began = time.monotonic()
        if not answers_options(reg.port, settings.start_timeout, reg.alive):
            state = (
                f"exited with code {reg.proc.returncode}"
                if reg.proc is not None and reg.proc.poll() is not None
                else f"gave no 200 to OPTIONS on {HOST}:{reg.port} in {settings.start_timeout:g} s"
            )
            raise BenchError(f"{reg.name} {state}; end of {reg.log}:\n{log_tail(reg.log)}")
        say(f"{reg.name} answers OPTIONS on {HOST}:{reg.port} ({time.monotonic() - began:.1f} s)")


# ---------------------------------------------------------------- SIPp


def sipp_argv(
    settings: Settings, reg: Registrar, rate: int, calls: int, stats: Path, inf: Path
) -> list[str]:
    argv = [
        which("sipp") or "sipp",
        f"{HOST}:{reg.port}",
        "-sf", str(SCENARIO),
        "-inf", str(inf),
        "-r", str(rate),
        "-m", str(calls),
        "-l", str(max(200, 2 * rate)),  # open calls allowed: two seconds' worth
        "-t", "u1",
        "-i", HOST,
        "-p", str(reg.sipp_port),
        "-cp", str(free_port()),  # control port: the default 8888 may be taken
        "-trace_stat", "-stf", str(stats), "-fd", "100ms",
        "-nostdin",
        "-recv_timeout", "10000",
        "-timeout", str(int(settings.duration * 2 + 20)),
        "-max_recv_loops", "10000",
        "-max_sched_loops", "10000",
    ]  # fmt: skip
    return pinned(settings.sipp_core, argv)


def stats_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a SIPp -trace_stat file (periodic, cumulative counters), by column name."""
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return []
    header = lines[0].rstrip(";").split(";") if lines else []
    return [dict(zip(header, line.rstrip(";").split(";"), strict=False)) for line in lines[1:]]


def epoch_of(stamp: str) -> float:
    """SIPp writes times as 'date<TAB>time<TAB>epoch.micro'."""
    return float(stamp.split("\t")[-1])


def counter(row: dict[str, str], name: str) -> int:
    return int(row.get(name) or 0)


def completion_seconds(rows: Sequence[dict[str, str]], count: int) -> float | None:
    """Seconds from SIPp's start until `count` calls had succeeded (interpolated between
    the periodic rows), or None if they never did."""
    start = prev_time = epoch_of(rows[0]["StartTime"])
    prev_done = 0
    for row in rows:
        now, done = epoch_of(row["CurrentTime"]), counter(row, "SuccessfulCall(C)")
        if done >= count:
            share = (count - prev_done) / (done - prev_done) if done > prev_done else 1.0
            return prev_time + share * (now - prev_time) - start
        prev_time, prev_done = now, done
    return None


def read_counts(rows: Sequence[dict[str, str]], step: Step) -> None:
    last = rows[-1]
    step.ok = counter(last, "SuccessfulCall(C)")
    step.failed = counter(last, "FailedCall(C)")
    step.retrans = counter(last, "Retransmissions(C)")
    try:
        step.elapsed_s = epoch_of(last["CurrentTime"]) - epoch_of(last["StartTime"])
        step.bulk_s = completion_seconds(rows, math.ceil(BULK_SHARE * step.planned))
    except (KeyError, ValueError, IndexError):
        pass
    step.stats_found = True


def record_core(step: Step, used: CoreTimes, core: int | None) -> None:
    """How busy the registrars' core was over the step, and how much of that was others."""
    if used.total <= 0:
        return
    cores = 1 if core is not None else (os.cpu_count() or 1)
    wall_s = used.total / os.sysconf("SC_CLK_TCK") / cores
    step.core_busy_pct = 100.0 * used.busy / used.total
    step.steal_pct = 100.0 * used.steal / used.total
    own_pct = 100.0 * step.cpu_s / wall_s / cores
    step.others_pct = max(0.0, step.core_busy_pct - own_pct)


def wait_unreaped(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until the process has exited, leaving it a zombie whose CPU times can be read."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        if os.waitid(os.P_PID, proc.pid, flags) is not None:
            return True
        time.sleep(0.02)
    return False


def process_cpu_seconds(pid: int) -> float:
    fields = proc_stat(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# SIPp's exit status when it cannot bind a socket (its EXIT_BIND_ERROR).
SIPP_BIND_ERROR = 254


def run_step(
    reg: Registrar, rate: int, attempt: int, settings: Settings, procs: Processes, workdir: Path
) -> Step:
    """One SIPp run against a running registrar, with the CPU time of both around it.

    The registrar's SIPp port was free when the run began, but another program on a
    shared machine (an RTP relay's port range, say) may take it later: SIPp then exits
    at once with a bind error, and the step runs again from a new port.
    """
    step = _run_step(reg, rate, attempt, settings, procs, workdir)
    if step.sipp_exit == SIPP_BIND_ERROR and step.ok == 0:
        old_port = reg.sipp_port
        reg.sipp_port = free_port()
        say(f"  SIPp could not bind port {old_port}; again from port {reg.sipp_port}")
        step = _run_step(reg, rate, attempt, settings, procs, workdir)
    return step


def _run_step(
    reg: Registrar, rate: int, attempt: int, settings: Settings, procs: Processes, workdir: Path
) -> Step:
    assert reg.proc is not None
    calls = max(1, round(rate * settings.duration))
    step = Step(reg.name, rate, attempt, calls)
    stats = workdir / f"sipp-{reg.name}-{rate}-{attempt}.csv"
    stats.unlink(missing_ok=True)  # a run again (after a bind error) starts afresh
    argv = sipp_argv(settings, reg, rate, calls, stats, workdir / "users.csv")
    core0 = core_times(settings.registrar_core)
    cpu0 = tree_cpu_seconds(reg.proc.pid)
    drops0 = socket_drops(reg.port)
    began = time.monotonic()
    sipp = procs.start(argv, workdir / f"sipp-{reg.name}.log", workdir)
    try:
        if wait_unreaped(sipp, settings.duration * 2 + 40):
            step.sipp_cpu_s = process_cpu_seconds(sipp.pid)
        else:
            say(f"  SIPp did not finish in time against {reg.name}; stopped")
    finally:
        procs.stop(sipp)
    step.sipp_exit = sipp.returncode
    step.cpu_s = tree_cpu_seconds(reg.proc.pid) - cpu0
    step.wall_s = time.monotonic() - began
    step.drops = socket_drops(reg.port) - drops0
    record_core(step, core_times(settings.registrar_core) - core0, settings.registrar_core)
    rows = stats_rows(stats)
    if rows:
        read_counts(rows, step)
    else:
        sipp_log = workdir / f"sipp-{reg.name}.log"
        say(f"  SIPp wrote no statistics; end of its log:\n{log_tail(sipp_log)}")
    return step


# ---------------------------------------------------------------- escalation


def measure_rate(
    reg: Registrar, rate: int, settings: Settings, procs: Processes, workdir: Path
) -> None:
    """Up to `tries` runs at this rate; the registrar leaves when none is clean."""
    assert reg.proc is not None
    step: Step | None = None
    for attempt in range(1, settings.tries + 1):
        step = run_step(reg, rate, attempt, settings, procs, workdir)
        reg.steps.append(step)
        say(step.line())
        time.sleep(settings.pause)
        if step.clean or not reg.alive():
            break
    if not reg.alive():
        reg.left = f"exited with code {reg.proc.poll()} at {rate}/s"
        say(f"  {reg.name} {reg.left}; end of its log:\n{log_tail(reg.log)}")
    elif step is not None and step.clean:
        reg.highest_clean = rate
        return
    else:
        problems = ", ".join(step.problems()) if step else "no run"
        reg.left = f"not clean at {rate}/s ({problems})"
    procs.stop(reg.proc)  # leaves the core to the others


def escalate(
    registrars: Sequence[Registrar], settings: Settings, procs: Processes, workdir: Path
) -> None:
    """Every rate, ascending, against each registrar still in, in turn."""
    for rate in settings.rates:
        for reg in registrars:
            if reg.active:
                measure_rate(reg, rate, settings, procs, workdir)
        if not any(reg.active for reg in registrars):
            break


# ---------------------------------------------------------------- report


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def summary_lines(registrars: Sequence[Registrar], settings: Settings) -> list[str]:
    by_name = {reg.name: reg for reg in registrars}
    lines = []
    for reg in registrars:
        why = reg.left or "clean at every offered rate: a lower bound"
        lines.append(f"{reg.name:9s} highest clean rate {reg.highest_clean:6d}/s  ({why})")
    cms, kam = by_name.get("cms"), by_name.get("kamailio")
    if cms and kam:
        rate_ratio = ratio(cms.highest_clean, kam.highest_clean)
        cpu_cms, cpu_kam = cms.cpu_at(settings.cpu_rate), kam.cpu_at(settings.cpu_rate)
        lines.append(f"cms/kamailio highest clean rate ratio {fmt(rate_ratio, '.2f')}")
        lines.append(
            f"cpu per registration at {settings.cpu_rate}/s: cms {fmt(cpu_cms, '.1f', ' us')}, "
            f"kamailio {fmt(cpu_kam, '.1f', ' us')}, "
            f"cms/kamailio {fmt(ratio(cpu_cms, cpu_kam), '.2f')}"
        )
    else:
        for reg in registrars:
            cpu = reg.cpu_at(settings.cpu_rate)
            lines.append(
                f"cpu per registration at {settings.cpu_rate}/s: {reg.name} "
                f"{fmt(cpu, '.1f', ' us')}"
            )
    return lines


def tool_version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return lines[0] if lines else "unknown"


def others_share(registrars: Sequence[Registrar]) -> tuple[float, float]:
    """Mean and max share of the registrars' core that other processes took during the steps."""
    shares = [step.others_pct for reg in registrars for step in reg.steps]
    return (sum(shares) / len(shares), max(shares)) if shares else (0.0, 0.0)


def conditions(
    settings: Settings, load_before: str, registrars: Sequence[Registrar]
) -> dict[str, Any]:
    others_mean, others_max = others_share(registrars)
    if settings.registrar_core is None:
        pinning_text = "not pinned (fewer than 2 cores)"
    else:
        pinning_text = (
            f"registrars on core {settings.registrar_core}, SIPp on core {settings.sipp_core} "
            "(taskset)"
        )
    return {
        "pinning": pinning_text,
        "nproc": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "others_on_registrar_core_pct": {"mean": round(others_mean), "max": round(others_max)},
        "duration_s": settings.duration,
        "rates": list(settings.rates),
        "tries": settings.tries,
        "users": settings.users,
        "kamailio": tool_version([which("kamailio") or "kamailio", "-v"]),
        "sipp": tool_version([which("sipp") or "sipp", "-v"]),
    }


def condition_lines(cond: dict[str, Any]) -> list[str]:
    others = cond["others_on_registrar_core_pct"]
    return [
        f"conditions: {cond['pinning']}; nproc {cond['nproc']}; "
        f"{cond['duration_s']:g} s per step, up to {cond['tries']} tries, {cond['users']} users",
        f"load average before {cond['load_average_before']}, after {cond['load_average_after']}; "
        f"other processes took {others['mean']}% of the registrars' core on average over the "
        f"steps (at most {others['max']}%)",
        f"{cond['kamailio']}; {cond['sipp']}",
    ]


def registrar_document(
    registrars: Sequence[Registrar],
    settings: Settings,
    cond: dict[str, Any],
    summary: list[str],
) -> dict[str, Any]:
    by_name = {reg.name: reg for reg in registrars}
    document = {
        "benchmark": "registrar",
        "conditions": cond,
        "clean_rule": {
            "failed": 0,
            "max_retrans_pct": MAX_RETRANS_PCT,
            "min_achieved_share": MIN_ACHIEVED_SHARE,
        },
        "cpu_rate": settings.cpu_rate,
        "registrars": {reg.name: reg.as_dict(settings.cpu_rate) for reg in registrars},
        "summary": summary,
    }
    if "cms" in by_name and "kamailio" in by_name:
        cms, kam = by_name["cms"], by_name["kamailio"]
        document["clean_rate_ratio"] = ratio(cms.highest_clean, kam.highest_clean)
        document["cpu_ratio"] = ratio(cms.cpu_at(settings.cpu_rate), kam.cpu_at(settings.cpu_rate))
    return document


# ---------------------------------------------------------------- main


def prepare(settings: Settings, workdir: Path) -> list[Registrar]:
    """Users file, CMS configuration and the registrars' command lines."""
    names = user_names(settings.users)
    write_injection_file(workdir / "users.csv", names)
    registrars = []
    if "kamailio" in settings.sides:
        registrars.append(kamailio_registrar(settings, workdir))
    if "cms" in settings.sides:
        registrars.append(cms_registrar(settings, workdir, names))
    return registrars


def run_registrar_bench(settings: Settings) -> dict[str, Any]:
    check_tools(settings)
    affinity = os.sched_getaffinity(0)
    if settings.sipp_core is not None:
        os.sched_setaffinity(0, {settings.sipp_core})  # keep the registrars' core for them
    load_before = load_average()
    workdir = Path(tempfile.mkdtemp(prefix="cms-bench-"))
    procs = Processes()
    finished = False
    try:
        registrars = prepare(settings, workdir)
        say(
            f"registrar benchmark: {', '.join(settings.sides)}; rates "
            f"{','.join(map(str, settings.rates))}/s, {settings.duration:g} s each; "
            f"work dir {workdir}"
        )
        start_registrars(registrars, procs, settings, workdir)
        say(
            "per step: cpu = the registrar's CPU time per registration; [share of a core "
            "used by the registrar, by other processes on its core (or stolen), by SIPp; "
            "datagrams dropped at the registrar's socket]"
        )
        time.sleep(settings.pause)
        escalate(registrars, settings, procs, workdir)
        finished = True
    finally:
        procs.stop_all()
        os.sched_setaffinity(0, affinity)  # the other benchmarks pin their own processes
        if settings.keep or not finished:
            say(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return report(registrars, settings, load_before)


def report(
    registrars: Sequence[Registrar], settings: Settings, load_before: str
) -> dict[str, Any]:
    cond = conditions(settings, load_before, registrars)
    summary = summary_lines(registrars, settings)
    say()
    say("summary")
    for line in summary + condition_lines(cond):
        say("  " + line)
    return registrar_document(registrars, settings, cond, summary)


def run_other_bench(name: str, args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """calls, relay or memory (their modules are imported only when run)."""
    if name not in ("relay", "softphone", "journal") and not Path(settings.cms).exists():
        raise BenchError(f"{settings.cms} not found: run `make setup` first, or give --cms")
    workdir = Path(tempfile.mkdtemp(prefix=f"cms-bench-{name}-"))
    finished = False
    try:
        if name == "relay":
            from .bench_relay import run_relay_bench

            document = run_relay_bench(args.quick)
        elif name == "softphone":
            from .bench_softphone import run_softphone_bench

            document = run_softphone_bench(args.quick, workdir)
        elif name == "journal":
            from .bench_cti import run_journal_bench

            document = run_journal_bench(args.quick)
        elif name == "cti":
            from .bench_cti import run_cti_bench

            document = run_cti_bench(settings.cms, args.quick, workdir, settings.cms_args)
        elif name == "calls":
            from .bench_calls import run_calls_bench

            document = run_calls_bench(
                settings.cms, args.quick, workdir, args.agents, settings.cms_args
            )
        else:
            from .bench_memory import run_memory_bench

            document = run_memory_bench(settings.cms, args.quick, workdir, settings.cms_args)
        finished = True
    finally:
        if settings.keep or not finished:
            say(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    say()
    for line in document["summary"]:
        say(line)
    conditions_now = document["conditions"]
    say(
        f"  conditions: {conditions_now['pinning']}; nproc {conditions_now['nproc']}; load "
        f"average before {conditions_now['load_average']}, after "
        f"{conditions_now.get('load_average_after', load_average())}"
    )
    say()
    return document


def run_benchmarks(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.only is None:
        names = BENCHMARKS
    else:
        names = ("registrar",) if args.only in SIDES else (args.only,)
    documents: dict[str, Any] = {}
    failed = []
    for name in names:
        try:
            if name == "registrar":
                documents[name] = run_registrar_bench(settings)
                say()
            else:
                documents[name] = run_other_bench(name, args, settings)
        except BenchError as exc:
            if len(names) == 1:
                raise
            print(f"bench: {name}: error: {exc}", file=sys.stderr)
            documents[name] = {"benchmark": name, "error": str(exc)}
            failed.append(name)
        if settings.json_path:  # after each benchmark, so that a later failure keeps these
            document = {"benchmarks": documents, "quick": args.quick}
            settings.json_path.write_text(json.dumps(document, indent=2) + "\n")
    if settings.json_path:
        say(f"figures written to {settings.json_path}")
    return 2 if failed else 0


def exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    print(f"bench: stopped by {signal.Signals(signum).name}", file=sys.stderr)
    raise SystemExit(128 + signum)  # unwinds through the finally that stops the children


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, exit_on_signal)
    try:
        return run_benchmarks(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
