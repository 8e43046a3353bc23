"""JSON documents of the local API and its events (JSON lives at the edges only)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from softphone.audio.backend import DeviceInfo
from softphone.audio.engine import AudioSettings, Levels, MeterReading
from softphone.events import (
    AudioDeviceChanged,
    AudioLevelsMeasured,
    CallEvent,
    CallHeld,
    CallRetrieved,
    CallSnapshot,
    DtmfReceived,
    ErrorReported,
    Event,
    PresenceChanged,
    Registration,
    RegistrationChanged,
)


def iso_time(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def registration_json(registration: Registration) -> dict[str, Any]:
    return {
        "account": registration.account,
        "uri": registration.uri,
        "state": registration.state.value,
        "code": registration.code,
        "reason": registration.reason,
        "expires": registration.expires,
        "retry_in": registration.retry_in,
    }


def call_json(call: CallSnapshot) -> dict[str, Any]:
    return {
        "id": call.id,
        "account": call.account,
        "direction": call.direction,
        "remote": call.remote,
        "state": call.state.value,
        "held": call.held,
        "remote_held": call.remote_held,
        "started": iso_time(call.started),
        "answered": iso_time(call.answered),
        "ended": iso_time(call.ended),
        "duration": round(call.duration, 3),
        "code": call.code,
        "reason": call.reason,
        "auto_answer": call.auto_answer,
        "attached_data": call.attached_data,
        "transferred": call.transferred,
        "conference": list(call.conference),
    }


def meter_json(reading: MeterReading) -> dict[str, float]:
    return {"rms_dbfs": round(reading.rms_dbfs, 2), "peak_dbfs": round(reading.peak_dbfs, 2)}


def levels_json(levels: Levels) -> dict[str, Any]:
    return {"speaker": meter_json(levels.speaker), "microphone": meter_json(levels.microphone)}


def device_json(device: DeviceInfo) -> dict[str, Any]:
    return {
        "name": device.name,
        "inputs": device.inputs,
        "outputs": device.outputs,
        "default_input": device.default_input,
        "default_output": device.default_output,
    }


def audio_json(settings: AudioSettings, backend: str, input_device: str | None,
               output_device: str | None, devices: list[DeviceInfo]) -> dict[str, Any]:
    return {
        "backend": backend,
        "speaker_volume": settings.speaker_volume,
        "mic_volume": settings.mic_volume,
        "mute": settings.mute,
        "input_device": input_device,
        "output_device": output_device,
        "devices": [device_json(d) for d in devices],
    }


def event_payload(event: Event) -> dict[str, Any]:
    """The event's own fields (without seq, time and type)."""
    match event:
        case RegistrationChanged(registration=registration):
            return {"registration": registration_json(registration)}
        case CallHeld(call=call, by=by) | CallRetrieved(call=call, by=by):
            return {"call": call_json(call), "by": by}
        case CallEvent(call=call):
            return {"call": call_json(call)}
        case DtmfReceived(call_id=call_id, digit=digit):
            return {"call_id": call_id, "digit": digit}
        case AudioDeviceChanged(input_device=input_device, output_device=output_device,
                                reason=reason):
            return {"input_device": input_device, "output_device": output_device,
                    "reason": reason}
        case AudioLevelsMeasured(levels=levels):
            return levels_json(levels)
        case ErrorReported(where=where, message=message):
            return {"where": where, "message": message}
        case PresenceChanged(user=user, presence=presence):
            return {"user": user, "presence": presence}
    return {}


def event_json(event: Event, seq: int, timestamp: float) -> dict[str, Any]:
    """`{"seq", "time", "type", ...}` as every CTI event (DESIGN.md §5)."""
    return {"seq": seq, "time": iso_time(timestamp), "type": event.type, **event_payload(event)}
