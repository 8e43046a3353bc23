"""Soft phone profiles (TOML under sip_profiles/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from softphone.profile import (
    ProfileError,
    is_loopback,
    load_profile,
    parse_profile,
    split_host_port,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["softphone.toml", "softphone-p2p.toml"])
def test_the_shipped_profiles_load(name: str) -> None:
    profile = load_profile(REPO / "sip_profiles" / name)

    assert profile.accounts


def test_the_default_profile_registers_agent1_at_the_local_cms() -> None:
    account = load_profile(REPO / "sip_profiles" / "softphone.toml").accounts[0]

    assert (account.user, account.registrar) == ("agent1", "127.0.0.1:5060")
    assert account.aor == "sip:agent1@127.0.0.1:5060"


def test_no_profile_means_built_in_defaults() -> None:
    profile = load_profile(None)

    assert profile.http == "127.0.0.1:8765" and profile.audio == "device"
    assert profile.accounts == ()


def test_account_defaults_and_domain() -> None:
    profile = parse_profile({"accounts": [
        {"user": "agent1", "registrar": "10.0.0.1", "domain": "cms.local"}]})
    account = profile.accounts[0]

    assert account.name == "agent1"
    assert account.aor == "sip:agent1@cms.local"
    assert account.dial_domain == "cms.local"
    assert (account.expires, account.transport, account.outbound_proxy) == (300, "udp", True)


def test_relative_history_paths_are_relative_to_the_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('[softphone]\nhistory = "var/h.jsonl"\n')

    assert load_profile(path).history_path == tmp_path / "var" / "h.jsonl"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"softphone": {"volume": 1}}, "unknown key"),
        ({"softphone": {"speaker_volume": 3.0}}, "between 0 and 2"),
        ({"softphone": {"audio": "alsa"}}, "audio"),
        ({"softphone": {"auto_answer": "maybe"}}, "auto_answer"),
        ({"softphone": {"http": "localhost"}}, "HOST:PORT"),
        ({"softphone": {"rtp_port": True}}, "expected int"),
        ({"accounts": [{"password": "x"}]}, "'user' is required"),
        ({"accounts": [{"user": "a", "transport": "sctp"}]}, "udp or tcp"),
        ({"accounts": [{"user": "a"}, {"user": "a"}]}, "unique"),
        ({"phones": {}}, "unknown section"),
    ],
)
def test_wrong_values_are_reported_with_their_place(data: dict, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        parse_profile(data)


def test_unreadable_or_broken_files_are_profile_errors(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[softphone\n")
    with pytest.raises(ProfileError, match="broken.toml"):
        load_profile(broken)


def test_host_port_parsing() -> None:
    assert split_host_port("127.0.0.1:5060") == ("127.0.0.1", 5060)
    assert split_host_port("[::1]:8080") == ("::1", 8080)
    assert split_host_port("cms.local", default_port=5060) == ("cms.local", 5060)
    with pytest.raises(ProfileError):
        split_host_port("host:99999")


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


def test_cms_api_defaults_to_the_first_account_credentials() -> None:
    profile = parse_profile({
        "accounts": [{"user": "agent1", "password": "pw1", "registrar": "127.0.0.1"}],
        "cms_api": {"url": "http://127.0.0.1:8080/"},
    })

    assert profile.cms_api is not None
    assert (profile.cms_api.url, profile.cms_api.user, profile.cms_api.password) == (
        "http://127.0.0.1:8080", "agent1", "pw1")
    assert parse_profile({}).cms_api is None


@pytest.mark.parametrize(("table", "message"), [
    ({"url": "127.0.0.1:8080"}, "cms_api.url"),
    ({"url": "http://h", "port": 1}, "unknown key"),
    ({"url": "http://h"}, "cms_api.user"),
])
def test_bad_cms_api_tables_are_reported(table: dict, message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        parse_profile({"cms_api": table})
