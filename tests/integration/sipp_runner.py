"""Run SIPp (sip-tester 3.6) scenarios from tests/integration/scenarios and read its statistics."""

from __future__ import annotations

import csv
import random
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cms_process import free_port

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
SIPP = shutil.which("sipp")


@dataclass
class SippResult:
    """What one SIPp run reported: exit code (0: every call succeeded) and call counters."""

    returncode: int
    successful: int
    failed: int
    output: str
    errors: str
    stats: dict[str, str]

    def describe(self) -> str:
        return (
            f"sipp exit {self.returncode}, successful {self.successful}, failed {self.failed}\n"
            f"--- unexpected messages:\n{self.errors[-6000:]}\n"
            f"--- output:\n{self.output[-4000:]}"
        )


def free_media_port() -> int:
    """An even UDP port for SIPp's `-mp`: SIPp also binds port + 2 (video), so ports p..p+3
    must be free. Taken from 10000-19999, below both the kernel's ephemeral range (where
    `free_port` and the phones' own sockets land) and the CMS's RTP range (20000-29999)."""
    for _ in range(100):
        port = random.randrange(10000, 19996, 2)
        sockets = []
        try:
            for offset in range(4):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return port
    raise RuntimeError("no free media port range found")


def write_injection(path: Path, users: Sequence[tuple[str, str]]) -> Path:
    """An injection CSV: SEQUENTIAL, then `name;password;[authentication ...];` per line.

    field2 carries the whole authentication keyword: SIPp 3.6 cannot expand `[field0]` inside
    `[authentication username=[field0] ...]` (the first `]` ends the keyword).
    """
    lines = [
        f"{name};{pw};[authentication username={name} password={pw}];\n" for name, pw in users
    ]
    path.write_text("SEQUENTIAL\n" + "".join(lines))
    return path


def run_sipp(
    target: str,
    scenario: str,
    users: Sequence[tuple[str, str]],
    workdir: Path,
    *,
    rate: int = 100,
    transport: str = "u1",
    local_port: int | None = None,
    timeout: float = 30.0,
) -> SippResult:
    """Run `scenario` once per user (`-m len(users)`) against `target` (HOST:PORT)."""
    run = start_sipp(target, workdir, scenario=scenario, users=users, rate=rate,
                     transport=transport, local_port=local_port, timeout=timeout)
    return run.wait()


class SippProcess:
    """A SIPp run in the background: a phone that must keep running while a test goes on."""

    def __init__(self, command: list[str], run_dir: Path, port: int, timeout: float) -> None:
        self.command = command
        self.run_dir = run_dir
        self.port = port  # the local SIP port (where a UAS scenario listens)
        self.timeout = timeout
        self.proc = subprocess.Popen(
            command, cwd=run_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to finish (killing it after `timeout`) and read its statistics."""
        try:
            stdout, _ = self.proc.communicate(
                timeout=timeout if timeout is not None else self.timeout + 15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            stdout, _ = self.proc.communicate()
        output = stdout.decode("utf-8", "replace")
        screen = self.run_dir / "screen.log"
        if screen.exists():
            output += "\n" + screen.read_text(errors="replace")
        errors_file = self.run_dir / "errors.log"
        errors = errors_file.read_text(errors="replace") if errors_file.exists() else ""
        stats = _last_stats_row(self.run_dir / "stats.csv")
        return SippResult(
            self.proc.returncode,
            int(stats.get("SuccessfulCall(C)", "-1") or -1),
            int(stats.get("FailedCall(C)", "-1") or -1),
            output,
            errors,
            stats,
        )

    def stop(self) -> None:
        """Kill SIPp if it still runs (test teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def start_sipp(
    target: str,
    workdir: Path,
    *,
    scenario: str | None = None,
    builtin: str | None = None,
    users: Sequence[tuple[str, str]] = (),
    calls: int | None = None,
    rate: int = 100,
    transport: str = "u1",
    local_port: int | None = None,
    timeout: float = 30.0,
    extra: Sequence[str] = (),
) -> SippProcess:
    """Start SIPp with a scenario file from scenarios/ or a built-in one (`-sn uas`).

    `calls` defaults to one call per injected user; `extra` adds options such as
    `-key contact_port 5072`, `-s 600`, `-d 1000` or `-rtp_echo -mp PORT`.
    """
    assert SIPP is not None, "sipp is not installed"
    assert (scenario is None) != (builtin is None), "a scenario file or a built-in one"
    name = Path(scenario).stem if scenario is not None else f"builtin-{builtin}"
    run_dir = workdir / f"sipp-{name}"
    index = 1
    while run_dir.exists():
        index += 1
        run_dir = workdir / f"sipp-{name}-{index}"
    run_dir.mkdir(parents=True)
    command = [SIPP, target]
    if scenario is not None:
        command += ["-sf", str(SCENARIOS / scenario)]
    else:
        command += ["-sn", str(builtin)]
    if users:
        command += ["-inf", str(write_injection(run_dir / "users.csv", users))]
    port = local_port if local_port is not None else free_port()
    command += [
        "-m", str(calls if calls is not None else max(1, len(users))),
        "-r", str(rate),
        "-rp", "1000",
        "-t", transport,
        "-i", "127.0.0.1",
        "-nostdin",
        "-nd",  # no default behaviour: an aborted "call" must not send BYE/CANCEL
        "-timeout", f"{int(timeout)}s",
        "-timeout_error",
        "-max_retrans", "5",
        "-trace_stat", "-stf", str(run_dir / "stats.csv"), "-fd", "1",
        "-trace_err", "-error_file", str(run_dir / "errors.log"),
        "-trace_screen", "-screen_file", str(run_dir / "screen.log"),
        # Explicit local port: SIPp 3.6 otherwise tries 5060 first, shared with anything else.
        "-p", str(port),
        *extra,
    ]
    return SippProcess(command, run_dir, port, timeout)


def _last_stats_row(path: Path) -> dict[str, str]:
    """The cumulative counters of the last line of a `-trace_stat` CSV (`;` separated)."""
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {key.strip(): value.strip() for key, value in zip(header, last, strict=False)}
