"""One call: pjsua2's `Call` with our id, state, hold flags and audio connections."""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

from softphone.events import (
    CallEnded,
    CallEstablished,
    CallHeld,
    CallRetrieved,
    CallRinging,
    CallSnapshot,
    CallState,
    DtmfReceived,
)
from softphone.sip.guard import guarded

if TYPE_CHECKING:
    from softphone.sip.account import PhoneAccount
    from softphone.sip.agent import UserAgent

log = logging.getLogger("softphone.sip.call")


class PhoneCall(pj.Call):  # type: ignore[misc]
    """A call the soft phone placed or received; lives on the SIP thread only."""

    def __init__(self, agent: UserAgent, account: PhoneAccount, direction: str,
                 remote: str = "", call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(account, call_id)
        agent.own(self)
        self.agent = agent
        self.account = account
        self.id = uuid.uuid4().hex[:12]
        self.direction = direction
        self.remote = remote
        self.state = CallState.INCOMING if direction == "incoming" else CallState.DIALING
        self.held = False
        self.remote_held = False
        self.started = time.time()
        self.answered: float | None = None
        self.ended: float | None = None
        self.code = 0
        self.reason = ""
        self.auto_answer = False
        self.sip_call_id = ""  # the INVITE's Call-ID (a remote-answer MESSAGE names it)
        self.transferred = False  # we transferred the other party elsewhere
        self.conference: set[str] = set()  # ids of the calls this one is mixed with
        self.attached_data: dict[str, Any] | None = None
        # media index -> (bridge slot, pj.AudioMedia) connected to our port (strong refs)
        self.audio: dict[int, tuple[int, Any]] = {}

    def report_error(self, where: str, exc: BaseException) -> None:
        self.agent.report_error(where, exc)

    def snapshot(self) -> CallSnapshot:
        return CallSnapshot(
            id=self.id, account=self.account.name, direction=self.direction,
            remote=self.remote, state=self.state, held=self.held,
            remote_held=self.remote_held, started=self.started, answered=self.answered,
            ended=self.ended, code=self.code, reason=self.reason,
            auto_answer=self.auto_answer, attached_data=self.attached_data,
            transferred=self.transferred, conference=tuple(sorted(self.conference)),
        )

    # -- pjsua2 callbacks (SIP thread)

    @guarded
    def onCallState(self, prm: Any) -> None:  # noqa: N802 - pjsua2's names
        info = self.getInfo()
        if info.remoteUri:
            self.remote = str(info.remoteUri)
        state = info.state
        if state == pj.PJSIP_INV_STATE_EARLY and self.direction == "outgoing":
            if self.state is CallState.DIALING and info.lastStatusCode in (180, 183):
                self.state = CallState.RINGING
                self.agent.emit(CallRinging(call=self.snapshot()))
        elif state == pj.PJSIP_INV_STATE_CONNECTING:
            self.state = CallState.CONNECTING
        elif state == pj.PJSIP_INV_STATE_CONFIRMED:
            if self.state is not CallState.ESTABLISHED:
                self.state = CallState.ESTABLISHED
                self.answered = time.time()
                self.code = 200
                self.agent.emit(CallEstablished(call=self.snapshot()))
        elif state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._ended(int(info.lastStatusCode), str(info.lastReason))

    def _ended(self, code: int, reason: str) -> None:
        if self.state is CallState.ENDED:
            return
        self.state = CallState.ENDED
        self.ended = time.time()
        if self.answered is None:
            self.code, self.reason = code, reason
        else:
            self.reason = "Transferred" if self.transferred else (reason or "Normal call clearing")
        self.audio.clear()  # pjsua removes the streams' bridge ports itself
        self.agent.emit(CallEnded(call=self.snapshot()))
        self.agent.forget_call(self)

    @guarded
    def onCallMediaState(self, prm: Any) -> None:  # noqa: N802
        info = self.getInfo()
        held, remote_held = self.held, self.remote_held
        for media in info.media:
            if media.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            status = media.status
            if status in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                self._connect(media.index, int(media.audioConfSlot))
                held = False
                remote_held = status == pj.PJSUA_CALL_MEDIA_REMOTE_HOLD
            elif status == pj.PJSUA_CALL_MEDIA_LOCAL_HOLD:
                self._disconnect(media.index)  # no microphone to a party we put on hold
                held = True
            else:
                self._disconnect(media.index)
        self._hold_changed(held, remote_held)

    def _hold_changed(self, held: bool, remote_held: bool) -> None:
        events: list[Any] = []
        if held != self.held:
            events.append((CallHeld if held else CallRetrieved, "local"))
        if remote_held != self.remote_held:
            events.append((CallHeld if remote_held else CallRetrieved, "remote"))
        self.held, self.remote_held = held, remote_held
        for kind, by in events:
            self.agent.emit(kind(call=self.snapshot(), by=by))

    def _connect(self, index: int, slot: int) -> None:
        """Connect the stream both ways to our port (again if a re-INVITE replaced it)."""
        connected = self.audio.get(index)
        if connected is not None:
            if connected[0] == slot:
                return
            self._disconnect(index)
        medium = self.getAudioMedia(index)
        port = self.agent.port
        medium.startTransmit(port)
        port.startTransmit(medium)
        self.audio[index] = (slot, medium)
        self.agent.link_conference(self)

    def media(self) -> list[Any]:
        """The call's connected audio media (empty while on hold or before media is up)."""
        return [medium for _, medium in self.audio.values()]

    def _disconnect(self, index: int) -> None:
        connected = self.audio.pop(index, None)
        if connected is None:
            return
        medium = connected[1]
        port = self.agent.port
        links = [(medium, port), (port, medium)]
        for partner in self.agent.conference_partners(self):
            for theirs in partner.media():
                links += [(medium, theirs), (theirs, medium)]
        for source, sink in links:
            try:
                source.stopTransmit(sink)
            except pj.Error as exc:  # the stream may already be gone
                log.debug("stopTransmit: %s", exc.reason)

    @guarded
    def onDtmfDigit(self, prm: Any) -> None:  # noqa: N802 - may run on the media thread
        self.agent.emit(DtmfReceived(call_id=self.id, digit=str(prm.digit)))

    @guarded
    def onCallTransferRequest(self, prm: Any) -> None:  # noqa: N802
        self.agent.transfer_requested(self, prm)

    @guarded
    def onCallReplaced(self, prm: Any) -> None:  # noqa: N802
        self.agent.call_replaced(self, prm)

    @guarded
    def onCallTransferStatus(self, prm: Any) -> None:  # noqa: N802
        """Progress of a transfer we asked for (NOTIFYs to our REFER)."""
        self.agent.transfer_progress(self, int(prm.statusCode), str(prm.reason),
                                     bool(prm.finalNotify))
