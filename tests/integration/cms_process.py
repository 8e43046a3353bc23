"""Run `cms serve` as a real process for integration tests (contract: DESIGN.md §5)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

USER_COUNT = 300
FIRST_EXTENSION = 10001
DESK = ("desk-12", "2012", "deskpw")
QUEUE = ("sales", "600")

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

_SIP_LINE = re.compile(r"listening for SIP udp=(\S+):(\d+) tcp=(\S+):(\d+)")
_HTTP_LINE = re.compile(r"listening for HTTP http=(\S+):(\d+)")


def user_name(index: int) -> str:
    """The name of test user number `index` (1-based): agent0001 .. agent0300."""
    return f"agent{index:04d}"


def user_password(name: str) -> str:
    """Every test user's password is derived from its name."""
    return f"pw-{name}"


def user_extension(index: int) -> str:
    """Test user number `index` (1-based) has extension 10001, 10002, ..."""
    return str(FIRST_EXTENSION + index - 1)


def config_text(users: int = USER_COUNT, realm: str = "cms.local",
                digest_algorithms: Sequence[str] | None = None, *,
                ring_timeout: float = 15, wrap_up: float = 10,
                max_no_answer: int | None = None,
                queue_keys: Mapping[str, Any] | None = None,
                cms_keys: Mapping[str, Any] | None = None) -> str:
    """A TOML configuration with `users` agents, one work centre and the sales queue.

    `digest_algorithms` None keeps the CMS default (what a plain installation offers);
    `ring_timeout`, `wrap_up` and `max_no_answer` (None: the CMS default) shape the queue;
    `queue_keys` and `cms_keys` add more keys (TOML values) to the queue and to [cms].
    """
    queue_name, queue_number = QUEUE
    lines = [
        "[cms]",
        'sip = "127.0.0.1:0"',
        'http = "127.0.0.1:0"',
        'data_dir = "var"',
        f'realm = "{realm}"',
        *(f"{key} = {toml_value(value)}" for key, value in (cms_keys or {}).items()),
    ]
    if digest_algorithms is not None:
        lines.append("digest_algorithms = [" + ", ".join(f'"{a}"' for a in digest_algorithms)
                     + "]")
    lines.append("")
    for index in range(1, users + 1):
        name = user_name(index)
        lines += [
            "[[users]]",
            f'name = "{name}"',
            f'password = "{user_password(name)}"',
            f'extension = "{user_extension(index)}"',
            f'queues = ["{queue_name}"]',
            'role = "agent"',
            "auto_logon = true",
            "",
        ]
    desk_name, desk_extension, desk_password = DESK
    lines += [
        "[[work_centres]]",
        f'name = "{desk_name}"',
        f'extension = "{desk_extension}"',
        f'password = "{desk_password}"',
        "",
        "[[queues]]",
        f'name = "{queue_name}"',
        f'number = "{queue_number}"',
        'strategy = "longest-idle"',
        f"ring_timeout = {ring_timeout}",
        f"wrap_up = {wrap_up}",
        *([f"max_no_answer = {max_no_answer}"] if max_no_answer is not None else []),
        *(f"{key} = {toml_value(value)}" for key, value in (queue_keys or {}).items()),
        "",
        # An entry menu: dial 500, then digit 1 picks the queue.
        "[[menus]]",
        'name = "main"',
        'number = "500"',
        f'choices = {{ "1" = "{queue_name}" }}',
        "timeout = 5",
        "",
    ]
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    """A TOML literal for a string, number or boolean."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def write_config(directory: Path, users: int = USER_COUNT,
                 digest_algorithms: Sequence[str] | None = None, name: str = "cms.toml",
                 **queue: Any) -> Path:
    """Write the test configuration into `directory` and return its path.

    `queue` passes ring_timeout, wrap_up and max_no_answer on to `config_text`.
    """
    path = directory / name
    path.write_text(config_text(users, digest_algorithms=digest_algorithms, **queue))
    return path


def cms_command() -> list[str]:
    """How to start the CMS: the console script next to this Python, else on PATH."""
    script = Path(sys.executable).parent / "cms"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "cms.cli"]


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port on 127.0.0.1 that is free for UDP and TCP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
            with socket.socket(socket.AF_INET, other) as second:
                try:
                    second.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port found")


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# The start_cms fixture: start_cms(digest_algorithms=..., users=..., ring_timeout=..., ...).
StartCms = Callable[..., "CmsProcess"]


class CmsProcess:
    """One `cms serve` process; `start()` again after `stop()` reuses the data directory."""

    def __init__(self, config: Path, data_dir: Path, extra_args: list[str] | None = None) -> None:
        self.config = config
        self.data_dir = data_dir
        self.extra_args = list(extra_args or [])
        self.sip_host = "127.0.0.1"
        self.sip_port = 0
        self.tcp_port = 0
        self.http_port = 0
        self.lines: list[str] = []  # every log line of every run, in order
        self.runs = 0
        self.exit_codes: list[int] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._changed = threading.Condition()

    # -- lifecycle

    def start(self, timeout: float = START_TIMEOUT) -> CmsProcess:
        """Start the server and wait until it logged its ports and `cms ready`."""
        assert self._proc is None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = cms_command() + [
            "serve",
            "--config", str(self.config),
            "--sip", "127.0.0.1:0",
            "--http", "127.0.0.1:0",
            "--data-dir", str(self.data_dir),
            *self.extra_args,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        first_line = len(self.lines)
        self.runs += 1
        self._proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
        self._reader = threading.Thread(
            target=self._read, args=(self._proc,), name=f"cms-log-{self.runs}", daemon=True
        )
        self._reader.start()

        def ready() -> bool:
            return any("cms ready" in line for line in self.lines[first_line:])

        with self._changed:
            ok = self._changed.wait_for(
                lambda: ready() or self._proc is None or self._proc.poll() is not None, timeout
            )
        if not ok or not ready():
            code = self._proc.poll() if self._proc is not None else None
            self.kill()
            raise RuntimeError(
                f"cms did not become ready in {timeout} s (exit code {code}); log:\n"
                + self.log_text(first_line)
            )
        self._parse_ports(self.lines[first_line:])
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        proc.wait()
        with self._changed:
            self._changed.notify_all()

    def _parse_ports(self, lines: list[str]) -> None:
        sip = http = None
        for line in lines:
            sip = sip or _SIP_LINE.search(line)
            http = http or _HTTP_LINE.search(line)
        if sip is None or http is None:
            raise RuntimeError("cms did not log its SIP and HTTP ports:\n" + "\n".join(lines))
        self.sip_host = sip.group(1)
        self.sip_port = int(sip.group(2))
        self.tcp_port = int(sip.group(4))
        self.http_port = int(http.group(2))

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait up to `timeout` s, then SIGKILL the group; return the exit code."""
        proc = self._proc
        if proc is None:
            return self.exit_codes[-1] if self.exit_codes else 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.lines.append(f"[test] cms ignored SIGTERM for {timeout} s: killed")
                self._kill_group(proc)
        code = proc.wait()
        self._finish(proc, code)
        return code

    def kill(self) -> None:
        """SIGKILL the process group (no clean shutdown)."""
        proc = self._proc
        if proc is None:
            return
        self._kill_group(proc)
        self._finish(proc, proc.wait())

    def _kill_group(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

    def _finish(self, proc: subprocess.Popen[bytes], code: int) -> None:
        if self._reader is not None:
            self._reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
        self.exit_codes.append(code)
        self._proc = None
        self._reader = None

    def restart(self) -> CmsProcess:
        """Stop cleanly (asserting exit 0) and start again on the same data directory."""
        code = self.stop()
        assert code == 0, f"cms exited {code} on SIGTERM; log:\n{self.log_text()}"
        return self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- observing

    @property
    def sip_address(self) -> tuple[str, int]:
        return (self.sip_host, self.sip_port)

    @property
    def sip_target(self) -> str:
        """HOST:PORT for SIPp and accounts."""
        return f"{self.sip_host}:{self.sip_port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log_text(self, first_line: int = 0) -> str:
        with self._changed:
            return "\n".join(self.lines[first_line:])

    def get_json(self, path: str, timeout: float = 5.0) -> Any:
        """GET a JSON document from the CMS HTTP API."""
        with urllib.request.urlopen(self.base_url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def health(self) -> dict[str, Any]:
        """GET /api/v1/health."""
        result = self.get_json("/api/v1/health")
        assert isinstance(result, dict)
        return result

    def bindings(self) -> int:
        """The number of registered contacts, from the health document."""
        return int(self.health()["bindings"])

    def wait_for_bindings(self, expected: int, timeout: float = 10.0) -> int:
        """Poll health until it shows `expected` bindings; return the last count seen."""
        seen = -1

        def check() -> bool:
            nonlocal seen
            seen = self.bindings()
            return seen == expected

        wait_until(check, timeout, interval=0.1)
        return seen

    def check_clean_exit(self) -> None:
        """Every run ended with exit status 0 and no Python traceback was logged."""
        log = self.log_text()
        assert all(code == 0 for code in self.exit_codes), (
            f"cms exit codes {self.exit_codes} (expected 0 on SIGTERM); log:\n{log}"
        )
        assert "Traceback" not in log, f"cms logged a traceback:\n{log}"
