"""Who is calling: bearer-token sessions for users, API keys for a CRM server integration.

Roles: `agent` sees and controls only itself; `supervisor` sees and controls
all; `integration` (an API key) acts like a supervisor. Passwords are only
compared, never stored elsewhere, logged or returned. Tokens live in memory:
a restart logs everyone out (clients log in again).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from cms.config import User

__all__ = ["DEFAULT_SESSION_TTL", "Principal", "Sessions"]

DEFAULT_SESSION_TTL = 8 * 3600.0
MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller of the API."""

    name: str
    role: str  # "agent", "supervisor" or "integration"
    token: str | None = None  # None for an API key
    expires: float | None = None

    @property
    def sees_all(self) -> bool:
        """Supervisors and integrations see and control every agent."""
        return self.role != "agent"


class Sessions:
    """Bearer tokens with expiry, revocable; and the configured API keys."""

    def __init__(self, users: Iterable[User], api_keys: Mapping[str, str] | None = None,
                 ttl: float = DEFAULT_SESSION_TTL,
                 clock: Callable[[], float] = time.time) -> None:
        self._users = {u.name: u for u in users}
        self._keys = dict(api_keys or {})  # key -> integration name
        self.ttl = ttl
        self._clock = clock
        self._tokens: dict[str, Principal] = {}
        # A stand-in so an unknown user costs the same comparison as a known one.
        self._dummy = secrets.token_hex(16)

    def login(self, user: str, password: str) -> Principal | None:
        """A new session when the password is right, else None."""
        known = self._users.get(user)
        expected = known.password if known is not None else self._dummy
        matches = hmac.compare_digest(expected.encode(), password.encode())
        if known is None or not matches:
            return None
        now = self._clock()
        if len(self._tokens) >= MAX_SESSIONS:
            self._expire(now)
        token = secrets.token_urlsafe(32)
        principal = Principal(known.name, known.role, token, now + self.ttl)
        self._tokens[token] = principal
        return principal

    def authenticate(self, token: str) -> Principal | None:
        """The session of a bearer token, if it exists and has not expired."""
        principal = self._tokens.get(token)
        if principal is None:
            return None
        if principal.expires is not None and principal.expires <= self._clock():
            del self._tokens[token]
            return None
        return principal

    def api_key(self, key: str) -> Principal | None:
        """The integration an API key belongs to, if any (constant-time per key)."""
        found = None
        for candidate, name in self._keys.items():
            if hmac.compare_digest(candidate.encode(), key.encode()):
                found = Principal(name, "integration")
        return found

    def revoke(self, token: str) -> bool:
        """End a session; whether it existed."""
        return self._tokens.pop(token, None) is not None

    def _expire(self, now: float) -> None:
        for token, principal in list(self._tokens.items()):
            if principal.expires is not None and principal.expires <= now:
                del self._tokens[token]
        while len(self._tokens) >= MAX_SESSIONS:
            # Still full: the oldest session goes (dicts keep insertion order).
            del self._tokens[next(iter(self._tokens))]
