"""ACD settings: immutable dataclasses built from the TOML configuration plus defaults.

`cms.config` owns the file format; this module reads the keys it knows today
(`Queue.name/number/strategy/ring_timeout/wrap_up`, `User.name/extension/
queues/auto_logon`, work centres) and the ACD keys it may gain later
(`Queue.max_wait`, `overflow`, ...; an `[acd]` table; `[[menus]]`) by
attribute name, with defaults, so a new key in `cms.config` takes effect here
without a change. Tests and embedders may also build `AcdSettings` directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar

from cms.config import Config, ConfigError

__all__ = [
    "AcdSettings",
    "AgentSettings",
    "EmptyRule",
    "MenuSettings",
    "QueueSettings",
    "Strategy",
    "WorkCentreSettings",
    "build_settings",
]

E = TypeVar("E", bound=Enum)


class Strategy(Enum):
    """How a queue picks among its ready agents."""

    LONGEST_IDLE = "longest-idle"
    ROUND_ROBIN = "round-robin"
    RING_ALL = "ring-all"
    FEWEST_CALLS = "fewest-calls"
    LINEAR = "linear"


class EmptyRule(Enum):
    """What a queue does with callers while none of its members is logged on."""

    WAIT = "wait"  # keep them waiting (max_wait still applies)
    OVERFLOW = "overflow"  # send them to the overflow target at once


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSettings:
    """One queue. `overflow` is a queue or menu (name or number), another number, or empty.

    An empty `overflow` plays `overflow_announcement` (if any) and hangs up.
    `members` orders agents for `linear` and `round-robin` (users listing the
    queue in their own `queues` follow, in config order); a lower `penalties`
    value is tried first under every strategy.
    """

    name: str
    number: str = ""
    strategy: Strategy = Strategy.LONGEST_IDLE
    ring_timeout: float = 15.0
    wrap_up: float = 10.0
    max_wait: float = 0.0  # seconds; 0 = no limit
    when_empty: EmptyRule = EmptyRule.WAIT
    overflow: str = ""
    overflow_announcement: str = ""
    max_no_answer: int = 3  # consecutive misses before not_ready(no_answer); 0 = never
    priority: int = 0  # default priority of its callers; higher is served first
    members: tuple[str, ...] = ()
    penalties: Mapping[str, int] = field(default_factory=dict)
    announce_position: float = 0.0  # seconds between position announcements; 0 = never
    announce_position_first: float = 3.0  # seconds after joining for the first one


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSettings:
    """A user who may log on as an agent; its own device is its account name."""

    name: str
    extension: str = ""
    queues: tuple[str, ...] = ()
    auto_logon: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkCentreSettings:
    """A desk phone for free seating; its device is its account name."""

    name: str
    extension: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MenuSettings:
    """An entry menu: play `announcement`, then an RFC 4733 digit picks a queue.

    No valid digit within `timeout` (counted from the start of the
    announcement) replays it, at most `retries` times; then the caller goes to
    `default` (a queue) or, without one, is hung up after `goodbye`.
    """

    name: str
    number: str = ""
    announcement: str = ""
    choices: Mapping[str, str] = field(default_factory=dict)  # digit -> queue name or number
    timeout: float = 8.0
    retries: int = 2
    default: str = ""
    goodbye: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AcdSettings:
    """Everything the ACD needs; `build_settings` makes it from a `Config`."""

    agents: tuple[AgentSettings, ...] = ()
    work_centres: tuple[WorkCentreSettings, ...] = ()
    queues: tuple[QueueSettings, ...] = ()
    menus: tuple[MenuSettings, ...] = ()
    # A call with no end reported after this long is reclaimed (a lost BYE).
    max_call_duration: float = 4 * 3600.0
    # Length of a wrap-up the agent asks for outside a queue call.
    manual_wrap_up: float = 60.0
    no_answer_reason: str = "no_answer"

    def __post_init__(self) -> None:
        _validate(self)


# ---------------------------------------------------------------------------
# Building from cms.config


def build_settings(config: Config) -> AcdSettings:
    """ACD settings from the configuration, with defaults for keys it does not have yet."""
    agents = tuple(
        AgentSettings(
            name=u.name,
            extension=u.extension,
            queues=tuple(u.queues),
            auto_logon=_bool(u, "auto_logon", True, f"user {u.name!r}"),
        )
        for u in config.users
    )
    centres = tuple(WorkCentreSettings(name=w.name, extension=w.extension)
                    for w in config.work_centres)
    queues = tuple(_queue(q) for q in config.queues)
    menus = tuple(_menu(m) for m in _seq(getattr(config, "menus", ()), "[[menus]]"))
    acd = getattr(config, "acd", None)
    where = "[acd]"
    return AcdSettings(
        agents=agents,
        work_centres=centres,
        queues=queues,
        menus=menus,
        max_call_duration=_float(acd, "max_call_duration", 4 * 3600.0, where),
        manual_wrap_up=_float(acd, "manual_wrap_up", 60.0, where),
        no_answer_reason=_str(acd, "no_answer_reason", "no_answer", where),
    )


def _queue(q: Any) -> QueueSettings:
    where = f"queue {getattr(q, 'name', '?')!r}"
    return QueueSettings(
        name=_str(q, "name", "", where),
        number=_str(q, "number", "", where),
        strategy=_enum(Strategy, _str(q, "strategy", "longest-idle", where), where),
        ring_timeout=_float(q, "ring_timeout", 15.0, where),
        wrap_up=_float(q, "wrap_up", 10.0, where),
        max_wait=_float(q, "max_wait", 0.0, where),
        when_empty=_enum(EmptyRule, _str(q, "when_empty", "wait", where), where),
        overflow=_str(q, "overflow", "", where),
        overflow_announcement=_str(q, "overflow_announcement", "", where),
        max_no_answer=_int(q, "max_no_answer", 3, where),
        priority=_int(q, "priority", 0, where),
        members=_strs(q, "members", where),
        penalties={k: _as_int(v, f"{where} penalties.{k}")
                   for k, v in _mapping(q, "penalties", where).items()},
        announce_position=_float(q, "announce_position", 0.0, where),
        announce_position_first=_float(q, "announce_position_first", 3.0, where),
    )


def _menu(m: Any) -> MenuSettings:
    where = f"menu {_str(m, 'name', '?', '[[menus]]')!r}"
    return MenuSettings(
        name=_str(m, "name", "", where),
        number=_str(m, "number", "", where),
        announcement=_str(m, "announcement", "", where),
        choices={str(k): _as_str(v, f"{where} choices.{k}")
                 for k, v in _mapping(m, "choices", where).items()},
        timeout=_float(m, "timeout", 8.0, where),
        retries=_int(m, "retries", 2, where),
        default=_str(m, "default", "", where),
        goodbye=_str(m, "goodbye", "", where),
    )


def _get(obj: Any, key: str) -> Any:
    # Config tables arrive as dataclasses today; accept plain dicts too (e.g. a future [acd]).
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _seq(value: Any, where: str) -> tuple[Any, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: expected an array of tables")
    return tuple(value)


def _str(obj: Any, key: str, default: str, where: str) -> str:
    value = _get(obj, key)
    return default if value is None else _as_str(value, f"{where}: {key}")


def _as_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string")
    return value


def _float(obj: Any, key: str, default: float, where: str) -> float:
    value = _get(obj, key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: {key} must be a number")
    return float(value)


def _int(obj: Any, key: str, default: int, where: str) -> int:
    value = _get(obj, key)
    return default if value is None else _as_int(value, f"{where}: {key}")


def _as_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer")
    return value


def _bool(obj: Any, key: str, default: bool, where: str) -> bool:
    value = _get(obj, key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false")
    return value


def _strs(obj: Any, key: str, where: str) -> tuple[str, ...]:
    value = _get(obj, key)
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: {key} must be an array of strings")
    return tuple(_as_str(v, f"{where}: {key}") for v in value)


def _mapping(obj: Any, key: str, where: str) -> Mapping[Any, Any]:
    value = _get(obj, key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: {key} must be a table")
    return value


def _enum(cls: type[E], value: str, where: str) -> E:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise ConfigError(f"{where}: {value!r} is not one of {allowed}") from None


# ---------------------------------------------------------------------------
# Validation (also for settings built directly)


def _validate(s: AcdSettings) -> None:
    users = {a.name for a in s.agents}
    targets: dict[str, str] = {}  # queue/menu name or number -> what claims it
    for kind, name, number in [("queue", q.name, q.number) for q in s.queues] + [
        ("menu", m.name, m.number) for m in s.menus
    ]:
        if not name:
            raise ConfigError(f"a {kind} needs a name")
        for key in (name, number):
            if key and key in targets and targets[key] != f"{kind} {name!r}":
                raise ConfigError(f"{kind} {name!r}: {key!r} is also used by {targets[key]}")
            if key:
                targets[key] = f"{kind} {name!r}"
    queue_keys = {k for q in s.queues for k in (q.name, q.number) if k}
    for q in s.queues:
        where = f"queue {q.name!r}"
        if q.ring_timeout <= 0:
            raise ConfigError(f"{where}: ring_timeout must be positive")
        if q.wrap_up < 0 or q.max_wait < 0 or q.max_no_answer < 0:
            raise ConfigError(f"{where}: wrap_up, max_wait and max_no_answer must not be negative")
        unknown = (set(q.members) | set(q.penalties)) - users
        if unknown:
            raise ConfigError(f"{where}: unknown member(s) {sorted(unknown)}")
    for a in s.agents:
        missing = set(a.queues) - {q.name for q in s.queues}
        if missing:
            raise ConfigError(f"user {a.name!r}: unknown queue(s) {sorted(missing)}")
    for m in s.menus:
        where = f"menu {m.name!r}"
        if m.timeout <= 0 or m.retries < 0:
            raise ConfigError(f"{where}: timeout must be positive and retries not negative")
        for digit, target in m.choices.items():
            if len(digit) != 1 or digit not in "0123456789*#ABCD":
                raise ConfigError(f"{where}: {digit!r} is not a DTMF digit")
            if target not in queue_keys:
                raise ConfigError(f"{where}: choice {digit} names unknown queue {target!r}")
        if m.default and m.default not in queue_keys:
            raise ConfigError(f"{where}: default names unknown queue {m.default!r}")
    if s.max_call_duration <= 0 or s.manual_wrap_up <= 0:
        raise ConfigError("[acd]: max_call_duration and manual_wrap_up must be positive")
