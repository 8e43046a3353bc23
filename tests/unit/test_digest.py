"""Tests for the sans-IO SIP digest authentication module."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cms.sip.digest import (
    AuthOutcome,
    AuthResult,
    Credentials,
    DigestClient,
    DigestServer,
    credentials_from_passwords,
    digest_response,
    ha1,
    parse_auth_params,
    pick_challenge,
)

REALM = "cms.local"
URI = "sip:cms.local"
T0 = 1_700_000_000.0

# RFC 7616 §3.9.1 example.
RFC_REALM = "http-auth@example.org"
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC_URI = "/dir/index.html"
RFC_RESPONSES = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}


def rfc_authorization(algorithm: str) -> str:
    # Folded over several lines, as printed in the RFC.
    return (
        f'Digest username="Mufasa",\r\n       realm="{RFC_REALM}",\r\n'
        f'       uri="{RFC_URI}",\r\n       algorithm={algorithm},\r\n'
        f'       nonce="{RFC_NONCE}",\r\n       nc=00000001,\r\n'
        f'       cnonce="{RFC_CNONCE}",\r\n       qop=auth,\r\n'
        f'       response="{RFC_RESPONSES[algorithm]}",\r\n'
        f'       opaque="{RFC_OPAQUE}"'
    )


def rfc_challenge(algorithm: str) -> str:
    return (
        f'Digest\r\n       realm="{RFC_REALM}",\r\n       qop="auth, auth-int",\r\n'
        f'       algorithm={algorithm},\r\n       nonce="{RFC_NONCE}",\r\n'
        f'       opaque="{RFC_OPAQUE}"'
    )


class RfcExampleServer(DigestServer):
    """A server that also accepts the RFC's fixed nonce as freshly issued."""

    def nonce_issued_at(self, nonce: str) -> float | None:
        return 0.0 if nonce == RFC_NONCE else super().nonce_issued_at(nonce)


PASSWORDS = {"alice": "secret", "bob": "hunter2"}
CREDENTIALS: Credentials = credentials_from_passwords(PASSWORDS.get)


def make_server(**kwargs: Any) -> DigestServer:
    return DigestServer(REALM, secret=b"s" * 32, **kwargs)


def challenge_for(server: DigestServer, algorithm: str, now: float = T0) -> str:
    for value in server.challenge(now):
        if f"algorithm={algorithm}," in value:
            return value
    raise AssertionError(f"no {algorithm} challenge")


def answer(
    server: DigestServer,
    username: str = "alice",
    password: str = "secret",
    algorithm: str = "MD5",
    now: float = T0,
    method: str = "REGISTER",
) -> str:
    client = DigestClient(username, password)
    return client.authorization(method, URI, challenge_for(server, algorithm, now))


def replace_param(header: str, name: str, value: str) -> str:
    _, params = parse_auth_params(header)
    params[name] = value
    return "Digest " + ", ".join(f'{k}="{v}"' for k, v in params.items())


# --------------------------------------------------------------------------- RFC vectors


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_example_response_is_reproduced(algorithm: str) -> None:
    secret = ha1("Mufasa", RFC_REALM, "Circle of Life", algorithm)
    response = digest_response(
        algorithm, secret, RFC_NONCE, "GET", RFC_URI, qop="auth", nc="00000001", cnonce=RFC_CNONCE
    )
    assert response == RFC_RESPONSES[algorithm]


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_example_authorization_verifies(algorithm: str) -> None:
    server = RfcExampleServer(RFC_REALM, opaque=RFC_OPAQUE)
    lookup = credentials_from_passwords({"Mufasa": "Circle of Life"}.get)
    result = server.verify("GET", rfc_authorization(algorithm), 1.0, lookup)
    assert result == AuthResult(AuthOutcome.OK, "Mufasa")


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_client_answers_rfc7616_example_challenge_with_the_rfc_response(algorithm: str) -> None:
    client = DigestClient("Mufasa", "Circle of Life", cnonce_factory=lambda: RFC_CNONCE)
    _, params = parse_auth_params(client.authorization("GET", RFC_URI, rfc_challenge(algorithm)))
    assert params["response"] == RFC_RESPONSES[algorithm]
    assert params["qop"] == "auth"
    assert params["nc"] == "00000001"
    assert params["opaque"] == RFC_OPAQUE
    assert params["algorithm"] == algorithm


def test_ha1_is_the_hash_of_user_realm_password() -> None:
    expected = hashlib.sha256(b"alice:cms.local:secret").hexdigest()
    assert ha1("alice", REALM, "secret", "SHA-256") == expected
    assert ha1("alice", REALM, "secret", "sha-256-sess") == expected


def test_ha1_rejects_unsupported_algorithm() -> None:
    with pytest.raises(ValueError):
        ha1("alice", REALM, "secret", "SHA-512-256")


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_client_and_server_round_trip(algorithm: str) -> None:
    server = make_server()
    result = server.verify("REGISTER", answer(server, algorithm=algorithm), T0 + 1, CREDENTIALS)
    assert result.outcome is AuthOutcome.OK
    assert result.ok
    assert result.username == "alice"


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess"])
def test_sess_variants_are_accepted_when_verifying(algorithm: str) -> None:
    server = make_server()
    nonce = server.make_nonce(T0)
    challenge = f'Digest realm="{REALM}", nonce="{nonce}", algorithm={algorithm}, qop="auth"'
    header = DigestClient("alice", "secret").authorization("INVITE", URI, challenge)
    assert server.verify("INVITE", header, T0, CREDENTIALS).outcome is AuthOutcome.OK


def test_verify_accepts_already_parsed_parameters() -> None:
    server = make_server()
    _, params = parse_auth_params(answer(server))
    assert server.verify("REGISTER", params, T0, CREDENTIALS).outcome is AuthOutcome.OK


def test_credentials_lookup_receives_base_algorithm_and_realm() -> None:
    server = make_server()
    seen: list[tuple[str, str, str]] = []

    def lookup(username: str, realm: str, algorithm: str) -> str | None:
        seen.append((username, realm, algorithm))
        return ha1(username, realm, "secret", algorithm)

    assert server.verify("REGISTER", answer(server, algorithm="SHA-256"), T0, lookup).ok
    assert seen == [("alice", REALM, "SHA-256")]


def test_uppercase_hex_response_is_accepted() -> None:
    server = make_server()
    header = answer(server)
    _, params = parse_auth_params(header)
    header = header.replace(params["response"], params["response"].upper())
    assert server.verify("REGISTER", header, T0, CREDENTIALS).ok


# --------------------------------------------------------------------------- rejections


def test_wrong_password_is_rejected() -> None:
    server = make_server()
    result = server.verify("REGISTER", answer(server, password="guess"), T0, CREDENTIALS)
    assert result.outcome is AuthOutcome.BAD_CREDENTIALS
    assert result.username == "alice"


def test_unknown_user_is_rejected() -> None:
    server = make_server()
    result = server.verify("REGISTER", answer(server, username="mallory"), T0, CREDENTIALS)
    assert result.outcome is AuthOutcome.BAD_CREDENTIALS


def test_response_for_another_method_is_rejected() -> None:
    server = make_server()
    result = server.verify("INVITE", answer(server, method="REGISTER"), T0, CREDENTIALS)
    assert result.outcome is AuthOutcome.BAD_CREDENTIALS


def test_tampered_nonce_is_bad_credentials_without_consulting_the_lookup() -> None:
    # Decision: a nonce this server did not issue cannot authenticate anything; the
    # caller answers with a fresh challenge (no stale flag), as for a wrong password.
    server = make_server()
    nonce = server.make_nonce(T0)
    tampered = nonce[:10] + ("A" if nonce[10] != "A" else "B") + nonce[11:]
    challenge = f'Digest realm="{REALM}", nonce="{tampered}", algorithm=MD5, qop="auth"'
    header = DigestClient("alice", "secret").authorization("REGISTER", URI, challenge)

    def lookup(username: str, realm: str, algorithm: str) -> str | None:
        raise AssertionError("credentials looked up for a forged nonce")

    result = server.verify("REGISTER", header, T0, lookup)
    assert result.outcome is AuthOutcome.BAD_CREDENTIALS


@pytest.mark.parametrize(
    "nonce", ["", "x", "A" * 40, "+" * 40, "é" * 40, "A" * 39 + "=", "not-a-nonce-at-all"]
)
def test_garbage_nonce_is_bad_credentials(nonce: str) -> None:
    server = make_server()
    header = replace_param(answer(server), "nonce", nonce)
    assert server.verify("REGISTER", header, T0, CREDENTIALS).outcome is AuthOutcome.BAD_CREDENTIALS


def test_nonce_from_a_server_with_another_secret_is_bad_credentials() -> None:
    other = DigestServer(REALM, secret=b"o" * 32)
    server = make_server()
    result = server.verify("REGISTER", answer(other), T0, CREDENTIALS)
    assert result.outcome is AuthOutcome.BAD_CREDENTIALS


def test_wrong_realm_is_malformed() -> None:
    server = make_server()
    other_realm = DigestServer("elsewhere", secret=b"s" * 32)
    result = server.verify("REGISTER", answer(other_realm), T0, CREDENTIALS)
    assert result.outcome is AuthOutcome.MALFORMED


@pytest.mark.parametrize("missing", ["username", "realm", "nonce", "uri", "response"])
def test_missing_required_parameter_is_malformed(missing: str) -> None:
    server = make_server()
    _, params = parse_auth_params(answer(server))
    del params[missing]
    assert server.verify("REGISTER", params, T0, CREDENTIALS).outcome is AuthOutcome.MALFORMED


@pytest.mark.parametrize("missing", ["nc", "cnonce"])
def test_qop_auth_without_nc_or_cnonce_is_malformed(missing: str) -> None:
    server = make_server()
    _, params = parse_auth_params(answer(server))
    del params[missing]
    assert server.verify("REGISTER", params, T0, CREDENTIALS).outcome is AuthOutcome.MALFORMED


@pytest.mark.parametrize("nc", ["1", "0000001", "000000001", "0x000001", "0000_001", "0000000g"])
def test_nc_that_is_not_eight_hex_digits_is_malformed(nc: str) -> None:
    server = make_server()
    _, params = parse_auth_params(answer(server))
    params["nc"] = nc
    assert server.verify("REGISTER", params, T0, CREDENTIALS).outcome is AuthOutcome.MALFORMED


def test_unsupported_algorithm_is_malformed() -> None:
    server = make_server()
    header = replace_param(answer(server), "algorithm", "SHA-512-256")
    assert server.verify("REGISTER", header, T0, CREDENTIALS).outcome is AuthOutcome.MALFORMED


def test_algorithm_not_offered_by_this_server_is_malformed() -> None:
    server = make_server(algorithms=("SHA-256",))
    md5_server = make_server()
    result = server.verify("REGISTER", answer(md5_server, algorithm="MD5"), T0, CREDENTIALS)
    assert result.outcome is AuthOutcome.MALFORMED


def test_qop_auth_int_is_malformed() -> None:
    server = make_server()
    nonce = server.make_nonce(T0)
    challenge = f'Digest realm="{REALM}", nonce="{nonce}", algorithm=MD5, qop="auth-int"'
    header = DigestClient("alice", "secret").authorization("REGISTER", URI, challenge, b"body")
    assert server.verify("REGISTER", header, T0, CREDENTIALS).outcome is AuthOutcome.MALFORMED


def test_userhash_is_malformed() -> None:
    server = make_server()
    _, params = parse_auth_params(answer(server))
    params["userhash"] = "true"
    assert server.verify("REGISTER", params, T0, CREDENTIALS).outcome is AuthOutcome.MALFORMED


def test_non_digest_scheme_is_malformed() -> None:
    server = make_server()
    result = server.verify("REGISTER", 'Basic realm="cms.local"', T0, CREDENTIALS)
    assert result.outcome is AuthOutcome.MALFORMED


def no_qop_answer(server: DigestServer, algorithm: str) -> str:
    nonce = server.make_nonce(T0)
    challenge = f'Digest realm="{REALM}", nonce="{nonce}", algorithm={algorithm}'
    return DigestClient("alice", "secret").authorization("REGISTER", URI, challenge)


def test_missing_qop_is_malformed_by_default() -> None:
    server = make_server()
    result = server.verify("REGISTER", no_qop_answer(server, "MD5"), T0, CREDENTIALS)
    assert result.outcome is AuthOutcome.MALFORMED


def test_missing_qop_is_accepted_for_md5_when_allowed() -> None:
    server = make_server(allow_no_qop=True)
    result = server.verify("REGISTER", no_qop_answer(server, "MD5"), T0, CREDENTIALS)
    assert result.outcome is AuthOutcome.OK


def test_missing_qop_is_still_malformed_for_sha256_when_allowed() -> None:
    server = make_server(allow_no_qop=True)
    result = server.verify("REGISTER", no_qop_answer(server, "SHA-256"), T0, CREDENTIALS)
    assert result.outcome is AuthOutcome.MALFORMED


def test_wrong_opaque_is_malformed_and_missing_opaque_is_tolerated() -> None:
    server = make_server(opaque="op1")
    _, params = parse_auth_params(answer(server))
    assert params["opaque"] == "op1"
    params["opaque"] = "op2"
    assert server.verify("REGISTER", params, T0, CREDENTIALS).outcome is AuthOutcome.MALFORMED
    del params["opaque"]
    assert server.verify("REGISTER", params, T0, CREDENTIALS).outcome is AuthOutcome.OK


# --------------------------------------------------------------------------- uri check


def test_differing_uri_is_accepted_unless_strict() -> None:
    server = make_server()
    header = answer(server)
    result = server.verify("REGISTER", header, T0, CREDENTIALS, request_uri="sip:other.example")
    assert result.outcome is AuthOutcome.OK


def test_differing_uri_is_malformed_when_strict() -> None:
    server = make_server()
    result = server.verify(
        "REGISTER", answer(server), T0, CREDENTIALS, request_uri="sip:other", strict_uri=True
    )
    assert result.outcome is AuthOutcome.MALFORMED


def test_strict_uri_comparison_ignores_case_of_scheme_and_host() -> None:
    server = make_server()
    challenge = challenge_for(server, "MD5")
    header = DigestClient("alice", "secret").authorization("INVITE", "sip:Bob@cms.local", challenge)
    ok = server.verify(
        "INVITE", header, T0, CREDENTIALS, request_uri=" <SIP:Bob@CMS.LOCAL>", strict_uri=True
    )
    assert ok.outcome is AuthOutcome.OK
    other_user = server.verify(
        "INVITE", header, T0, CREDENTIALS, request_uri="sip:bob@cms.local", strict_uri=True
    )
    assert other_user.outcome is AuthOutcome.MALFORMED


# --------------------------------------------------------------------------- staleness


def test_expired_nonce_with_correct_password_is_stale() -> None:
    server = make_server(nonce_ttl=300.0)
    result = server.verify("REGISTER", answer(server, now=T0), T0 + 301, CREDENTIALS)
    assert result.outcome is AuthOutcome.STALE
    assert result.username == "alice"


def test_nonce_within_its_ttl_is_not_stale() -> None:
    server = make_server(nonce_ttl=300.0)
    assert server.verify("REGISTER", answer(server, now=T0), T0 + 299, CREDENTIALS).ok


def test_expired_nonce_with_wrong_password_is_bad_credentials() -> None:
    server = make_server(nonce_ttl=300.0)
    header = answer(server, password="guess", now=T0)
    result = server.verify("REGISTER", header, T0 + 301, CREDENTIALS)
    assert result.outcome is AuthOutcome.BAD_CREDENTIALS


def test_nonce_from_far_in_the_future_is_stale() -> None:
    server = make_server(nonce_ttl=300.0)
    result = server.verify("REGISTER", answer(server, now=T0 + 1000), T0, CREDENTIALS)
    assert result.outcome is AuthOutcome.STALE


def test_stale_challenge_carries_stale_true() -> None:
    server = make_server()
    for value in server.challenge(T0, stale=True):
        assert value.endswith(", stale=TRUE")
        assert parse_auth_params(value)[1]["stale"] == "TRUE"
    assert all("stale" not in value for value in server.challenge(T0))


# --------------------------------------------------------------------------- nonce-count


def test_repeated_nonce_count_is_a_replay() -> None:
    server = make_server()
    header = answer(server)
    assert server.verify("REGISTER", header, T0, CREDENTIALS).ok
    assert server.verify("REGISTER", header, T0 + 1, CREDENTIALS).outcome is AuthOutcome.REPLAY


def test_increasing_nonce_count_is_accepted_and_going_back_is_a_replay() -> None:
    server = make_server()
    challenge = challenge_for(server, "MD5")
    client = DigestClient("alice", "secret")
    first, second, third = (client.authorization("REGISTER", URI, challenge) for _ in range(3))
    assert parse_auth_params(third)[1]["nc"] == "00000003"
    assert server.verify("REGISTER", first, T0, CREDENTIALS).ok
    assert server.verify("REGISTER", third, T0, CREDENTIALS).ok  # gaps are allowed
    assert server.verify("REGISTER", second, T0, CREDENTIALS).outcome is AuthOutcome.REPLAY


def test_rejected_attempts_do_not_consume_nonce_counts() -> None:
    server = make_server()
    challenge = challenge_for(server, "MD5")
    bad = DigestClient("alice", "guess").authorization("REGISTER", URI, challenge)
    good = DigestClient("alice", "secret").authorization("REGISTER", URI, challenge)
    assert server.verify("REGISTER", bad, T0, CREDENTIALS).outcome is AuthOutcome.BAD_CREDENTIALS
    assert server.verify("REGISTER", good, T0, CREDENTIALS).ok
    assert server.tracked_nonces == 1


def test_expired_nonces_are_pruned_from_the_nonce_count_table() -> None:
    server = make_server(nonce_ttl=10.0)
    for i in range(5):
        assert server.verify("REGISTER", answer(server, now=T0 + i), T0 + i, CREDENTIALS).ok
    assert server.tracked_nonces == 5
    assert server.verify("REGISTER", answer(server, now=T0 + 30), T0 + 30, CREDENTIALS).ok
    assert server.tracked_nonces == 1


def test_nonce_count_table_is_capped_and_evicted_nonces_become_stale() -> None:
    server = make_server(max_nonces=3)
    clients = [DigestClient("alice", "secret") for _ in range(5)]
    challenges = [challenge_for(server, "MD5", T0 + i) for i in range(5)]
    for i, (client, challenge) in enumerate(zip(clients, challenges, strict=True)):
        header = client.authorization("REGISTER", URI, challenge)
        assert server.verify("REGISTER", header, T0 + i, CREDENTIALS).ok
        assert server.tracked_nonces <= 3
    # The first nonce was evicted: reusing it must not reopen a replay window.
    again = clients[0].authorization("REGISTER", URI, challenges[0])
    assert server.verify("REGISTER", again, T0 + 5, CREDENTIALS).outcome is AuthOutcome.STALE
    # A nonce still tracked keeps working.
    latest = clients[4].authorization("REGISTER", URI, challenges[4])
    assert server.verify("REGISTER", latest, T0 + 5, CREDENTIALS).ok


# --------------------------------------------------------------------------- challenges


def test_challenge_lists_md5_before_sha256_by_default() -> None:
    values = make_server().challenge(T0)
    algorithms = [parse_auth_params(v)[1]["algorithm"] for v in values]
    assert algorithms == ["MD5", "SHA-256"]


def test_challenge_follows_configured_algorithm_order() -> None:
    values = make_server(algorithms=("SHA-256", "MD5")).challenge(T0)
    assert [parse_auth_params(v)[1]["algorithm"] for v in values] == ["SHA-256", "MD5"]


def test_challenge_has_realm_nonce_opaque_and_qop_auth() -> None:
    server = DigestServer('my "realm"', opaque="xyz")
    values = server.challenge(T0)
    assert values[0].startswith('Digest realm="my \\"realm\\"", nonce="')
    scheme, params = parse_auth_params(values[0])
    assert scheme == "Digest"
    assert params["realm"] == 'my "realm"'
    assert params["opaque"] == "xyz"
    assert params["qop"] == "auth"
    assert server.nonce_issued_at(params["nonce"]) == pytest.approx(T0, abs=0.001)


def test_challenge_without_opaque_omits_it() -> None:
    assert "opaque" not in parse_auth_params(make_server().challenge(T0)[0])[1]


def test_every_challenge_has_a_fresh_nonce_shared_by_its_algorithms() -> None:
    server = make_server()
    nonces: list[str] = []
    for _ in range(50):
        per_call = {parse_auth_params(v)[1]["nonce"] for v in server.challenge(T0)}
        assert len(per_call) == 1
        nonces.extend(per_call)
    assert len(set(nonces)) == 50


def test_nonce_is_unpadded_base64url() -> None:
    nonce = make_server().make_nonce(T0)
    assert len(nonce) == 40
    assert set(nonce) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_nonce_mac_is_hmac_sha256_of_the_secret() -> None:
    for secret in (b"k", b"k" * 64, b"k" * 100):
        nonce = DigestServer(REALM, secret=secret).make_nonce(T0)
        raw = base64.urlsafe_b64decode(nonce)
        assert raw[14:] == hmac.digest(secret, raw[:14], "sha256")[:16]


def test_server_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError):
        DigestServer(REALM, algorithms=())
    with pytest.raises(ValueError):
        DigestServer(REALM, algorithms=("SHA-1",))
    with pytest.raises(ValueError):
        DigestServer(REALM, nonce_ttl=0)
    with pytest.raises(ValueError):
        DigestServer(REALM, secret=b"")
    with pytest.raises(ValueError):
        DigestServer("bad\r\nrealm")


# --------------------------------------------------------------------------- parsing


def test_parse_reads_scheme_and_lowercases_names() -> None:
    scheme, params = parse_auth_params('Digest UserName="a", ALGORITHM=MD5')
    assert scheme == "Digest"
    assert params == {"username": "a", "algorithm": "MD5"}


def test_parse_handles_escaped_quotes_and_backslashes() -> None:
    _, params = parse_auth_params(r'Digest username="a \"quoted\" name\\x", realm="r"')
    assert params["username"] == 'a "quoted" name\\x'


def test_parse_keeps_commas_and_equals_inside_quotes() -> None:
    _, params = parse_auth_params('Digest qop="auth, auth-int", uri="sip:a;x=y,z", nc=01')
    assert params == {"qop": "auth, auth-int", "uri": "sip:a;x=y,z", "nc": "01"}


def test_parse_allows_lws_around_equals_and_commas_and_folded_lines() -> None:
    value = 'Digest \t realm = "r" ,\r\n  nonce\t=\t"n"  ,qop=auth  ,  \r\n\tnc =00000001 '
    _, params = parse_auth_params(value)
    assert params == {"realm": "r", "nonce": "n", "qop": "auth", "nc": "00000001"}


def test_parse_accepts_empty_quoted_value_and_empty_list_elements() -> None:
    _, params = parse_auth_params('Digest opaque="", , realm="r",')
    assert params == {"opaque": "", "realm": "r"}


def test_parse_sipp_style_header_without_spaces() -> None:
    value = (
        'Digest username="1001",realm="cms.local",cnonce="6b8b4567",nc=00000001,qop=auth,'
        'uri="sip:127.0.0.1:5060",nonce="abc",response="0123",algorithm=MD5'
    )
    _, params = parse_auth_params(value)
    assert params["username"] == "1001"
    assert params["uri"] == "sip:127.0.0.1:5060"
    assert params["algorithm"] == "MD5"
    assert len(params) == 9


MALFORMED_HEADERS = [
    "",
    "   ",
    "Digest",
    "Digest   ",
    'Digest username="unterminated',
    'Digest username="a", realm="unterminated',
    "Digest username",
    'Digest username"a"',
    "Digest username=",
    "Digest =value",
    'Digest username="a" realm="b"',
    'Digest username="a"x, realm="b"',
    "Digest username=a b",
    'Digest a="1", A="2"',
    'Digest username="a", realm="b", @',
    '"Digest" username="a"',
    "Basic dXNlcjpwYXNz",
    'Digest username="bad escape at end\\"',
]


@pytest.mark.parametrize("value", MALFORMED_HEADERS)
def test_parse_rejects_malformed_header(value: str) -> None:
    with pytest.raises(ValueError):
        parse_auth_params(value)


@pytest.mark.parametrize("value", MALFORMED_HEADERS)
def test_verify_reports_malformed_header_instead_of_raising(value: str) -> None:
    result = make_server().verify("REGISTER", value, T0, CREDENTIALS)
    assert result.outcome is AuthOutcome.MALFORMED


# --------------------------------------------------------------------------- client


def test_client_increments_nc_per_nonce_and_restarts_for_a_new_nonce() -> None:
    server = make_server()
    client = DigestClient("alice", "secret")
    first, second = challenge_for(server, "MD5"), challenge_for(server, "MD5")
    ncs = [parse_auth_params(client.authorization("REGISTER", URI, first))[1]["nc"] for _ in "ab"]
    assert ncs == ["00000001", "00000002"]
    assert parse_auth_params(client.authorization("REGISTER", URI, second))[1]["nc"] == "00000001"


def test_client_uses_a_fresh_cnonce_each_time() -> None:
    challenge = challenge_for(make_server(), "MD5")
    client = DigestClient("alice", "secret")
    cnonces = {parse_auth_params(client.authorization("REGISTER", URI, challenge))[1]["cnonce"]}
    cnonces.add(parse_auth_params(client.authorization("REGISTER", URI, challenge))[1]["cnonce"])
    assert len(cnonces) == 2


def test_client_escapes_quotes_and_backslashes_in_username() -> None:
    server = make_server()
    username = 'we"ird\\user'
    header = answer(server, username=username, password="pw")
    assert 'username="we\\"ird\\\\user"' in header
    lookup = credentials_from_passwords({username: "pw"}.get)
    assert server.verify("REGISTER", header, T0, lookup).ok


def test_client_answers_auth_int_only_challenge_over_the_body() -> None:
    challenge = 'Digest realm="r", nonce="n", qop="auth-int", algorithm=MD5'
    header = DigestClient("u", "p", cnonce_factory=lambda: "c").authorization(
        "MESSAGE", "sip:x", challenge, b"hello"
    )
    _, params = parse_auth_params(header)
    assert params["qop"] == "auth-int"
    expected = digest_response(
        "MD5",
        ha1("u", "r", "p"),
        "n",
        "MESSAGE",
        "sip:x",
        qop="auth-int",
        nc="00000001",
        cnonce="c",
        body=b"hello",
    )
    assert params["response"] == expected


@pytest.mark.parametrize(
    "challenge",
    [
        'Basic realm="r"',
        'Digest nonce="n"',
        'Digest realm="r"',
        'Digest realm="r", nonce="n", algorithm=SHA-512-256',
        'Digest realm="r", nonce="n", qop="auth-conf"',
        'Digest realm="r", nonce="n", algorithm=MD5-sess',
        "Digest realm=",
    ],
)
def test_client_rejects_unusable_challenge(challenge: str) -> None:
    with pytest.raises(ValueError):
        DigestClient("u", "p").authorization("REGISTER", URI, challenge)


def test_pick_challenge_takes_first_supported_by_default() -> None:
    values = [
        'Digest realm="r", nonce="1", algorithm=SHA-512-256, qop="auth"',
        'Digest realm="r", nonce="2", algorithm=MD5, qop="auth"',
        'Digest realm="r", nonce="3", algorithm=SHA-256, qop="auth"',
    ]
    assert pick_challenge(values) == values[1]


def test_pick_challenge_prefers_sha256_when_asked() -> None:
    values = make_server().challenge(T0)
    assert pick_challenge(values, prefer_sha256=True) == values[1]
    assert pick_challenge(values[:1], prefer_sha256=True) == values[0]


def test_pick_challenge_returns_none_when_nothing_is_usable() -> None:
    assert pick_challenge(['Basic realm="r"', "garbage", 'Digest realm="r"']) is None
    assert pick_challenge([]) is None


# --------------------------------------------------------------------------- properties

PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


@settings(max_examples=150, deadline=None)
@given(
    username=st.text(PRINTABLE, min_size=1, max_size=30).map(lambda s: s + '"\\'),
    password=st.text(st.characters(codec="utf-8"), max_size=30),
    realm=st.text(PRINTABLE, min_size=1, max_size=20),
    uri=st.text(PRINTABLE, min_size=1, max_size=40),
    algorithm=st.sampled_from(["MD5", "SHA-256"]),
    prefer_sha256=st.booleans(),
)
def test_client_to_server_verification_succeeds_for_arbitrary_printable_inputs(
    username: str, password: str, realm: str, uri: str, algorithm: str, prefer_sha256: bool
) -> None:
    server = DigestServer(realm, algorithms=(algorithm,))
    challenge = pick_challenge(server.challenge(T0), prefer_sha256=prefer_sha256)
    assert challenge is not None
    header = DigestClient(username, password).authorization("REGISTER", uri, challenge)
    lookup = credentials_from_passwords({username: password}.get)
    result = server.verify("REGISTER", header, T0 + 1, lookup)
    assert result == AuthResult(AuthOutcome.OK, username)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_raises_only_value_error_on_arbitrary_text(value: str) -> None:
    try:
        parse_auth_params(value)
    except ValueError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "username",
                "realm",
                "nonce",
                "uri",
                "response",
                "algorithm",
                "qop",
                "nc",
                "cnonce",
                "opaque",
                "userhash",
            ]
        ),
        st.text(max_size=50),
    )
)
def test_verify_never_raises_on_arbitrary_parameters(params: dict[str, str]) -> None:
    server = make_server()
    params.setdefault("realm", REALM)
    result = server.verify("REGISTER", params, T0, CREDENTIALS)
    assert result.outcome is not AuthOutcome.OK


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_verify_never_raises_on_arbitrary_header_text(value: str) -> None:
    result = make_server().verify("REGISTER", "Digest " + value, T0, CREDENTIALS)
    assert isinstance(result, AuthResult)
    assert result.outcome is not AuthOutcome.OK
