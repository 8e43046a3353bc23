"""ACD errors."""

from __future__ import annotations

__all__ = ["AcdError"]


class AcdError(ValueError):
    """A request the ACD refuses (unknown user, device in use, state not allowed now).

    The CTI layer answers it with a 4xx; B2BUA reports that arrive late or
    twice (network races) never raise, they are answered or ignored.
    """
