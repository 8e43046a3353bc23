"""The local HTTP API in process: a real soft phone (pjsua2, null audio, no account)
behind aiohttp's test server. Calls go to an address that never answers."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient, TestServer

pytest.importorskip("pjsua2")

from softphone.api.app import build_app  # noqa: E402
from softphone.audio.engine import AudioEngine  # noqa: E402
from softphone.audio.null import NullBackend  # noqa: E402
from softphone.history import CallHistory  # noqa: E402
from softphone.phone import SoftPhone  # noqa: E402
from softphone.profile import PhoneProfile  # noqa: E402

Scenario = Callable[[TestClient, SoftPhone], Awaitable[None]]


def silent_address() -> str:
    """A UDP address where nothing answers (bound, never read) for calls that just ring."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    silent_address.sockets.append(sock)  # type: ignore[attr-defined]
    return f"127.0.0.1:{sock.getsockname()[1]}"


silent_address.sockets = []  # type: ignore[attr-defined]


def run(tmp_path: Path, scenario: Scenario, token: str | None = None,
        hosts: set[str] | None = None) -> None:
    async def main() -> None:
        profile = PhoneProfile(sip="127.0.0.1:0")
        phone = SoftPhone(profile, AudioEngine(NullBackend()), CallHistory(tmp_path / "h.jsonl"))
        await phone.start()
        try:
            async with TestClient(TestServer(build_app(phone, token, hosts))) as client:
                await scenario(client, phone)
        finally:
            await phone.stop()

    asyncio.run(main())


async def error_of(response: Any, status: int) -> dict[str, str]:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return dict(body["error"])


def test_status_shows_sip_address_accounts_calls_and_audio(tmp_path: Path) -> None:
    async def scenario(client: TestClient, phone: SoftPhone) -> None:
        response = await client.get("/api/v1/status")
        assert response.status == 200
        status = await response.json()
        assert status["sip"]["udp"] == phone.ua.sip_address
        assert [a["state"] for a in status["accounts"]] == ["disabled"]
        assert status["calls"] == []
        assert status["audio"]["backend"] == "null"
        assert status["audio"]["speaker_volume"] == 1.0

    run(tmp_path, scenario)


def test_bad_requests_get_4xx_json_errors(tmp_path: Path) -> None:
    async def scenario(client: TestClient, phone: SoftPhone) -> None:
        post = client.post
        assert (await error_of(await post("/api/v1/calls", data="{", headers={
            "Content-Type": "application/json"}), 400))["code"] == "bad_json"
        assert (await error_of(await post("/api/v1/calls", data='{"to": "x@y"}'), 415))[
            "code"] == "unsupported_media_type"
        assert (await error_of(await post("/api/v1/calls", json={}), 400))["code"] == \
            "bad_target"
        assert (await error_of(await post("/api/v1/calls", json=[1]), 400))["code"] == \
            "bad_json"
        refused = await error_of(await post("/api/v1/calls", json={"to": "1001"}), 400)
        assert refused["code"] == "bad_target" and "registrar" in refused["message"]
        assert (await error_of(await post("/api/v1/calls", json={
            "to": "a@b", "account": "nope"}), 404))["code"] == "not_found"
        assert (await error_of(await post("/api/v1/calls/nope/answer", json={}), 404))[
            "code"] == "not_found"
        assert (await error_of(await post("/api/v1/calls/nope/explode", json={}), 404))[
            "code"] == "not_found"
        assert (await error_of(await client.get("/api/v1/nothing"), 404))["code"] == \
            "not_found"
        assert (await error_of(await client.delete("/api/v1/status"), 405))["code"] == \
            "method_not_allowed"
        assert (await error_of(await client.get("/api/v1/history?limit=x"), 400))["code"] == \
            "bad_request"

    run(tmp_path, scenario)


def test_a_call_can_be_placed_listed_and_hung_up_and_lands_in_history(tmp_path: Path) -> None:
    target = f"sip:nobody@{silent_address()}"

    async def scenario(client: TestClient, phone: SoftPhone) -> None:
        response = await client.post("/api/v1/calls", json={"to": target})
        assert response.status == 201
        call = await response.json()
        assert (call["direction"], call["state"], call["remote"]) == (
            "outgoing", "dialing", target)
        listed = await (await client.get("/api/v1/calls")).json()
        assert [c["id"] for c in listed["calls"]] == [call["id"]]
        assert (await (await client.get(f"/api/v1/calls/{call['id']}")).json())["id"] == \
            call["id"]
        conflict = await error_of(
            await client.post(f"/api/v1/calls/{call['id']}/hold", json={}), 409)
        assert conflict["code"] == "invalid_state"
        response = await client.post(f"/api/v1/calls/{call['id']}/hangup")
        assert response.status == 200
        for _ in range(100):
            if not phone.calls:
                break
            await asyncio.sleep(0.02)
        history = await (await client.get("/api/v1/history")).json()
        assert [c["id"] for c in history["calls"]] == [call["id"]]
        assert history["calls"][0]["answered"] is None

    run(tmp_path, scenario)


def test_audio_settings_are_validated_and_applied(tmp_path: Path) -> None:
    async def scenario(client: TestClient, phone: SoftPhone) -> None:
        for body in ({"speaker_volume": 3}, {"mic_volume": -1}, {"mute": "yes"},
                     {"loudness": 1}, {"speaker_volume": "loud"}, {"input_device": 5}):
            error = await error_of(await client.put("/api/v1/audio", json=body), 400)
            assert error["code"] in ("bad_audio_setting", "bad_request"), body
        error = await error_of(await client.put("/api/v1/audio", json={
            "output_device": "USB headset"}), 400)
        assert error["code"] == "bad_device"

        response = await client.put("/api/v1/audio", json={
            "speaker_volume": 0.5, "mic_volume": 1.5, "mute": True})

        assert response.status == 200
        audio = await response.json()
        assert (audio["speaker_volume"], audio["mic_volume"], audio["mute"]) == (0.5, 1.5, True)
        assert phone.engine.settings.speaker_volume == 0.5
        assert (await (await client.get("/api/v1/audio")).json())["mute"] is True

    run(tmp_path, scenario)


def test_levels_report_both_directions_in_dbfs(tmp_path: Path) -> None:
    async def scenario(client: TestClient, phone: SoftPhone) -> None:
        levels = await (await client.get("/api/v1/audio/levels")).json()
        assert set(levels) == {"speaker", "microphone"}
        assert set(levels["speaker"]) == {"rms_dbfs", "peak_dbfs"}
        assert levels["speaker"]["rms_dbfs"] == -120.0

    run(tmp_path, scenario)


def test_events_arrive_over_websocket_after_a_hello(tmp_path: Path) -> None:
    target = f"sip:nobody@{silent_address()}"

    async def scenario(client: TestClient, phone: SoftPhone) -> None:
        async with client.ws_connect("/api/v1/events/ws") as ws:
            hello = json.loads((await ws.receive(timeout=5)).data)
            assert hello["type"] == "hello" and hello["accounts"][0]["account"] == "local"
            await client.post("/api/v1/calls", json={"to": target})
            types = []
            while "call.dialing" not in types:
                types.append(json.loads((await ws.receive(timeout=5)).data)["type"])
            while "audio.levels" not in types:
                types.append(json.loads((await ws.receive(timeout=5)).data)["type"])

    run(tmp_path, scenario)


def test_requests_naming_another_host_are_refused(tmp_path: Path) -> None:
    async def scenario(client: TestClient, phone: SoftPhone) -> None:
        response = await client.get("/api/v1/status", headers={"Host": "evil.example:80"})
        assert (await error_of(response, 403))["code"] == "forbidden"

    run(tmp_path, scenario, hosts={"127.0.0.1:1"})


def test_a_websocket_from_another_origin_is_refused(tmp_path: Path) -> None:
    async def scenario(client: TestClient, phone: SoftPhone) -> None:
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect("/api/v1/events/ws",
                                    headers={"Origin": "http://evil.example"})
        assert refused.value.status == 403
        own = f"http://{client.host}:{client.port}"
        async with client.ws_connect("/api/v1/events/ws", headers={"Origin": own}) as ws:
            assert json.loads((await ws.receive(timeout=5)).data)["type"] == "hello"

    run(tmp_path, scenario)


def test_a_token_is_required_when_one_is_set(tmp_path: Path) -> None:
    async def scenario(client: TestClient, phone: SoftPhone) -> None:
        assert (await error_of(await client.get("/api/v1/status"), 401))["code"] == \
            "unauthorized"
        wrong = await client.get("/api/v1/status", headers={"Authorization": "Bearer x"})
        assert wrong.status == 401
        bearer = await client.get("/api/v1/status", headers={"Authorization": "Bearer s3cret"})
        assert bearer.status == 200
        assert (await client.get("/api/v1/status?token=s3cret")).status == 200

    run(tmp_path, scenario, token="s3cret")
