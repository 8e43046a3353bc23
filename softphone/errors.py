"""Errors a soft phone command can end in; the local API turns them into 4xx JSON."""

from __future__ import annotations


class PhoneError(Exception):
    """A command failed for a reason the caller can act on."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadRequest(PhoneError):
    """The command's arguments are wrong (a malformed number, an unknown setting)."""


class NotFound(PhoneError):
    status = 404
    code = "not_found"


class Conflict(PhoneError):
    """The command does not fit the call's state (answer an established call, ...)."""

    status = 409
    code = "invalid_state"


class Unavailable(PhoneError):
    """The SIP stack cannot do it right now (stopped, no account, transport failure)."""

    status = 503
    code = "unavailable"
