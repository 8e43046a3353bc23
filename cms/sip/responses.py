"""Building responses to requests (RFC 3261 §8.2.6)."""

from __future__ import annotations

import re

from .message import Headers, Request, Response
from .randomness import random_hex

_HAS_TAG = re.compile(r";\s*tag\s*=", re.I)


def new_tag() -> str:
    """A random To/From tag (RFC 3261 §19.3: at least 32 bits of randomness)."""
    return random_hex(6)


def make_response(
    request: Request,
    status: int,
    reason: str = "",
    to_tag: str | None = None,
    headers: Headers | None = None,
    body: bytes = b"",
) -> Response:
    """A response copying Via, From, To, Call-ID and CSeq from the request.

    A To tag is added to a final or dialog-creating response when the request
    had none (`to_tag` chooses it; otherwise a random one); 100 Trying never
    gets one.
    """
    source = request.headers
    out = Headers()
    # Unrolled and without get(): this runs for every response of a busy registrar.
    if "via" in source:
        out["via"] = source["via"][:]
    if "from" in source:
        out["from"] = source["from"][:]
    to_values = source.get("to")
    if to_values is not None:
        to = to_values[0]
        if status > 100 and not _HAS_TAG.search(to):
            to = f"{to};tag={to_tag or new_tag()}"
        out["to"] = [to, *to_values[1:]]
    if "call-id" in source:
        out["call-id"] = source["call-id"][:]
    if "cseq" in source:
        out["cseq"] = source["cseq"][:]
    if headers:
        for name, values in headers.items():
            out[name] = values[:]
    return Response(status, reason, out, body)
