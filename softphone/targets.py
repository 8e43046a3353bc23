"""What the agent types into the dial pad, turned into a SIP request URI."""

from __future__ import annotations

import re
from urllib.parse import quote

_PHONE_FORMATTING = re.compile(r"[\s().\-/]")
_PHONE_NUMBER = re.compile(r"^\+?[0-9*#]+$")
_USER = re.compile(r"^[A-Za-z0-9_.!~*'+#-]+$")


class BadTarget(ValueError):
    """The dial string cannot become a SIP URI."""


def dial_uri(target: str, domain: str | None) -> str:
    """A SIP URI for a number, extension, user name, queue number, user@host or SIP URI.

    Phone numbers lose their formatting ("+49 (30) 123-45" dials +493012345). Without a
    `domain` (an account with no registrar) only full addresses can be dialled.
    """
    text = target.strip()
    if not text:
        raise BadTarget("nothing to dial")
    if any(c in text for c in "\r\n<>\""):
        raise BadTarget(f"cannot dial {target!r}")
    lowered = text.lower()
    if lowered.startswith(("sip:", "sips:")):
        if any(c.isspace() for c in text) or text.endswith(":"):
            raise BadTarget(f"cannot dial {target!r}")
        return text
    if lowered.startswith("tel:"):
        text = text[4:].split(";", 1)[0]
    if "@" in text:
        user, _, host = text.partition("@")
        if not user or not host or not _USER.match(user) or any(c.isspace() for c in host):
            raise BadTarget(f"cannot dial {target!r}")
        return f"sip:{quote(user, safe='+*_.!~-')}@{host}"
    compact = _PHONE_FORMATTING.sub("", text)
    user = compact if _PHONE_NUMBER.match(compact) else text
    if not _USER.match(user):
        raise BadTarget(f"cannot dial {target!r}")
    if domain is None:
        raise BadTarget(f"cannot dial {target!r}: this account has no registrar, dial user@host")
    return f"sip:{quote(user, safe='+*_.!~-')}@{domain}"
