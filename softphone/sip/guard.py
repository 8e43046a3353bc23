"""Exceptions raised inside pjsua2 callbacks must never vanish (nor unwind into C++)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

log = logging.getLogger("softphone.sip")

F = TypeVar("F", bound=Callable[..., Any])


class ErrorSink(Protocol):
    def report_error(self, where: str, exc: BaseException) -> None: ...


def guarded(method: F) -> F:
    """Wrap a pjsua2 callback: an exception is logged and reported, never propagated.

    An exception escaping a SWIG director method becomes a C++ exception inside PJSIP,
    which at best loses it and at worst aborts the process. `self` must have
    `report_error(where, exc)` (the user agent, or an object that forwards to it).
    """

    @functools.wraps(method)
    def wrapper(self: ErrorSink, *args: Any) -> Any:
        try:
            return method(self, *args)
        except BaseException as exc:  # noqa: BLE001 - everything, see the docstring
            where = f"{type(self).__name__}.{method.__name__}"
            try:
                self.report_error(where, exc)
            except BaseException:
                log.exception("reporting an error from %s failed", where)
            return None

    return wrapper  # type: ignore[return-value]
