"""One SIP account: its pjsua2 configuration, registration state and re-registration."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

from softphone.events import Registration, RegistrationChanged, RegState
from softphone.profile import AccountProfile
from softphone.sip.backoff import Backoff
from softphone.sip.guard import guarded
from softphone.sip.invite import remote_answer_call_id
from softphone.sip.pjthread import TimerHandle

if TYPE_CHECKING:
    from softphone.sip.agent import UserAgent

log = logging.getLogger("softphone.sip.account")


def address_of_record(profile: AccountProfile, local_address: str) -> str:
    """`sip:user@domain`; an account without registrar or domain uses our own address."""
    if profile.dial_domain:
        return profile.aor
    return f"sip:{profile.user}@{local_address}"


def account_config(profile: AccountProfile, local_address: str, transport_id: int,
                   rtp_port: int, bound_address: str) -> Any:
    """The pjsua2 AccountConfig for a profile's account."""
    cfg = pj.AccountConfig()
    display = profile.display_name.replace('"', "")
    aor = address_of_record(profile, local_address)
    cfg.idUri = f'"{display}" <{aor}>' if display else aor
    cfg.sipConfig.transportId = transport_id
    cfg.mediaConfig.transportConfig.port = rtp_port
    if bound_address not in ("", "0.0.0.0", "::"):
        cfg.mediaConfig.transportConfig.boundAddress = bound_address
    if profile.registrar:
        suffix = ";transport=tcp" if profile.transport == "tcp" else ""
        reg = cfg.regConfig
        reg.registrarUri = f"sip:{profile.registrar}{suffix}"
        reg.timeoutSec = profile.expires
        reg.retryIntervalSec = 0  # our own back-off does the retrying
        reg.firstRetryIntervalSec = 0
        reg.registerOnAdd = True
        reg.dropCallsOnFail = False
        reg.unregWaitMsec = 1500
        cred = pj.AuthCredInfo("digest", "*", profile.auth_user or profile.user, 0,
                               profile.password)
        cfg.sipConfig.authCreds.append(cred)
        if profile.outbound_proxy:
            cfg.sipConfig.proxies.append(f"sip:{profile.registrar};lr{suffix}")
    return cfg


class PhoneAccount(pj.Account):  # type: ignore[misc]
    """A pjsua2 account that reports registration changes and retries with back-off."""

    def __init__(self, agent: UserAgent, profile: AccountProfile, aor: str) -> None:
        super().__init__()
        self.agent = agent
        self.profile = profile
        self.aor = aor
        self.name = profile.name
        self.backoff = Backoff(profile.retry_initial, profile.retry_max)
        self.closing = False
        self._retry: TimerHandle | None = None
        state = RegState.REGISTERING if profile.registrar else RegState.DISABLED
        self.registration = Registration(account=self.name, state=state, uri=aor)

    def report_error(self, where: str, exc: BaseException) -> None:
        self.agent.report_error(where, exc)

    def _set(self, registration: Registration) -> None:
        self.registration = registration
        self.agent.emit(RegistrationChanged(registration=registration))

    def announce(self) -> None:
        """Emit the current state (at start, so clients see every account)."""
        self.agent.emit(RegistrationChanged(registration=self.registration))

    @guarded
    def onRegStarted(self, prm: Any) -> None:  # noqa: N802 - pjsua2's names
        if self.closing or not prm.renew:
            return
        if self.registration.state is not RegState.REGISTERED:
            self._set(Registration(account=self.name, state=RegState.REGISTERING,
                                   uri=self.aor))

    @guarded
    def onRegState(self, prm: Any) -> None:  # noqa: N802
        code, reason, expires = int(prm.code), str(prm.reason), int(prm.expiration)
        uri = self.aor
        if self.closing:
            if 200 <= code < 300 and expires > 0:
                return  # a refresh that crossed our shutdown; the unregister follows
            self._set(Registration(account=self.name, state=RegState.UNREGISTERED, code=code,
                                   reason=reason, uri=uri))
            return
        if 200 <= code < 300 and expires > 0:
            self.backoff.reset()
            self._set(Registration(account=self.name, state=RegState.REGISTERED, code=code,
                                   reason=reason, expires=expires, uri=uri))
            return
        if 200 <= code < 300:
            self._set(Registration(account=self.name, state=RegState.UNREGISTERED, code=code,
                                   reason=reason, uri=uri))
            return
        if not reason and prm.status != 0:
            reason = self.agent.error_text(int(prm.status))
        delay = self._schedule_retry()
        log.warning("%s: registration failed: %s %s; retrying in %.1f s", self.name, code,
                    reason, delay)
        self._set(Registration(account=self.name, state=RegState.FAILED, code=code,
                               reason=reason, retry_in=round(delay, 1), uri=uri))

    def _schedule_retry(self) -> float:
        if self._retry is not None:
            self._retry.cancel()
        delay = self.backoff.next_delay()
        self._retry = self.agent.thread.call_later(delay, self._retry_now)
        return delay

    def _retry_now(self) -> None:
        self._retry = None
        if self.closing:
            return
        try:
            self.setRegistration(True)
        except pj.Error as exc:  # e.g. a request still pending: try again later
            delay = self._schedule_retry()
            log.info("%s: re-register refused (%s); next try in %.1f s", self.name,
                     exc.reason, delay)

    def close(self) -> None:
        """Stop retrying and unregister (pjsua2 `shutdown`); the thread pumps the reply."""
        self.closing = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        self.shutdown()

    @guarded
    def onIncomingCall(self, prm: Any) -> None:  # noqa: N802
        self.agent.incoming_call(self, prm)

    @guarded
    def onInstantMessage(self, prm: Any) -> None:  # noqa: N802
        # pjsua has already answered 200; only a remote-answer MESSAGE means anything here.
        call_id = remote_answer_call_id(str(prm.contentType), str(prm.msgBody))
        if call_id is not None:
            self.agent.remote_answer(call_id)
