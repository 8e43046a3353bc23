"""The soft phone's SIP user agent: pjsua2 owned by one thread, commands in, events out.

Every pjsua2 object (endpoint, transports, accounts, calls, the audio port) is created,
used and destroyed on the `PjThread`; other threads only submit commands (each returns a
`concurrent.futures.Future`) and receive events through `emit`, which the asyncio side
wires to `loop.call_soon_threadsafe`. pjsua2 objects are kept strongly referenced here
for as long as PJSIP knows them, and shut down in order: hang up, unregister, drop the
references, collect garbage, `libDestroy`.
"""

from __future__ import annotations

import functools
import gc
import logging
import re
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pjsua2 as pj

from softphone.audio.engine import AudioEngine
from softphone.errors import BadRequest, Conflict, NotFound, PhoneError, Unavailable
from softphone.events import (
    CallConferenced,
    CallDialing,
    CallIncoming,
    CallSnapshot,
    CallState,
    ErrorReported,
    Event,
    Registration,
    RegState,
)
from softphone.profile import AccountProfile, PhoneProfile, split_host_port
from softphone.sip.account import PhoneAccount, account_config, address_of_record
from softphone.sip.call import PhoneCall
from softphone.sip.endpoint import create_transports, endpoint_config, set_codec_priorities
from softphone.sip.invite import (
    REMOTE_ANSWER_HEADER,
    attached_data,
    auto_answer_delay,
    headers,
)
from softphone.sip.logbridge import LogBridge, quiet_stdout
from softphone.sip.media_port import BridgePort
from softphone.sip.openssl import ensure_digests
from softphone.sip.pjthread import PjThread
from softphone.targets import BadTarget, dial_uri

log = logging.getLogger("softphone.sip")

DTMF_DIGITS = re.compile(r"^[0-9*#A-Da-d]{1,32}$")
HANGUP_WAIT = 2.0  # seconds to let calls end at shutdown
UNREGISTER_WAIT = 2.0  # seconds to let unregistrations be answered at shutdown


class UserAgent:
    """pjsua2 endpoint, transports, accounts and calls of one soft phone."""

    def __init__(self, profile: PhoneProfile, engine: AudioEngine,
                 emit: Callable[[Event], None]) -> None:
        self.profile = profile
        self.engine = engine
        self._emit = emit
        self.thread = PjThread(on_error=self.report_error)
        self.sip_address = ""  # HOST:PORT of the UDP transport, once started
        self.tcp_address = ""
        self.ep: Any = None
        self.port: Any = None
        self._log: LogBridge | None = None
        self._transports: dict[str, int] = {}
        self.accounts: dict[str, PhoneAccount] = {}
        self.calls: dict[str, PhoneCall] = {}
        self._graveyard: list[Any] = []  # pjsua2 objects to drop outside their callbacks
        self._owned: weakref.WeakSet[Any] = weakref.WeakSet()  # every pjsua2 object we made

    # -- life cycle (any thread)

    def start(self, timeout: float = 15.0) -> None:
        """Start the thread and the SIP stack; raises when pjsua2 cannot start."""
        self.thread.start()
        try:
            self.thread.submit(self._start).result(timeout)
        except pj.Error as exc:
            self.stop()
            raise Unavailable(f"cannot start SIP: {exc.title}: {exc.reason}") from None
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 15.0) -> None:
        """Hang up, unregister and destroy the SIP stack; idempotent."""
        if not self.thread.running:
            return
        try:
            self.thread.submit(self._shutdown).result(timeout)
        except Exception:
            log.exception("SIP shutdown failed")
        finally:
            self.thread.stop(timeout)

    # -- reporting (any thread)

    def emit(self, event: Event) -> None:
        """Hand an event to the owner (thread-safe by contract of `emit`)."""
        try:
            self._emit(event)
        except Exception:
            log.exception("delivering %s failed", type(event).__name__)

    def report_error(self, where: str, exc: BaseException) -> None:
        """A callback failed: log it with its traceback and tell the clients."""
        log.error("error in %s", where, exc_info=exc)
        self.emit(ErrorReported(where=where, message=f"{type(exc).__name__}: {exc}"))

    def error_text(self, status: int) -> str:
        try:
            return str(self.ep.utilStrError(status)) if self.ep is not None else str(status)
        except pj.Error:
            return str(status)

    # -- commands (any thread; each returns a Future)

    def dial(self, to: str, account: str | None = None) -> Future[CallSnapshot]:
        return self.thread.submit(self._dial, to, account)

    def answer(self, call_id: str) -> Future[CallSnapshot]:
        return self.thread.submit(self._answer, call_id)

    def reject(self, call_id: str, code: int = 603) -> Future[CallSnapshot]:
        return self.thread.submit(self._reject, call_id, code)

    def hangup(self, call_id: str) -> Future[CallSnapshot]:
        return self.thread.submit(self._hangup, call_id)

    def hold(self, call_id: str) -> Future[CallSnapshot]:
        return self.thread.submit(self._hold, call_id)

    def retrieve(self, call_id: str) -> Future[CallSnapshot]:
        return self.thread.submit(self._retrieve, call_id)

    def dtmf(self, call_id: str, digits: str) -> Future[CallSnapshot]:
        return self.thread.submit(self._dtmf, call_id, digits)

    def transfer(self, call_id: str, to: str | None = None,
                 consult_id: str | None = None) -> Future[CallSnapshot]:
        return self.thread.submit(self._transfer, call_id, to, consult_id)

    def conference(self, call_id: str, other_id: str) -> Future[CallSnapshot]:
        return self.thread.submit(self._conference, call_id, other_id)

    def snapshot(self) -> Future[tuple[list[Registration], list[CallSnapshot]]]:
        return self.thread.submit(
            lambda: ([a.registration for a in self.accounts.values()],
                     [c.snapshot() for c in self.calls.values()])
        )

    # -- the SIP thread: start and stop

    def _start(self) -> None:
        ep = pj.Endpoint()
        with quiet_stdout():
            ep.libCreate()
        self.ep = ep
        ensure_digests()
        self._log = LogBridge()
        ep.libInit(endpoint_config(self.profile, self.engine.format, self._log))
        # The null device only clocks the bridge; real audio flows through BridgePort.
        ep.audDevManager().setNullDev()
        transports = create_transports(ep, self.profile)
        self._transports = {kind: tid for kind, (tid, _) in transports.items()}
        self.sip_address = transports["udp"][1]
        self.tcp_address = transports["tcp"][1] if "tcp" in transports else ""
        ep.libStart()
        set_codec_priorities(ep, self.profile.codecs)
        self.port = self.own(BridgePort(self.engine, self))
        self.port.create()
        self.thread.set_pump(ep.libHandleEvents)
        for account_profile in self.profile.accounts:
            self._add_account(account_profile)
        if not self.accounts:
            self._add_account(None)
        for account in self.accounts.values():
            account.announce()

    def _add_account(self, account_profile: AccountProfile | None) -> None:
        if account_profile is None:  # no account configured: a peer-to-peer identity
            account_profile = AccountProfile(name="local", user="softphone")
        host, _ = split_host_port(self.profile.sip)
        transport = self._transports.get(account_profile.transport, self._transports["udp"])
        local = self.sip_address if account_profile.transport == "udp" else self.tcp_address
        account = self.own(
            PhoneAccount(self, account_profile, address_of_record(account_profile, local)))
        cfg = account_config(account_profile, local, transport, self.profile.rtp_port, host)
        account.create(cfg, not self.accounts)
        self.accounts[account.name] = account

    def _shutdown(self) -> None:
        """Hang up, unregister, drop every pjsua2 object, collect, then `libDestroy`.

        The steps live in helpers on purpose: a loop variable left in this frame would
        keep a Call or Account alive past `libDestroy`, and its destructor then aborts the
        process (pjsua_call_set_user_data assertion).
        """
        ep = self.ep
        if ep is None:
            return
        self._hang_up_all()
        self._pump_until(lambda: not self.calls, HANGUP_WAIT)
        self._unregister_all()
        self._pump_until(self._unregistered, UNREGISTER_WAIT)
        settled = not self.calls and self._unregistered()
        self._close_accounts()
        self.thread.set_pump(None)
        self.calls.clear()
        self.accounts.clear()
        self._graveyard.clear()
        self._destroy_port()
        gc.collect()
        self._reap_survivors()
        # Calls and registrations are settled: skip pjsua's fixed one-second wait for them.
        ep.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK if settled else 0)
        self.ep = None
        gc.collect()
        self._log = None

    def _destroy_port(self) -> None:
        port, self.port = self.port, None
        if port is not None:
            try:
                port.destroy()
                self._owned.discard(port)
            except Exception:
                log.exception("removing the audio port from the bridge failed")

    def own(self, obj: Any) -> Any:
        """Track a pjsua2 object we created, so that shutdown can tell if one leaked."""
        self._owned.add(obj)
        return obj

    def _reap_survivors(self) -> None:
        """Destroy, before `libDestroy`, any pjsua2 object something still refers to.

        Its C++ destructor must run while the library is alive; if it ran later, from
        Python's garbage collector, PJSIP would abort the process.
        """
        for obj in list(self._owned):
            if not obj.thisown:  # already destroyed explicitly (the audio port)
                continue
            log.warning("%s outlived the SIP stack's shutdown: destroying it now",
                        type(obj).__name__)
            try:
                obj.__swig_destroy__(obj)
                obj.thisown = False
            except Exception:
                log.exception("destroying a leaked %s failed", type(obj).__name__)

    def _hang_up_all(self) -> None:
        for call in list(self.calls.values()):
            try:
                call.hangup(pj.CallOpParam(True))
            except pj.Error as exc:
                log.debug("hangup at shutdown: %s", exc.reason)

    def _unregister_all(self) -> None:
        for account in self.accounts.values():
            account.closing = True
            if account.registration.state is RegState.REGISTERED:
                try:
                    account.setRegistration(False)
                except pj.Error as exc:
                    log.debug("unregister at shutdown: %s", exc.reason)

    def _unregistered(self) -> bool:
        return all(a.registration.state is not RegState.REGISTERED
                   for a in self.accounts.values())

    def _close_accounts(self) -> None:
        for account in self.accounts.values():
            try:
                account.close()
            except pj.Error as exc:
                log.debug("account shutdown: %s", exc.reason)

    def _pump_until(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            self.ep.libHandleEvents(20)
            self._graveyard.clear()

    # -- the SIP thread: calls

    def _account(self, name: str | None) -> PhoneAccount:
        if self.ep is None:
            raise Unavailable("the SIP stack is not running")
        if name is None:
            return next(iter(self.accounts.values()))
        account = self.accounts.get(name)
        if account is None:
            raise NotFound(f"no account named {name!r}")
        return account

    def _call(self, call_id: str) -> PhoneCall:
        call = self.calls.get(call_id)
        if call is None:
            raise NotFound(f"no call {call_id!r}")
        return call

    def _established(self, call_id: str) -> PhoneCall:
        call = self._call(call_id)
        if call.state is not CallState.ESTABLISHED:
            raise Conflict(f"call {call_id} is {call.state.value}, not established")
        return call

    def _unhold(self, call: PhoneCall) -> None:
        """Re-INVITE with our media active again."""
        prm = pj.CallOpParam(True)
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        self._pj(call.reinvite, prm)

    def _hold_others(self, keep: PhoneCall) -> None:
        """Put other established calls on hold: one conversation (or conference) at a time."""
        for other in self.calls.values():
            if other is keep or other.id in keep.conference:
                continue
            if other.state is CallState.ESTABLISHED and not other.held:
                try:
                    other.setHold(pj.CallOpParam(True))
                except pj.Error as exc:
                    log.warning("cannot hold call %s: %s", other.id, exc.reason)

    def _dial(self, to: str, account_name: str | None) -> CallSnapshot:
        account = self._account(account_name)
        try:
            uri = dial_uri(to, account.profile.dial_domain)
        except BadTarget as exc:
            raise BadRequest(str(exc), code="bad_target") from None
        call = PhoneCall(self, account, "outgoing", remote=uri)
        self._hold_others(call)
        try:
            call.makeCall(uri, pj.CallOpParam(True))
        except pj.Error as exc:
            self._graveyard.append(call)
            raise BadRequest(f"cannot call {to!r}: {exc.reason}", code="dial_failed") from None
        self.calls[call.id] = call
        snapshot = call.snapshot()
        self.emit(CallDialing(call=snapshot))
        return snapshot

    def _answer(self, call_id: str) -> CallSnapshot:
        call = self._call(call_id)
        if call.state is not CallState.INCOMING:
            raise Conflict(f"call {call_id} is {call.state.value}, not ringing here")
        self._hold_others(call)
        prm = pj.CallOpParam(True)
        prm.statusCode = 200
        self._pj(call.answer, prm)
        call.state = CallState.CONNECTING
        return call.snapshot()

    def _reject(self, call_id: str, code: int) -> CallSnapshot:
        call = self._call(call_id)
        if call.state is not CallState.INCOMING:
            raise Conflict(f"call {call_id} is {call.state.value}: hang up instead")
        if not 400 <= code <= 699:
            raise BadRequest("reject code must be 400..699")
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        self._pj(call.hangup, prm)
        return call.snapshot()

    def _hangup(self, call_id: str) -> CallSnapshot:
        call = self._call(call_id)
        self._pj(call.hangup, pj.CallOpParam(True))
        return call.snapshot()

    def _hold(self, call_id: str) -> CallSnapshot:
        call = self._established(call_id)
        if call.held:
            raise Conflict(f"call {call_id} is already on hold")
        self._pj(call.setHold, pj.CallOpParam(True))
        return call.snapshot()

    def _retrieve(self, call_id: str) -> CallSnapshot:
        call = self._call(call_id)
        if call.state is not CallState.ESTABLISHED or not call.held:
            raise Conflict(f"call {call_id} is not on hold")
        self._hold_others(call)
        self._unhold(call)
        return call.snapshot()

    def _dtmf(self, call_id: str, digits: str) -> CallSnapshot:
        if not isinstance(digits, str) or not DTMF_DIGITS.match(digits):
            raise BadRequest("digits: 1 to 32 of 0-9 * # A-D", code="bad_digits")
        call = self._established(call_id)
        prm = pj.CallSendDtmfParam()
        prm.digits = digits.upper()
        prm.method = pj.PJSUA_DTMF_METHOD_RFC2833
        self._pj(call.sendDtmf, prm)
        return call.snapshot()

    def _transfer(self, call_id: str, to: str | None, consult_id: str | None) -> CallSnapshot:
        call = self._established(call_id)
        if consult_id is not None:  # attended: REFER with Replaces to the consulted party
            other = self._call(consult_id)
            if other is call or other.state is not CallState.ESTABLISHED:
                raise Conflict("the consultation call must be another established call")
            self._pj(call.xferReplaces, other, pj.CallOpParam(True))
            return call.snapshot()
        if not to:
            raise BadRequest("transfer needs 'to' (blind) or 'consult_id' (attended)")
        try:
            uri = dial_uri(to, call.account.profile.dial_domain)
        except BadTarget as exc:
            raise BadRequest(str(exc), code="bad_target") from None
        self._pj(call.xfer, uri, pj.CallOpParam(True))
        return call.snapshot()

    def _conference(self, call_id: str, other_id: str) -> CallSnapshot:
        """Mix two established calls with us (three-way, on our own bridge)."""
        call, other = self._call(call_id), self._call(other_id)
        if call is other:
            raise BadRequest("a call cannot be conferenced with itself")
        for party in (call, other):
            if party.state is not CallState.ESTABLISHED:
                raise Conflict(f"call {party.id} is {party.state.value}, not established")
        call.conference.add(other.id)
        other.conference.add(call.id)
        for party in (call, other):
            if party.held:
                self._unhold(party)  # media comes back: link_conference joins it
        self.link_conference(call)
        for party in (call, other):
            self.emit(CallConferenced(call=party.snapshot()))
        return call.snapshot()

    def conference_partners(self, call: PhoneCall) -> list[PhoneCall]:
        return [self.calls[i] for i in sorted(call.conference) if i in self.calls]

    def link_conference(self, call: PhoneCall) -> None:
        """Let `call` and its conference partners hear each other (our port hears all)."""
        for partner in self.conference_partners(call):
            for mine in call.media():
                for theirs in partner.media():
                    mine.startTransmit(theirs)
                    theirs.startTransmit(mine)

    def _pj(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call a pjsua2 method; its pj.Error becomes a Conflict the API can show."""
        try:
            return method(*args)
        except pj.Error as exc:
            raise Conflict(f"{exc.title}: {exc.reason}", code="sip_error") from None

    # -- the SIP thread: callbacks from accounts and calls

    def incoming_call(self, account: PhoneAccount, prm: Any) -> None:
        """A new INVITE: ring (180), tell the clients, answer by itself when asked to."""
        call = PhoneCall(self, account, "incoming", call_id=prm.callId)
        info = call.getInfo()
        call.remote = str(info.remoteUri)
        fields = headers(str(prm.rdata.wholeMsg))
        policy = self.profile.auto_answer
        delay = auto_answer_delay(fields)
        if policy == "always":
            delay = self.profile.auto_answer_delay if delay is None else delay
        elif policy == "never":
            delay = None
        call.auto_answer = delay is not None
        call.attached_data = attached_data(fields)
        call.sip_call_id = (fields.get("call-id") or [""])[0]
        self.calls[call.id] = call
        ringing = pj.CallOpParam(True)
        ringing.statusCode = 180
        capability = pj.SipHeader()
        capability.hName = REMOTE_ANSWER_HEADER
        capability.hValue = "message"  # how the CMS may answer us: see remote_answer
        ringing.txOption.headers.append(capability)
        call.answer(ringing)
        self.emit(CallIncoming(call=call.snapshot()))
        if delay is not None:
            self.thread.call_later(delay, lambda: self._auto_answer(call.id))

    def remote_answer(self, sip_call_id: str) -> None:
        """A remote-answer MESSAGE (from the CMS's CTI) names a call ringing here: answer it."""
        for call in list(self.calls.values()):
            if call.sip_call_id == sip_call_id and call.state is CallState.INCOMING:
                log.info("call %s answered remotely", call.id)
                # Not inside the MESSAGE callback: answer from the thread's own loop.
                self.thread.call_soon(functools.partial(self._auto_answer, call.id))
                return
        log.info("remote answer for a call not ringing here (%s) ignored", sip_call_id[:64])

    def _auto_answer(self, call_id: str) -> None:
        call = self.calls.get(call_id)
        if call is not None and call.state is CallState.INCOMING:
            try:
                self._answer(call_id)
            except PhoneError as exc:
                log.warning("auto-answer of %s failed: %s", call_id, exc.message)

    def forget_call(self, call: PhoneCall) -> None:
        """The call ended: drop it (now from the table, its object after the callback)."""
        self.calls.pop(call.id, None)
        for partner_id in call.conference:
            partner = self.calls.get(partner_id)
            if partner is not None:
                partner.conference.discard(call.id)
        self._graveyard.append(call)
        self.thread.call_soon(self._graveyard.clear)

    def transfer_requested(self, call: PhoneCall, prm: Any) -> None:
        """The other party REFERs us elsewhere (blind transfer): place that call."""
        new = PhoneCall(self, call.account, "outgoing", remote=str(prm.dstUri))
        prm.newCall = new
        self.calls[new.id] = new
        self.emit(CallDialing(call=new.snapshot()))

    def transfer_progress(self, call: PhoneCall, code: int, reason: str, final: bool) -> None:
        """The transfer target answered (2xx: our part is done, hang up) or failed."""
        if code // 100 == 1 and not final:
            return
        if 200 <= code < 300:
            log.info("call %s transferred (%s %s)", call.id, code, reason)
            call.transferred = True
            try:
                call.hangup(pj.CallOpParam(True))
            except pj.Error as exc:
                log.debug("hangup after transfer: %s", exc.reason)
        elif code >= 300:
            log.warning("transfer of call %s failed: %s %s", call.id, code, reason)
            self.emit(ErrorReported(where=f"transfer of call {call.id}",
                                    message=f"{code} {reason}"))

    def call_replaced(self, call: PhoneCall, prm: Any) -> None:
        """An INVITE with Replaces took this call over (attended transfer)."""
        new = PhoneCall(self, call.account, "incoming", call_id=prm.newCallId)
        new.state = CallState.CONNECTING
        new.remote = str(new.getInfo().remoteUri)
        prm.newCall = new
        self.calls[new.id] = new
