"""Shared by the CTI integration tests: a CMS with a supervisor, and a /api/v1 client.

`serve_with_supervisor` writes a configuration (the given text plus the supervisor
`boss`), runs `cms serve` on it for the caller and, when it is stopped, checks that the
last run exited 0 and that no traceback was logged. `Api` is the CTI's /api/v1 as one
logged-in user: plain requests, the event journal by poll and long poll. `ua` is a
phone (the project's own UA) for the length of a block.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
from cms_process import CmsProcess, user_password

from scripts.sip_ua import UserAgent

SUPERVISOR = ("boss", "pw-boss")


def supervisor_toml(name: str = SUPERVISOR[0], password: str = SUPERVISOR[1]) -> str:
    """The [[users]] block of a supervisor (extension 1900, not logged on automatically)."""
    return "\n".join([
        "", "[[users]]", f'name = "{name}"', f'password = "{password}"',
        'extension = "1900"', 'role = "supervisor"', "auto_logon = false", "",
    ])


@contextlib.contextmanager
def serve_with_supervisor(directory: Path, text: str) -> Iterator[CmsProcess]:
    """`cms serve` on `text` plus the supervisor, data in `directory`; checked on the way out.

    After the body the server is stopped; its last run must have exited 0 (earlier runs
    may have been killed on purpose) and the log must hold no traceback.
    """
    config = directory / "cms.toml"
    config.write_text(text + supervisor_toml())
    server = CmsProcess(config, directory / "data")
    server.start()
    try:
        yield server
    finally:
        server.stop()
    log = server.log_text()
    assert server.exit_codes[-1] == 0, f"cms exit codes {server.exit_codes}; log:\n{log}"
    assert "Traceback" not in log, log


@contextlib.asynccontextmanager
async def ua(cms: CmsProcess, user: str, **options: Any) -> AsyncIterator[UserAgent]:
    """The project's UA as `user` against `cms` (options as UserAgent's), closed afterwards."""
    agent = UserAgent(cms.sip_address, user=user, **options)
    await agent.start()
    try:
        yield agent
    finally:
        await agent.close()


class Api:
    """The CMS's /api/v1 as one user (after `login`)."""

    def __init__(self, cms: CmsProcess, session: aiohttp.ClientSession) -> None:
        self.base = cms.base_url + "/api/v1"
        self.session = session
        self.headers: dict[str, str] = {}
        self.token = ""

    async def login(self, user: str, password: str | None = None) -> Api:
        """Log in (201 expected); `password` None: the test password of agent `user`."""
        if password is None:
            password = user_password(user)
        async with self.session.post(f"{self.base}/sessions",
                                     json={"user": user, "password": password}) as response:
            assert response.status == 201, await response.text()
            self.token = (await response.json())["token"]
        self.headers = {"Authorization": f"Bearer {self.token}"}
        return self

    async def request(self, method: str, path: str, body: Any = None,
                      **kwargs: Any) -> tuple[int, Any]:
        """(status, decoded JSON body); `body` (if not None) is sent as JSON."""
        if body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.base + path, headers=self.headers,
                                        **kwargs) as response:
            return response.status, await response.json()

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        """The body of a request that must succeed (2xx)."""
        status, data = await self.request(method, path, body)
        assert 200 <= status < 300, (status, data)
        return data

    # -- the event journal

    async def poll(self, after: int | None = None, wait: float = 0) -> dict[str, Any]:
        """One page of `GET /events`."""
        params: dict[str, Any] = {"wait": wait}
        if after is not None:
            params["after"] = after
        status, page = await self.request("GET", "/events", params=params)
        assert status == 200, page
        return dict(page)

    async def poll_until(self, after: int, done: Any, timeout: float = 10) -> list[dict[str, Any]]:
        """Long-poll from `after` until `done(events)`; every event seen, in order."""
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while not done(events):
            assert time.monotonic() < deadline, f"timed out; got {events}"
            page = await self.poll(after, wait=2)
            events += page["events"]
            after = page["next"]
        return events

    async def until_event(self, after: int, match: Callable[[dict[str, Any]], bool],
                          timeout: float = 10) -> dict[str, Any]:
        """Long-poll from `after` until an event matches; that event."""
        events = await self.poll_until(after, lambda seen: any(map(match, seen)), timeout)
        return dict(next(e for e in events if match(e)))

    async def all_events(self, after: int = 0) -> list[dict[str, Any]]:
        """Every committed event after `after` (polling until caught up)."""
        events: list[dict[str, Any]] = []
        while True:
            page = await self.poll(after)
            if not page["events"]:
                return events
            events += page["events"]
            after = page["next"]

    async def wait_event(self, kind: str, timeout: float = 8.0, **match: Any) -> dict[str, Any]:
        """The first event (from the start of the journal) of `kind` with these fields."""
        deadline = time.monotonic() + timeout
        while True:
            for event in await self.all_events():
                if event["type"] == kind and all(event.get(k) == v for k, v in match.items()):
                    return event
            if time.monotonic() > deadline:
                seen = await self.all_events()
                raise AssertionError(f"no {kind} with {match}; saw {[e['type'] for e in seen]}"
                                     f"; of that type: {[e for e in seen if e['type'] == kind]}")
            await asyncio.sleep(0.05)
