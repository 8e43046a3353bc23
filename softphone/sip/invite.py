"""What an incoming INVITE asks of the phone, read from its headers (pure functions).

Auto-answer (click-to-dial: the CMS calls the agent's phone first and expects it to pick
up by itself) is signalled in several ways in the field; all are accepted:
`Call-Info: <...>;answer-after=0` (Polycom, Snom, Yealink), `Alert-Info: ...;info=alert-
autoanswer` or `info=auto answer`, and RFC 5373 `Answer-Mode: Auto`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

_HEADER = re.compile(r"^([A-Za-z0-9!%'*+._`~-]+)[ \t]*:[ \t]*(.*)$")
_ANSWER_AFTER = re.compile(r"answer-after\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_ALERT_AUTO = re.compile(r"info\s*=\s*\"?(alert-autoanswer|auto[ -]?answer)", re.IGNORECASE)
_COMPACT = {"i": "call-id", "m": "contact", "f": "from", "t": "to", "v": "via"}

ATTACHED_DATA_HEADER = "x-cms-attached-data"
# Remote answer: pjsua2 never shows an app an out-of-dialog NOTIFY (`Event: talk`, the desk
# phones' convention), only MESSAGE. So the 180 Ringing says `X-Remote-Answer: message`,
# and a MESSAGE of this type whose body is the ringing INVITE's Call-ID answers it. The
# Call-ID (random, known only to the caller's side) is what makes a stranger's MESSAGE fail.
REMOTE_ANSWER_HEADER = "X-Remote-Answer"
REMOTE_ANSWER_TYPE = "application/x-cms-remote-answer"


def headers(message: str) -> dict[str, list[str]]:
    """Header fields of a SIP message (lower-case names, unfolded, compact forms expanded)."""
    head = message.replace("\r\n", "\n").split("\n\n", 1)[0]
    lines = head.split("\n")[1:]  # skip the start line
    result: dict[str, list[str]] = {}
    last: str | None = None
    for line in lines:
        if line[:1] in (" ", "\t") and last is not None:
            result[last][-1] += " " + line.strip()
            continue
        match = _HEADER.match(line)
        if not match:
            continue
        name = match.group(1).lower()
        name = _COMPACT.get(name, name)
        result.setdefault(name, []).append(match.group(2).strip())
        last = name
    return result


def auto_answer_delay(fields: dict[str, list[str]]) -> float | None:
    """Seconds after which the caller wants the call answered automatically, or None."""
    for value in fields.get("call-info", []):
        match = _ANSWER_AFTER.search(value)
        if match:
            return float(match.group(1))
    for value in fields.get("alert-info", []):
        if _ALERT_AUTO.search(value):
            return 0.0
    for value in fields.get("answer-mode", []):
        if value.split(";", 1)[0].strip().lower() == "auto":
            return 0.0
    return None


def attached_data(fields: dict[str, list[str]]) -> dict[str, Any] | None:
    """The CMS's contact attached data (`X-CMS-Attached-Data`: JSON in base64url), or None."""
    values = fields.get(ATTACHED_DATA_HEADER)
    if not values:
        return None
    text = values[0].strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remote_answer_call_id(content_type: str, body: str) -> str | None:
    """The Call-ID a remote-answer MESSAGE asks to answer, or None for any other MESSAGE."""
    if content_type.split(";", 1)[0].strip().lower() != REMOTE_ANSWER_TYPE:
        return None
    call_id = body.strip()
    return call_id if call_id and len(call_id) <= 256 and "\n" not in call_id else None
