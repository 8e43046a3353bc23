"""Configuring pjsua2's endpoint: library settings, transports, codec priorities.

Plain functions called on the SIP thread by `UserAgent` while it starts.
"""

from __future__ import annotations

from typing import Any

import pjsua2 as pj

from softphone.audio.backend import AudioFormat
from softphone.profile import PhoneProfile, split_host_port

USER_AGENT = "cms-softphone/0.1 (pjsua2)"
MAX_CALLS = 8


def endpoint_config(profile: PhoneProfile, fmt: AudioFormat, log_writer: Any) -> Any:
    """EpConfig: our thread drives pjsua2 (threadCnt 0); the bridge runs in `fmt`."""
    cfg = pj.EpConfig()
    ua = cfg.uaConfig
    ua.threadCnt = 0
    ua.mainThreadOnly = False
    ua.userAgent = USER_AGENT
    ua.maxCalls = MAX_CALLS
    log = cfg.logConfig
    log.writer = log_writer
    log.level = profile.log_level
    log.consoleLevel = profile.log_level
    log.msgLogging = 1 if profile.log_level >= 4 else 0
    med = cfg.medConfig
    med.clockRate = fmt.rate
    med.sndClockRate = fmt.rate
    med.channelCount = 1
    med.audioFramePtime = fmt.block_ms
    med.noVad = True  # a continuous RTP stream: what the CMS relays and records
    med.ecTailLen = 0  # echo cancelling belongs to the sound device path, not the bridge
    return cfg


def create_transports(ep: Any, profile: PhoneProfile) -> dict[str, tuple[int, str]]:
    """UDP always, TCP when an account uses it (on UDP's port when free).

    Returns kind -> (transport id, local HOST:PORT).
    """
    host, port = split_host_port(profile.sip)
    kinds = ["udp"] + (["tcp"] if any(a.transport == "tcp" for a in profile.accounts) else [])
    created: dict[str, tuple[int, str]] = {}
    for kind in kinds:
        tc = pj.TransportConfig()
        tc.port = port
        if host not in ("", "0.0.0.0"):
            tc.boundAddress = host
        if profile.public_address:
            tc.publicAddress = profile.public_address
        kind_id = pj.PJSIP_TRANSPORT_UDP if kind == "udp" else pj.PJSIP_TRANSPORT_TCP
        try:
            transport_id = ep.transportCreate(kind_id, tc)
        except pj.Error:
            if kind == "udp":
                raise
            tc.port = 0  # UDP's port is taken for TCP: any port will do
            transport_id = ep.transportCreate(kind_id, tc)
        name = str(ep.transportGetInfo(transport_id).localName)
        created[kind] = (transport_id, name)
        port = int(name.rsplit(":", 1)[1])
    return created


def set_codec_priorities(ep: Any, codecs: tuple[str, ...]) -> None:
    """The profile's codecs in its order (by prefix: "PCMU/8000"); all others disabled."""
    wanted = [c.lower() for c in codecs]
    for codec in ep.codecEnum2():
        codec_id = str(codec.codecId)
        priority = 0
        for rank, prefix in enumerate(wanted):
            if codec_id.lower().startswith(prefix):
                priority = 255 - rank
                break
        ep.codecSetPriority(codec_id, priority)
