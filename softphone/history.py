"""Call history on disk: one JSON object per ended call, appended to a JSON-lines file."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("softphone.history")


class CallHistory:
    """The last `limit` calls, newest last in the file; survives restarts."""

    def __init__(self, path: Path, limit: int = 1000) -> None:
        self.path = path
        self.limit = max(1, limit)
        self._count: int | None = None

    def record(self, entry: dict[str, Any]) -> None:
        """Append one ended call (already JSON-ready)."""
        line = json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            log.error("cannot write call history %s: %s", self.path, exc)
            return
        self._count = (self._count if self._count is not None else self._lines()) + 1
        if self._count > 2 * self.limit:
            self._trim()

    def recent(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Ended calls, newest first (at most `limit`)."""
        entries: list[dict[str, Any]] = []
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.error("cannot read call history %s: %s", self.path, exc)
            return []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash: skip it
            if isinstance(entry, dict):
                entries.append(entry)
        entries.reverse()
        return entries[: limit or self.limit]

    def _lines(self) -> int:
        try:
            with self.path.open("rb") as source:
                return sum(1 for _ in source)
        except OSError:
            return 0

    def _trim(self) -> None:
        keep = list(reversed(self.recent(self.limit)))
        temporary = self.path.with_suffix(self.path.suffix + ".tmp")
        with temporary.open("w", encoding="utf-8") as out:
            for entry in keep:
                out.write(json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n")
        os.replace(temporary, self.path)
        self._count = len(keep)
