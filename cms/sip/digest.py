"""SIP digest authentication (RFC 3261 §22, RFC 7616, RFC 8760), sans-IO.

The server side issues stateless nonces (issue time + random, authenticated by an HMAC)
and verifies Authorization / Proxy-Authorization values; the client side answers
WWW-Authenticate / Proxy-Authenticate challenges. Time is always passed in as `now`
(seconds, any monotonic-enough clock that is >= 0).
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import hmac
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .randomness import random_bytes

__all__ = [
    "AuthOutcome",
    "AuthResult",
    "Credentials",
    "DigestClient",
    "DigestServer",
    "credentials_from_passwords",
    "digest_response",
    "ha1",
    "parse_auth_params",
    "pick_challenge",
]

# --------------------------------------------------------------------------- parsing

# RFC 7230 tchar; a superset of the RFC 3261 token alphabet.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]++"
_LWS = r"[ \t\r\n]*+"
_SCHEME_RE = re.compile(rf"{_LWS}({_TOKEN})(?:[ \t\r\n]++|\Z)")
# One list element per match: (name, quoted content, token value). The last alternative
# consumes any character that cannot start an element and yields an empty name, so
# findall() never silently skips input and errors show up as the key "". Possessive
# quantifiers: nothing here needs backtracking, and they make matching ~15% faster.
_PARAM_RE = re.compile(
    rf"[ \t\r\n,]*+(?:({_TOKEN}){_LWS}={_LWS}"
    rf'(?:"([^"\\]*+(?:\\.[^"\\]*+)*+)"|({_TOKEN})){_LWS}(?:,|\Z)'
    r"|[^ \t\r\n,])"
)
_UNESCAPE_RE = re.compile(r"\\(.)")
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")


def _unescape(quoted: str) -> str:
    return _UNESCAPE_RE.sub(r"\1", quoted) if "\\" in quoted else quoted


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Split a challenge/credentials header value into its scheme and parameters.

    Parameter names are lowercased; quoted values are unquoted and unescaped.
    Raises ValueError if the value is malformed or has no parameters.
    """
    m = _SCHEME_RE.match(value)
    if m is None:
        raise ValueError("missing authentication scheme")
    pairs = _PARAM_RE.findall(value, m.end())
    # A dict comprehension is markedly faster than an explicit loop here (hot path).
    if "\\" in value:
        params = {n.lower(): t or _unescape(q) for n, q, t in pairs}
    else:
        params = {n.lower(): t or q for n, q, t in pairs}
    if "" in params:
        raise ValueError("malformed authentication parameters")
    if not params:
        raise ValueError("no authentication parameters")
    if len(params) != len(pairs):
        raise ValueError("duplicate authentication parameter")
    return m.group(1), params


def _quote(value: str) -> str:
    """Render `value` as a quoted-string."""
    if "\r" in value or "\n" in value:
        raise ValueError("CR/LF cannot appear in a quoted-string")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- hashing

_HexDigest = Callable[[bytes], str]


def _md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_HASHES: dict[str, _HexDigest] = {"MD5": _md5_hex, "SHA-256": _sha256_hex}


def _split_algorithm(algorithm: str) -> tuple[str, bool, _HexDigest]:
    """Return (base algorithm, is -sess variant, hash function); ValueError if unsupported."""
    name = algorithm.upper()
    sess = name.endswith("-SESS")
    base = name[:-5] if sess else name
    fn = _HASHES.get(base)
    if fn is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return base, sess, fn


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """HA1 = H(username:realm:password) as lowercase hex (the base value for -sess too)."""
    _, _, fn = _split_algorithm(algorithm)
    return fn(f"{username}:{realm}:{password}".encode())


def digest_response(
    algorithm: str,
    ha1_hex: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    qop: str | None = None,
    nc: str = "",
    cnonce: str = "",
    body: bytes = b"",
) -> str:
    """The `response` value for the given parameters (qop None means RFC 2069 style)."""
    _, sess, fn = _split_algorithm(algorithm)
    if sess:
        ha1_hex = fn(f"{ha1_hex}:{nonce}:{cnonce}".encode())
    if qop is not None and qop.lower() == "auth-int":
        ha2 = fn(f"{method}:{uri}:{fn(body)}".encode())
    else:
        ha2 = fn(f"{method}:{uri}".encode())
    if qop is None:
        return fn(f"{ha1_hex}:{nonce}:{ha2}".encode())
    return fn(f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


Credentials = Callable[[str, str, str], str | None]
"""credentials(username, realm, algorithm) -> HA1 lowercase hex, or None if unknown.

`algorithm` is the base name ("MD5" or "SHA-256"), also for the -sess variants.
"""


def credentials_from_passwords(passwords: Callable[[str], str | None]) -> Credentials:
    """Adapt a username -> plaintext password lookup into a `Credentials` function."""

    def lookup(username: str, realm: str, algorithm: str) -> str | None:
        password = passwords(username)
        return None if password is None else ha1(username, realm, password, algorithm)

    return lookup


# --------------------------------------------------------------------------- server


class AuthOutcome(enum.Enum):
    """Verdict of `DigestServer.verify`."""

    OK = "ok"
    STALE = "stale"
    """Response correct but nonce expired: challenge again with stale=True."""
    BAD_CREDENTIALS = "bad_credentials"
    """Wrong response, unknown user, or a nonce this server did not issue."""
    MALFORMED = "malformed"
    """Unparseable, missing parameters, wrong realm, unsupported algorithm or qop."""
    REPLAY = "replay"
    """nonce-count not greater than the last one accepted for that nonce."""


@dataclass(frozen=True, slots=True)
class AuthResult:
    """Outcome of a verification, the claimed username (if any) and a short reason."""

    outcome: AuthOutcome
    username: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


# The reason of a BAD_CREDENTIALS for a nonce this server did not issue (or issued
# with another secret): callers answer it with a fresh challenge, not a refusal.
UNKNOWN_NONCE = "unknown nonce"

_OK = AuthOutcome.OK
_STALE = AuthOutcome.STALE
_BAD = AuthOutcome.BAD_CREDENTIALS
_MALFORMED = AuthOutcome.MALFORMED
_REPLAY = AuthOutcome.REPLAY
_UNPARSEABLE = AuthResult(_MALFORMED, None, "unparseable header")

# Nonce layout: 6 bytes issue time (ms) | 8 random bytes | 16 bytes truncated HMAC-SHA256.
# 30 bytes is a multiple of 3, so the base64url form is exactly 40 chars with no padding
# and no spare bits (one canonical spelling per nonce).
_NONCE_TIME = 6
_NONCE_BODY = _NONCE_TIME + 8
_NONCE_MAC = 16
_NONCE_CHARS = 40
# '+' and '/' map to an invalid character so that only the url-safe alphabet is accepted.
_FROM_URLSAFE = bytes.maketrans(b"-_+/", b"+/!!")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_HA2_CACHE_SIZE = 4096


def _normalize_uri(uri: str) -> str:
    """Lowercase scheme and host part, drop surrounding <> and whitespace."""
    u = uri.strip().removeprefix("<").removesuffix(">")
    scheme, colon, rest = u.partition(":")
    if not colon:
        return u.lower()
    user, at, host = rest.rpartition("@")
    return f"{scheme.lower()}:{user}{at}{host.lower()}"


class DigestServer:
    """Issues digest challenges and verifies credentials for one realm.

    Nonces are stateless; the only state is the last nonce-count accepted per nonce,
    kept for nonces in use, pruned once they expire and capped at `max_nonces`
    (oldest first; a nonce whose history was evicted then gets STALE).
    """

    __slots__ = (
        "realm",
        "algorithms",
        "nonce_ttl",
        "opaque",
        "allow_no_qop",
        "max_nonces",
        "_inner",
        "_outer",
        "_accepted",
        "_prefix",
        "_suffixes",
        "_stale_suffixes",
        "_last_nc",
        "_order",
        "_floor",
    )

    def __init__(
        self,
        realm: str,
        secret: bytes | None = None,
        algorithms: Sequence[str] = ("MD5", "SHA-256"),
        nonce_ttl: float = 300.0,
        opaque: str | None = None,
        *,
        allow_no_qop: bool = False,
        max_nonces: int = 100_000,
    ) -> None:
        if not algorithms:
            raise ValueError("at least one algorithm is required")
        if nonce_ttl <= 0:
            raise ValueError("nonce_ttl must be positive")
        if max_nonces < 1:
            raise ValueError("max_nonces must be positive")
        if secret is not None and not secret:
            raise ValueError("secret must not be empty")
        self.realm = realm
        self.algorithms: tuple[str, ...] = tuple(a.upper() for a in algorithms)
        self.nonce_ttl = nonce_ttl
        self.opaque = opaque
        self.allow_no_qop = allow_no_qop
        self.max_nonces = max_nonces
        key = secrets.token_bytes(32) if secret is None else secret
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\0")
        # HMAC-SHA256 (RFC 2104) with the keyed inner/outer states precomputed: copying
        # them is several times cheaper than hmac.digest() setting up a context per call.
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

        # algorithm name as sent by the client (uppercased) -> (base, sess, hash, HA2 cache)
        self._accepted: dict[str, tuple[str, bool, _HexDigest, dict[str, str]]] = {}
        for name in self.algorithms:
            base, sess, fn = _split_algorithm(name)
            cache: dict[str, str] = {}
            self._accepted[name] = (base, sess, fn, cache)
            if not sess:
                self._accepted[name + "-SESS"] = (base, True, fn, cache)

        self._prefix = f'Digest realm={_quote(realm)}, nonce="'
        opaque_part = "" if opaque is None else f", opaque={_quote(opaque)}"
        self._suffixes = tuple(
            f'"{opaque_part}, algorithm={name}, qop="auth"' for name in self.algorithms
        )
        self._stale_suffixes = tuple(s + ", stale=TRUE" for s in self._suffixes)

        self._last_nc: dict[str, int] = {}
        # (issue time, nonce) in the order nonces were first accepted; drives pruning.
        self._order: deque[tuple[float, str]] = deque()
        # Nonces issued at or before this time that are not in _last_nc may have been
        # evicted (losing their nc history), so they are treated as stale.
        self._floor = -1.0

    # -- nonces

    def _mac(self, body: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(body)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:_NONCE_MAC]

    def make_nonce(self, now: float) -> str:
        """A fresh nonce stamped with `now`."""
        body = int(now * 1000.0).to_bytes(_NONCE_TIME, "big") + random_bytes(8)
        raw = body + self._mac(body)
        return binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE).decode("ascii")

    def nonce_issued_at(self, nonce: str) -> float | None:
        """Issue time of a nonce made by this server (same secret), else None."""
        if len(nonce) != _NONCE_CHARS:
            return None
        try:
            raw = binascii.a2b_base64(
                nonce.encode("ascii").translate(_FROM_URLSAFE), strict_mode=True
            )
        except (UnicodeEncodeError, binascii.Error):
            return None
        body = raw[:_NONCE_BODY]
        if not hmac.compare_digest(self._mac(body), raw[_NONCE_BODY:]):
            return None
        return int.from_bytes(body[:_NONCE_TIME], "big") / 1000.0

    @property
    def tracked_nonces(self) -> int:
        """Number of nonces whose nonce-count is currently remembered."""
        return len(self._last_nc)

    # -- challenges

    def challenge(self, now: float, stale: bool = False, *, first_only: bool = False) -> list[str]:
        """WWW-Authenticate / Proxy-Authenticate values, one per algorithm, in order.

        `first_only` offers just the first algorithm, for clients that give up
        when any challenge names an algorithm they lack (libre-based baresip).
        """
        nonce = self.make_nonce(now)
        prefix = self._prefix
        suffixes = self._stale_suffixes if stale else self._suffixes
        if first_only:
            suffixes = suffixes[:1]
        return [prefix + nonce + s for s in suffixes]

    # -- verification

    def verify(
        self,
        method: str,
        authorization: str | Mapping[str, str],
        now: float,
        credentials: Credentials,
        *,
        request_uri: str | None = None,
        strict_uri: bool = False,
    ) -> AuthResult:
        """Check an Authorization / Proxy-Authorization value (or its parsed parameters).

        A nonce not issued by this server (tampered, or made with another secret) yields
        BAD_CREDENTIALS without consulting `credentials`. STALE is only returned when the
        response is otherwise correct. With `strict_uri`, the digest `uri` must equal
        `request_uri` after light normalization.
        """
        params: Mapping[str, str]
        if isinstance(authorization, str):
            try:
                scheme, params = parse_auth_params(authorization)
            except ValueError:
                return _UNPARSEABLE
            if scheme.lower() != "digest":
                return AuthResult(_MALFORMED, None, "not a Digest scheme")
        else:
            params = authorization
        get = params.get
        username = get("username")
        realm = get("realm")
        nonce = get("nonce")
        uri = get("uri")
        response = get("response")
        if username is None or realm is None or nonce is None or uri is None or response is None:
            return AuthResult(_MALFORMED, username, "missing parameter")
        if realm != self.realm:
            return AuthResult(_MALFORMED, username, "wrong realm")
        algorithm = get("algorithm")
        algo = "MD5" if algorithm is None else algorithm.upper()
        spec = self._accepted.get(algo)
        if spec is None:
            return AuthResult(_MALFORMED, username, "unsupported algorithm")
        base, sess, fn, ha2_cache = spec
        userhash = get("userhash")
        if userhash is not None and userhash.lower() != "false":
            return AuthResult(_MALFORMED, username, "userhash not supported")

        qop = get("qop")
        nc = cnonce = ""
        nc_value = -1
        if qop is None:
            if not self.allow_no_qop or algo != "MD5":
                return AuthResult(_MALFORMED, username, "qop required")
        elif qop.lower() == "auth":
            nc = get("nc", "")
            cnonce = get("cnonce", "")
            if not cnonce or _NC_RE.fullmatch(nc) is None:
                return AuthResult(_MALFORMED, username, "bad nc or cnonce")
            nc_value = int(nc, 16)
        else:
            return AuthResult(_MALFORMED, username, "unsupported qop")

        if strict_uri and request_uri is not None:
            if _normalize_uri(uri) != _normalize_uri(request_uri):
                return AuthResult(_MALFORMED, username, "uri does not match request")
        if self.opaque is not None:
            opaque = get("opaque")
            # Absent opaque is tolerated: it carries no state here.
            if opaque is not None and opaque != self.opaque:
                return AuthResult(_MALFORMED, username, "wrong opaque")

        issued = self.nonce_issued_at(nonce)
        if issued is None:
            return AuthResult(_BAD, username, UNKNOWN_NONCE)
        secret_hex = credentials(username, realm, base)
        if secret_hex is None:
            return AuthResult(_BAD, username, "unknown user")

        try:
            if sess:
                secret_hex = fn(f"{secret_hex}:{nonce}:{cnonce}".encode())
            a2 = f"{method}:{uri}"
            ha2 = ha2_cache.get(a2)
            if ha2 is None:
                if len(ha2_cache) >= _HA2_CACHE_SIZE:
                    ha2_cache.clear()
                ha2 = ha2_cache[a2] = fn(a2.encode())
            if qop is None:
                expected = fn(f"{secret_hex}:{nonce}:{ha2}".encode())
            else:
                expected = fn(f"{secret_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())
        except UnicodeEncodeError:  # lone surrogates
            return AuthResult(_MALFORMED, username, "unencodable parameter")
        if not response.isascii() or not (
            hmac.compare_digest(expected, response)
            or hmac.compare_digest(expected, response.lower())
        ):
            return AuthResult(_BAD, username, "wrong response")

        ttl = self.nonce_ttl
        age = now - issued
        if age > ttl or age < -ttl:
            return AuthResult(_STALE, username, "nonce expired")
        if nc_value < 0:
            # RFC 2069 style: no nonce-count, so replay is bounded only by the TTL.
            return AuthResult(_OK, username)
        last_nc = self._last_nc
        last = last_nc.get(nonce)
        if last is None:
            if issued <= self._floor:
                return AuthResult(_STALE, username, "nonce history evicted")
            last_nc[nonce] = nc_value
            self._track(issued, nonce, now)
        elif nc_value <= last:
            return AuthResult(_REPLAY, username, "nonce-count not increasing")
        else:
            last_nc[nonce] = nc_value
        return AuthResult(_OK, username)

    def _track(self, issued: float, nonce: str, now: float) -> None:
        """Remember a newly used nonce; drop expired ones and enforce the size cap."""
        order = self._order
        last_nc = self._last_nc
        order.append((issued, nonce))
        # Insertion order only roughly follows issue time, so an expired entry can linger
        # behind a younger one for at most one more TTL; the cap bounds memory regardless.
        cutoff = now - self.nonce_ttl
        while order and order[0][0] < cutoff:
            last_nc.pop(order.popleft()[1], None)
        while len(last_nc) > self.max_nonces:
            old_issued, old_nonce = order.popleft()
            last_nc.pop(old_nonce, None)
            if old_issued > self._floor:
                self._floor = old_issued


# --------------------------------------------------------------------------- client


def _challenge_choice(params: Mapping[str, str]) -> tuple[str, str | None]:
    """(algorithm, qop to answer with) for a parsed challenge; ValueError if unusable."""
    algorithm = params.get("algorithm", "MD5")
    _split_algorithm(algorithm)
    offered = params.get("qop")
    if offered is None:
        return algorithm, None
    options = {q.strip().lower() for q in offered.split(",")}
    if "auth" in options:
        return algorithm, "auth"
    if "auth-int" in options:
        return algorithm, "auth-int"
    raise ValueError(f"no supported qop in {offered!r}")


def pick_challenge(values: Iterable[str], *, prefer_sha256: bool = False) -> str | None:
    """The challenge value to answer: the first usable one, or the first SHA-256 one if
    `prefer_sha256` and there is one. None if none is usable."""
    first: str | None = None
    for value in values:
        try:
            scheme, params = parse_auth_params(value)
            if scheme.lower() != "digest" or "nonce" not in params or "realm" not in params:
                continue
            algorithm, _ = _challenge_choice(params)
        except ValueError:
            continue
        if not prefer_sha256:
            return value
        if algorithm.upper().startswith("SHA-256"):
            return value
        if first is None:
            first = value
    return first


class DigestClient:
    """Answers digest challenges for one set of credentials."""

    __slots__ = ("username", "password", "_cnonce_factory", "_nc")

    _MAX_NONCES = 64

    def __init__(
        self,
        username: str,
        password: str,
        *,
        cnonce_factory: Callable[[], str] | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self._cnonce_factory = cnonce_factory
        self._nc: dict[str, int] = {}

    def _next_nc(self, nonce: str) -> int:
        counts = self._nc
        n = counts.get(nonce, 0) + 1
        if n == 1 and len(counts) >= self._MAX_NONCES:
            del counts[next(iter(counts))]
        counts[nonce] = n
        return n

    def authorization(self, method: str, uri: str, challenge_value: str, body: bytes = b"") -> str:
        """Authorization / Proxy-Authorization value answering `challenge_value`.

        Uses qop=auth when offered (auth-int, over `body`, only if auth is not).
        Raises ValueError for an unusable challenge.
        """
        scheme, params = parse_auth_params(challenge_value)
        if scheme.lower() != "digest":
            raise ValueError(f"not a Digest challenge: {scheme!r}")
        realm = params.get("realm")
        nonce = params.get("nonce")
        if realm is None or nonce is None:
            raise ValueError("challenge lacks realm or nonce")
        algorithm, qop = _challenge_choice(params)
        base_ha1 = ha1(self.username, realm, self.password, algorithm)

        parts = [
            f"Digest username={_quote(self.username)}",
            f"realm={_quote(realm)}",
            f"nonce={_quote(nonce)}",
            f"uri={_quote(uri)}",
        ]
        if qop is None:
            if algorithm.upper().endswith("-SESS"):
                raise ValueError("-sess algorithms need a qop")
            response = digest_response(algorithm, base_ha1, nonce, method, uri)
            parts.append(f'response="{response}"')
            parts.append(f"algorithm={algorithm}")
        else:
            nc = f"{self._next_nc(nonce):08x}"
            factory = self._cnonce_factory
            cnonce = factory() if factory is not None else secrets.token_hex(8)
            response = digest_response(
                algorithm,
                base_ha1,
                nonce,
                method,
                uri,
                qop=qop,
                nc=nc,
                cnonce=cnonce,
                body=body,
            )
            parts.append(f'response="{response}"')
            parts.append(f"algorithm={algorithm}")
            parts.append(f"cnonce={_quote(cnonce)}")
            parts.append(f"qop={qop}")
            parts.append(f"nc={nc}")
        opaque = params.get("opaque")
        if opaque is not None:
            parts.append(f"opaque={_quote(opaque)}")
        return ", ".join(parts)
