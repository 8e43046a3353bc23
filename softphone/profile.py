"""Soft phone profiles: TOML files under sip_profiles/ (`softphone run --profile PATH`).

```
[softphone]
http = "127.0.0.1:8765"     # local API and web UI (a token is required off loopback)
audio = "device"            # null | wav:IN.wav:OUT.wav | device
sip = "0.0.0.0:0"           # local SIP address (UDP); port 0: any free port
auto_answer = "on_request"  # never | on_request (the CMS asks: click-to-dial) | always

[[accounts]]                # one per connection (CMS); the first is the default
name = "cms"
user = "agent1"
password = "agent1pw"
registrar = "127.0.0.1:5060"

[cms_api]                   # optional: colleagues' presence from the CMS's CTI API
url = "http://127.0.0.1:8080"
user = "agent1"             # default: the first account's user and password
password = "agent1pw"
```
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from softphone.audio.spec import parse_spec

AUTO_ANSWER = ("never", "on_request", "always")


class ProfileError(ValueError):
    """The profile file is missing, not TOML, or has a wrong value."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountProfile:
    """One SIP account (a connection to one CMS, or a peer-to-peer identity)."""

    name: str
    user: str
    password: str = ""
    registrar: str | None = None
    """HOST[:PORT] of the registrar; None: no registration (peer to peer)."""
    domain: str | None = None
    """Domain of the address of record and of dialled names; default: the registrar."""
    auth_user: str | None = None
    display_name: str = ""
    expires: int = 300
    transport: str = "udp"
    outbound_proxy: bool = True
    """Send calls through the registrar (the CMS routes them)."""
    retry_initial: float = 1.0
    retry_max: float = 60.0

    @property
    def dial_domain(self) -> str | None:
        return self.domain or self.registrar

    @property
    def aor(self) -> str:
        """The address of record, `sip:user@domain`."""
        return f"sip:{self.user}@{self.dial_domain}" if self.dial_domain else f"sip:{self.user}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CmsApiProfile:
    """The CMS's CTI API (`[cms_api]`): where the soft phone follows colleagues' presence."""

    url: str
    """Base URL of the CMS's HTTP API, e.g. http://127.0.0.1:8080 (without /api/v1)."""
    user: str
    password: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneProfile:
    """Everything `softphone run` needs besides the command line."""

    http: str = "127.0.0.1:8765"
    audio: str = "device"
    sip: str = "0.0.0.0:0"
    public_address: str | None = None
    rtp_port: int = 0
    """First RTP port to try; 0: pjsua's default range."""
    auto_answer: str = "on_request"
    auto_answer_delay: float = 0.0
    codecs: tuple[str, ...] = ("PCMU/8000", "PCMA/8000", "G722/16000")
    input_device: str | None = None
    output_device: str | None = None
    speaker_volume: float = 1.0
    mic_volume: float = 1.0
    history: Path | None = None
    """Call history file (JSON lines); default under $XDG_DATA_HOME/softphone."""
    history_limit: int = 1000
    api_token: str | None = None
    open_browser: bool = True
    log_level: int = 2
    """pjsip's log level (0..6) passed to Python logging."""
    accounts: tuple[AccountProfile, ...] = field(default_factory=tuple)
    cms_api: CmsApiProfile | None = None
    """Follow colleagues' presence on the CMS (None: no `[cms_api]` table)."""

    @property
    def history_path(self) -> Path:
        if self.history is not None:
            return self.history
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
        return Path(base) / "softphone" / "history.jsonl"


def split_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') to (host, port)."""
    text = value.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ProfileError(f"expected HOST:PORT, got {value!r}")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ProfileError(f"bad port in {value!r}")
    if not host:
        raise ProfileError(f"missing host in {value!r}")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_PHONE_KEYS = {
    "http": str, "audio": str, "sip": str, "public_address": str, "rtp_port": int,
    "auto_answer": str, "auto_answer_delay": float, "codecs": list, "input_device": str,
    "output_device": str, "speaker_volume": float, "mic_volume": float, "history": str,
    "history_limit": int, "api_token": str, "open_browser": bool, "log_level": int,
}
_ACCOUNT_KEYS = {
    "name": str, "user": str, "password": str, "registrar": str, "domain": str,
    "auth_user": str, "display_name": str, "expires": int, "transport": str,
    "outbound_proxy": bool, "retry_initial": float, "retry_max": float,
}
_CMS_API_KEYS: dict[str, type] = {"url": str, "user": str, "password": str}


def _checked(table: dict[str, Any], keys: dict[str, type], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        kind = keys.get(key)
        if kind is None:
            raise ProfileError(f"{where}: unknown key {key!r}")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise ProfileError(f"{where}.{key}: expected {kind.__name__}, got {value!r}")
        out[key] = value
    return out


def _account(table: Any, index: int) -> AccountProfile:
    where = f"accounts[{index}]"
    if not isinstance(table, dict):
        raise ProfileError(f"{where}: expected a table")
    values = _checked(table, _ACCOUNT_KEYS, where)
    if not values.get("user"):
        raise ProfileError(f"{where}: 'user' is required")
    values.setdefault("name", values["user"])
    if values.get("registrar"):
        split_host_port(values["registrar"], default_port=5060)
    else:
        values["registrar"] = None
    if values.get("transport", "udp") not in ("udp", "tcp"):
        raise ProfileError(f"{where}.transport: udp or tcp")
    if values.get("expires", 300) < 10:
        raise ProfileError(f"{where}.expires: at least 10 seconds")
    return AccountProfile(**values)


def parse_profile(data: dict[str, Any], base: Path = Path(".")) -> PhoneProfile:
    """A profile from parsed TOML; relative paths are taken from `base`."""
    unknown = set(data) - {"softphone", "accounts", "cms_api"}
    if unknown:
        raise ProfileError(f"unknown section(s): {', '.join(sorted(unknown))}")
    phone = data.get("softphone", {})
    if not isinstance(phone, dict):
        raise ProfileError("[softphone] must be a table")
    values = _checked(phone, _PHONE_KEYS, "softphone")
    if "codecs" in values:
        if not all(isinstance(c, str) for c in values["codecs"]):
            raise ProfileError("softphone.codecs: a list of strings")
        values["codecs"] = tuple(values["codecs"])
    if "history" in values:
        history = Path(values["history"]).expanduser()
        values["history"] = history if history.is_absolute() else base / history
    if values.get("auto_answer", "on_request") not in AUTO_ANSWER:
        raise ProfileError(f"softphone.auto_answer: one of {', '.join(AUTO_ANSWER)}")
    for key in ("http", "sip"):
        if key in values:
            split_host_port(values[key])
    if "audio" in values:
        try:
            parse_spec(values["audio"])
        except ValueError as exc:
            raise ProfileError(f"softphone.audio: {exc}") from None
    for key in ("speaker_volume", "mic_volume"):
        if not 0.0 <= values.get(key, 1.0) <= 2.0:
            raise ProfileError(f"softphone.{key}: between 0 and 2")
    raw_accounts = data.get("accounts", [])
    if not isinstance(raw_accounts, list):
        raise ProfileError("[[accounts]] must be an array of tables")
    accounts = tuple(_account(table, i) for i, table in enumerate(raw_accounts))
    names = [a.name for a in accounts]
    if len(set(names)) != len(names):
        raise ProfileError("account names must be unique")
    cms_api = _cms_api(data["cms_api"], accounts) if "cms_api" in data else None
    return PhoneProfile(**values, accounts=accounts, cms_api=cms_api)


def _cms_api(table: Any, accounts: tuple[AccountProfile, ...]) -> CmsApiProfile:
    if not isinstance(table, dict):
        raise ProfileError("[cms_api] must be a table")
    values = _checked(table, _CMS_API_KEYS, "cms_api")
    url = values.get("url", "").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ProfileError("cms_api.url: an http:// or https:// URL is required")
    user = values.get("user") or (accounts[0].user if accounts else "")
    if not user:
        raise ProfileError("cms_api.user: required when there is no account")
    password = values.get("password")
    if password is None:
        password = next((a.password for a in accounts if a.user == user), "")
    return CmsApiProfile(url=url, user=user, password=password)


def load_profile(path: Path | None) -> PhoneProfile:
    """Read a profile file; None gives the built-in defaults (no accounts)."""
    if path is None:
        return PhoneProfile()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProfileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: {exc}") from None
    try:
        return parse_profile(data, base=path.resolve().parent)
    except ProfileError as exc:
        raise ProfileError(f"{path}: {exc}") from None
