"""Relays the relay benchmark drives: none (direct), the CMS relay, Debian's rtpengine.

A target allocates calls (pairs of phone addresses) and returns, per call, where the
caller sends and where the callee sends. Relay processes run pinned to one core (taskset)
in their own process group; their CPU time is read from /proc.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Protocol

from .ng import NgClient, sdp_address, sdp_audio

Address = tuple[str, int]
HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Target(Protocol):
    """What the benchmark needs from a relay under test."""

    name: str

    def start(self) -> None:
        """Start it (pinned)."""

    def pids(self) -> list[int]:
        """Processes whose CPU time counts."""

    def open_calls(self, pairs: list[tuple[Address, Address]]) -> list[tuple[Address, Address]]:
        """Per call (A address, B address): (where A sends, where B sends)."""

    def close_calls(self) -> None:
        """Tear every call down."""

    def stop(self) -> None:
        """Stop it."""


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def core_steal(core: int | None) -> tuple[float, float]:
    """(total, steal) jiffies of one core (or all) from /proc/stat."""
    name = "cpu" if core is None else f"cpu{core}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            values = [int(v) for v in fields[1:]]
            return float(sum(values[:8])), float(values[7] if len(values) > 7 else 0)
    return 0.0, 0.0


def udp_drops(ports: set[int]) -> int:
    """Datagrams dropped so far at the 127.0.0.1 UDP sockets bound on `ports` (full buffer)."""
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) > 12 and int(fields[1].rsplit(":", 1)[1], 16) in ports:
            total += int(fields[12])
    return total


def pinned(core: int | None, argv: list[str]) -> list[str]:
    """argv run under `taskset -c core` when possible."""
    if core is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", str(core), *argv]


def free_port_block(size: int, below: int | None = None) -> int:
    """The first port of `size` free consecutive UDP ports under the ephemeral range."""
    if below is None:
        try:
            below = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
        except OSError:
            below = 32768
    start = 10000
    while start + size < below:
        if all(_udp_free(port) for port in range(start, start + size, 97)):
            return start
        start += size
    raise RuntimeError(f"no block of {size} free UDP ports below {below}")


def _ephemeral_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _stop_group(process: subprocess.Popen[Any] | None, timeout: float = 5.0) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout)


class Direct:
    """No relay: each phone sends straight to the other (the generator's own figures)."""

    name = "direct"

    def start(self) -> None:
        """Nothing to start."""

    def pids(self) -> list[int]:
        """No process."""
        return []

    def open_calls(self, pairs: list[tuple[Address, Address]]) -> list[tuple[Address, Address]]:
        """A sends to B, B to A."""
        return [(b, a) for a, b in pairs]

    def close_calls(self) -> None:
        """Nothing to tear down."""

    def stop(self) -> None:
        """Nothing to stop."""


class CmsRelay:
    """`python -m cms.media.relay_server` (MediaService, uvloop) pinned to `core`."""

    name = "cms"

    def __init__(self, core: int | None, options: list[str] | None = None,
                 name: str = "cms", root: Path | None = None) -> None:
        self.name = name
        self.root = root or Path(__file__).resolve().parents[2]  # Another checkout: A/B.
        self.core = core
        self.options = options or []
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        """Start the relay process and wait until it is ready."""
        argv = pinned(self.core, [sys.executable, "-m", "cms.media.relay_server", "--host",
                                  HOST, *self.options])
        self._process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, cwd=self.root, start_new_session=True)
        if self._read().get("ready") is not True:
            raise RuntimeError("the CMS relay did not start")

    def _read(self) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the CMS relay exited ({self._process.poll()})")
        return dict(json.loads(line))

    def _command(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self._process is not None
        stdin: IO[str] | None = self._process.stdin
        assert stdin is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        return self._read()

    def pids(self) -> list[int]:
        """The relay process."""
        return [self._process.pid] if self._process is not None else []

    def open_calls(self, pairs: list[tuple[Address, Address]]) -> list[tuple[Address, Address]]:
        """Two bridged legs per call through MediaService."""
        reply = self._command({"open": [[*a, *b] for a, b in pairs]})
        return [((a_host, a_port), (b_host, b_port))
                for a_host, a_port, b_host, b_port in reply["routes"]]

    def close_calls(self) -> None:
        """Close every leg."""
        self._command({"close": True})

    def stop(self) -> None:
        """Ask it to quit, then stop its process group."""
        if self._process is not None and self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.write(json.dumps({"quit": True}) + "\n")
                self._process.stdin.flush()
                self._process.wait(3)
            except (OSError, subprocess.TimeoutExpired):
                pass
        _stop_group(self._process)
        self._process = None


class Rtpengine:
    """Debian's rtpengine-daemon, userspace forwarding only, one thread, pinned to `core`."""

    name = "rtpengine"
    PORTS = 10000

    def __init__(self, core: int | None, workdir: Path) -> None:
        self.core = core
        self.workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None
        self._ng: NgClient | None = None
        self._calls: list[str] = []
        self._serial = 0

    @staticmethod
    def available() -> str | None:
        """The rtpengine binary, if installed."""
        return shutil.which("rtpengine")

    def start(self) -> None:
        """Start rtpengine (no kernel table, one worker thread) and wait for ng pings."""
        binary = self.available()
        if binary is None:
            raise RuntimeError("rtpengine not installed (make setup-bench)")
        ng_port = _ephemeral_udp_port()
        first = free_port_block(self.PORTS)
        argv = pinned(self.core, [
            binary, "--config-file=none", "--foreground", "--log-stderr", "--log-level=4",
            f"--interface={HOST}", f"--listen-ng={HOST}:{ng_port}",
            f"--port-min={first}", f"--port-max={first + self.PORTS - 1}",
            "--table=-1", "--num-threads=1", "--delete-delay=0"])
        log = (self.workdir / "rtpengine.log").open("wb")
        self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        log.close()
        self._ng = NgClient((HOST, ng_port), timeout=0.5)
        deadline = time.monotonic() + 10
        while not self._ng.ping():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("rtpengine did not answer ng pings; see "
                                   f"{self.workdir / 'rtpengine.log'}")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The rtpengine process."""
        return [self._process.pid] if self._process is not None else []

    def open_calls(self, pairs: list[tuple[Address, Address]]) -> list[tuple[Address, Address]]:
        """ng offer (A's SDP) and answer (B's SDP) per call."""
        assert self._ng is not None
        routes = []
        for a, b in pairs:
            self._serial += 1
            call_id = f"bench-{self._serial}"
            b_sends_to = sdp_address(self._ng.offer(call_id, "a", sdp_audio(*a)))
            a_sends_to = sdp_address(self._ng.answer(call_id, "a", "b", sdp_audio(*b)))
            self._calls.append(call_id)
            routes.append((a_sends_to, b_sends_to))
        return routes

    def close_calls(self) -> None:
        """ng delete per call."""
        assert self._ng is not None
        for call_id in self._calls:
            self._ng.delete(call_id)
        self._calls.clear()

    def stop(self) -> None:
        """Stop rtpengine."""
        if self._ng is not None:
            self._ng.close()
            self._ng = None
        _stop_group(self._process)
        self._process = None
