"""REGISTER processing (RFC 3261 §10.3) with digest authentication against the config."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import TypeVar

from cms.config import Config
from cms.sip.digest import UNKNOWN_NONCE, AuthOutcome, DigestServer, ha1, parse_auth_params
from cms.sip.errors import ParseError
from cms.sip.headers import Uri, header_values, parse_name_addr, unquote
from cms.sip.message import Headers, Request, Response
from cms.sip.responses import make_response

from .bindings import Binding, BindingChange, BindingTable

log = logging.getLogger("cms.registrar")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Account:
    """Someone who may register: a user (agent, supervisor) or a work centre's desk phone."""

    name: str
    kind: str  # "user" | "work_centre"
    extension: str


class Directory:
    """SIP user names (a user's name or extension, a work centre's name or extension)."""

    def __init__(self, config: Config) -> None:
        realm = config.cms.realm
        algorithms = config.cms.digest_algorithms
        self._by_sip_user: dict[str, Account] = {}
        # HA1 depends on the user name the phone authenticates with, so keep one per alias.
        self._ha1: dict[tuple[str, str], str] = {}
        entries = [(u.name, "user", u.extension, u.password) for u in config.users] + [
            (w.name, "work_centre", w.extension, w.password) for w in config.work_centres
        ]
        for name, kind, extension, password in entries:
            account = Account(name, kind, extension)
            for alias in (name, extension):
                if not alias:
                    continue
                self._by_sip_user[alias] = account
                if password:
                    for algorithm in algorithms:
                        self._ha1[(alias, algorithm)] = ha1(alias, realm, password, algorithm)
            if not password:
                log.warning("%s %r has no password: its phone cannot register", kind, name)

    def lookup(self, sip_user: str) -> Account | None:
        """The account a SIP user name (name or extension) belongs to."""
        return self._by_sip_user.get(sip_user)

    def credentials(self, username: str, realm: str, algorithm: str) -> str | None:
        """HA1 for a digest user name, or None when unknown."""
        return self._ha1.get((username, algorithm))


class Registrar:
    """Turns REGISTER requests into binding changes and responses."""

    def __init__(
        self,
        config: Config,
        table: BindingTable | None = None,
        digest: DigestServer | None = None,
        on_change: Callable[[BindingChange], None] | None = None,
    ) -> None:
        settings = config.cms
        self.settings = settings
        self.realm = settings.realm
        self.directory = Directory(config)
        self.table = table if table is not None else BindingTable()
        self.digest = digest or DigestServer(
            settings.realm, algorithms=settings.digest_algorithms, nonce_ttl=settings.nonce_ttl
        )
        self.on_change = on_change
        self._single_challenge_agents = tuple(
            a.lower() for a in settings.single_challenge_user_agents
        )
        # Phones repeat the same To and Contact text at every refresh: parse each once.
        self._to_accounts: dict[str, Account] = {}
        self._contacts: dict[str, _ParsedContact] = {}
        self._date_second = -1
        self._date = ""

    def handle(self, request: Request, source: str, now: float | None = None) -> Response:
        """Process one REGISTER; `source` is 'TRANSPORT host:port' it came from."""
        if now is None:
            now = time.time()
        # Challenge before parsing anything else: half of all REGISTERs stop here.
        authenticated = self.authenticate(request, now)
        if isinstance(authenticated, Response):
            return authenticated
        to_value = request.headers.first("to") or ""
        account = self._to_accounts.get(to_value)
        if account is None:
            try:
                to = parse_name_addr(to_value)
            except ParseError as exc:
                return make_response(request, 400, f"Bad To ({exc})")
            if not to.uri.is_sip:
                return make_response(request, 400, "To is not a SIP URI")
            account = self.directory.lookup(to.uri.user_unescaped or "")
            if account is not None:
                _remember(self._to_accounts, to_value, account)
        if account is None:
            return make_response(request, 404, "Unknown User")
        if self.directory.lookup(authenticated) is not account:
            log.warning("%s authenticated as %r but registers %r", source, authenticated,
                        account.name)
            return make_response(request, 403, "Forbidden (not your address)")
        return self._update(request, account, source, now)

    def authenticate(self, request: Request, now: float, *, proxy: bool = False
                     ) -> str | Response:
        """The authenticated digest user name, or the response to send instead.

        `proxy` selects Proxy-Authorization and a 407 challenge (an INVITE),
        instead of Authorization and 401 (a REGISTER).
        """
        values = request.headers.get("proxy-authorization" if proxy else "authorization")
        params: dict[str, str] | None = None
        if values:
            for value in values:
                try:
                    scheme, candidate = parse_auth_params(value)
                except ValueError:
                    return make_response(request, 400, "Malformed Authorization")
                if scheme.lower() == "digest" and candidate.get("realm") == self.realm:
                    params = candidate
                    break
        if params is None:
            return self._challenge(request, now, stale=False, proxy=proxy)
        result = self.digest.verify(request.method, params, now, self.directory.credentials)
        outcome = result.outcome
        if outcome is AuthOutcome.OK and result.username is not None:
            return result.username
        if outcome is AuthOutcome.STALE:
            return self._challenge(request, now, stale=True, proxy=proxy)
        if outcome is AuthOutcome.REPLAY or result.reason == UNKNOWN_NONCE:
            return self._challenge(request, now, stale=False, proxy=proxy)
        if outcome is AuthOutcome.MALFORMED:
            return make_response(request, 400, "Malformed Authorization")
        log.info("%s refused: wrong credentials for %r", request.method, result.username)
        return make_response(request, 403, "Forbidden (wrong credentials)")

    def challenges(self, user_agent: str | None, now: float, stale: bool = False) -> list[str]:
        """WWW-Authenticate / Proxy-Authenticate values for a client with this User-Agent."""
        agent = user_agent.lower() if user_agent else ""
        single = any(part in agent for part in self._single_challenge_agents) if agent else False
        return self.digest.challenge(now, stale=stale, first_only=single)

    def _challenge(self, request: Request, now: float, stale: bool, proxy: bool) -> Response:
        extra = Headers()
        challenges = self.challenges(request.headers.first("user-agent"), now, stale)
        if proxy:
            extra["proxy-authenticate"] = challenges
            return make_response(request, 407, headers=extra)
        extra["www-authenticate"] = challenges
        return make_response(request, 401, "Unauthorized", headers=extra)

    def _update(self, request: Request, account: Account, source: str, now: float) -> Response:
        headers = request.headers
        settings = self.settings
        call_id = headers.first("call-id") or ""
        cseq = int((headers.first("cseq") or "0").split()[0])
        expires_header = headers.first("expires")
        default_expires = settings.default_expires
        if expires_header is not None:
            header_seconds = _delta_seconds(expires_header)
            if header_seconds is None:
                return make_response(request, 400, "Bad Expires")
            default_expires = header_seconds
        contacts = header_values(headers.all("contact"), "contact")
        aor = account.name
        table = self.table

        if contacts == ["*"]:
            if default_expires != 0:
                return make_response(request, 400, "Contact * needs Expires: 0")
            bindings = list(table.by_aor.get(aor, {}).items())
            for _, binding in bindings:
                if binding.call_id == call_id and cseq <= binding.cseq:
                    return make_response(request, 500, "Out of Order CSeq")
            self._notify(BindingChange(aor, (), tuple(table.remove_all(aor))))
            return self._ok(request, aor, now)
        if "*" in contacts:
            return make_response(request, 400, "Contact * must stand alone")

        user_agent = headers.first("user-agent") or ""
        planned: list[tuple[str, str, int, float | None, str | None]] = []
        for contact in contacts:
            parsed = self._contacts.get(contact)
            if parsed is None:
                try:
                    parsed = _ParsedContact.of(contact)
                except ParseError as exc:
                    return make_response(request, 400, f"Bad Contact ({exc})")
                _remember(self._contacts, contact, parsed)
            expires = parsed.expires
            if expires is None:
                expires = default_expires
            elif expires == _MALFORMED:
                return make_response(request, 400, "Bad Contact expires")
            if 0 < expires < settings.min_expires:
                extra = Headers()
                extra["min-expires"] = [str(settings.min_expires)]
                return make_response(request, 423, headers=extra)
            expires = min(expires, settings.max_expires)
            key = parsed.key
            existing = table.get(aor, key)
            if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
                return make_response(request, 500, "Out of Order CSeq")
            if parsed.q is False:
                return make_response(request, 400, "Bad Contact q")
            planned.append((key, parsed.uri, expires, parsed.q, parsed.instance))

        upserted: list[tuple[str, Binding]] = []
        removed: list[str] = []
        for key, uri, expires, q, instance in planned:
            if expires == 0:
                table.remove(aor, key)
                removed.append(key)
                continue
            binding = Binding(
                aor, uri, now + expires, call_id, cseq, q, source, user_agent,
                unquote(instance) if instance else None,
            )
            table.put(key, binding)
            upserted.append((key, binding))
        removed.extend(self._enforce_limit(aor, now))
        if upserted or removed:
            self._notify(BindingChange(aor, tuple(upserted), tuple(removed)))
        return self._ok(request, aor, now)

    def _enforce_limit(self, aor: str, now: float) -> list[str]:
        """Drop the soonest-expiring bindings beyond max_contacts (phones that moved)."""
        entries = self.table.by_aor.get(aor)
        if not entries or len(entries) <= self.settings.max_contacts:
            return []
        ordered = sorted(entries.items(), key=lambda item: item[1].expires_at)
        excess = ordered[: len(entries) - self.settings.max_contacts]
        for key, _ in excess:
            del entries[key]
        return [key for key, _ in excess]

    def _ok(self, request: Request, aor: str, now: float) -> Response:
        extra = Headers()
        live = self.contact_values(aor, now)
        if live:
            extra["contact"] = live
        extra["date"] = [self.date(now)]
        return make_response(request, 200, "OK", headers=extra)

    def contact_values(self, aor: str, now: float) -> list[str]:
        """The Contact values of a 200 to a REGISTER: every live binding with its expiry."""
        return [f"<{b.contact}>;expires={b.remaining(now)}" for b in self.table.contacts(aor, now)]

    def date(self, now: float) -> str:
        """The Date header value of a 200 to a REGISTER (RFC 3261 §10.3 step 8)."""
        second = int(now)
        if second != self._date_second:
            self._date_second = second
            self._date = formatdate(second, usegmt=True)
        return self._date

    def refresh(self, to_value: str, authorization: str, call_id: str, cseq: int,
                expires_header: str | None, contact: str, user_agent: str, source: str,
                now: float) -> str | None:
        """REGISTER's common case without a parsed request: one Contact, valid credentials.

        The same checks and binding change as `handle`, for a REGISTER whose To
        account is known (it registered before), with one Authorization value and
        one Contact (no `*`, no list) and nothing to refuse. Returns the aor bound
        (the caller builds the 200 from `contact_values` and `date`), or None,
        having changed nothing, when the request needs `handle` (any error answer,
        a challenge, a removal, an unknown To); the nonce-count of valid
        credentials is only recorded once the binding change is certain.
        """
        account = self._to_accounts.get(to_value)
        if account is None:
            return None
        try:
            scheme, params = parse_auth_params(authorization)
        except ValueError:
            return None
        if scheme.lower() != "digest" or params.get("realm") != self.realm:
            return None
        if self.directory.lookup(params.get("username") or "") is not account:
            return None
        settings = self.settings
        expires = settings.default_expires
        if expires_header is not None:
            header_seconds = _delta_seconds(expires_header)
            if header_seconds is None:
                return None
            expires = header_seconds
        parsed = self._contacts.get(contact)
        if parsed is None:
            if contact == "*":
                return None
            try:
                parsed = _ParsedContact.of(contact)
            except ParseError:
                return None
            _remember(self._contacts, contact, parsed)
        if parsed.expires is not None:
            if parsed.expires == _MALFORMED:
                return None
            expires = parsed.expires
        if expires < settings.min_expires or parsed.q is False:
            return None  # a removal (0), a 423 or a 400: `handle` answers those
        expires = min(expires, settings.max_expires)
        aor = account.name
        key = parsed.key
        existing = self.table.get(aor, key)
        if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
            return None
        result = self.digest.verify("REGISTER", params, now, self.directory.credentials)
        if result.outcome is not AuthOutcome.OK:
            return None  # verify records nothing unless the credentials are good
        instance = parsed.instance
        binding = Binding(aor, parsed.uri, now + expires, call_id, cseq, parsed.q, source,
                          user_agent, unquote(instance) if instance else None)
        self.table.put(key, binding)
        removed = self._enforce_limit(aor, now)
        self._notify(BindingChange(aor, ((key, binding),), tuple(removed)))
        return aor

    def _notify(self, change: BindingChange) -> None:
        if self.on_change is not None:
            self.on_change(change)

    def lookup(self, aor: str, now: float | None = None) -> list[Binding]:
        """Live bindings of an account name."""
        return self.table.contacts(aor, time.time() if now is None else now)


_MEMO_LIMIT = 50_000


_MALFORMED = -1  # _ParsedContact.expires of a parameter that is not delta-seconds


def _delta_seconds(text: str) -> int | None:
    """An Expires value (RFC 3261 §25 delta-seconds: ASCII digits), or None if malformed.

    Past 11 digits it is far above any max_expires (and int() of thousands of digits
    would raise): 2**32, for the caller's min() with max_expires.
    """
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text) < 12 else 2**32


def _remember(memo: dict[str, _T], text: str, value: _T) -> None:
    """Memoize a parse result; the memo is emptied when full (a crude bound, no LRU cost)."""
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[text] = value


@dataclass(frozen=True, slots=True)
class _ParsedContact:
    """What the registrar needs of one Contact header value."""

    key: str
    uri: str
    expires: int | None  # the expires parameter's seconds; _MALFORMED: not delta-seconds
    q: float | None | bool  # False: an unparsable q
    instance: str | None

    @classmethod
    def of(cls, text: str) -> _ParsedContact:
        address = parse_name_addr(text)
        q_text = address.params.get("q")
        q: float | None | bool
        try:
            q = float(q_text) if q_text else None
        except ValueError:
            q = False
        expires_text = address.params.get("expires")
        expires = None
        if expires_text is not None:
            seconds = _delta_seconds(expires_text)
            expires = _MALFORMED if seconds is None else seconds
        return cls(contact_key(address.uri), str(address.uri), expires, q,
                   address.params.get("+sip.instance"))


def contact_key(uri: Uri) -> str:
    """A comparison key for a contact URI (RFC 3261 §19.1.4, simplified).

    Scheme, user and password compare case-sensitively, host case-insensitively,
    and of the parameters only transport, which changes where requests go.
    """
    transport = (uri.params.get("transport") or "").lower()
    return f"{uri.scheme}:{uri.user or ''}@{uri.host.lower()}:{uri.port or ''};{transport}"

