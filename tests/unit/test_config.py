"""The TOML configuration contract (DESIGN.md §5) and its validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from cms.config import ConfigError, load_config, parse_config, split_hostport

ROOT = Path(__file__).resolve().parents[2]


def test_default_profile_loads() -> None:
    config = load_config(ROOT / "sip_profiles" / "default.toml")
    assert config.cms.realm == "cms.local"
    assert {u.name for u in config.users} >= {"agent1", "agent2", "agent3"}
    assert {q.name for q in config.queues} >= {"sales"}
    assert all(w.password for w in config.work_centres)


def test_contract_keys_are_read() -> None:
    config = parse_config({
        "cms": {"sip": "0.0.0.0:5070", "http": "127.0.0.1:8081", "data_dir": "d", "realm": "r"},
        "users": [{"name": "a1", "password": "p", "extension": "1001", "queues": ["sales"],
                   "role": "agent", "auto_logon": False}],
        "work_centres": [{"name": "desk-12", "extension": "2012"}],
        "queues": [{"name": "sales", "number": "600", "strategy": "round-robin",
                    "ring_timeout": 12, "wrap_up": 5, "penalties": {"a1": 2}}],
        "menus": [{"name": "main", "number": "500", "choices": {"1": "sales"}}],
        "acd": {"max_call_duration": 600},
    })
    assert parse_config({"cms": {"api_keys": {"k1": "crm"}}}).cms.api_keys == {"k1": "crm"}
    assert config.cms.sip == "0.0.0.0:5070"
    assert config.users[0].queues == ("sales",) and not config.users[0].auto_logon
    assert config.queues[0].penalties == {"a1": 2}
    assert config.menus[0].choices == {"1": "sales"}
    assert config.acd.max_call_duration == 600


@pytest.mark.parametrize("data, message", [
    ({"cms": {"sipp": "x"}}, "unknown key"),
    ({"users": [{"name": "a", "password": "p", "role": "boss"}]}, "role"),
    ({"queues": [{"name": "q", "strategy": "random"}]}, "strategy"),
    ({"users": [{"name": "a", "password": "p", "queues": ["nope"]}]}, "unknown queue"),
    ({"users": [{"name": "a", "password": "p", "extension": "1"},
                {"name": "b", "password": "p", "extension": "1"}]}, "used twice"),
    ({"users": [{"name": "a"}]}, "password"),
    ({"trunks": []}, "unknown top-level"),
    ({"cms": {"trusted_sources": ["10.0.0.0/99"]}}, "trusted_sources"),
    ({"cms": {"rtp_ports": [30000, 20000]}}, "rtp_ports"),
])
def test_invalid_configuration_is_refused_with_a_clear_message(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[cms\n")
    with pytest.raises(ConfigError):
        load_config(bad)


def test_split_hostport() -> None:
    assert split_hostport("127.0.0.1:0", 5060) == ("127.0.0.1", 0)
    assert split_hostport("[::1]:5070", 5060) == ("::1", 5070)
    assert split_hostport("example.com", 5060) == ("example.com", 5060)
    with pytest.raises(ConfigError):
        split_hostport("host:99999", 5060)
