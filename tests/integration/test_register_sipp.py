"""Registration against a real `cms serve` with SIPp (UDP and TCP) and raw UDP datagrams."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from cms_process import CmsProcess, free_port, user_name, user_password
from sip_client import SipResponse, SipUdpClient
from sipp_runner import SIPP, SippResult, run_sipp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed"),
]

RFC4475 = Path(__file__).resolve().parents[1] / "data" / "rfc4475"


def users(first: int, last: int, wrong_password: bool = False) -> list[tuple[str, str]]:
    """(name, password) of users number first..last (1-based, inclusive)."""
    result = []
    for index in range(first, last + 1):
        name = user_name(index)
        result.append((name, "not-" + user_password(name) if wrong_password else
                       user_password(name)))
    return result


def assert_all_succeeded(result: SippResult, calls: int) -> None:
    assert result.returncode == 0, result.describe()
    assert result.successful == calls, result.describe()
    assert result.failed == 0, result.describe()


def query_contacts(server: CmsProcess, name: str) -> list[str]:
    """The contacts the registrar lists for a user: an authenticated REGISTER without Contact."""
    with SipUdpClient(server.sip_address) as client:
        response = client.request("REGISTER", name, password=user_password(name))
    assert response.status == 200, response.raw
    return response.all("contact")


def test_sipp_registers_300_users_over_udp(cms_server: CmsProcess, tmp_path: Path) -> None:
    result = run_sipp(cms_server.sip_target, "register.xml", users(1, 300), tmp_path, rate=100)

    assert_all_succeeded(result, 300)
    assert cms_server.bindings() == 300
    for index in (1, 150, 300):
        contacts = query_contacts(cms_server, user_name(index))
        assert len(contacts) == 1, contacts
        assert f"sip:{user_name(index)}@127.0.0.1:" in contacts[0]


def test_sipp_registers_20_users_over_one_tcp_connection(
    cms_server: CmsProcess, tmp_path: Path
) -> None:
    result = run_sipp(cms_server.sip_target, "register.xml", users(1, 20), tmp_path,
                      transport="t1")

    assert_all_succeeded(result, 20)
    assert cms_server.bindings() == 20
    contacts = query_contacts(cms_server, user_name(7))
    assert len(contacts) == 1 and "transport=tcp" in contacts[0].lower(), contacts


def test_wrong_password_gets_403_and_never_binds(cms_server: CmsProcess, tmp_path: Path) -> None:
    assert_all_succeeded(
        run_sipp(cms_server.sip_target, "register.xml", users(1, 5), tmp_path), 5
    )
    assert cms_server.bindings() == 5

    # Users 1-5 are registered, 6-10 are not: a wrong password must neither bind the latter
    # nor disturb the former.
    result = run_sipp(cms_server.sip_target, "register_wrong_password.xml",
                      users(1, 10, wrong_password=True), tmp_path)

    assert_all_succeeded(result, 10)
    assert cms_server.bindings() == 5
    assert query_contacts(cms_server, user_name(6)) == []
    assert len(query_contacts(cms_server, user_name(1))) == 1


def test_unregister_with_expires_zero_and_with_contact_star(
    cms_server: CmsProcess, tmp_path: Path
) -> None:
    # Unregistering a single contact names it again: SIPp must use the same local port.
    port = free_port()
    target = cms_server.sip_target
    assert_all_succeeded(
        run_sipp(target, "register.xml", users(1, 20), tmp_path, local_port=port), 20
    )
    assert cms_server.bindings() == 20

    result = run_sipp(target, "unregister_expires0.xml", users(1, 10), tmp_path, local_port=port)

    assert_all_succeeded(result, 10)
    assert cms_server.bindings() == 10
    assert query_contacts(cms_server, user_name(1)) == []
    assert len(query_contacts(cms_server, user_name(11))) == 1

    result = run_sipp(target, "unregister_star.xml", users(11, 20), tmp_path)

    assert_all_succeeded(result, 10)
    assert cms_server.bindings() == 0
    assert query_contacts(cms_server, user_name(11)) == []


def test_bindings_survive_a_restart(cms_server: CmsProcess, tmp_path: Path) -> None:
    port = free_port()
    assert_all_succeeded(
        run_sipp(cms_server.sip_target, "register.xml", users(1, 50), tmp_path, local_port=port),
        50,
    )
    assert cms_server.bindings() == 50

    cms_server.restart()  # SIGTERM (must exit 0), then a new process on the same data dir

    assert cms_server.bindings() == 50
    contacts = query_contacts(cms_server, user_name(1))
    assert len(contacts) == 1, contacts
    assert f"sip:{user_name(1)}@127.0.0.1:{port}" in contacts[0]
    assert query_contacts(cms_server, user_name(51)) == []


def test_work_centre_desk_phone_registers_with_its_extension(cms_server: CmsProcess) -> None:
    with SipUdpClient(cms_server.sip_address) as client:
        contact = f"Contact: <sip:2012@127.0.0.1:{client.local_port}>"
        refused = client.request("REGISTER", "2012", [contact, "Expires: 600"], password="wrong")
        response = client.request("REGISTER", "2012", [contact, "Expires: 600"], password="deskpw")

    assert refused.status == 403, refused.raw
    assert response.status == 200, response.raw
    assert any(f"sip:2012@127.0.0.1:{client.local_port}" in c for c in response.all("contact"))
    assert cms_server.bindings() == 1


def test_options_gets_200_with_allow(cms_server: CmsProcess) -> None:
    with SipUdpClient(cms_server.sip_address) as client:
        response = client.request("OPTIONS", "agent0001", ["Accept: application/sdp"])

    assert response.status == 200, response.raw
    allow = {method.strip() for value in response.all("allow") for method in value.split(",")}
    assert {"OPTIONS", "REGISTER", "INVITE", "ACK", "BYE", "CANCEL"} <= allow, allow


# -- robustness


def garbage_datagrams() -> list[bytes]:
    rng = random.Random(4475)
    return [
        b"",
        b"\x00",
        b"\r\n\r\n",
        b"\xff\xfe" * 200,
        bytes(rng.randrange(256) for _ in range(1400)),
        b"A" * 60000,
        b"INVITE\r\n\r\n",
        b"REGISTER sip:x SIP/2.0\r\n\r\n",
        b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: \r\nCSeq: x\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"SIP/2.0 999\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKnothing\r\n\r\n",
        "OPTIONS sip:\u00e9\u00e8@127.0.0.1 SIP/2.0\r\n\r\n".encode("latin-1"),
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ]


def rfc4475_invalid_messages() -> list[bytes]:
    """RFC 4475's invalid messages and stray responses, or three of our own without the data."""
    index = RFC4475 / "index.json"
    if index.exists():
        entries = json.loads(index.read_text())["messages"]
        chosen = [e for e in entries if not e["valid"] or e["kind"] == "response"]
        return [(RFC4475 / e["file"]).read_bytes() for e in chosen]
    via = "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK4475"
    return [
        # Content-Length larger than the message (RFC 4475 3.1.2.4 "clerr").
        f"INVITE sip:user@example.com SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n"
        "From: <sip:a@example.com>;tag=1\r\nTo: <sip:user@example.com>\r\nCall-ID: clerr\r\n"
        "CSeq: 1 INVITE\r\nContent-Length: 9999\r\n\r\nv=0\r\n".encode(),
        # Negative Content-Length (3.1.2.5 "ncl").
        f"INVITE sip:user@example.com SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n"
        "From: <sip:a@example.com>;tag=1\r\nTo: <sip:user@example.com>\r\nCall-ID: ncl\r\n"
        "CSeq: 1 INVITE\r\nContent-Length: -999\r\n\r\n".encode(),
        # Request method and CSeq method disagree (3.4.1 "mismatch01").
        f"OPTIONS sip:user@example.com SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n"
        "From: <sip:a@example.com>;tag=1\r\nTo: <sip:user@example.com>\r\n"
        "Call-ID: mismatch01\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".encode(),
    ]


def test_garbage_and_rfc4475_invalid_messages_do_not_crash_the_server(
    cms_server: CmsProcess,
) -> None:
    with SipUdpClient(cms_server.sip_address) as client:
        for datagram in garbage_datagrams() + rfc4475_invalid_messages():
            client.send_raw(datagram)
        # The same garbage over TCP: the server may close the connection, but must live on.
        with socket.create_connection(("127.0.0.1", cms_server.tcp_port), timeout=2) as conn:
            conn.sendall(b"\x00\xff garbage\r\n\r\nREGISTER\r\nContent-Length: -5\r\n\r\n")
            conn.sendall(b"A" * 100_000)

        response = client.request("OPTIONS", "agent0001")

    assert response.status == 200, response.raw
    assert cms_server.running
    assert cms_server.health()["status"] == "ok"


def _with_cseq_method_mismatch(request: bytes) -> bytes:
    return request.replace(b" OPTIONS\r\nContent-Length", b" INVITE\r\nContent-Length")


def _with_content_length_too_large(request: bytes) -> bytes:
    return request.replace(b"Content-Length: 0\r\n", b"Content-Length: 500\r\n")


@pytest.mark.parametrize(
    "corrupt", [_with_cseq_method_mismatch, _with_content_length_too_large],
    ids=["cseq-method-mismatch", "content-length-too-large"],
)
def test_malformed_but_addressable_request_gets_400(
    cms_server: CmsProcess, corrupt: Callable[[bytes], bytes]
) -> None:
    with SipUdpClient(cms_server.sip_address) as client:
        valid = client.build("OPTIONS", "agent0001")
        malformed = corrupt(valid)
        assert malformed != valid

        response: SipResponse | None = client.exchange(malformed)

        assert response is not None, "no response to a malformed request with a usable Via"
        assert response.status == 400, response.raw
        assert response.first("call-id") == client.call_id
        assert client.request("OPTIONS", "agent0001").status == 200
