"""The location service: contacts bound to each address of record, with expiry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class Binding:
    """One contact of an address of record; `expires_at` is wall-clock seconds."""

    aor: str
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    q: float | None = None
    source: str = ""
    user_agent: str = ""
    instance: str | None = None

    def remaining(self, now: float) -> int:
        """Whole seconds until expiry (never negative)."""
        return max(0, int(self.expires_at - now + 0.5))


@dataclass(frozen=True, slots=True)
class BindingChange:
    """What a REGISTER changed, for the store: bindings set and contacts removed."""

    aor: str
    upserted: tuple[tuple[str, Binding], ...] = ()  # (contact key, binding)
    removed: tuple[str, ...] = ()  # contact keys


@dataclass(slots=True)
class BindingTable:
    """Bindings by AOR, keyed within an AOR by the contact's comparison key."""

    by_aor: dict[str, dict[str, Binding]] = field(default_factory=dict)

    def contacts(self, aor: str, now: float) -> list[Binding]:
        """Live bindings of an AOR, highest q first."""
        entries = self.by_aor.get(aor)
        if not entries:
            return []
        live = [b for b in entries.values() if b.expires_at > now]
        if len(live) != len(entries):
            for key, binding in list(entries.items()):
                if binding.expires_at <= now:
                    del entries[key]
            if not entries:
                del self.by_aor[aor]
        if len(live) > 1:
            live.sort(key=lambda b: -(b.q if b.q is not None else 1.0))
        return live

    def get(self, aor: str, key: str) -> Binding | None:
        """The binding of one contact key, live or not."""
        entries = self.by_aor.get(aor)
        return entries.get(key) if entries else None

    def put(self, key: str, binding: Binding) -> None:
        """Insert or replace a binding."""
        self.by_aor.setdefault(binding.aor, {})[key] = binding

    def remove(self, aor: str, key: str) -> None:
        """Remove a binding if present."""
        entries = self.by_aor.get(aor)
        if entries is not None:
            entries.pop(key, None)
            if not entries:
                del self.by_aor[aor]

    def remove_all(self, aor: str) -> list[str]:
        """Remove every binding of an AOR; return their contact keys."""
        entries = self.by_aor.pop(aor, None)
        return list(entries) if entries else []

    def count(self, aor: str) -> int:
        """Number of bindings (live or not yet swept) of an AOR."""
        entries = self.by_aor.get(aor)
        return len(entries) if entries else 0

    def __iter__(self) -> Iterator[tuple[str, Binding]]:
        for entries in self.by_aor.values():
            yield from entries.items()

    def expire(self, now: float) -> list[tuple[str, str]]:
        """Drop expired bindings everywhere; return (aor, key) pairs removed."""
        gone: list[tuple[str, str]] = []
        for aor in list(self.by_aor):
            entries = self.by_aor[aor]
            for key, binding in list(entries.items()):
                if binding.expires_at <= now:
                    del entries[key]
                    gone.append((aor, key))
            if not entries:
                del self.by_aor[aor]
        return gone
