"""The CTI of a real `cms serve`: interaction records and messages to real phones.

A caller (the project's UA) reaches an agent (the project's UA, registered by
digest) through the sales queue; the interaction record that results must
survive kill -9. Alerts and broadcasts reach a real baresip phone as SIP
MESSAGE, and the API reports that the phone accepted them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from baresip_runner import Baresip
from baresip_runner import available as baresip_available
from baresip_runner import config_text as baresip_config
from cms_process import CmsProcess, config_text, free_port, user_name, user_password, wait_until
from cti_client import SUPERVISOR, Api, serve_with_supervisor, ua

from cms.media.sources import ToneSource
from scripts.sip_ua import AnswerPolicy

pytestmark = pytest.mark.integration

TIMEOUT = aiohttp.ClientTimeout(total=15)


@pytest.fixture
def cms(tmp_path: Path) -> Iterator[CmsProcess]:
    """agent0001..agent0003 (auto_logon, sales), supervisor `boss`, country code 49."""
    text = config_text(users=3, wrap_up=30).replace(
        'realm = "cms.local"', 'realm = "cms.local"\ncountry_code = "49"')
    with serve_with_supervisor(tmp_path, text) as server:
        yield server


def test_a_queue_call_leaves_an_interaction_record_that_survives_kill_9(
        cms: CmsProcess) -> None:
    agent_name = user_name(1)

    async def call_and_wrap_up() -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            boss = await Api(cms, session).login(*SUPERVISOR)
            agent_api = await Api(cms, session).login(agent_name, user_password(agent_name))
            answering = AnswerPolicy(ring_for=0.2, source=lambda: ToneSource(1000.0))
            async with ua(cms, agent_name, password=user_password(agent_name),
                          answer=answering) as agent, ua(cms, "0301234567") as caller:
                assert await agent.register() == 200
                await boss.until_event(0, lambda e: e["type"] == "agent.state_changed"
                                       and e["user"] == agent_name and e["state"] == "ready")
                call = await caller.call("600", ToneSource(440.0))
                assert call.status == 200, call.reason
                incoming = await agent.next_incoming(5)
                await asyncio.wait_for(incoming.answered.wait(), 5)
                await asyncio.sleep(0.5)
                await call.hang_up()
                await boss.until_event(0, lambda e: e["type"] == "agent.state_changed"
                                       and e["user"] == agent_name and e["state"] == "wrap_up")
                # Leaving wrap-up with a reason records it on the agent's last interaction.
                status, body = await agent_api.request(
                    "PUT", f"/agents/{agent_name}/state",
                    json={"state": "not_ready", "reason": "sale_closed"})
                assert status == 200, body
            status, page = await agent_api.request("GET", "/interactions")
            assert status == 200, page
            assert len(page["interactions"]) == 1, page
            record = dict(page["interactions"][0])
            status, same = await agent_api.request("GET", f"/interactions/{record['id']}")
            assert (status, same) == (200, record)
            status, others = await (await Api(cms, session).login(
                user_name(2), user_password(user_name(2)))).request("GET", "/interactions")
            assert status == 200 and others["interactions"] == []
            return record

    record = asyncio.run(call_and_wrap_up())
    assert record["caller"] == "0301234567" and record["caller_e164"] == "+49301234567"
    assert (record["agent"], record["queue"], record["kind"]) == (agent_name, "sales", "queue")
    assert record["answered"] is not None and record["ended"] is not None
    assert record["created"] <= record["answered"] <= record["ended"]
    assert record["outcome"] and record["wrap_up_reason"] == "sale_closed"

    cms.kill()
    assert cms.exit_codes[-1] == -9
    cms.start()

    async def after_restart() -> dict[str, Any]:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            boss = await Api(cms, session).login(*SUPERVISOR)
            status, page = await boss.request("GET", "/interactions",
                                              params={"agent": agent_name})
            assert status == 200, page
            return dict(page["interactions"][0])

    assert asyncio.run(after_restart()) == record


needs_baresip = pytest.mark.skipif(not baresip_available("g711", "menu", "cons"),
                                   reason="baresip with the g711, menu and cons modules is needed")


@needs_baresip
def test_alerts_and_broadcasts_reach_a_baresip_phone_as_sip_message(
        cms: CmsProcess, tmp_path: Path) -> None:
    name = user_name(1)
    account = f"<sip:{name}@{cms.sip_target}>;auth_pass={user_password(name)};regint=60"
    # menu answers MESSAGE with 200 and shows the text on the UIs: cons, a TCP console here.
    console_port = free_port(socket.SOCK_STREAM)
    phone = Baresip(tmp_path / "baresip", account, baresip_config() + "\n".join([
        f"cons_listen\t\t127.0.0.1:{console_port}", "module\t\t\tcons.so",
        "module\t\t\tmenu.so", ""]))
    console = Console(console_port)
    try:
        async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
                boss = await Api(cms, session).login(*SUPERVISOR)
                await boss.until_event(0, lambda e: e["type"] == "agent.logged_on"
                                       and e["user"] == name)
                status, alert = await boss.request(
                    "POST", "/alerts", json={"user": name, "text": "Call the customer back"})
                assert status == 201, alert
                status, broadcast = await boss.request(
                    "POST", "/broadcasts", json={"text": "Sales meeting at noon", "to": "sales"})
                assert status == 201, broadcast
                agent = await Api(cms, session).login(name, user_password(name))
                seen = await agent.until_event(
                    0, lambda e: e["type"] == "broadcast" and e["text"].startswith("Sales"))
                assert name in seen["recipients"]
                return alert, broadcast, seen

        alert, broadcast, _ = asyncio.run(scenario())
        assert alert["recipients"] == [{"user": name, "device": name, "status": "accepted",
                                        "sip_status": 200}]
        by_user = {r["user"]: r for r in broadcast["recipients"]}
        assert set(by_user) == {user_name(1), user_name(2), user_name(3)}
        assert (by_user[name]["status"], by_user[name]["sip_status"]) == ("accepted", 200)
        assert by_user[user_name(2)]["status"] == "no_device"  # no phone registered
        assert console.wait_for("Call the customer back"), console.text
        assert console.wait_for("Sales meeting at noon"), console.text
    finally:
        console.close()
        phone.terminate()


class Console:
    """A TCP connection to baresip's cons module: what its UI shows, collected by a thread."""

    def __init__(self, port: int) -> None:
        assert wait_until(lambda: self._connect(port), 10), "baresip's console did not open"
        self.text = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _connect(self, port: int) -> bool:
        try:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=1)
        except OSError:
            return False
        return True

    def _read(self) -> None:
        self.sock.settimeout(None)
        while data := self._recv():
            self.text += data.decode("utf-8", "replace")

    def _recv(self) -> bytes:
        try:
            return self.sock.recv(4096)
        except OSError:
            return b""

    def wait_for(self, text: str, timeout: float = 5.0) -> bool:
        return wait_until(lambda: text in self.text, timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(2)
