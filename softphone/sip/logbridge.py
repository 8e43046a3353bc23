"""pjsip's log into Python logging, and silence for what it prints before it is configured."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import pjsua2 as pj

log = logging.getLogger("softphone.pjsip")

_LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING}


class LogBridge(pj.LogWriter):  # type: ignore[misc]
    """Forwards pjsip log lines (level 1 error, 2 warning, 3.. debug) to `softphone.pjsip`.

    Keep it referenced until after `libDestroy`: pjsip logs while shutting down.
    """

    def write(self, entry: Any) -> None:
        try:
            log.log(_LEVELS.get(int(entry.level), logging.DEBUG), "%s", str(entry.msg).rstrip())
        except BaseException:  # noqa: BLE001 - never unwind into pjsip
            pass


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Hide what pjlib writes to fd 1 before logging is configured (`libCreate`)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
