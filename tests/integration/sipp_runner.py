"""Run SIPp (sip-tester 3.6) scenarios from tests/integration/scenarios and read its statistics."""

from __future__ import annotations

import csv
import shutil
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
    assert SIPP is not None, "sipp is not installed"
    name = Path(scenario).stem
    run_dir = workdir / f"sipp-{name}"
    index = 1
    while run_dir.exists():
        index += 1
        run_dir = workdir / f"sipp-{name}-{index}"
    run_dir.mkdir(parents=True)
    injection = write_injection(run_dir / "users.csv", users)
    stats_file = run_dir / "stats.csv"
    errors_file = run_dir / "errors.log"
    screen_file = run_dir / "screen.log"
    command = [
        SIPP, target,
        "-sf", str(SCENARIOS / scenario),
        "-inf", str(injection),
        "-m", str(len(users)),
        "-r", str(rate),
        "-rp", "1000",
        "-t", transport,
        "-i", "127.0.0.1",
        "-nostdin",
        "-nd",  # no default behaviour: an aborted "call" must not send BYE/CANCEL
        "-timeout", f"{int(timeout)}s",
        "-timeout_error",
        "-max_retrans", "5",
        "-trace_stat", "-stf", str(stats_file), "-fd", "1",
        "-trace_err", "-error_file", str(errors_file),
        "-trace_screen", "-screen_file", str(screen_file),
    ]
    # Explicit local port: SIPp 3.6 otherwise tries 5060 first, shared with anything else.
    command += ["-p", str(local_port if local_port is not None else free_port())]
    completed = subprocess.run(
        command, cwd=run_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, timeout=timeout + 15, check=False,
    )
    output = completed.stdout.decode("utf-8", "replace")
    if screen_file.exists():
        output += "\n" + screen_file.read_text(errors="replace")
    errors = errors_file.read_text(errors="replace") if errors_file.exists() else ""
    stats = _last_stats_row(stats_file)
    return SippResult(
        completed.returncode,
        int(stats.get("SuccessfulCall(C)", "-1") or -1),
        int(stats.get("FailedCall(C)", "-1") or -1),
        output,
        errors,
        stats,
    )


def _last_stats_row(path: Path) -> dict[str, str]:
    """The cumulative counters of the last line of a `-trace_stat` CSV (`;` separated)."""
    if not path.exists():
        return {}
    rows = list(csv.reader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {key.strip(): value.strip() for key, value in zip(header, last, strict=False)}
