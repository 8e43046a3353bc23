"""The soft phone as the asyncio side sees it: state tables, commands, history, events.

Events come from the SIP thread (and the audio backend) through `call_soon_threadsafe` and
are applied here in order: the registration and call tables the API reads, the call
history on disk, and the fan-out to WebSocket clients. Commands go to the SIP thread and
are awaited through `asyncio.wrap_future`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import Future
from typing import Any, TypeVar

from softphone.api.serialize import audio_json, call_json, event_json, levels_json
from softphone.audio.engine import AudioEngine, AudioSettings
from softphone.errors import BadRequest, PhoneError, Unavailable
from softphone.events import (
    AudioDeviceChanged,
    AudioLevelsMeasured,
    CallEnded,
    CallEvent,
    CallSnapshot,
    Event,
    PresenceChanged,
    Registration,
    RegistrationChanged,
)
from softphone.history import CallHistory
from softphone.presence import PresenceWatcher
from softphone.profile import PhoneProfile
from softphone.sip.agent import UserAgent
from softphone.sip.pjthread import ThreadStopped

log = logging.getLogger("softphone")

T = TypeVar("T")

LEVELS_INTERVAL = 0.1  # audio.levels events: about ten a second
SUBSCRIBER_QUEUE = 512  # events a slow WebSocket client may lag behind before it is dropped


class EventHub:
    """Numbers events and hands them, as JSON documents, to every subscriber's queue."""

    def __init__(self) -> None:
        self.seq = 0
        self._subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, event: Event) -> dict[str, Any]:
        self.seq += 1
        document = event_json(event, self.seq, time.time())
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(document)
            except asyncio.QueueFull:  # too slow: cut it off rather than grow without bound
                self._subscribers.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(None)
        return document

    def close(self) -> None:
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._subscribers.clear()


class SoftPhone:
    """Owns the user agent and the audio engine; what the HTTP API talks to."""

    def __init__(self, profile: PhoneProfile, engine: AudioEngine,
                 history: CallHistory) -> None:
        self.profile = profile
        self.engine = engine
        self.history = history
        self.hub = EventHub()
        self.registrations: dict[str, Registration] = {}
        self.calls: dict[str, CallSnapshot] = {}
        self.ua = UserAgent(profile, engine, self._from_other_thread)
        self.started = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.presence: PresenceWatcher | None = None
        """Colleagues' presence from the CMS (only with a `[cms_api]` profile table)."""
        if profile.cms_api is not None:
            self.presence = PresenceWatcher(profile.cms_api, self._presence_changed)

    # -- life cycle

    async def start(self) -> None:
        """Open the audio backend, start the SIP stack, start the level ticker."""
        self._loop = asyncio.get_running_loop()
        self.engine.backend.on_device_changed = self._device_changed
        await asyncio.to_thread(self.engine.open)
        try:
            await asyncio.to_thread(self.ua.start)
        except BaseException:
            await asyncio.to_thread(self.engine.close)
            raise
        self.started = time.time()
        self._ticker = asyncio.create_task(self._tick(), name="audio-levels")
        if self.presence is not None:
            self.presence.start()

    async def stop(self) -> None:
        """Hang up, unregister, stop SIP, then audio; idempotent."""
        if self.presence is not None:
            await self.presence.stop()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await asyncio.to_thread(self.ua.stop)
        await asyncio.sleep(0)  # let the last events (call.ended, registration.*) land
        await asyncio.to_thread(self.engine.close)
        self.hub.close()

    # -- events

    def _from_other_thread(self, event: Event) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._apply, event)
        except RuntimeError:  # the loop closed while we were shutting down
            pass

    def _device_changed(self, input_device: str | None, output_device: str | None,
                        reason: str) -> None:
        self._from_other_thread(AudioDeviceChanged(
            input_device=input_device, output_device=output_device, reason=reason))

    def _apply(self, event: Event) -> None:
        if isinstance(event, RegistrationChanged):
            self.registrations[event.registration.account] = event.registration
        elif isinstance(event, CallEvent):
            call = event.call
            if isinstance(event, CallEnded):
                self.calls.pop(call.id, None)
                self.history.record(call_json(call))
            else:
                self.calls[call.id] = call
        self.hub.publish(event)

    def _presence_changed(self, user: str, presence: str) -> None:
        self._apply(PresenceChanged(user=user, presence=presence))

    def presence_document(self) -> list[dict[str, str]]:
        """Colleagues' presence, `[{"user", "presence"}, ...]` ([] without `[cms_api]`)."""
        return self.presence.snapshot() if self.presence is not None else []

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(LEVELS_INTERVAL)
            try:
                self.engine.backend.check()
            except Exception:
                log.exception("audio backend check failed")
            if self.hub.subscribers:
                self.hub.publish(AudioLevelsMeasured(levels=self.engine.levels()))

    # -- commands

    async def _run(self, future: Future[T]) -> T:
        if not self.ua.thread.running:
            future.cancel()
            raise Unavailable("the SIP stack is not running")
        try:
            return await asyncio.wrap_future(future)
        except ThreadStopped:
            raise Unavailable("the SIP stack is not running") from None

    async def dial(self, to: str, account: str | None = None) -> CallSnapshot:
        return await self._run(self.ua.dial(to, account))

    async def call_action(self, call_id: str, action: str, body: dict[str, Any]) -> CallSnapshot:
        """answer | reject | hangup | hold | retrieve | dtmf | transfer | conference."""
        ua = self.ua
        if action == "answer":
            return await self._run(ua.answer(call_id))
        if action == "reject":
            code = body.get("code", 603)
            if not isinstance(code, int) or isinstance(code, bool):
                raise BadRequest("code must be an integer")
            return await self._run(ua.reject(call_id, code))
        if action == "hangup":
            return await self._run(ua.hangup(call_id))
        if action == "hold":
            return await self._run(ua.hold(call_id))
        if action == "retrieve":
            return await self._run(ua.retrieve(call_id))
        if action == "dtmf":
            digits = body.get("digits")
            if not isinstance(digits, str):
                raise BadRequest("digits must be a string", code="bad_digits")
            return await self._run(ua.dtmf(call_id, digits))
        if action == "transfer":
            to, consult = body.get("to"), body.get("consult_id")
            if to is not None and not isinstance(to, str):
                raise BadRequest("to must be a string")
            if consult is not None and not isinstance(consult, str):
                raise BadRequest("consult_id must be a string")
            return await self._run(ua.transfer(call_id, to, consult))
        if action == "conference":
            other = body.get("with")
            if not isinstance(other, str):
                raise BadRequest("'with' must be the id of another call")
            return await self._run(ua.conference(call_id, other))
        raise PhoneError(f"unknown call action {action!r}", code="unknown_action")

    # -- audio

    def audio_document(self) -> dict[str, Any]:
        backend = self.engine.backend
        return audio_json(self.engine.settings, backend.name, backend.input_device,
                          backend.output_device, backend.devices())

    async def update_audio(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply PUT /audio: gains and mute at once, devices through the backend."""
        allowed = {f for f in AudioSettings.__dataclass_fields__} | {
            "input_device", "output_device"}
        unknown = set(changes) - allowed
        if unknown:
            raise BadRequest(f"unknown audio settings: {', '.join(sorted(unknown))}")
        devices = {k: changes.pop(k) for k in ("input_device", "output_device") if k in changes}
        for key, value in devices.items():
            if value is not None and (not isinstance(value, str) or not value):
                raise BadRequest(f"{key} must be a device name")
        try:
            AudioSettings(**{**_settings_dict(self.engine.settings), **changes})
        except (TypeError, ValueError) as exc:
            raise BadRequest(str(exc), code="bad_audio_setting") from None
        if devices:
            backend = self.engine.backend
            try:
                await asyncio.to_thread(backend.select_devices, devices.get("input_device"),
                                        devices.get("output_device"))
            except ValueError as exc:
                raise BadRequest(str(exc), code="bad_device") from None
            self._apply(AudioDeviceChanged(input_device=backend.input_device,
                                           output_device=backend.output_device,
                                           reason="selected"))
        if changes:
            self.engine.update(**changes)
        return self.audio_document()

    def levels_document(self) -> dict[str, Any]:
        return levels_json(self.engine.levels())


def _settings_dict(settings: AudioSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in AudioSettings.__dataclass_fields__}
