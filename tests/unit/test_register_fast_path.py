"""REGISTER's fast path in the endpoint answers exactly as the full path would.

Each scenario runs against two endpoints with their own registrar, one with the
fast path and one without, and compares every response (random To tags and
nonces aside), the bindings and what was reported for persistence.
"""

from __future__ import annotations

import re

import pytest

from cms.config import parse_config
from cms.net.endpoint import SipEndpoint
from cms.net.peer import Peer
from cms.net.udp import Address
from cms.registrar.bindings import BindingChange
from cms.registrar.service import Registrar
from cms.sip.digest import DigestClient
from cms.sip.message import Request
from cms.sip.transaction import ServerTransaction

CONFIG = parse_config(
    {
        "cms": {"realm": "cms.local", "min_expires": 60, "max_expires": 3600, "max_contacts": 3},
        "users": [
            {"name": "agent1", "password": "secret1", "extension": "1001"},
            {"name": "agent2", "password": "secret2", "extension": "1002"},
        ],
    }
)
PHONE: Address = ("192.0.2.10", 5062)
_RANDOM = re.compile(r'(;tag=|nonce=")[^;"\r\n]+')


class FakeUdp:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Address]] = []

    def send(self, data: bytes, addr: Address) -> None:
        self.sent.append((data, addr))

    @property
    def local_address(self) -> Address:
        return ("192.0.2.1", 5060)


class Side:
    """One endpoint and the phone's digest state against it."""

    def __init__(self, fast: bool) -> None:
        self.changes: list[BindingChange] = []
        self.registrar = Registrar(CONFIG, on_change=self.changes.append)
        self.endpoint = SipEndpoint(self.registrar)
        self.endpoint.fast_register = fast
        self.udp = FakeUdp()
        self.endpoint.udp = self.udp  # type: ignore[assignment]
        self.clients: dict[str, DigestClient] = {}
        self.challenge: dict[str, str] = {}

    def send(self, data: bytes, addr: Address = PHONE) -> tuple[bytes, Address]:
        before = len(self.udp.sent)
        self.endpoint.on_udp(data, addr)
        self.endpoint.send_pending()  # flush() would also arm the timer (needs a loop)
        assert len(self.udp.sent) == before + 1, data
        response, to = self.udp.sent[-1]
        if response.startswith(b"SIP/2.0 401"):
            user = re.search(rb"From: <sip:([^@]+)@", data)
            assert user is not None
            challenge = re.search(rb"WWW-Authenticate: (.*)\r\n", response)
            assert challenge is not None
            self.challenge[user.group(1).decode()] = challenge.group(1).decode()
        return response, to

    def authorization(self, user: str, password: str) -> str:
        client = self.clients.setdefault(user, DigestClient(user, password))
        return client.authorization("REGISTER", "sip:cms.local", self.challenge[user])

    def bindings(self) -> list[tuple[str, str, str, int, str, str]]:
        return sorted(
            (key, b.contact, b.call_id, b.cseq, b.source, b.user_agent)
            for key, b in self.registrar.table
        )


def register(user: str, cseq: int, *, branch: str = "", auth: str | None = None,
             contact: str = "<sip:phone@192.0.2.10:5062>", expires: str | None = "3600",
             extra: str = "", via: str | None = None, call_id: str = "call-1") -> bytes:
    via = via or f"SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK{branch or cseq}x;rport"
    lines = [
        "REGISTER sip:cms.local SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@cms.local>;tag=ft{user}",
        f"To: <sip:{user}@cms.local>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: {contact}",
    ]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    if extra:
        lines.append(extra)
    lines += ["User-Agent: test-phone", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def normalized(response: bytes) -> str:
    text = _RANDOM.sub(r"\1X", response.decode())
    # Date ticks with the clock; both sides stamp the same second (or the next).
    return re.sub(r"Date: [^\r]*", "Date: D", text)


@pytest.fixture
def sides() -> tuple[Side, Side]:
    return Side(fast=True), Side(fast=False)


def both(sides: tuple[Side, Side], build: object) -> str:
    """Send what `build(side)` makes to both sides; the responses must match."""
    assert callable(build)
    fast, full = sides
    answer_fast, to_fast = fast.send(build(fast))
    answer_full, to_full = full.send(build(full))
    assert normalized(answer_fast) == normalized(answer_full)
    assert to_fast == to_full
    assert fast.bindings() == full.bindings()
    return normalized(answer_fast)


def test_challenge_registration_refresh_and_retransmission(sides: tuple[Side, Side]) -> None:
    fast, full = sides
    assert both(sides, lambda s: register("agent1", 1)).startswith("SIP/2.0 401 Unauthorized")
    ok = both(sides, lambda s: register("agent1", 2, auth=s.authorization("agent1", "secret1")))
    assert ok.startswith("SIP/2.0 200 OK") and "Contact: <sip:phone@192.0.2.10:5062>" in ok
    assert "received=192.0.2.10" in ok and "rport=5062" in ok
    # The refresh reuses the nonce (nc=2): the first one the fast path can answer.
    refresh = [register("agent1", 3, auth=s.authorization("agent1", "secret1")) for s in sides]
    answers = [side.send(data)[0] for side, data in zip(sides, refresh, strict=True)]
    assert normalized(answers[0]) == normalized(answers[1])
    # The first 200 came from the full path (it learns the To); the refresh from the fast one.
    assert fast.endpoint.stats()["transactions"] == 1
    assert full.endpoint.stats()["transactions"] == 2
    # A retransmission gets the same bytes again and changes nothing.
    again = [side.send(data)[0] for side, data in zip(sides, refresh, strict=True)]
    assert again == answers
    assert fast.bindings() == full.bindings()
    assert [len(s.changes) for s in sides] == [2, 2]
    assert fast.changes[-1].upserted[0][1].cseq == 3


@pytest.mark.parametrize("case", [
    "wrong password", "too brief", "removal", "require", "two vias", "out of order",
    "cseq method", "star", "bad expires", "contact list", "to tag", "other user",
    "compact", "tel uri", "body", "case", "no rport", "folded", "bare lf", "no colon",
    "blanks", "empty value", "unknown field", "version",
])
def test_every_other_case_answers_as_the_full_path(sides: tuple[Side, Side], case: str) -> None:
    both(sides, lambda s: register("agent1", 1))
    both(sides, lambda s: register("agent1", 2, auth=s.authorization("agent1", "secret1")))
    both(sides, lambda s: register("agent2", 1, call_id="call-2"))
    both(sides, lambda s: register("agent2", 2, call_id="call-2",
                                   auth=s.authorization("agent2", "secret2")))

    def auth(s: Side) -> str:
        return s.authorization("agent1", "secret1")

    builders = {
        "wrong password": lambda s: register(
            "agent1", 5, auth=s.authorization("agent1", "secret1").replace(
                'response="', 'response="0')),
        "too brief": lambda s: register("agent1", 5, auth=auth(s), expires="30"),
        "removal": lambda s: register("agent1", 5, auth=auth(s), expires="0"),
        "require": lambda s: register("agent1", 5, auth=auth(s), extra="Require: foo"),
        "two vias": lambda s: register(
            "agent1", 5, auth=auth(s),
            via="SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK5y;rport, "
                "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKq"),
        "out of order": lambda s: register("agent1", 2, branch="99", auth=auth(s)),
        "cseq method": lambda s: register("agent1", 5, auth=auth(s)).replace(
            b"CSeq: 5 REGISTER", b"CSeq: 5 OPTIONS"),
        "star": lambda s: register("agent1", 5, auth=auth(s), contact="*"),
        "bad expires": lambda s: register("agent1", 5, auth=auth(s),
                                          contact="<sip:p@192.0.2.10>;expires=x"),
        "contact list": lambda s: register(
            "agent1", 5, auth=auth(s), contact="<sip:a@192.0.2.10>, <sip:b@192.0.2.10>"),
        "to tag": lambda s: register("agent1", 5, auth=auth(s)).replace(
            b"To: <sip:agent1@cms.local>", b"To: <sip:agent1@cms.local>;tag=1"),
        "other user": lambda s: register("agent1", 5, auth=s.authorization("agent2", "secret2")),
        "compact": lambda s: register("agent1", 5, auth=auth(s)).replace(
            b"Contact:", b"m:").replace(b"Call-ID:", b"i:"),
        "tel uri": lambda s: register("agent1", 5, auth=auth(s)).replace(
            b"REGISTER sip:cms.local", b"REGISTER tel:+1234"),
        "body": lambda s: register("agent1", 5, auth=auth(s)).replace(
            b"Content-Length: 0\r\n\r\n", b"Content-Length: 2\r\n\r\nhi"),
        "case": lambda s: register("agent1", 5, auth=auth(s)).replace(b"Via:", b"VIA:"),
        "folded": lambda s: register("agent1", 5, auth=auth(s)).replace(
            b"Expires: 3600", b"Expires:\r\n 3600"),
        "bare lf": lambda s: register("agent1", 5, auth=auth(s)).replace(
            b"User-Agent: test-phone", b"User-Agent: test\nphone"),
        "no colon": lambda s: register("agent1", 5, auth=auth(s), extra="Garbage"),
        "blanks": lambda s: register("agent1", 5, auth=auth(s)).replace(
            b"Expires: 3600", b"Expires:  3600 \t").replace(b"Call-ID: ", b"Call-ID:"),
        "empty value": lambda s: register("agent1", 5, auth=auth(s), extra="Supported:"),
        "unknown field": lambda s: register("agent1", 5, auth=auth(s), extra="X-Foo: bar"),
        "version": lambda s: register("agent1", 5, auth=auth(s)).replace(
            b"sip:cms.local SIP/2.0", b"sip:cms.local SIP/3.0"),
        "no rport": lambda s: register(
            "agent1", 5, auth=auth(s), via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK5z"),
    }
    both(sides, builders[case])
    # And the phone goes on registering normally afterwards.
    final = both(sides, lambda s: register("agent1", 9, auth=auth(s)))
    assert final.startswith(("SIP/2.0 200", "SIP/2.0 401"))
    assert [len(s.changes) for s in sides][0] == [len(s.changes) for s in sides][1]


def test_stale_and_unknown_nonces_are_challenged_again(sides: tuple[Side, Side]) -> None:
    both(sides, lambda s: register("agent1", 1))
    both(sides, lambda s: register("agent1", 2, auth=s.authorization("agent1", "secret1")))
    for side in sides:
        side.challenge["agent1"] = side.challenge["agent1"].replace('nonce="', 'nonce="AAAA')
    answer = both(sides, lambda s: register("agent1", 3, auth=s.authorization("agent1", "x")))
    assert answer.startswith("SIP/2.0 401")


def test_malformed_register_is_still_answered_400(sides: tuple[Side, Side]) -> None:
    answer = both(sides, lambda s: register("agent1", 1).replace(b"CSeq: 1 REGISTER",
                                                                b"CSeq: x REGISTER"))
    assert answer.startswith("SIP/2.0 400")


def test_a_replaced_register_handler_sees_every_register(sides: tuple[Side, Side]) -> None:
    fast, _ = sides
    both(sides, lambda s: register("agent1", 1))
    both(sides, lambda s: register("agent1", 2, auth=s.authorization("agent1", "secret1")))
    seen: list[str] = []
    original = fast.endpoint.handlers["REGISTER"]

    def spy(tx: ServerTransaction, request: Request, peer: Peer) -> None:
        seen.append(request.headers.first("cseq") or "")
        original(tx, request, peer)

    fast.endpoint.handlers["REGISTER"] = spy
    response, _ = fast.send(register("agent1", 3, auth=fast.authorization("agent1", "secret1")))
    assert response.startswith(b"SIP/2.0 200") and seen == ["3 REGISTER"]
