"""A small blocking SIP-over-UDP client for integration tests (REGISTER, OPTIONS, raw bytes)."""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
import time
from dataclasses import dataclass, field

_COMPACT = {
    "m": "contact", "v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length",
}
_AUTH_PARAM = re.compile(r'([\w-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]+)')


@dataclass
class SipResponse:
    """A parsed SIP response: status, reason, headers (lower-case names, in order), body."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    raw: bytes = b""

    def all(self, name: str) -> list[str]:
        """Every value of a header (comma-joined headers are not split)."""
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def first(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None


def parse_response(data: bytes) -> SipResponse | None:
    """Parse a response datagram; None when it is not a SIP response."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    match = re.match(r"SIP/2\.0 (\d{3}) ?(.*)", lines[0])
    if match is None:
        return None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers.append((_COMPACT.get(key, key), value.strip()))
    return SipResponse(int(match.group(1)), match.group(2), headers, body, data)


def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    """Split `Digest realm="x", nonce="y", ...` into the scheme and its parameters."""
    scheme, _, rest = value.strip().partition(" ")
    params = {}
    for key, raw in _AUTH_PARAM.findall(rest):
        params[key.lower()] = raw[1:-1] if raw.startswith('"') else raw
    return scheme, params


def digest_authorization(challenge: dict[str, str], method: str, uri: str, username: str,
                         password: str) -> str:
    """An MD5 Authorization value answering `challenge` (qop=auth when offered)."""
    realm, nonce = challenge["realm"], challenge["nonce"]

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{username}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
             "algorithm=MD5"]
    qops = [q.strip() for q in challenge.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce, nc = secrets.token_hex(8), "00000001"
        response = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        parts += [f'cnonce="{cnonce}"', f"nc={nc}", "qop=auth"]
    else:
        response = md5(f"{ha1}:{nonce}:{ha2}")
    parts.append(f'response="{response}"')
    if "opaque" in challenge:
        parts.append(f'opaque="{challenge["opaque"]}"')
    return "Digest " + ", ".join(parts)


class SipUdpClient:
    """One UDP socket on 127.0.0.1 talking to one SIP server."""

    def __init__(self, server: tuple[str, int], timeout: float = 3.0) -> None:
        self.server = server
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.local_port = int(self.sock.getsockname()[1])
        self.call_id = f"{secrets.token_hex(8)}@127.0.0.1"
        self.cseq = 0
        self.tag = secrets.token_hex(6)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipUdpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def request_uri(self) -> str:
        return f"sip:{self.server[0]}:{self.server[1]}"

    def build(self, method: str, user: str, headers: list[str] | None = None,
              body: bytes = b"", branch: str | None = None) -> bytes:
        """A request from `user` to `user` (as a REGISTER is) with fresh branch and next CSeq."""
        self.cseq += 1
        branch = branch or f"z9hG4bK{secrets.token_hex(10)}"
        host = self.server[0]
        lines = [
            f"{method} {self.request_uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.local_port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{host}>;tag={self.tag}",
            f"To: <sip:{user}@{host}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} {method}",
            *(headers or []),
            f"Content-Length: {len(body)}",
            "",
            "",
        ]
        return "\r\n".join(lines).encode() + body

    def send_raw(self, data: bytes) -> None:
        self.sock.sendto(data, self.server)

    def receive(self, timeout: float | None = None,
                call_id: str | None = None) -> SipResponse | None:
        """The next final response (1xx and other calls' responses are skipped), or None."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                return None
            response = parse_response(data)
            if response is None or response.status < 200:
                continue
            if call_id is None or response.first("call-id") == call_id:
                return response

    def exchange(self, data: bytes, timeout: float | None = None) -> SipResponse | None:
        """Send a request (retransmitting every 0.5 s like RFC 3261 timer A) and await its final
        response."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        match = re.search(rb"^(?:Call-ID|i)\s*:\s*(\S+)", data, re.M | re.I)
        call_id = match.group(1).decode() if match else None
        while time.monotonic() < deadline:
            self.send_raw(data)
            response = self.receive(min(0.5, max(0.0, deadline - time.monotonic())), call_id)
            if response is not None:
                return response
        return None

    def request(self, method: str, user: str, headers: list[str] | None = None,
                password: str | None = None) -> SipResponse:
        """Send a request; answer one MD5 digest challenge with `password`; the final response."""
        response = self.exchange(self.build(method, user, headers))
        assert response is not None, f"no response to {method}"
        if response.status in (401, 407) and password is not None:
            header = "www-authenticate" if response.status == 401 else "proxy-authenticate"
            challenges = [parse_challenge(value) for value in response.all(header)]
            md5 = [params for scheme, params in challenges
                   if scheme.lower() == "digest"
                   and params.get("algorithm", "MD5").upper() == "MD5"]
            assert md5, f"no MD5 digest challenge in {response.raw!r}"
            credentials = digest_authorization(md5[0], method, self.request_uri, user, password)
            name = "Authorization" if response.status == 401 else "Proxy-Authorization"
            response = self.exchange(
                self.build(method, user, [*(headers or []), f"{name}: {credentials}"])
            )
            assert response is not None, f"no response to the authenticated {method}"
        return response
