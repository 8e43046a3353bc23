"""Errors of the SIP core: the peer's fault (answer it) versus ours (a bug)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .message import Request


class SipError(Exception):
    """Base class of every error raised by the SIP core."""


class RemoteProtocolError(SipError):
    """The peer sent something we cannot accept; `status` is the response to send.

    `status` is 0 when no response may be sent (a malformed response, or a request
    so broken that a response cannot be addressed): the message is dropped.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

    @property
    def reason(self) -> str:
        """Reason phrase for the status line of the error response."""
        return f"Bad Request ({self.args[0]})" if self.status == 400 else ""


class ParseError(RemoteProtocolError):
    """A message that could not be parsed; `partial` holds what was read of a request.

    A server answers `status` when `partial` has the headers a response needs
    (see `cms.sip.validate.can_answer`); otherwise it drops the message.
    """

    def __init__(self, message: str, status: int = 400, partial: Request | None = None) -> None:
        super().__init__(message, status)
        self.partial = partial


class LocalProtocolError(SipError):
    """We tried to do something the protocol does not allow."""
