"""Colleagues' presence from the CMS's CTI API (the profile's `[cms_api]` table).

A background task logs in (`POST /api/v1/sessions`), reads the snapshot
(`GET /api/v1/presence`), then long-polls `GET /api/v1/events?after=SEQ&wait=S` and applies
every `presence.changed` event to its map. Each change is reported through `on_change` (the
soft phone publishes it to its own WebSocket clients). Every failure (CMS down, 401, a
resync request, a malformed answer) starts over after a growing delay; nothing escapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from softphone.profile import CmsApiProfile
from softphone.sip.backoff import Backoff

log = logging.getLogger("softphone.presence")

POLL_WAIT = 25.0
"""Seconds the CMS may hold a long-poll open."""
REQUEST_TIMEOUT = 10.0
"""Seconds for a request on top of the long-poll wait."""


class CmsApiError(Exception):
    """The CMS answered with an error status (or something that is not the expected JSON)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class PresenceWatcher:
    """Keeps `presence` (user -> presence) in step with the CMS."""

    def __init__(self, config: CmsApiProfile, on_change: Callable[[str, str], None],
                 backoff: Backoff | None = None, poll_wait: float = POLL_WAIT) -> None:
        self.config = config
        self.on_change = on_change
        self.presence: dict[str, str] = {}
        self.connected = False
        self._backoff = backoff or Backoff(initial=1.0, maximum=30.0)
        self._poll_wait = poll_wait
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> list[dict[str, str]]:
        """`[{"user", "presence"}, ...]` sorted by user."""
        return [{"user": u, "presence": p} for u, p in sorted(self.presence.items())]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="cms-presence")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the loop

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._poll_wait + REQUEST_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                try:
                    await self._follow(http)
                except asyncio.CancelledError:
                    raise
                except CmsApiError as exc:
                    self.connected = False
                    delay = self._backoff.next_delay()
                    log.warning("CMS presence: %s; retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                except (TimeoutError, aiohttp.ClientError, OSError, ValueError,
                        KeyError, TypeError) as exc:
                    self.connected = False
                    delay = self._backoff.next_delay()
                    log.warning("CMS presence: %s: %s; retrying in %.1f s",
                                type(exc).__name__, exc, delay)
                    await asyncio.sleep(delay)
                except Exception:
                    self.connected = False
                    delay = self._backoff.next_delay()
                    log.exception("CMS presence failed; retrying in %.1f s", delay)
                    await asyncio.sleep(delay)

    async def _follow(self, http: aiohttp.ClientSession) -> None:
        """Log in, read the snapshot, then follow the events until something fails."""
        base = f"{self.config.url}/api/v1"
        session = await self._request(http, "POST", f"{base}/sessions",
                                      json={"user": self.config.user,
                                            "password": self.config.password})
        headers = {"Authorization": f"Bearer {session['token']}"}
        snapshot = await self._request(http, "GET", f"{base}/presence", headers=headers)
        seen = set()
        for entry in snapshot["presence"]:
            user, presence = str(entry["user"]), str(entry["presence"])
            seen.add(user)
            self._set(user, presence)
        for user in set(self.presence) - seen:
            self._set(user, "logged_off")
        after = int(snapshot["seq"])
        self.connected = True
        self._backoff.reset()
        log.info("CMS presence: following %s as %s", self.config.url, self.config.user)
        while True:
            page = await self._request(http, "GET", f"{base}/events", headers=headers,
                                       params={"after": str(after),
                                               "wait": str(self._poll_wait)})
            for event in page["events"]:
                if event.get("type") == "presence.changed":
                    self._set(str(event["user"]), str(event["presence"]))
            after = int(page["next"])

    def _set(self, user: str, presence: str) -> None:
        if self.presence.get(user) == presence:
            return
        self.presence[user] = presence
        try:
            self.on_change(user, presence)
        except Exception:
            log.exception("presence listener failed")

    @staticmethod
    async def _request(http: aiohttp.ClientSession, method: str, url: str,
                       **kwargs: Any) -> Any:
        async with http.request(method, url, **kwargs) as response:
            if response.status >= 400:
                text = (await response.text())[:200]
                raise CmsApiError(response.status, text)
            return await response.json()
