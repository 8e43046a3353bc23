"""Cryptographic random bytes drawn from the OS in blocks, not one syscall per use.

Tags, branches and nonces need unpredictable bits thousands of times a second;
one `os.urandom` call per 8 KiB keeps that off the hot path.
"""

from __future__ import annotations

import os

_BLOCK = 8192


class RandomPool:
    """Hands out slices of OS randomness, refilling in blocks."""

    __slots__ = ("_block", "_offset")

    def __init__(self) -> None:
        self._block = b""
        self._offset = 0

    def take(self, size: int) -> bytes:
        """`size` fresh random bytes (never handed out twice)."""
        offset = self._offset
        if offset + size > len(self._block):
            self._block = os.urandom(max(_BLOCK, size))
            offset = 0
        self._offset = offset + size
        return self._block[offset : offset + size]


_pool = RandomPool()
random_bytes = _pool.take


def random_hex(size: int) -> str:
    """`size` random bytes as lowercase hex."""
    return _pool.take(size).hex()
