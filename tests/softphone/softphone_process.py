"""Run `softphone run` as a real process and talk to its local API (DESIGN.md §5)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from cms_process import wait_until  # the tests import it from here too

REPO = Path(__file__).resolve().parents[2]

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

_HTTP_LINE = re.compile(r"listening for HTTP http=(\S+):(\d+)")
_SIP_LINE = re.compile(r"listening for SIP udp=(\S+):(\d+)")


def softphone_command() -> list[str]:
    """The console script next to this Python, else `python -m softphone`."""
    script = Path(sys.executable).parent / "softphone"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "softphone"]


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class SoftphoneProcess:
    """One soft phone process with its own profile, history and audio files."""

    def __init__(self, profile: Path, audio: str, home: Path,
                 env: dict[str, str] | None = None) -> None:
        self.profile = profile
        self.audio = audio
        self.home = home
        self.extra_env = dict(env or {})
        self.lines: list[str] = []
        self.http_port = 0
        self.sip_port = 0
        self.exit_code: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._changed = threading.Condition()
        self._signalled = False

    def start(self, timeout: float = START_TIMEOUT) -> SoftphoneProcess:
        """Launch and wait until it is ready."""
        return self.launch().wait_ready(timeout)

    def launch(self) -> SoftphoneProcess:
        """Start the process without waiting (start several, then `wait_ready` each)."""
        self._signalled = False
        self.home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", XDG_DATA_HOME=str(self.home),
                   DISPLAY="", WAYLAND_DISPLAY="")
        env.update(self.extra_env)
        command = softphone_command() + [
            "run", "--profile", str(self.profile), "--http", "127.0.0.1:0",
            "--sip", "127.0.0.1:0", "--audio", self.audio, "--no-browser",
        ]
        self._proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, process_group=0,
        )
        self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True)
        self._reader.start()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> SoftphoneProcess:
        """Wait for `softphone ready:` and read the HTTP and SIP ports from the log."""

        def ready() -> bool:
            return any(line.startswith("softphone ready:") for line in self.lines)

        with self._changed:
            self._changed.wait_for(
                lambda: ready() or self._proc is None or self._proc.poll() is not None, timeout
            )
        if not ready():
            self.kill()
            raise RuntimeError(f"softphone did not become ready; log:\n{self.log_text()}")
        for line in self.lines:
            if match := _HTTP_LINE.search(line):
                self.http_port = int(match.group(2))
            if match := _SIP_LINE.search(line):
                self.sip_port = int(match.group(2))
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                self._changed.notify_all()
        proc.wait()
        with self._changed:
            self._changed.notify_all()

    def signal_stop(self) -> None:
        """Send SIGTERM without waiting (stop several at once, then `stop()` each)."""
        if self._proc is not None and self._proc.poll() is None and not self._signalled:
            self._signalled = True  # once: a second SIGTERM late in shutdown would kill it
            self._proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM and wait; SIGKILL the group if it hangs. Returns the exit code."""
        proc = self._proc
        if proc is None:
            return self.exit_code if self.exit_code is not None else 0
        if proc.poll() is None:
            self.signal_stop()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.lines.append(f"[test] softphone ignored SIGTERM for {timeout} s: killed")
                os.killpg(proc.pid, signal.SIGKILL)
        self.exit_code = proc.wait()
        self._finish(proc)
        return self.exit_code

    def kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.exit_code = proc.wait()
        self._finish(proc)

    def _finish(self, proc: subprocess.Popen[bytes]) -> None:
        if self._reader is not None:
            self._reader.join(5)
        if proc.stdout is not None:
            proc.stdout.close()
        self._proc = None

    def log_text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def check_clean_exit(self) -> None:
        log = self.log_text()
        assert self.exit_code == 0, f"softphone exit code {self.exit_code}; log:\n{log}"
        assert "Traceback" not in log, f"softphone logged a traceback:\n{log}"

    # -- the local API

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def sip_uri_host(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """A JSON request to /api/v1; raises ApiError for 4xx/5xx."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        request = urllib.request.Request(self.base_url + "/api/v1" + path, data=data,
                                         method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                parsed = json.loads(payload)
            except ValueError:
                parsed = payload.decode("utf-8", "replace")
            raise ApiError(exc.code, parsed) from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, {} if body is None else body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body)

    def status(self) -> dict[str, Any]:
        result = self.get("/status")
        assert isinstance(result, dict)
        return result

    def calls(self) -> list[dict[str, Any]]:
        return list(self.get("/calls")["calls"])

    def wait_for_call(self, predicate: Callable[[dict[str, Any]], bool],
                      timeout: float = 5.0) -> dict[str, Any]:
        """The first call satisfying `predicate`, polling until `timeout`."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [c for c in self.calls() if predicate(c)]
            return bool(found)

        if not wait_until(check, timeout):
            raise AssertionError(f"no matching call within {timeout} s: {self.calls()}\n"
                                 f"log:\n{self.log_text()}")
        return found[0]

    def account(self, name: str | None = None) -> dict[str, Any]:
        accounts = self.status()["accounts"]
        if name is None:
            return dict(accounts[0])
        return next(dict(a) for a in accounts if a["account"] == name)

    def wait_for_registration(self, state: str, timeout: float = 10.0,
                              name: str | None = None) -> dict[str, Any]:
        seen: list[dict[str, Any]] = []

        def check() -> bool:
            seen[:] = [self.account(name)]
            return seen[0]["state"] == state

        if not wait_until(check, timeout, interval=0.1):
            raise AssertionError(f"registration is {seen}, not {state!r}; log:\n"
                                 f"{self.log_text()}")
        return seen[0]


class StartSoftphone(Protocol):
    """The start_softphone fixture (phone_factory.PhoneFactory)."""

    def __call__(self, name: str, **options: Any) -> SoftphoneProcess: ...

    def start_many(self, *names: str, **options: Any) -> tuple[SoftphoneProcess, ...]: ...


class EventRecorder:
    """Collects the events of `GET /events/ws` on a background thread."""

    def __init__(self, phone: SoftphoneProcess) -> None:
        self.url = f"ws://127.0.0.1:{phone.http_port}/api/v1/events/ws"
        self.events: list[dict[str, Any]] = []
        self._connected = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        if not self._connected.wait(5):
            raise RuntimeError("WebSocket did not connect")

    async def _run(self) -> None:
        import aiohttp

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with aiohttp.ClientSession() as session, session.ws_connect(self.url) as ws:
            self._connected.set()
            reader = asyncio.create_task(self._read(ws))
            await self._stop.wait()
            reader.cancel()

    async def _read(self, ws: Any) -> None:
        async for message in ws:
            self.events.append(json.loads(message.data))

    def types(self) -> list[str]:
        return [e["type"] for e in list(self.events)]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 5.0) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [e for e in list(self.events) if predicate(e)]
            return bool(found)

        if not wait_until(check, timeout):
            raise AssertionError(f"no matching event within {timeout} s; got {self.types()}")
        return found[0]

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
