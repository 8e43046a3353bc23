"""Secrets kept in the data directory, so that nonces stay valid across restarts."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_secret(path: Path, size: int = 32) -> bytes:
    """Read a secret file, creating it (mode 0600) with random bytes when absent."""
    try:
        data = path.read_bytes()
        if len(data) >= 16:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return data
