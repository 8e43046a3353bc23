"""The Replaces header (RFC 3891): which dialog an INVITE takes over.

It arrives on its own in an INVITE, or escaped in the headers of a REFER's
Refer-To URI (`<sip:b@host?Replaces=callid%3Bto-tag%3Dx%3Bfrom-tag%3Dy>`, the
attended transfer of RFC 5589), which the transferee copies into its INVITE.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from .errors import ParseError
from .headers import Uri, parse_params


@dataclass(frozen=True, slots=True, kw_only=True)
class Replaces:
    """A dialog named by Replaces, as the recipient of the INVITE sees it."""

    call_id: str
    to_tag: str  # the recipient's own (local) tag of the dialog
    from_tag: str  # the tag of the recipient's peer in that dialog
    early_only: bool = False  # only replace an early (unanswered) dialog

    def __post_init__(self) -> None:
        if not self.call_id or not self.to_tag or not self.from_tag:
            raise ParseError("Replaces needs a Call-ID, a to-tag and a from-tag")

    def keys(self) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
        """Dialog keys (Call-ID, local tag, remote tag) it may name: as written, then swapped.

        RFC 3891 names tags from the recipient's side; some phones write them from their own
        side, so a recipient tries both (a Call-ID with both tags is unambiguous either way).
        """
        return ((self.call_id, self.to_tag, self.from_tag),
                (self.call_id, self.from_tag, self.to_tag))


def parse_replaces(value: str) -> Replaces:
    """Parse `callid;to-tag=x;from-tag=y[;early-only]` (raises ParseError)."""
    call_id, semi, rest = value.strip().partition(";")
    params = parse_params(semi + rest) if semi else {}
    return Replaces(call_id=call_id.strip(), to_tag=params.get("to-tag") or "",
                    from_tag=params.get("from-tag") or "",
                    early_only="early-only" in params)


def uri_header(uri: Uri, name: str) -> str | None:
    """One header embedded in a URI (`?Name=value&...`), unescaped; None when absent."""
    for field in uri.headers.split("&") if uri.headers else ():
        key, _, raw = field.partition("=")
        if unquote(key).strip().lower() == name.lower():
            return unquote(raw)
    return None


def replaces_in_refer_to(uri: Uri) -> Replaces | None:
    """The Replaces a Refer-To URI carries, None without one (ParseError when malformed)."""
    value = uri_header(uri, "replaces")
    return parse_replaces(value) if value is not None else None
