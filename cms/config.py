"""The TOML configuration under sip_profiles/ (contract: DESIGN.md §5), as dataclasses."""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STRATEGIES = ("longest-idle", "round-robin", "ring-all", "fewest-calls", "linear")
ROLES = ("agent", "supervisor")


class ConfigError(ValueError):
    """The configuration file is invalid; the message says where."""


@dataclass(frozen=True, slots=True)
class CmsSettings:
    """The [cms] table: listen addresses, data directory, SIP realm and timers."""

    sip: str = "0.0.0.0:5060"
    http: str = "127.0.0.1:8080"
    data_dir: str = "var"
    realm: str = "cms.local"
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    max_contacts: int = 10
    digest_algorithms: tuple[str, ...] = ("MD5", "SHA-256")
    # User-Agent substrings of clients that fail when offered more than the first algorithm.
    single_challenge_user_agents: tuple[str, ...] = ("baresip",)
    nonce_ttl: float = 300.0
    tcp_idle_timeout: float = 600.0
    # Call sources (trunks, test generators) whose INVITEs need no digest authentication.
    trusted_sources: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # RTP ports for anchored media (even port per leg).
    rtp_ports: tuple[int, ...] = (20000, 29999)
    # CTI: API keys for CRM server integrations (key -> integration name), token lifetime.
    api_keys: dict[str, str] = field(default_factory=dict)
    session_ttl: float = 8 * 3600.0
    # Interaction log: national numbers (0...) become E.164 with this country code ("49");
    # "" keeps them unnormalised.
    country_code: str = ""
    # CTI webhooks: first retry after webhook_retry_base s, doubling up to webhook_retry_cap,
    # jittered; a subscription failing for webhook_give_up_after s (or webhook_max_attempts
    # attempts in a row, 0 = no count limit) ends. webhook_timeout: s per POST.
    webhook_retry_base: float = 1.0
    webhook_retry_cap: float = 60.0
    webhook_give_up_after: float = 600.0
    webhook_max_attempts: int = 0
    webhook_timeout: float = 10.0
    webhook_batch: int = 100
    # Spoken prompts (position announcements; announcements named without a path), relative
    # to the config file's directory.
    sounds: str = "sounds"
    # Seconds a direct call, click-to-dial or transfer target rings before the CMS gives up
    # (queue offers use their queue's ring_timeout).
    ring_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class User:
    """An agent or supervisor; `name` is the CRM user name and the SIP user."""

    name: str
    password: str
    extension: str = ""
    queues: tuple[str, ...] = ()
    role: str = "agent"
    auto_logon: bool = True


@dataclass(frozen=True, slots=True)
class WorkCentre:
    """A desk (free seating): its extension registers a desk phone."""

    name: str
    extension: str
    password: str = ""


@dataclass(frozen=True, slots=True)
class Queue:
    """An ACD queue reached by its number or name."""

    name: str
    number: str = ""
    strategy: str = "longest-idle"
    ring_timeout: float = 15.0
    wrap_up: float = 10.0
    max_wait: float = 0.0  # seconds before overflow; 0 = no limit
    when_empty: str = "wait"  # or "overflow": while no member is logged on
    overflow: str = ""  # queue or menu (name or number), or an outside number
    overflow_announcement: str = ""
    max_no_answer: int = 3  # consecutive misses before not_ready(no_answer); 0 = never
    priority: int = 0
    members: tuple[str, ...] = ()  # ordered, for linear and round-robin
    penalties: dict[str, int] = field(default_factory=dict)
    announce_position: float = 0.0  # seconds between "you are caller number N"; 0 = never
    announce_position_first: float = 3.0  # seconds after joining for the first one
    hold_music: str = ""  # a WAV (path, or a name in the sounds directory); "" = generated


@dataclass(frozen=True, slots=True)
class Menu:
    """An entry menu: an announcement, then an RFC 4733 digit picks a queue."""

    name: str
    number: str = ""
    announcement: str = ""
    choices: dict[str, str] = field(default_factory=dict)  # digit -> queue
    timeout: float = 8.0
    retries: int = 2
    default: str = ""
    goodbye: str = ""


@dataclass(frozen=True, slots=True)
class AcdTable:
    """The [acd] table: limits that reclaim stuck agents."""

    max_call_duration: float = 4 * 3600.0
    manual_wrap_up: float = 60.0
    no_answer_reason: str = "no_answer"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration."""

    cms: CmsSettings = field(default_factory=CmsSettings)
    users: tuple[User, ...] = ()
    work_centres: tuple[WorkCentre, ...] = ()
    queues: tuple[Queue, ...] = ()
    menus: tuple[Menu, ...] = ()
    acd: AcdTable = field(default_factory=AcdTable)
    source: str = ""

    def sounds_dir(self) -> Path:
        """Where the spoken prompts are: `[cms] sounds`, relative to the config file."""
        sounds = Path(self.cms.sounds)
        if sounds.is_absolute() or not self.source:
            return sounds
        return Path(self.source).parent / sounds


def _build(cls: Any, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    known = set(cls.__dataclass_fields__)
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    values = {}
    for key, value in table.items():
        if isinstance(value, list):
            value = tuple(value)
        values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_config(data: dict[str, Any], source: str = "") -> Config:
    """Validate a decoded TOML document and build the configuration."""
    cms = _build(CmsSettings, data.get("cms", {}), "[cms]")
    users = tuple(
        _build(User, t, f"[[users]] #{i + 1}") for i, t in enumerate(data.get("users", []))
    )
    centres = tuple(
        _build(WorkCentre, t, f"[[work_centres]] #{i + 1}")
        for i, t in enumerate(data.get("work_centres", []))
    )
    queues = tuple(
        _build(Queue, t, f"[[queues]] #{i + 1}") for i, t in enumerate(data.get("queues", []))
    )
    menus = tuple(
        _build(Menu, t, f"[[menus]] #{i + 1}") for i, t in enumerate(data.get("menus", []))
    )
    acd = _build(AcdTable, data.get("acd", {}), "[acd]")
    extra = set(data) - {"cms", "users", "work_centres", "queues", "menus", "acd"}
    config = Config(cms, users, centres, queues, menus, acd, source)
    _check(config, extra)
    return config


def _check(config: Config, extra: set[str]) -> None:
    names: set[str] = set()
    extensions: set[str] = set()
    for user in config.users:
        if not user.name or not user.password:
            raise ConfigError(f"user {user.name!r}: name and password are required")
        if user.role not in ROLES:
            raise ConfigError(f"user {user.name!r}: role must be one of {ROLES}")
        for key in (user.name, user.extension):
            if key and (key in names or key in extensions):
                raise ConfigError(f"user {user.name!r}: {key!r} is used twice")
        names.add(user.name)
        if user.extension:
            extensions.add(user.extension)
    for centre in config.work_centres:
        for key in (centre.name, centre.extension):
            if key in names or key in extensions:
                raise ConfigError(f"work centre {centre.name!r}: {key!r} is used twice")
        names.add(centre.name)
        extensions.add(centre.extension)
    queue_names = {q.name for q in config.queues}
    for queue in config.queues:
        if queue.strategy not in STRATEGIES:
            raise ConfigError(f"queue {queue.name!r}: strategy must be one of {STRATEGIES}")
    for user in config.users:
        missing = set(user.queues) - queue_names
        if missing:
            raise ConfigError(f"user {user.name!r}: unknown queue(s) {sorted(missing)}")
    for algorithm in config.cms.digest_algorithms:
        if algorithm not in ("MD5", "SHA-256"):
            raise ConfigError(f"[cms] digest_algorithms: unsupported {algorithm!r}")
    for source in config.cms.trusted_sources:
        try:
            ipaddress.ip_network(source, strict=False)
        except ValueError:
            raise ConfigError(f"[cms] trusted_sources: bad network {source!r}") from None
    if config.cms.session_ttl <= 0:
        raise ConfigError("[cms] session_ttl must be positive")
    ports = config.cms.rtp_ports
    if len(ports) != 2 or not 1024 <= ports[0] < ports[1] <= 65535:
        raise ConfigError("[cms] rtp_ports: expected [first, last] within 1024-65535")
    if extra:
        raise ConfigError(f"unknown top-level table(s) {', '.join(sorted(extra))}")


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML configuration file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return parse_config(data, str(path))


def split_hostport(text: str, default_port: int) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [addr]:port); a missing port gives `default_port`."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not port:
        return host or "0.0.0.0", default_port
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"bad port in {text!r}")
    return host or "0.0.0.0", int(port)
