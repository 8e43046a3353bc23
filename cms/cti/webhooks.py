"""Webhook delivery: one worker per subscription POSTs journal batches to its callback.

Each worker is a cursor over the journal, like every other delivery channel
(`stream.py`): it reads `since(position)`, keeps the events its type filter
passes and POSTs them as one JSON batch `{"subscription": id, "events": [...]}`
(each event exactly as the journal serialized it). A 2xx answer acknowledges
the batch: the position is stored (fsync'd) before the next batch goes out,
so after a restart, also after kill -9, delivery resumes after the last
acknowledged seq: at least once, in order, without gaps.

Anything else (an error status, a refused connection, a timeout, a redirect)
is retried with exponential back-off, capped and jittered. A subscription
whose deliveries keep failing for `give_up_after` seconds (or
`max_attempts` attempts) ends: it is marked `ended` and a
`subscription.ended` event goes into the journal.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from cms.events import Event, Journal, JournalClosed, ResyncRequired, iso_time
from cms.events.subscriptions import ACTIVE, Subscription, SubscriptionStore, matches

from .errors import ApiError

if TYPE_CHECKING:
    from .app import Request

__all__ = ["MAX_SUBSCRIPTIONS", "WebhookApi", "WebhookSettings", "Webhooks", "backoff",
           "check_callback_url"]

log = logging.getLogger("cms.cti.webhooks")

MAX_SUBSCRIPTIONS = 1000
WORKER_RESTART_DELAY = 1.0  # seconds before a worker that crashed starts again
SIGNATURE_HEADER = "X-CMS-Signature"
_USER_AGENT = "sip-cms-webhooks/1"


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Delivery tuning; `from_settings` reads the `webhook_*` keys of `[cms]`."""

    retry_base: float = 1.0  # seconds before the first retry; doubles per failure
    retry_cap: float = 60.0  # longest wait between attempts
    give_up_after: float = 600.0  # seconds of unbroken failure before a subscription ends
    max_attempts: int = 0  # failed attempts in a row before it ends; 0: no count limit
    timeout: float = 10.0  # seconds for one POST, answer included
    batch: int = 100  # events per POST at most

    @classmethod
    def from_settings(cls, settings: object) -> WebhookSettings:
        """The `[cms]` keys webhook_retry_base, _retry_cap, _give_up_after, ... (or defaults)."""
        default = cls()
        return cls(
            retry_base=float(getattr(settings, "webhook_retry_base", default.retry_base)),
            retry_cap=float(getattr(settings, "webhook_retry_cap", default.retry_cap)),
            give_up_after=float(getattr(settings, "webhook_give_up_after",
                                        default.give_up_after)),
            max_attempts=int(getattr(settings, "webhook_max_attempts", default.max_attempts)),
            timeout=float(getattr(settings, "webhook_timeout", default.timeout)),
            batch=max(1, int(getattr(settings, "webhook_batch", default.batch))),
        )


def backoff(failures: int, base: float, cap: float,
            rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after `failures` failed attempts in a row: base * 2^(n-1), capped,
    then jittered down to between half and all of it (so that callbacks that failed
    together do not retry together)."""
    delay = min(cap, base * 2 ** min(max(0, failures - 1), 30))
    return delay * (0.5 + 0.5 * rand())


def check_callback_url(url: str) -> str:
    """The URL if it is an absolute http(s) URL with a host, else a 422 `ApiError`."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError when not a number in range
    except ValueError:
        port, parts = -1, None
    if parts is None or port == -1:
        raise ApiError(422, "invalid_callback_url", "callback_url has an invalid port")
    if parts.scheme.lower() not in ("http", "https"):
        raise ApiError(422, "invalid_callback_url", "callback_url must be an http or https URL")
    if not parts.hostname:
        raise ApiError(422, "invalid_callback_url", "callback_url has no host")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ApiError(422, "invalid_callback_url", "callback_url contains white space")
    return url


@dataclass(slots=True)
class _Progress:
    """What the worker of one subscription is doing (not persisted)."""

    failures: int = 0
    failing_since: float | None = None
    last_error: str | None = None


class Webhooks:
    """The subscriptions of one CMS and their delivery workers."""

    def __init__(self, journal: Journal, store: SubscriptionStore,
                 settings: WebhookSettings | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.journal = journal
        self.store = store
        self.settings = settings or WebhookSettings()
        self.clock = clock
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._progress: dict[str, _Progress] = {}
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False

    # -- lifecycle

    async def start(self) -> None:
        """Resume delivery of every active subscription from its stored position."""
        if self._session is None:
            # No cookies, no proxy from the environment: the callback is exactly the URL given.
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                                  trust_env=False)
        for sub in self.store.all():
            if sub.state == ACTIVE:
                self._spawn(sub.id)

    async def stop(self) -> None:
        """Stop every worker (an unacknowledged batch is sent again after the restart)."""
        self._stopping = True
        workers = list(self._workers.values())
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._workers.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.store.close()

    # -- commands

    async def create(self, callback_url: str, types: Sequence[str], after: int | None,
                     secret: str | None, owner: str) -> Subscription:
        """A new subscription, stored before it is returned, its worker started."""
        if len(self.store.all()) >= MAX_SUBSCRIPTIONS:
            raise ApiError(409, "too_many_subscriptions",
                           f"at most {MAX_SUBSCRIPTIONS} subscriptions")
        position = self.journal.head if after is None else after
        try:
            self.journal.check_position(position)
        except ResyncRequired as exc:
            raise ApiError(410, "resync_required", str(exc), resync={
                "first_seq": exc.first_seq, "last_seq": exc.last_seq}) from None
        sub = Subscription(f"sub_{secrets.token_hex(8)}", check_callback_url(callback_url),
                           tuple(dict.fromkeys(types)), secret, owner, self.clock(), position)
        await asyncio.to_thread(self.store.add, sub)
        self._spawn(sub.id)
        return sub

    async def delete(self, sub_id: str) -> bool:
        """Stop a subscription's worker and forget it; whether it existed."""
        task = self._workers.pop(sub_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._progress.pop(sub_id, None)
        return await asyncio.to_thread(self.store.remove, sub_id)

    def describe(self, sub: Subscription) -> dict[str, Any]:
        """The API's view of a subscription (never its secret)."""
        progress = self._progress.get(sub.id) or _Progress()
        return {
            "id": sub.id,
            "callback_url": sub.callback_url,
            "types": list(sub.types),
            "after": sub.position,
            "state": sub.state,
            "reason": sub.reason,
            "signed": sub.secret is not None,
            "owner": sub.owner,
            "created": iso_time(sub.created),
            "failures": progress.failures,
            "last_error": progress.last_error,
        }

    # -- delivery

    def _spawn(self, sub_id: str) -> None:
        if self._stopping or sub_id in self._workers:
            return
        self._progress.setdefault(sub_id, _Progress())
        task = asyncio.create_task(self._run(sub_id), name=f"webhook-{sub_id}")
        self._workers[sub_id] = task
        task.add_done_callback(lambda done: self._finished(sub_id, done))

    def _finished(self, sub_id: str, task: asyncio.Task[None]) -> None:
        if self._workers.get(sub_id) is task:
            del self._workers[sub_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook worker %s failed; restarting it in %.0f s", sub_id,
                      WORKER_RESTART_DELAY, exc_info=task.exception())
            # Resume from the stored position (at least once: nothing is skipped).
            asyncio.get_running_loop().call_later(WORKER_RESTART_DELAY, self._respawn, sub_id)

    def _respawn(self, sub_id: str) -> None:
        sub = self.store.get(sub_id)
        if sub is not None and sub.state == ACTIVE:
            self._spawn(sub_id)

    async def _run(self, sub_id: str) -> None:
        journal = self.journal
        sub = self.store.get(sub_id)
        if sub is None:
            return
        cursor = sub.position
        limit = self.settings.batch
        while sub.state == ACTIVE:
            try:
                raw = journal.since(cursor, limit)
            except ResyncRequired as exc:
                await self._end(sub, f"position lost: {exc}")
                return
            if not raw:
                await journal.wait(cursor, None)
                continue
            wanted = [e for e in raw if matches(sub.types, e.type)]
            cursor = raw[-1].seq
            if wanted:
                if not await self._deliver(sub, wanted):
                    return
            elif journal.last_seq > cursor:
                continue  # skip on; the position is stored once caught up
            stored = await asyncio.to_thread(self.store.acknowledge, sub_id, cursor)
            if stored is None:
                return  # deleted meanwhile
            sub = stored

    async def _deliver(self, sub: Subscription, events: list[Event]) -> bool:
        """POST one batch until a 2xx; False when the subscription ended instead."""
        body = (f'{{"subscription":{json.dumps(sub.id)},"events":['
                + ",".join(e.json for e in events) + "]}").encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            "X-CMS-Subscription": sub.id,
            "X-CMS-Seq": f"{events[0].seq}-{events[-1].seq}",
        }
        if sub.secret is not None:
            digest = hmac.new(sub.secret.encode(), body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        settings = self.settings
        progress = self._progress.setdefault(sub.id, _Progress())
        timeout = aiohttp.ClientTimeout(total=settings.timeout)
        while True:
            error = await self._post(sub.callback_url, body, headers, timeout)
            if error is None:
                progress.failures, progress.failing_since = 0, None
                return True
            now = self.clock()
            progress.failures += 1
            progress.last_error = error
            if progress.failing_since is None:
                progress.failing_since = now
            failing_for = now - progress.failing_since
            if (settings.max_attempts and progress.failures >= settings.max_attempts) or (
                    failing_for >= settings.give_up_after):
                await self._end(sub, f"delivery failed {progress.failures} times in a row "
                                     f"over {failing_for:.1f} s; last: {error}")
                return False
            delay = backoff(progress.failures, settings.retry_base, settings.retry_cap)
            log.info("webhook %s: delivery of seq %d-%d failed (%s); retry %d in %.2f s",
                     sub.id, events[0].seq, events[-1].seq, error, progress.failures, delay)
            await asyncio.sleep(delay)

    async def _post(self, url: str, body: bytes, headers: dict[str, str],
                    timeout: aiohttp.ClientTimeout) -> str | None:
        """One attempt: None when the callback answered 2xx, else what went wrong."""
        session = self._session
        if session is None:
            return "not started"
        try:
            async with session.post(url, data=body, headers=headers, timeout=timeout,
                                    allow_redirects=False) as response:
                await response.content.read(64 * 1024)  # drain a little; the body is ignored
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except TimeoutError:
            return f"no answer within {timeout.total:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def _end(self, sub: Subscription, reason: str) -> None:
        log.warning("webhook %s to %s ended: %s", sub.id, sub.callback_url, reason)
        ended = await asyncio.to_thread(self.store.end, sub.id, reason)
        if ended is None:
            return
        try:
            self.journal.append("subscription.ended", {
                "subscription_id": sub.id, "callback_url": sub.callback_url, "reason": reason})
        except JournalClosed:
            log.warning("journal closed: subscription.ended of %s not journalled", sub.id)


class WebhookApi:
    """The /subscriptions handlers: supervisors and API-key integrations only."""

    def __init__(self, webhooks: Webhooks) -> None:
        self.webhooks = webhooks

    def handlers(self) -> dict[str, Callable[[Request], Awaitable[web.StreamResponse]]]:
        """operationId -> handler, for `Cti.handlers`."""
        return {
            "createSubscription": self.create,
            "listSubscriptions": self.list,
            "getSubscription": self.get,
            "deleteSubscription": self.delete,
        }

    @staticmethod
    def _allowed(request: Request) -> None:
        # An agent may not point the CMS at arbitrary URLs, nor see others' events there.
        if not request.who.sees_all:
            raise ApiError(403, "forbidden", "webhooks are for supervisors and API keys")

    def _find(self, request: Request) -> Subscription:
        self._allowed(request)
        sub_id = str(request.params["id"])
        sub = self.webhooks.store.get(sub_id)
        if sub is None:
            raise ApiError(404, "unknown_subscription", f"no subscription {sub_id!r}")
        return sub

    async def create(self, request: Request) -> web.StreamResponse:
        self._allowed(request)
        body = request.body or {}
        sub = await self.webhooks.create(body["callback_url"], body.get("types") or (),
                                         body.get("after"), body.get("secret"),
                                         request.who.name)
        location = f"{request.http.path.rstrip('/')}/{sub.id}"
        return web.json_response(self.webhooks.describe(sub), status=201,
                                 headers={"Location": location})

    async def list(self, request: Request) -> web.StreamResponse:
        self._allowed(request)
        return web.json_response({"subscriptions": [
            self.webhooks.describe(s) for s in self.webhooks.store.all()]})

    async def get(self, request: Request) -> web.StreamResponse:
        return web.json_response(self.webhooks.describe(self._find(request)))

    async def delete(self, request: Request) -> web.StreamResponse:
        sub = self._find(request)
        await self.webhooks.delete(sub.id)
        return web.Response(status=204)
